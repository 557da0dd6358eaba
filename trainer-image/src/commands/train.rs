//! `demeter train`: one client of a run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::demo_args::{DemoArgs, value_name};
use super::schedule_args::ScheduleArgs;
use crate::attack::{Attack, Drill};
use crate::data::Dataset;
use crate::exchange::PeerDns;
use crate::identity::Identity;
use crate::model::Preset;
use crate::run_file::run_id_bytes;
use crate::train::backend::{Centralized, CoordinatorBackend};
use crate::train::on_chain::{ChainRun, OnChain};
use crate::train::{TrainSettings, TrainSummary, Trainer};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The coordinator: `tcp://HOST:PORT` for a centralized server, or `solana` for the
    /// coordinator program (with --rpc, --run-authority and --run-id).
    #[arg(long)]
    pub coordinator: String,
    /// With `--coordinator solana`: the cluster's JSON-RPC URL.
    #[arg(long)]
    pub rpc: Option<String>,
    /// With `--coordinator solana`: the coordinator program's address.
    #[arg(long, default_value_t = demeter_coordinator::ID.to_string())]
    pub program_id: String,
    /// With `--coordinator solana`: the run's name (at most 32 bytes).
    #[arg(long)]
    pub run_id: Option<String>,
    /// With `--coordinator solana`: the run authority's public key (base58). A run's name is
    /// its authority's, so a run of the same name made by anyone else is never joined.
    #[arg(long)]
    pub run_authority: Option<String>,
    /// This client's keypair (a Solana CLI wallet file: a JSON array of 64 bytes).
    #[arg(long)]
    pub wallet: PathBuf,
    /// Where to serve results and /metrics. On every interface (the default), peers need
    /// --advertise to know where to reach this client.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// The address peers should use (default: the listening address).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Also find peers by DNS: `HOST:PORT`, every address of which is a peer (a Kubernetes
    /// headless Service over the run's client pods resolves to each of them).
    #[arg(long)]
    pub peers_dns: Option<String>,
    /// Write a JSON summary here when the run finishes.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Drills only: send forged results of this kind, to watch the run's verifiers eject this
    /// client and slash its points. Never on a key whose points matter.
    #[arg(long, value_enum, hide = true)]
    pub attack: Option<Attack>,
    /// Drills only: with --attack, the first step to cheat in (honest before).
    #[arg(long, default_value_t = 0, hide = true, requires = "attack")]
    pub attack_from_step: u64,
    #[command(flatten)]
    pub model: RunModelArgs,
}

/// What every client of a run must agree on; `demeter local` passes the same to each.
#[derive(clap::Args, Debug, Clone)]
pub struct RunModelArgs {
    /// Model size: a LLaMA-style preset.
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Prepared dataset directory (`demeter data prepare`); default: the shipped corpus.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Seeds the initial weights and the data order.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
    /// Clip each client's gradient to this global L2 norm before DeMo.
    #[arg(long, default_value_t = 1.0)]
    pub grad_clip: f64,
    /// Write a checkpoint at every epoch's end into this directory.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
}

impl RunModelArgs {
    pub fn settings(&self) -> TrainSettings {
        TrainSettings {
            preset: self.preset,
            seq_len: self.seq_len,
            seed: self.seed,
            demo: self.demo.config(0.0),
            // The total comes from the coordinator's config.
            schedule: self.schedule.schedule(2e-3, 5, 0),
            grad_clip: Some(self.grad_clip),
            checkpoint_dir: self.checkpoint_dir.clone(),
            drill: None,
        }
    }

    /// The arguments that reproduce these settings, for child processes.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--preset={}", value_name(&self.preset)),
            format!("--seq-len={}", self.seq_len),
            format!("--seed={}", self.seed),
            format!("--grad-clip={}", self.grad_clip),
        ];
        args.extend(self.schedule.to_args());
        args.extend(self.demo.to_args());
        if let Some(data) = &self.data {
            args.push(format!("--data={}", data.display()));
        }
        args
    }
}

/// What a finished client reports (`--summary`).
#[derive(Debug, Serialize, Deserialize)]
pub struct ClientSummary {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens: u64,
    pub payload_bytes: usize,
    pub parameters: usize,
    pub replica_hash: String,
    /// Seconds per phase (train, compress, publish, fetch, aggregate, apply), summed.
    pub phase_seconds: Vec<(String, f64)>,
}

/// Where the run's coordinator is, as the flags say.
enum CoordinatorChoice {
    Centralized(SocketAddr),
    Chain(ChainRun),
}

impl TrainArgs {
    fn coordinator_choice(&self) -> anyhow::Result<CoordinatorChoice> {
        let text = &self.coordinator;
        if text == "solana" {
            let rpc_url = self.rpc.clone().context(
                "--coordinator solana needs --rpc URL (the cluster's JSON-RPC endpoint)",
            )?;
            let run_id = self
                .run_id
                .as_deref()
                .context("--coordinator solana needs --run-id NAME (the run's name)")?;
            let authority = self.run_authority.as_deref().context(
                "--coordinator solana needs --run-authority PUBKEY (the run authority's public \
                 key, which scopes the run's name)",
            )?;
            let authority = authority.parse().map_err(|_| {
                anyhow::anyhow!("--run-authority {authority:?} is not a base58 public key")
            })?;
            let program_id = self.program_id.parse().map_err(|_| {
                anyhow::anyhow!("--program-id {:?} is not a base58 address", self.program_id)
            })?;
            return Ok(CoordinatorChoice::Chain(ChainRun {
                rpc_url,
                program_id,
                authority,
                run_id: run_id_bytes(run_id).context("--run-id")?,
            }));
        }
        let Some(address) = text.strip_prefix("tcp://") else {
            anyhow::bail!(
                "--coordinator {text:?}: expected tcp://HOST:PORT (the centralized server) or \
                 solana (the coordinator program, with --rpc, --run-authority and --run-id)"
            );
        };
        use std::net::ToSocketAddrs;
        let address = address
            .to_socket_addrs()
            .with_context(|| format!("--coordinator {text:?}: not a reachable HOST:PORT"))?
            .next()
            .with_context(|| format!("--coordinator {text:?}: resolves to no address"))?;
        Ok(CoordinatorChoice::Centralized(address))
    }
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let choice = args.coordinator_choice()?;
    let identity = Arc::new(Identity::read(&args.wallet).context("--wallet")?);
    let dataset = Dataset::open_or_embedded(args.model.data.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let (summary, parameters) = runtime.block_on(async {
        match choice {
            CoordinatorChoice::Centralized(address) => {
                let backend =
                    Centralized::connect(address, identity.clone(), Duration::from_secs(60))
                        .await
                        .with_context(|| format!("connecting to {}", args.coordinator))?;
                run_client(args, identity, backend, dataset).await
            }
            CoordinatorChoice::Chain(run) => {
                let backend = OnChain::open(&run, identity.clone()).await?;
                tracing::info!(run_account = %backend.run_account(), "found the run on chain");
                run_client(args, identity, backend, dataset).await
            }
        }
    })?;
    tracing::info!(steps = summary.steps, "the run finished");
    if let Some(path) = &args.summary {
        let report = ClientSummary {
            steps: summary.steps,
            first_loss: summary.first_loss,
            last_loss: summary.last_loss,
            tokens: summary.tokens,
            payload_bytes: summary.payload_bytes,
            parameters,
            replica_hash: hex::encode(summary.replica_hash),
            phase_seconds: summary.phase_seconds,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("--summary {}", path.display()))?;
    }
    Ok(())
}

async fn run_client<B: CoordinatorBackend>(
    args: &TrainArgs,
    identity: Arc<Identity>,
    backend: B,
    dataset: Dataset,
) -> anyhow::Result<(TrainSummary, usize)> {
    let drill = match args.attack {
        Some(attack @ (Attack::Copy | Attack::NoisyCopy)) => anyhow::bail!(
            "--attack {} is not a drill of `demeter train` (it would wait for a peer's committed \
             result to copy); `demeter simulate --attack {0}` measures it",
            clap::ValueEnum::to_possible_value(&attack)
                .expect("named")
                .get_name()
        ),
        Some(attack) => {
            tracing::warn!(
                ?attack,
                from_step = args.attack_from_step,
                "drill: sending forged results"
            );
            Some(Drill {
                attack,
                from_step: args.attack_from_step,
            })
        }
        None => None,
    };
    let trainer = Trainer::new(
        identity,
        backend,
        TrainSettings {
            drill,
            ..args.model.settings()
        },
        dataset,
        args.listen,
        args.advertise,
    )
    .await?;
    let trainer = match &args.peers_dns {
        Some(name) => trainer.with_peer_dns(PeerDns::new(name.clone())),
        None => trainer,
    };
    let parameters = trainer.parameter_count();
    Ok((trainer.run().await?, parameters))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        model: RunModelArgs,
    }

    /// `demeter local` hands its settings to every client as flags: nothing may be lost.
    #[test]
    fn to_args_reproduces_every_setting() {
        let given = Flags::parse_from([
            "demeter",
            "--preset=20m",
            "--data=/datasets/web",
            "--seq-len=256",
            "--seed=9",
            "--lr=0.005",
            "--schedule=wsd",
            "--warmup=7",
            "--min-lr-ratio=0.3",
            "--decay-fraction=0.4",
            "--topk=16",
            "--chunk=32",
            "--beta=0.99",
            "--values=sign",
            "--grad-clip=2.5",
        ])
        .model;
        let again =
            Flags::parse_from(std::iter::once("demeter".to_owned()).chain(given.to_args())).model;
        assert_eq!(
            format!("{:?}", again.settings()),
            format!("{:?}", given.settings())
        );
        assert_eq!(again.data, given.data);
    }
}
