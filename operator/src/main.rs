use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use demeter_operator::controller::{self, Context};
use demeter_operator::http::{self, Endpoints};
use demeter_operator::leader::{LeaderElection, Timing};
use demeter_operator::metrics::Metrics;

#[derive(Parser, Debug)]
#[command(version, about = "The Demeter operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller (in the cluster, or against the current kubeconfig context).
    Run(RunArgs),
    /// Print the TrainingRun CustomResourceDefinition (YAML).
    Crd,
    /// Print the objects the operator would create for a TrainingRun file (YAML).
    Render { file: std::path::PathBuf },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Watch TrainingRuns in this namespace only; default: every namespace.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// The namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "demeter-system")]
    lease_namespace: String,
    /// This replica's name in the Lease and in Events (its pod name).
    #[arg(long, env = "POD_NAME")]
    identity: String,
    /// Log lines as JSON (for log collectors) or as text.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Json,
    Text,
}

/// The Lease every replica competes for.
const LEASE_NAME: &str = "demeter-operator";

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => tokio::runtime::Runtime::new()?.block_on(run(args)),
        Command::Crd => {
            print!("{}", demeter_operator::crd_yaml()?);
            Ok(())
        }
        Command::Render { file } => {
            let yaml = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let objects = demeter_operator::render(&yaml)
                .with_context(|| format!("{} is not a valid TrainingRun", file.display()))?;
            print!("{objects}");
            Ok(())
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn".into());
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: run in a pod, or set KUBECONFIG")?;
    let metrics = Arc::new(Metrics::new());
    let leading = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let endpoints = Endpoints {
        metrics: metrics.clone(),
        leading: leading.clone(),
    };
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, http::router(endpoints)).await {
            tracing::error!(%error, "the metrics server stopped");
        }
    });

    let election = LeaderElection::new(
        kube::Api::namespaced(client.clone(), &args.lease_namespace),
        LEASE_NAME,
        &args.identity,
        Timing::default(),
    );
    let ctx = Arc::new(Context::new(client, metrics, &args.identity));
    let outcome = election
        .run(controller::run(ctx, args.namespace.as_deref(), leading))
        .await;
    if let Err(error) = election.release().await {
        tracing::warn!(%error, "cannot hand the leader lease back");
    }
    Ok(outcome?)
}
