//! The operator and the trainer agree: the `demeter train` arguments the operator puts in a
//! client pod parse as the trainer's flags, the run file it writes for the centralized
//! coordinator is one the coordinator accepts, and its progress scraper reads what a trainer
//! serves on `/metrics`. Both sides are the real code.

use clap::Parser;
use demeter_operator::crd::TrainingRun;
use demeter_operator::spec;
use demeter_trainer::commands::TrainArgs;
use demeter_trainer::identity::{Identity, to_base58};
use demeter_trainer::run_file::RunFile;

#[derive(Parser)]
struct Demeter {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    Train(Box<TrainArgs>),
}

fn example(file: &str) -> TrainingRun {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(file);
    let mut run: TrainingRun =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    run.metadata.namespace = Some("ml".into());
    run.metadata.uid = Some("uid".into());
    run
}

#[test]
fn client_pod_arguments_are_demeter_train_flags() {
    for file in ["trainingrun.yaml", "trainingrun-solana.yaml"] {
        let run = example(file);
        // The kubelet expands $(POD_IP) from the container's environment before exec.
        let args = spec::client_args(&run, 1)
            .unwrap()
            .into_iter()
            .map(|arg| arg.replace("$(POD_IP)", "10.0.0.7"));
        let parsed = Demeter::try_parse_from(std::iter::once("demeter".to_owned()).chain(args))
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        let Command::Train(train) = parsed.command;
        assert_eq!(
            train.model.seq_len, run.spec.data.sequence_length as usize,
            "{file}"
        );
        assert_eq!(
            train.model.demo.topk, run.spec.optimizer.topk as usize,
            "{file}"
        );
        assert_eq!(
            train.model.schedule.lr,
            Some(run.spec.optimizer.learning_rate.peak),
            "{file}"
        );
        assert!(train.peers_dns.is_some(), "{file}");
        assert_eq!(
            train.advertise,
            Some("10.0.0.7:7070".parse().unwrap()),
            "{file}"
        );
    }
}

#[test]
fn the_operators_run_file_is_accepted_by_the_coordinator() {
    let mut run = example("trainingrun.yaml");
    run.spec.verification.score_one_in = 4;
    run.spec.verification.spot_check_one_in = 16;
    let keys: Vec<String> = (0..3)
        .map(|_| to_base58(&Identity::generate().unwrap().public()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    std::fs::write(&path, spec::run_file(&run, &keys).unwrap()).unwrap();
    let parsed = RunFile::read(&path).unwrap();
    assert_eq!(parsed.run_id, "moby-150m");
    assert_eq!(parsed.client_keys().unwrap().unwrap().len(), 3);
    assert_eq!(parsed.config.total_steps, run.spec.schedule.total_steps);
    assert_eq!(parsed.config.witness_nodes, run.spec.schedule.witness_nodes);
    assert_eq!(
        (parsed.config.score_one_in, parsed.config.spot_check_one_in),
        (4, 16),
        "the verification the spec asks for"
    );
}

#[test]
fn the_operators_keypairs_are_wallets_the_trainer_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keypair.json");
    let wallet = demeter_operator::identity::generate_keypair_json().unwrap();
    std::fs::write(&path, &wallet).unwrap();
    let identity = Identity::read(&path).unwrap();
    assert_eq!(
        to_base58(&identity.public()),
        demeter_operator::identity::public_key(wallet.as_bytes()).unwrap()
    );
}

/// The trainer's real `/metrics` route, scraped by the operator's real scraper over HTTP: every
/// series the operator reads is found under the name the trainer registers it by.
#[tokio::test]
async fn the_operator_reads_what_a_trainer_serves_on_metrics() {
    use std::sync::Arc;

    use demeter_trainer::exchange::serve::{Exchange, ExchangeMetrics};
    use demeter_trainer::exchange::{ResultStore, router};
    use demeter_trainer::train::TrainerMetrics;
    use k8s_openapi::api::core::v1::{Pod, PodStatus};

    let registry = prometheus::Registry::new();
    let trainer = TrainerMetrics::register(&registry).unwrap();
    let exchange = Arc::new(Exchange {
        store: Arc::new(ResultStore::default()),
        metrics: ExchangeMetrics::register(&registry).unwrap(),
        registry,
        snapshot: Default::default(),
    });
    trainer.step.set(41);
    trainer.epoch.set(3);
    trainer.loss.set(2.5);
    trainer.tokens.inc_by(123_456);
    trainer.members_active.set(7);
    trainer.results_applied.set(6);
    trainer.members_ejected.set(1);
    trainer.attested_step.set(40);
    trainer.round_seconds.set(6);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, router(exchange)).await });

    let pod = Pod {
        status: Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some("127.0.0.1".into()),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let reports = demeter_operator::progress::scrape(&reqwest::Client::new(), &[pod], port).await;
    assert_eq!(
        reports,
        [demeter_operator::progress::ClientReport {
            step: 41,
            epoch: 3,
            loss: Some(2.5),
            tokens: 123_456,
            members_active: 7,
            results_applied: 6,
            members_ejected: 1,
            attested_step: 40,
            round_seconds: Some(6.0),
        }]
    );
    server.abort();
}

/// The dashboard's panels over the trainers' own series (scraped through the chart's
/// PodMonitor) query only names a trainer serves, so a renamed metric cannot leave a panel
/// silently empty. The operator's own series are checked in `operator/src/metrics.rs`.
#[test]
fn the_dashboard_queries_only_series_a_trainer_serves() {
    use std::collections::BTreeSet;

    use demeter_trainer::exchange::serve::ExchangeMetrics;
    use demeter_trainer::train::TrainerMetrics;

    let registry = prometheus::Registry::new();
    let trainer = TrainerMetrics::register(&registry).unwrap();
    ExchangeMetrics::register(&registry).unwrap();
    // A phase's series exists once the phase has run; every download failure reason is
    // exported from registration.
    trainer.phase_seconds.with_label_values(&["train"]).inc();
    let exported: BTreeSet<String> = registry
        .gather()
        .iter()
        .map(|family| family.name().to_owned())
        .collect();

    let dashboard = include_str!("../../deploy/dashboards/demeter-operator.json");
    let queried: BTreeSet<&str> = dashboard
        .match_indices("demeter_")
        .map(|(at, _)| {
            let rest = &dashboard[at..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|name| !name.starts_with("demeter_operator") && *name != "demeter_")
        .collect();
    assert!(queried.len() >= 4, "{queried:?}");
    let missing: Vec<_> = queried
        .iter()
        .filter(|name| !exported.contains(**name))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries, no trainer serves: {missing:?}"
    );
}
