//! `demeter train`: one client of a run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::simulate::ValueEncodingArg;
use crate::coordinator::Identity;
use crate::data::Dataset;
use crate::demo::DemoConfig;
use crate::model::Preset;
use crate::optim::{Schedule, ScheduleKind};
use crate::train::backend::Centralized;
use crate::train::{TrainSettings, Trainer};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// The coordinator: `tcp://HOST:PORT` for a centralized server.
    #[arg(long)]
    pub coordinator: String,
    /// This client's keypair (a Solana CLI wallet file: a JSON array of 64 bytes).
    #[arg(long)]
    pub wallet: PathBuf,
    /// Where to serve results and /metrics.
    #[arg(long, default_value = "0.0.0.0:0")]
    pub listen: SocketAddr,
    /// The address peers should use (default: the listening address).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Write a JSON summary here when the run finishes.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    #[command(flatten)]
    pub model: RunModelArgs,
}

/// What every client of a run must agree on; `demeter local` passes the same to each.
#[derive(clap::Args, Debug, Clone)]
pub struct RunModelArgs {
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Prepared dataset directory (`demeter data prepare`); default: the shipped corpus.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Seeds the initial weights and the data order.
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleKind,
    #[arg(long, default_value_t = 5)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    #[arg(long, default_value_t = 32)]
    pub topk: usize,
    #[arg(long, default_value_t = 64)]
    pub chunk: usize,
    #[arg(long, default_value_t = 0.999)]
    pub beta: f64,
    #[arg(long, value_enum, default_value = "f32")]
    pub values: ValueEncodingArg,
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
            demo: DemoConfig {
                momentum_decay: self.beta,
                topk: self.topk,
                chunk: self.chunk,
                weight_decay: 0.0,
                values: self.values.into(),
            },
            schedule: Schedule {
                kind: self.schedule,
                peak_lr: self.lr,
                min_lr: self.lr * self.min_lr_ratio,
                warmup_steps: self.warmup,
                total_steps: 0,
                decay_fraction: 0.2,
            },
            grad_clip: Some(self.grad_clip),
            checkpoint_dir: self.checkpoint_dir.clone(),
        }
    }

    /// The arguments that reproduce these settings, for child processes.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--preset={}", value_name(&self.preset)),
            format!("--seq-len={}", self.seq_len),
            format!("--seed={}", self.seed),
            format!("--lr={}", self.lr),
            format!("--warmup={}", self.warmup),
            format!("--min-lr-ratio={}", self.min_lr_ratio),
            format!("--topk={}", self.topk),
            format!("--chunk={}", self.chunk),
            format!("--beta={}", self.beta),
            format!("--values={}", value_name(&self.values)),
            format!("--grad-clip={}", self.grad_clip),
            format!("--schedule={}", value_name(&self.schedule)),
        ];
        if let Some(data) = &self.data {
            args.push(format!("--data={}", data.display()));
        }
        args
    }
}

/// The name clap parses `value` from.
fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_owned()
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

fn coordinator_address(text: &str) -> anyhow::Result<SocketAddr> {
    let Some(address) = text.strip_prefix("tcp://") else {
        anyhow::bail!(
            "--coordinator {text:?}: expected tcp://HOST:PORT (the centralized server); the \
             Solana backend is not available in this build yet"
        );
    };
    use std::net::ToSocketAddrs;
    address
        .to_socket_addrs()
        .with_context(|| format!("--coordinator {text:?}: not a reachable HOST:PORT"))?
        .next()
        .with_context(|| format!("--coordinator {text:?}: resolves to no address"))
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let address = coordinator_address(&args.coordinator)?;
    let identity = Arc::new(Identity::read(&args.wallet).context("--wallet")?);
    let dataset = Dataset::open_or_embedded(args.model.data.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let summary = runtime.block_on(async {
        let backend = Centralized::connect(address, identity.clone(), Duration::from_secs(60))
            .await
            .with_context(|| format!("connecting to {}", args.coordinator))?;
        let trainer = Trainer::new(
            identity,
            backend,
            args.model.settings(),
            dataset,
            args.listen,
            args.advertise,
        )
        .await?;
        let parameters = trainer.parameter_count();
        let summary = trainer.run().await?;
        anyhow::Ok((summary, parameters))
    })?;
    let (summary, parameters) = summary;
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
