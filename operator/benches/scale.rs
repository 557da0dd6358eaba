//! 1,000 TrainingRuns against the in-memory API server: reconcile latency and operator memory.
//!
//! 1. In process, one reconcile at a time, each timed: the first full apply of every run
//!    (identities generated, children applied, three pods created, status written), then a
//!    steady-state pass over the same runs (nothing to change).
//! 2. The real `demeter-operator run` binary as its own process, pointed at the server through
//!    a kubeconfig, with every run in place: it lists and watches them all and reconciles each;
//!    its resident memory (now and peak) once it has seen every run, and the reconcile-time
//!    histogram from its own /metrics.
//!
//! `cargo bench -p demeter-operator --bench scale` (DEMETER_BENCH_RUNS overrides 1000).

use std::sync::Arc;
use std::time::{Duration, Instant};

use demeter_e2e::ApiServer;
use demeter_operator::controller::{self, Context};
use demeter_operator::crd::TrainingRun;
use demeter_operator::metrics::Metrics;
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject, PostParams};

const NAMESPACE: &str = "bench";

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("DEMETER_BENCH_RUNS")
        .map_or(Ok(1000), |v| v.parse())
        .map_err(|e| anyhow::anyhow!("DEMETER_BENCH_RUNS: {e}"))?;
    tokio::runtime::Runtime::new()?.block_on(bench(runs))
}

async fn bench(runs: usize) -> anyhow::Result<()> {
    let server = ApiServer::start().await?;
    server.install_crd(serde_json::to_value(TrainingRun::crd())?)?;
    let client = server.client(NAMESPACE).await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        "bench",
    ));
    let typed = Api::<TrainingRun>::namespaced(client.clone(), NAMESPACE);
    let untyped = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        NAMESPACE,
        &controller::training_run_resource(),
    );
    let template: TrainingRun =
        serde_yaml_ng::from_str(include_str!("../../deploy/examples/trainingrun.yaml"))?;

    let mut first = Vec::with_capacity(runs);
    let mut steady = Vec::with_capacity(runs);
    for i in 0..runs {
        let mut run = template.clone();
        run.metadata.name = Some(format!("run-{i:04}"));
        typed.create(&PostParams::default(), &run).await?;
    }
    for pass in [&mut first, &mut steady] {
        for i in 0..runs {
            let name = format!("run-{i:04}");
            let mut object = untyped.get(&name).await?;
            if object.metadata.finalizers.is_none() {
                // The first reconcile only adds the finalizer; the controller's watch would
                // bring the object back at once.
                controller::reconcile(Arc::new(object), ctx.clone()).await?;
                object = untyped.get(&name).await?;
            }
            let started = Instant::now();
            controller::reconcile(Arc::new(object), ctx.clone()).await?;
            pass.push(started.elapsed());
        }
    }
    server.clear_requests();

    println!("| reconcile (in process, one at a time) | runs | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, samples) in [("first apply", &mut first), ("steady state", &mut steady)] {
        samples.sort_unstable();
        println!(
            "| {label} | {runs} | {:.2} | {:.2} | {:.2} |",
            ms(percentile(samples, 0.50)),
            ms(percentile(samples, 0.99)),
            ms(*samples.last().unwrap_or(&Duration::ZERO)),
        );
    }

    let process = operator_process(&server, runs).await?;
    println!();
    println!(
        "| demeter-operator process | runs | reconciles | RSS MiB | peak RSS MiB | reconcile p50 ms | reconcile p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!(
        "| watch-driven, every run at once | {runs} | {} | {:.1} | {:.1} | ≤ {} | ≤ {} |",
        process.reconciles,
        process.rss_kib as f64 / 1024.0,
        process.peak_kib as f64 / 1024.0,
        process.p50_bound_ms,
        process.p99_bound_ms,
    );
    println!(
        "\nReal process: percentiles are the upper bounds of the histogram buckets they fall in."
    );
    Ok(())
}

struct ProcessFigures {
    reconciles: u64,
    rss_kib: u64,
    peak_kib: u64,
    p50_bound_ms: String,
    p99_bound_ms: String,
}

/// Starts the operator binary against `server`, waits until it has reconciled every run
/// and gone quiet, and reads its memory and histogram.
async fn operator_process(server: &ApiServer, runs: usize) -> anyhow::Result<ProcessFigures> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig(NAMESPACE))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_demeter-operator"))
        .args(["run", "--identity=bench", "--log-format=text"])
        .arg(format!("--listen=127.0.0.1:{port}"))
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the operator exited at once"))?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut last, mut quiet_since) = (0u64, Instant::now());
    let text = loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the operator did not settle in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(response) = http.get(&url).send().await else {
            continue;
        };
        let text = response.text().await?;
        let reconciles = counter(&text, "demeter_operator_reconciles_total");
        if reconciles != last {
            (last, quiet_since) = (reconciles, Instant::now());
        } else if reconciles >= runs as u64 && quiet_since.elapsed() > Duration::from_secs(3) {
            break text;
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let figures = ProcessFigures {
        reconciles: last,
        rss_kib: field("VmRSS:"),
        peak_kib: field("VmHWM:"),
        p50_bound_ms: bucket_bound(&text, 0.50),
        p99_bound_ms: bucket_bound(&text, 0.99),
    };
    child.kill().await?;
    Ok(figures)
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The upper bound (ms) of the histogram bucket the `q` quantile falls in.
fn bucket_bound(text: &str, q: f64) -> String {
    let buckets: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest =
                l.strip_prefix("demeter_operator_reconcile_duration_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map_or("?".into(), |(le, _)| match le.parse::<f64>() {
            Ok(seconds) => format!("{}", seconds * 1000.0),
            Err(_) => le.clone(),
        })
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
