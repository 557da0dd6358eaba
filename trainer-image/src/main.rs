//! `demeter`: Demeter's trainer command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use demeter_trainer::commands::{
    self, CoordinatorCommand, DataArgs, LocalArgs, ModelHashArgs, ModelInitArgs, PayloadCommand,
    RewardsArgs, RunArgs, SimulateArgs, TrainArgs,
};

#[derive(Parser)]
#[command(
    name = "demeter",
    version,
    about = "Decentralized LLM training with DeMo"
)]
struct Cli {
    /// Intra-op threads for libtorch (default: libtorch's choice).
    #[arg(long, global = true)]
    threads: Option<i32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: a coordinator and N trainer clients as processes on loopback, on the
    /// shipped corpus (no cluster; no chain unless --chain).
    Local(Box<LocalArgs>),
    /// One trainer client of a run.
    Train(Box<TrainArgs>),
    /// Train many workers with disjoint data in one process, every update through the wire format.
    Simulate(Box<SimulateArgs>),
    /// Prepare token data.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Runs of the coordinator program on a Solana cluster: create, update, pause, resume,
    /// close, show.
    Run(Box<RunArgs>),
    /// A run's rewards on the treasurer program: create the pool, fund it, claim, show.
    Rewards(Box<RewardsArgs>),
    /// The centralized coordinator's run files.
    Coordinator {
        #[command(subcommand)]
        command: CoordinatorCommand,
    },
    /// Create models.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Compress, aggregate and inspect DeMo payloads.
    Payload {
        #[command(subcommand)]
        command: PayloadCommand,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Write a freshly initialized preset as model.safetensors + config.json (loadable by
    /// transformers).
    Init(ModelInitArgs),
    /// Print a checkpoint's weights hash, as a run's witnesses attest it, and check it against
    /// the attested model's (--expect): is this the model the run trained?
    Hash(ModelHashArgs),
}

#[derive(Subcommand)]
enum DataCommand {
    /// Tokenize text into memory-mappable shards with a held-out validation split.
    Prepare {
        /// Text file to tokenize (default: the shipped Moby-Dick corpus).
        #[arg(long)]
        input: Option<PathBuf>,
        #[command(flatten)]
        args: DataArgs,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        tch::set_num_threads(threads);
    }
    match cli.command {
        Command::Local(args) => commands::local(&args),
        Command::Train(args) => commands::train(&args),
        Command::Simulate(args) => commands::simulate(&args),
        Command::Data {
            command: DataCommand::Prepare { input, args },
        } => commands::prepare_data(input.as_deref(), &args),
        Command::Model {
            command: ModelCommand::Init(args),
        } => commands::init_model(&args),
        Command::Model {
            command: ModelCommand::Hash(args),
        } => commands::hash_model(&args),
        Command::Payload { command } => commands::payload(&command),
        Command::Coordinator { command } => commands::coordinator(&command),
        Command::Run(args) => commands::manage_run(&args).map(drop),
        Command::Rewards(args) => commands::rewards(&args).map(drop),
    }
}
