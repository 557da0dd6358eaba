//! Faults a run must survive, with real processes on loopback: a client killed with SIGKILL in
//! the middle of a round (and restarted), the coordinator server killed and restarted, a dishonest
//! participant, and a stranger committing to the coordinator and flooding the clients.

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

/// A participant that commits to a hash and serves other bytes under it, then tries to swap its
/// commitment for another once the witnesses have reported. It plays its part in the
/// coordinator otherwise. Returns the coordinator's answers to the swaps: the code of each
/// refusal, `None` for anything else.
async fn dishonest_client(coordinator: SocketAddr) -> Vec<Option<u32>> {
    use std::sync::Arc;

    use demeter_coordinator_core::{Input, RunState, WitnessReport};
    use demeter_trainer::central::RequestError;
    use demeter_trainer::exchange::serve::{Exchange, ExchangeMetrics};
    use demeter_trainer::exchange::{ResultStore, router};

    let identity = Identity::generate().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = ExchangeMetrics::register(&registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let mut client = connect_when_up(coordinator, &identity).await;
    let store = Arc::new(ResultStore::default());
    let exchange = Arc::new(Exchange {
        store: store.clone(),
        registry,
        metrics,
        snapshot: Default::default(),
    });
    tokio::spawn(async move { axum::serve(listener, router(exchange)).await });
    client
        .request(Input::Join {
            endpoint: endpoint.into(),
        })
        .await
        .unwrap();
    let me = identity.public();
    let (mut published, mut swapped) = (None, None);
    let mut swaps = Vec::new();
    loop {
        let state = client.state();
        if state.run_state() == RunState::Finished {
            return swaps;
        }
        let Some(slot) = state.member_index(&me) else {
            return swaps;
        };
        store.follow(state.step);
        match state.run_state() {
            RunState::Warmup if state.members[slot].ready == 0 => {
                let _ = client.request(Input::WarmupWitness).await;
            }
            RunState::RoundTrain => {
                let round = *state.current_round().unwrap();
                if round.is_participant(slot) && published != Some(round.step) {
                    published = Some(round.step);
                    let hash = [round.step as u8 + 1; 32];
                    store.insert_payload(round.step, hash, vec![0xEE; 1000].into());
                    let _ = client
                        .request(Input::Commit {
                            step: round.step,
                            hash,
                        })
                        .await;
                    if let Some(position) = round.witness_position(slot) {
                        let mut report = WitnessReport::default();
                        report.insert(slot);
                        let _ = client
                            .request(Input::Witness {
                                step: round.step,
                                position,
                                report,
                            })
                            .await;
                    }
                }
            }
            RunState::RoundWitness => {
                let round = *state.current_round().unwrap();
                if round.commitment(slot).is_some() && swapped != Some(round.step) {
                    swapped = Some(round.step);
                    let swap = Input::Commit {
                        step: round.step,
                        hash: [0x5A; 32],
                    };
                    swaps.push(match client.request(swap).await {
                        Err(RequestError::Rejected(rejection)) => Some(rejection.code),
                        _ => None,
                    });
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
fn corrupted_results_and_swapped_commitments_are_refused_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start_with(dir.path(), 10, 600, 3, 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dishonest = runtime.spawn(dishonest_client(run.coordinator));

    run.wait("the corrupted payload to be refused and counted", |run| {
        run.gauge(
            1,
            r#"demeter_downloads_failed_total{reason="hash_mismatch"}"#,
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
    let swaps = runtime.block_on(dishonest).unwrap();
    // Refused, every one: as already committed, or, once a health check dropped it, as out of
    // the epoch.
    let already = demeter_coordinator_core::CoordinatorError::AlreadyCommitted.code();
    assert!(swaps.iter().all(Option::is_some), "{swaps:?}");
    assert!(swaps.contains(&Some(already)), "{swaps:?}");
}

/// Someone who is not a member of the run (it only reads the run's state, as anyone may) sends
/// commitments of its own to the coordinator, for the current step and for step 2^64-1, and
/// floods every client's exchange with writes and requests for payloads nobody committed.
/// Returns how many of its commitments the coordinator refused.
async fn stranger(coordinator: SocketAddr, clients: Vec<SocketAddr>) -> usize {
    use demeter_coordinator_core::{Input, RunState};

    let observer = Identity::generate().unwrap();
    let mut client = connect_when_up(coordinator, &observer).await;
    let http = reqwest::Client::new();
    let mut refused = 0;
    loop {
        let state = client.state();
        if state.run_state() == RunState::Finished {
            return refused;
        }
        for step in [state.step, u64::MAX] {
            let commit = Input::Commit {
                step,
                hash: [0xAB; 32],
            };
            refused += usize::from(client.request(commit).await.is_err());
        }
        for &peer in &clients {
            for _ in 0..32 {
                let _ = http
                    .post(format!("http://{peer}/v1/commitments"))
                    .body(vec![0xAB; 150])
                    .send()
                    .await;
                let _ = http
                    .get(format!("http://{peer}/v1/payloads/{}", "ab".repeat(32)))
                    .send()
                    .await;
            }
        }
        let _ = client
            .wait_for(Duration::from_millis(500), |now| *now != *state)
            .await;
    }
}

#[test]
fn a_stranger_commits_nothing_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(dir.path(), 10, 600, 3);
    let clients = run.endpoints();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stranger = runtime.spawn(stranger(run.coordinator, clients));

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
    assert!(
        runtime.block_on(stranger).unwrap() >= 2,
        "its commitments were refused"
    );
}
