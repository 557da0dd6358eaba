//! Faults a run must survive, with real processes on loopback: a client killed with SIGKILL in
//! the middle of a round (and restarted), the coordinator server killed and restarted, a dishonest
//! participant, and a stranger flooding the clients with commitments.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use demeter_coordinator_core::Config;
use demeter_trainer::central::CoordinatorClient;
use demeter_trainer::commands::read_gauge;
use demeter_trainer::identity::Identity;
use demeter_trainer::local_run::{LocalRun, free_port};
use demeter_trainer::run_file::RunFile;

const PATIENCE: Duration = Duration::from_secs(150);

/// Kills what it started when the test ends, however it ends (`LocalRun` does).
struct Run {
    local: LocalRun,
    coordinator: SocketAddr,
}

/// A run of three clients; `init_min_clients` below three lets two go on without the third.
fn run_file(total_steps: u64, epoch_time: u64, init_min_clients: u16) -> String {
    RunFile {
        run_id: "faults".into(),
        authority: None,
        clients: None,
        config: Config {
            warmup_time: 15,
            cooldown_time: 2,
            max_round_train_time: 4,
            round_witness_time: 1,
            epoch_time,
            join_window: 3,
            total_steps,
            points_per_epoch: 10,
            init_min_clients,
            ..Config::example()
        },
    }
    .to_toml("the fault tests")
}

impl Run {
    fn start(dir: &Path, total_steps: u64, epoch_time: u64, init_min_clients: u16) -> Self {
        Self::start_with(dir, total_steps, epoch_time, init_min_clients, 3)
    }

    /// A run whose first `processes` clients are `demeter train` processes.
    fn start_with(
        dir: &Path,
        total_steps: u64,
        epoch_time: u64,
        init_min_clients: u16,
        processes: usize,
    ) -> Self {
        std::fs::write(
            dir.join("run.toml"),
            run_file(total_steps, epoch_time, init_min_clients),
        )
        .unwrap();
        let mut run = Self {
            local: LocalRun::new(Path::new(env!("CARGO_BIN_EXE_demeter")), dir),
            coordinator: free_port().unwrap(),
        };
        run.start_server();
        for _ in 0..processes {
            let index = run.local.add_client().unwrap();
            run.start_client(index);
        }
        run
    }

    fn start_server(&mut self) {
        let run_file = self.local.dir().join("run.toml");
        self.local
            .start_server(&run_file, self.coordinator)
            .unwrap();
    }

    /// Starts (or restarts, with the same key) client `index`, checkpointing every epoch.
    fn start_client(&mut self, index: usize) {
        let args = [
            "--seq-len=64".to_owned(),
            "--warmup=1".to_owned(),
            format!("--coordinator=tcp://{}", self.coordinator),
            format!(
                "--checkpoint-dir={}",
                self.local
                    .dir()
                    .join(format!("checkpoints-{index}"))
                    .display()
            ),
        ];
        self.local.start_client(index, &args).unwrap();
    }

    fn endpoints(&self) -> Vec<SocketAddr> {
        self.local.clients().iter().map(|c| c.endpoint).collect()
    }

    fn gauge(&self, index: usize, name: &str) -> Option<f64> {
        read_gauge(self.local.clients()[index].endpoint, name)
    }

    /// Waits until `condition` holds, failing with the logs' tails if it never does.
    fn wait(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self) -> String {
        self.local.log_tails(12)
    }

    /// Every client's summary once all have finished: (steps, replica hash).
    fn finished(&self) -> Vec<(u64, String)> {
        let clients = self.local.clients().len();
        self.wait("every client to finish", |run| {
            (0..clients).all(|index| run.local.summary_path(index).exists())
        });
        (0..clients)
            .map(|index| {
                let summary: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(self.local.summary_path(index)).unwrap(),
                )
                .unwrap();
                (
                    summary["steps"].as_u64().unwrap(),
                    summary["replica_hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[test]
fn a_client_killed_mid_round_is_dropped_and_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Epochs of about 12 s, so that the restarted client has an epoch's end to catch up at.
    let mut run = Run::start(dir.path(), 30, 12, 2);
    run.wait("the first rounds", |run| {
        run.gauge(2, "demeter_applied_step").unwrap_or(0.0) >= 3.0
    });
    run.local.kill_client(2);

    // The others go on: the round completes without it and a health check drops it.
    run.wait("the health check to drop the killed client", |run| {
        run.gauge(0, "demeter_members_active") == Some(2.0)
    });
    let step = run.gauge(0, "demeter_applied_step").unwrap();
    run.wait("rounds without it", |run| {
        run.gauge(0, "demeter_applied_step").unwrap_or(0.0) >= step + 2.0
    });

    // Restarted with the same key, it rejoins for the next epoch and catches up from peers.
    run.start_client(2);
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 30),
        "{finished:?}"
    );
    assert!(
        finished.iter().all(|(_, hash)| *hash == finished[0].1),
        "replicas differ: {finished:?}\n{}",
        run.logs()
    );
}

#[test]
fn clients_go_on_after_the_coordinator_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(dir.path(), 12, 600, 3);
    run.wait("the first rounds", |run| {
        run.gauge(0, "demeter_applied_step").unwrap_or(0.0) >= 3.0
    });
    run.local.kill_service("coordinator");
    std::thread::sleep(Duration::from_millis(500));
    run.start_server();
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 12),
        "no step lost: {finished:?}"
    );
    assert!(
        finished.iter().all(|(_, hash)| *hash == finished[0].1),
        "replicas differ: {finished:?}"
    );
}

/// A connection to the coordinator as `identity`, retried until the server is up.
async fn connect_when_up(coordinator: SocketAddr, identity: &Identity) -> CoordinatorClient {
    loop {
        match CoordinatorClient::connect(coordinator, identity).await {
            Ok(client) => return client,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A participant that commits to a hash and serves other bytes under it, and forges another
/// client's commitment. It plays its part in the coordinator otherwise.
async fn dishonest_client(coordinator: SocketAddr, victim: [u8; 32], honest: Vec<SocketAddr>) {
    use std::sync::Arc;

    use demeter_coordinator_core::Input;
    use demeter_coordinator_core::{Bloom, RunState, WitnessReport};
    use demeter_trainer::exchange::serve::{Exchange, ExchangeMetrics};
    use demeter_trainer::exchange::{Commitment, PeerClient, ResultStore, router};

    let identity = Identity::generate().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = ExchangeMetrics::register(&registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let mut client = connect_when_up(coordinator, &identity).await;
    let run_id = client.state().run_id;
    let store = Arc::new(ResultStore::default());
    let exchange = Arc::new(Exchange {
        run_id,
        store: store.clone(),
        registry,
        metrics: metrics.clone(),
        snapshot: Default::default(),
    });
    tokio::spawn(async move { axum::serve(listener, router(exchange)).await });
    let peers = PeerClient::new(metrics, Duration::from_secs(5)).unwrap();
    client
        .request(Input::Join {
            endpoint: endpoint.into(),
        })
        .await
        .unwrap();
    let me = identity.public();
    let mut published = None;
    loop {
        let state = client.state();
        if state.run_state() == RunState::Finished {
            return;
        }
        let slot = state.member_index(&me).unwrap();
        match state.run_state() {
            RunState::Warmup if state.members[slot].ready == 0 => {
                let _ = client.request(Input::WarmupWitness).await;
            }
            RunState::RoundTrain => {
                let round = *state.current_round().unwrap();
                if round.is_participant(slot) && published != Some(round.step) {
                    published = Some(round.step);
                    let hash = [round.step as u8; 32];
                    store.insert_payload(round.step, hash, vec![0xEE; 1000].into());
                    let commitment = Commitment::sign(&identity, &run_id, round.step, hash);
                    let mut forged = Commitment::sign(&identity, &run_id, round.step, [1; 32]);
                    forged.client = victim;
                    for peer in &honest {
                        peers.announce(*peer, &commitment).await;
                        peers.announce(*peer, &forged).await;
                    }
                    if let Some(position) = round.witness_position(slot) {
                        let mut report = WitnessReport {
                            participants: Bloom::default(),
                            commitments: Bloom::default(),
                        };
                        report.participants.insert(&me, &round.seed);
                        report.commitments.insert(&hash, &round.seed);
                        let _ = client
                            .request(Input::Witness {
                                step: round.step,
                                position,
                                report: &report,
                            })
                            .await;
                    }
                }
            }
            _ => {}
        }
        let _ = client
            .wait_for(Duration::from_millis(200), |now| *now != *state)
            .await;
    }
}

#[test]
fn corrupted_and_forged_results_are_refused_counted_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start_with(dir.path(), 10, 600, 3, 2);
    let victim = Identity::read(&run.local.clients()[0].wallet)
        .unwrap()
        .public();
    let honest = run.endpoints();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(dishonest_client(run.coordinator, victim, honest));

    run.wait("the corrupted payload to be refused and counted", |run| {
        run.gauge(
            1,
            r#"demeter_downloads_failed_total{reason="hash_mismatch"}"#,
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    run.wait("the forged commitment to be refused and counted", |run| {
        run.gauge(
            1,
            r#"demeter_commitments_received_total{outcome="bad_signature"}"#,
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    run.wait("the health check to drop the dishonest client", |run| {
        run.gauge(0, "demeter_members_active") == Some(2.0)
    });
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 10),
        "{finished:?}"
    );
    assert_eq!(finished[0].1, finished[1].1, "honest replicas identical");
    runtime.shutdown_background();
}

/// Someone who is not a member of the run (it only reads the run's state, as anyone may) floods
/// every client with validly signed commitments: one for step 2^64-1, and, from 256 throwaway
/// keys, commitments for the steps just ahead of the run. Before the store took commitments only
/// from members and near the run's step, either one evicted the members' results and stopped
/// every replica.
async fn stranger(coordinator: SocketAddr, clients: Vec<SocketAddr>) {
    use demeter_coordinator_core::RunState;
    use demeter_trainer::exchange::serve::ExchangeMetrics;
    use demeter_trainer::exchange::{Commitment, PeerClient};

    let observer = Identity::generate().unwrap();
    let mut client = connect_when_up(coordinator, &observer).await;
    let metrics = ExchangeMetrics::register(&prometheus::Registry::new()).unwrap();
    let peers = PeerClient::new(metrics, Duration::from_secs(5)).unwrap();
    let keys: Vec<Identity> = (0..256).map(|_| Identity::generate().unwrap()).collect();
    loop {
        let state = client.state();
        if state.run_state() == RunState::Finished {
            return;
        }
        let far = Commitment::sign(&keys[0], &state.run_id, u64::MAX, [0xAB; 32]);
        let near: Vec<Commitment> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let step = state.step + 3 + i as u64 % 3;
                Commitment::sign(key, &state.run_id, step, [i as u8; 32])
            })
            .collect();
        for &peer in &clients {
            peers.announce(peer, &far).await;
            for commitment in &near {
                peers.announce(peer, commitment).await;
            }
        }
        let _ = client
            .wait_for(Duration::from_millis(500), |now| *now != *state)
            .await;
    }
}

#[test]
fn commitments_from_strangers_are_refused_and_stop_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(dir.path(), 10, 600, 3);
    let clients = run.endpoints();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.spawn(stranger(run.coordinator, clients));

    let refused = r#"demeter_commitments_received_total{outcome="not_member"}"#;
    run.wait("every client to refuse the stranger's commitments", |run| {
        (0..3).all(|index| run.gauge(index, refused).unwrap_or(0.0) >= 257.0)
    });
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 10),
        "{finished:?}\n{}",
        run.logs()
    );
    assert!(
        finished.iter().all(|(_, hash)| *hash == finished[0].1),
        "replicas differ: {finished:?}"
    );
    runtime.shutdown_background();
}
