//! Faults a run must survive, with real processes on loopback: a client killed with SIGKILL in
//! the middle of a round (and restarted), the coordinator server killed and restarted, a dishonest
//! participant, and a stranger committing to the coordinator and flooding the clients.

mod cluster;

use std::net::SocketAddr;
use std::time::Duration;

use cluster::{Run, connect_when_up};
use demeter_trainer::identity::Identity;

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

    // Restarted with the same key, it rejoins for the next epoch and catches up from peers,
    // taking only the model the witnesses attested at an epoch's end.
    run.wait("the witnesses to attest an epoch-end model", |run| {
        run.gauge(0, "demeter_attested_step").unwrap_or(0.0) > 0.0
    });
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
    let run = Run::start_with(dir.path(), cluster::config(10, 600, 3), 2);
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
