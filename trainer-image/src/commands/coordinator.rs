//! `demeter coordinator`: check a run file, or serve the run as the centralized coordinator.
//! (Runs on a Solana cluster are `demeter run`'s.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use super::table::Table;

use crate::central::{Server, ServerSettings};
use crate::run_file::RunFile;

#[derive(clap::Subcommand, Debug)]
pub enum CoordinatorCommand {
    /// Validate a run file and print the run it describes.
    CheckConfig { path: PathBuf },
    /// Run the coordinator for a run without a chain: the run state machine behind TCP.
    Serve(ServeArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The run file (see deploy/examples/coordinator-run.toml).
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7300")]
    pub listen: SocketAddr,
    /// The state file, written after every change; an existing one resumes the run
    /// (default: RUN_ID.coordinator-state beside the run file).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// How often the server checks for time-outs, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub tick_ms: u64,
}

pub fn coordinator(command: &CoordinatorCommand) -> anyhow::Result<()> {
    match command {
        CoordinatorCommand::Serve(args) => serve(args),
        CoordinatorCommand::CheckConfig { path } => {
            let run = RunFile::read(path)?;
            let c = run.config;
            let round = c.max_round_train_time + c.round_witness_time;
            let samples: u64 = (0..c.total_steps)
                .map(|step| c.global_batch_size(step))
                .sum();
            let mut table = Table::new(&["setting", "value"]);
            for (setting, value) in [
                ("run id", run.run_id.clone()),
                (
                    "members to start an epoch / to keep it going",
                    format!("{} / {}", c.init_min_clients, c.min_clients),
                ),
                (
                    "witnesses per round (quorum)",
                    format!(
                        "{} ({})",
                        c.witness_nodes,
                        (2 * c.witness_nodes).div_ceil(3)
                    ),
                ),
                ("longest round", format!("{round} s")),
                (
                    "rounds per epoch, at least",
                    (c.epoch_time / round).max(1).to_string(),
                ),
                (
                    "total steps, samples",
                    format!("{}, {samples}", c.total_steps),
                ),
                (
                    "batch size",
                    format!(
                        "{} -> {} over {} steps",
                        c.global_batch_size_start,
                        c.global_batch_size_end,
                        c.global_batch_size_ramp_steps
                    ),
                ),
                (
                    "points per healthy member per epoch",
                    c.points_per_epoch.to_string(),
                ),
            ] {
                table.row(vec![setting.to_owned(), value]);
            }
            print!("{table}");
            println!("{}: valid", path.display());
            Ok(())
        }
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let run = RunFile::read(&args.config)?;
    let state = args.state.clone().unwrap_or_else(|| {
        args.config
            .with_file_name(format!("{}.coordinator-state", run.run_id))
    });
    let settings = ServerSettings::from_run_file(&run, state, Duration::from_millis(args.tick_ms))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let server = Server::open(settings)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(address = %listener.local_addr()?, run = %run.run_id, "coordinator listening");
        server.serve(listener, shutdown_signal()).await
    })
}

/// Ctrl-C or SIGTERM (what Kubernetes sends); the state is on disk after every change, so
/// stopping loses nothing.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
