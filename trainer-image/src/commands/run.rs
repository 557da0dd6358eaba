//! `demeter run`: create, tune, pause, resume, close and show runs of the coordinator program on
//! a Solana cluster, as their authority (or anyone, for `show`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use demeter_coordinator::client::RunClient;
use demeter_coordinator::instruction as ix;
use demeter_treasurer::client::Rewards;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signer::Signer;

use super::cluster::{Cluster, ClusterArgs, Report, RunName};
use super::run_view::RunView;
use crate::identity::{Identity, to_base58};
use crate::run_file::RunFile;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: RunCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RunCommand {
    /// Create the run of a run file, the --keypair its authority (it pays the run account's
    /// rent, about 0.45 SOL, returned when the run is closed). The file's `clients` become
    /// join grants; an existing run of the same name is left alone.
    Create {
        /// The run file (see deploy/examples/coordinator-run.toml).
        run_file: PathBuf,
        /// Lamports each client pays into the run account when it joins: refunded when it
        /// withdraws (trainers do when the run finishes), lost if it is dropped. Makes joining
        /// an open run with throwaway keys cost something; 0 for none.
        #[arg(long, default_value_t = 0)]
        join_deposit: u64,
    },
    /// Replace the run's config with a run file's, while the run waits for members or is
    /// paused (its members, points and progress are kept).
    Update {
        #[arg(long)]
        run_id: String,
        /// The run file with the new config (validated before anything is sent).
        run_file: PathBuf,
    },
    /// Pause the run: at once before an epoch's first round, otherwise after the round.
    Pause {
        #[arg(long)]
        run_id: String,
    },
    /// Resume a paused run, or cancel a pause not yet taken.
    Resume {
        #[arg(long)]
        run_id: String,
    },
    /// Close a paused or finished run that owes nothing, its rent back to the authority.
    Close {
        #[arg(long)]
        run_id: String,
    },
    /// Print the run: state, epoch, step, members with points and slashed points, and its
    /// reward pool.
    Show {
        #[command(flatten)]
        name: RunName,
    },
}

/// Runs `demeter run`; prints and returns what it did.
pub fn manage_run(args: &RunArgs) -> anyhow::Result<Report> {
    args.cluster.run(|cluster| async {
        let report = execute(&cluster, &args.command).await?;
        Ok((cluster, report))
    })
}

async fn execute(cluster: &Cluster, command: &RunCommand) -> anyhow::Result<Report> {
    let authority = |run_id: &str| RunName {
        run_id: run_id.to_owned(),
        run_authority: None,
    };
    match command {
        RunCommand::Create {
            run_file,
            join_deposit,
        } => {
            let client =
                create_on_chain(run_file, &cluster.url, &cluster.keypair_path, *join_deposit)
                    .await?;
            show(&client.with_commitment(cluster.commitment)).await
        }
        RunCommand::Show { name } => {
            let signer = name
                .run_authority
                .is_none()
                .then(|| cluster.signer())
                .transpose()?;
            show(&cluster.find_run(name, signer.as_ref()).await?).await
        }
        RunCommand::Update { run_id, run_file } => {
            let config = RunFile::read(run_file)?.config;
            send_as_authority(cluster, &authority(run_id), "config updated", |me, run| {
                ix::update_config(me, run, config)
            })
            .await
        }
        RunCommand::Pause { run_id } => {
            send_as_authority(cluster, &authority(run_id), "pause requested", ix::pause).await
        }
        RunCommand::Resume { run_id } => {
            send_as_authority(cluster, &authority(run_id), "resumed", ix::resume).await
        }
        RunCommand::Close { run_id } => {
            let id = crate::run_file::run_id_bytes(run_id).context("--run-id")?;
            // The pool lets a run whose members hold points close once it has paid them all.
            send_as_authority(cluster, &authority(run_id), "closed", |me, run| {
                let pool = demeter_treasurer::instruction::find_pool(run).0;
                ix::close_run(me, &id, run, Some(&pool))
            })
            .await
        }
    }
}

/// Sends the instruction `build(authority, run account)` signed by the --keypair, the run's
/// authority.
async fn send_as_authority(
    cluster: &Cluster,
    name: &RunName,
    action: &str,
    build: impl FnOnce(&Pubkey, &Pubkey) -> solana_sdk::instruction::Instruction,
) -> anyhow::Result<Report> {
    let signer = cluster.signer()?;
    let client = cluster.find_run(name, Some(&signer)).await?;
    let instruction = build(&signer.pubkey(), &client.run_account());
    let signature = client
        .send(&[instruction], &[&signer])
        .await
        .with_context(|| format!("run {:?}", name.run_id))?;
    Ok(Report::sent(action, signature, None))
}

/// The run and its pool as read now.
pub async fn show(client: &RunClient) -> anyhow::Result<Report> {
    let snapshot = client.read().await?;
    let pool = Rewards::new(client).read().await?;
    Ok(Report::Run(Box::new(RunView::new(
        client.run_account(),
        &snapshot.run,
        pool.as_ref(),
    )?)))
}

/// Creates the run of the run file at `config` on the cluster at `rpc`, signed and paid by the
/// keypair at `authority`.
pub async fn create_on_chain(
    config: &Path,
    rpc: &str,
    authority: &Path,
    join_deposit: u64,
) -> anyhow::Result<RunClient> {
    let run = RunFile::read(config)?;
    let authority = Identity::read(authority).context("--keypair")?;
    if let Some(named) = run.authority_key()?
        && named != authority.public()
    {
        anyhow::bail!(
            "{} names authority {}, but --keypair is {}: pass the authority's wallet",
            config.display(),
            to_base58(&named),
            authority.pubkey()
        );
    }
    let allowed: Option<Vec<Pubkey>> = run
        .client_keys()?
        .map(|keys| keys.into_iter().map(Pubkey::new_from_array).collect());
    RunClient::create(
        rpc,
        &authority,
        run.run_id_bytes()?,
        run.config,
        allowed.as_deref(),
        join_deposit,
    )
    .await
    .with_context(|| format!("creating run {:?} on {rpc}", run.run_id))
}
