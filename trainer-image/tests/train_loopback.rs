//! Networked DeMo training on loopback, in one process: the centralized coordinator and three
//! trainer clients, each with its own replica, exchanging results over real HTTP.

use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator_core::Config;
use demeter_trainer::central::{Server, ServerSettings};
use demeter_trainer::data::Dataset;
use demeter_trainer::demo::Aggregation;
use demeter_trainer::identity::Identity;
use demeter_trainer::train::backend::{Centralized, CoordinatorBackend};
use demeter_trainer::train::in_memory::InMemoryRun;
use demeter_trainer::train::{TrainSettings, TrainSummary, Trainer};

fn run_config() -> Config {
    Config {
        warmup_time: 10,
        cooldown_time: 1,
        max_round_train_time: 20,
        round_witness_time: 1,
        epoch_time: 600,
        join_window: 0,
        total_steps: 6,
        points_per_epoch: 10,
        ..Config::example()
    }
}

/// Three clients with their own replicas and `settings`, each on the backend `connect` gives
/// its identity, trained until the run finishes; their summaries.
async fn train_three<B, F>(
    settings: TrainSettings,
    connect: impl Fn(Arc<Identity>) -> F,
) -> Vec<TrainSummary>
where
    B: CoordinatorBackend + 'static,
    F: std::future::Future<Output = B>,
{
    let mut clients = Vec::new();
    for _ in 0..3 {
        let identity = Arc::new(Identity::generate().unwrap());
        let trainer = Trainer::new(
            identity.clone(),
            connect(identity).await,
            settings.clone(),
            Dataset::embedded(0.02),
            "127.0.0.1:0".parse().unwrap(),
            None,
        )
        .await
        .unwrap();
        clients.push(tokio::spawn(trainer.run()));
    }
    let mut summaries = Vec::new();
    for client in clients {
        let summary = tokio::time::timeout(Duration::from_secs(120), client)
            .await
            .expect("the run finishes")
            .unwrap()
            .unwrap();
        summaries.push(summary);
    }
    summaries
}

/// Every client applied the run's six steps to an identical replica, its loss fell, and it
/// trained its third of the 12 samples of each step.
fn trained_together(summaries: &[TrainSummary]) {
    for summary in summaries {
        assert_eq!(summary.steps, 6);
        assert_eq!(
            summary.replica_hash, summaries[0].replica_hash,
            "replicas identical"
        );
        let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
        assert!(last < first, "loss falls: {first} -> {last}");
        assert_eq!(summary.tokens, 6 * 4 * 64, "a third of 12 samples per step");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_train_together_and_stay_identical() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let mut run_id = [0u8; 32];
    run_id[..8].copy_from_slice(b"loopback");
    let server = Server::open(ServerSettings {
        run_id,
        config: run_config(),
        authority: None,
        allowed_clients: None,
        state_path: dir.path().join("run.state"),
        tick_interval: Duration::from_millis(50),
        limits: Default::default(),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    let summaries = train_three(TrainSettings::example(), |identity| async move {
        Centralized::connect(address, identity, Duration::from_secs(5))
            .await
            .unwrap()
    })
    .await;
    trained_together(&summaries);
}

/// The same client loop with the coordinator in memory: no server, no socket to it (results
/// still travel between the clients over loopback HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_train_against_an_in_memory_coordinator() {
    tch::set_num_threads(1);
    let mut run_id = [0u8; 32];
    run_id[..9].copy_from_slice(b"in-memory");
    let run = InMemoryRun::new(run_id, run_config()).unwrap();
    let summaries = train_three(TrainSettings::example(), |identity| {
        let backend = run.client(identity);
        async move { backend }
    })
    .await;
    trained_together(&summaries);
    let state = run.state();
    assert_eq!(state.step, 6);
    let paid = state.members.iter().filter(|m| m.points > 0).count();
    assert_eq!(paid, 3, "every client earned points");
}

/// The robust aggregation rules across real clients: replicas stay bitwise identical (norms and
/// votes are computed the same way on every replica) and the loss falls.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_stay_identical_under_each_robust_aggregation() {
    tch::set_num_threads(1);
    for aggregation in [Aggregation::ClippedMean, Aggregation::SignVote] {
        let mut run_id = [0u8; 32];
        run_id[..6].copy_from_slice(b"robust");
        let run = InMemoryRun::new(run_id, run_config()).unwrap();
        let mut settings = TrainSettings::example();
        settings.demo.aggregation = aggregation;
        let summaries = train_three(settings, |identity| {
            let backend = run.client(identity);
            async move { backend }
        })
        .await;
        trained_together(&summaries);
    }
}
