//! The centralized coordinator over real TCP on loopback: whole epochs, a client that
//! disconnects, a late join, a server restart from its saved state, and hostile connections.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use demeter_coordinator_core::{
    AccessError, Config, Coordinator, CoordinatorError, Input, MemberStatus, RunState,
    WitnessReport,
};
use demeter_trainer::central::protocol::{self, ClientMessage, ServerMessage};
use demeter_trainer::central::{
    ConnectionLimits, CoordinatorClient, RequestError, Server, ServerSettings,
};
use demeter_trainer::identity::Identity;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;
use tokio_util::codec::Framed;

const PATIENCE: Duration = Duration::from_secs(20);

/// Rounds close within seconds: all witnesses report at once, then a 1 s witness window.
fn config() -> Config {
    Config {
        warmup_time: 2,
        cooldown_time: 1,
        max_round_train_time: 3,
        round_witness_time: 1,
        epoch_time: 60,
        join_window: 0,
        total_steps: 3,
        ..Config::example()
    }
}

/// Where a member would serve its results (nothing listens there in these tests).
fn endpoint() -> SocketAddr {
    "127.0.0.1:9".parse().unwrap()
}

fn settings(dir: &Path, config: Config) -> ServerSettings {
    let mut run_id = [0u8; 32];
    run_id[..4].copy_from_slice(b"test");
    ServerSettings {
        run_id,
        config,
        authority: None,
        allowed_clients: None,
        state_path: dir.join("run.coordinator-state"),
        tick_interval: Duration::from_millis(50),
        limits: ConnectionLimits::default(),
    }
}

/// A server on an ephemeral loopback port; dropping the handle's sender stops it.
struct Running {
    address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(settings: ServerSettings) -> Running {
    let server = Server::open(settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    Running {
        address,
        stop,
        task,
    }
}

impl Running {
    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

struct Member {
    identity: Identity,
    client: CoordinatorClient,
}

impl Member {
    async fn connect(address: SocketAddr, identity: Identity) -> Self {
        let client = CoordinatorClient::connect(address, &identity)
            .await
            .unwrap();
        Self { identity, client }
    }

    fn id(&self) -> [u8; 32] {
        self.identity.public()
    }

    fn status(&self) -> MemberStatus {
        let state = self.client.state();
        state
            .member_index(&self.id())
            .map_or(MemberStatus::Empty, |slot| state.members[slot].status())
    }
}

/// Plays every member's part (warmup reports, commitments, witness reports that saw every
/// committed result) until
/// `done` holds for the state the first member sees.
async fn drive(members: &mut [Member], done: impl Fn(&Coordinator) -> bool) -> Box<Coordinator> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = members[0].client.state();
        if done(&state) {
            return Box::new(*state);
        }
        assert!(
            Instant::now() < deadline,
            "stuck in {:?} at step {}",
            state.run_state(),
            state.step
        );
        match state.run_state() {
            RunState::Warmup => {
                for member in members.iter() {
                    let slot = state.member_index(&member.id());
                    if slot.is_some_and(|slot| {
                        state.members[slot].status() == MemberStatus::Active
                            && state.members[slot].ready == 0
                    }) {
                        let _ = member.client.request(Input::WarmupWitness).await;
                    }
                }
            }
            RunState::RoundTrain => {
                let round = state.current_round().unwrap();
                let mut report = WitnessReport::default();
                let mut committing = false;
                for slot in (0..256).filter(|&slot| round.is_participant(slot)) {
                    if round.commitment(slot).is_some() {
                        report.insert(slot);
                    } else if let Some(member) =
                        members.iter().find(|m| m.id() == state.members[slot].id)
                    {
                        committing = true;
                        let hash = [slot as u8 + 1; 32];
                        let commit = Input::Commit {
                            step: round.step,
                            hash,
                        };
                        let _ = member.client.request(commit).await;
                    }
                }
                // Witnesses report once every member played here has committed.
                for position in (0..round.witness_count).filter(|_| !committing) {
                    let witness = state.members[round.elected(position).unwrap()].id;
                    if round.reported & (1 << position) != 0 {
                        continue;
                    }
                    if let Some(member) = members.iter().find(|m| m.id() == witness) {
                        let request = Input::Witness {
                            step: round.step,
                            position,
                            report,
                        };
                        let _ = member.client.request(request).await;
                    }
                }
            }
            _ => {}
        }
        let _ = members[0]
            .client
            .wait_for(Duration::from_millis(200), |now| {
                (now.run_state(), now.step, now.last_update)
                    != (state.run_state(), state.step, state.last_update)
            })
            .await;
    }
}

async fn joined(address: SocketAddr, count: usize) -> Vec<Member> {
    let mut members = Vec::new();
    for _ in 0..count {
        let member = Member::connect(address, Identity::generate().unwrap()).await;
        member
            .client
            .request(Input::Join {
                endpoint: endpoint().into(),
            })
            .await
            .unwrap();
        members.push(member);
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_train_a_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(settings(dir.path(), config())).await;
    let mut members = joined(server.address, 3).await;
    let end = drive(&mut members, |s| s.run_state() == RunState::Finished).await;
    assert_eq!(end.step, 3);
    for member in &members {
        let slot = end.member_index(&member.id()).unwrap();
        assert_eq!(end.members[slot].points, 100, "one epoch, all healthy");
    }
    // Every round had three participants with disjoint batch shares.
    for step in 1..3 {
        let round = &end.rounds[step % 4];
        assert_eq!(round.participant_count, 3);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_is_dropped_and_can_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(settings(dir.path(), config())).await;
    let mut members = joined(server.address, 3).await;
    let gone = members.pop().unwrap();
    let gone_identity = gone.identity;
    gone.client.disconnect();

    // The other two report ready; the warmup times out and drops the silent one.
    let state = drive(&mut members, |s| s.run_state() == RunState::RoundTrain).await;
    let slot = state.member_index(&gone_identity.public()).unwrap();
    assert_eq!(state.members[slot].status(), MemberStatus::Dropped);
    assert_eq!(state.current_round().unwrap().participant_count, 2);

    // It comes back on a new connection with the same key and rejoins for the next epoch.
    let back = Member::connect(server.address, gone_identity).await;
    assert_eq!(back.status(), MemberStatus::Dropped);
    back.client
        .request(Input::Join {
            endpoint: endpoint().into(),
        })
        .await
        .unwrap();
    drive(&mut members, |s| {
        s.member_index(&back.id())
            .is_some_and(|slot| s.members[slot].status() == MemberStatus::Pending)
    })
    .await;
    let end = drive(&mut members, |s| s.run_state() == RunState::Finished).await;
    let slot = end.member_index(&back.id()).unwrap();
    assert_eq!(
        end.members[slot].points, 0,
        "dropped for the epoch: no points"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_trains_from_the_next_epoch() {
    let dir = tempfile::tempdir().unwrap();
    // Short epochs: each ends after about 3 s, so the run spans two epochs.
    let short_epochs = Config {
        epoch_time: 4,
        total_steps: 100,
        ..config()
    };
    let server = start(settings(dir.path(), short_epochs)).await;
    let mut members = joined(server.address, 3).await;
    drive(&mut members, |s| s.run_state() == RunState::RoundTrain).await;

    let late = Member::connect(server.address, Identity::generate().unwrap()).await;
    late.client
        .request(Input::Join {
            endpoint: endpoint().into(),
        })
        .await
        .unwrap();
    assert_eq!(late.status(), MemberStatus::Pending);
    let round = late.client.state().current_round().copied().unwrap();
    let late_id = late.id();
    let slot = late.client.state().member_index(&late_id).unwrap();
    assert!(
        !round.is_participant(slot),
        "no batches in the epoch it joined"
    );
    members.push(late);

    let state = drive(&mut members, |s| {
        s.epoch == 1 && s.run_state() == RunState::RoundTrain
    })
    .await;
    assert!(state.current_round().unwrap().is_participant(slot));
    assert_eq!(state.current_round().unwrap().participant_count, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_with_no_lost_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(settings(dir.path(), config())).await;
    let mut members = joined(server.address, 3).await;
    let before = drive(&mut members, |s| {
        s.step == 1 && s.run_state() == RunState::RoundTrain
    })
    .await;
    server.stop().await;

    // Another config for the same state file is refused, naming the field.
    let other = Config {
        total_steps: 9,
        ..config()
    };
    let error = Server::open(settings(dir.path(), other))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("total_steps (saved 3, run file 9)"),
        "{error}"
    );

    let server = start(settings(dir.path(), config())).await;
    let identities: Vec<Identity> = members.into_iter().map(|m| m.identity).collect();
    let mut members = Vec::new();
    for identity in identities {
        members.push(Member::connect(server.address, identity).await);
    }
    let resumed = members[0].client.state();
    assert_eq!(resumed.step, before.step);
    assert_eq!(resumed.members, before.members);
    assert!(resumed.run_state() == RunState::RoundTrain || resumed.step > before.step);
    let end = drive(&mut members, |s| s.run_state() == RunState::Finished).await;
    assert_eq!(end.step, 3);
    assert!(end.members[..3].iter().all(|m| m.points == 100));
    server.stop().await;
}

async fn raw(
    address: SocketAddr,
) -> Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec> {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    Framed::new(stream, protocol::codec())
}

/// The server's last word before it closes: an Error, then the end of the stream.
async fn closed_with_error(
    frames: &mut Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec>,
) -> String {
    let mut last = None;
    while let Some(Ok(body)) = frames.next().await {
        last = Some(protocol::decode::<ServerMessage>(&body).unwrap());
    }
    match last {
        Some(ServerMessage::Error { message }) => message,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_closed_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Identity::generate().unwrap();
    let invited = Identity::generate().unwrap();
    let mut settings = settings(dir.path(), config());
    settings.authority = Some(authority.public());
    settings.allowed_clients = Some(vec![authority.public(), invited.public()]);
    let server = start(settings).await;

    // Garbage instead of Hello, under the right version.
    let mut frames = raw(server.address).await;
    let garbage = [
        &protocol::PROTOCOL_VERSION.to_le_bytes()[..],
        b"\xff\xff\xff",
    ]
    .concat();
    frames.send(bytes::Bytes::from(garbage)).await.unwrap();
    let message = closed_with_error(&mut frames).await;
    assert!(message.contains("malformed"), "{message}");

    // Another protocol version.
    let mut frames = raw(server.address).await;
    let mut body = BytesMut::from(&protocol::encode(&ClientMessage::Hello { client: [1; 32] })[..]);
    body[0] = 9;
    frames.send(body.freeze()).await.unwrap();
    let message = closed_with_error(&mut frames).await;
    assert!(message.contains("protocol version 9"), "{message}");

    // A key the run does not list.
    let stranger = Identity::generate().unwrap();
    let error = CoordinatorClient::connect(server.address, &stranger)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("not in this run's client list"), "{error}");

    // A listed key without its secret: the proof fails.
    let mut frames = raw(server.address).await;
    let hello = ClientMessage::Hello {
        client: invited.public(),
    };
    frames.send(protocol::encode(&hello)).await.unwrap();
    let challenge = frames.next().await.unwrap().unwrap();
    assert!(matches!(
        protocol::decode::<ServerMessage>(&challenge).unwrap(),
        ServerMessage::Challenge { .. }
    ));
    let forged = ClientMessage::Prove {
        signature: stranger.sign(b"anything").to_vec(),
    };
    frames.send(protocol::encode(&forged)).await.unwrap();
    let message = closed_with_error(&mut frames).await;
    assert!(message.contains("does not prove"), "{message}");

    // The server still serves, and only the authority pauses.
    let member = CoordinatorClient::connect(server.address, &invited)
        .await
        .unwrap();
    member
        .request(Input::Join {
            endpoint: endpoint().into(),
        })
        .await
        .unwrap();
    assert_eq!(
        member
            .request(Input::Join {
                endpoint: endpoint().into()
            })
            .await,
        Err(RequestError::Rejected(
            demeter_trainer::central::Rejection {
                code: CoordinatorError::AlreadyJoined.code(),
                message: CoordinatorError::AlreadyJoined.to_string(),
            }
        ))
    );
    let Err(RequestError::Rejected(refusal)) = member.request(Input::Pause).await else {
        panic!("a member paused the run");
    };
    assert_eq!(refusal.code, AccessError::NotRunAuthority.code());
    let boss = CoordinatorClient::connect(server.address, &authority)
        .await
        .unwrap();
    boss.request(Input::Pause).await.unwrap();
    let mut boss = boss;
    boss.wait_for(PATIENCE, |s| s.run_state() == RunState::Paused)
        .await
        .unwrap();
    server.stop().await;
}

type RawFrames = Framed<tokio::net::TcpStream, tokio_util::codec::LengthDelimitedCodec>;

/// A connection that has proven `identity` and received the first state, by hand.
async fn authenticated(address: SocketAddr, identity: &Identity) -> RawFrames {
    let mut frames = raw(address).await;
    let client = identity.public();
    frames
        .send(protocol::encode(&ClientMessage::Hello { client }))
        .await
        .unwrap();
    let body = frames.next().await.unwrap().unwrap();
    let ServerMessage::Challenge { run_id, nonce } = protocol::decode(&body).unwrap() else {
        panic!("no challenge");
    };
    let signature = identity
        .sign(&protocol::challenge_message(&run_id, &nonce, &client))
        .to_vec();
    frames
        .send(protocol::encode(&ClientMessage::Prove { signature }))
        .await
        .unwrap();
    let body = frames.next().await.unwrap().unwrap();
    assert!(matches!(
        protocol::decode::<ServerMessage>(&body).unwrap(),
        ServerMessage::State { .. }
    ));
    frames
}

/// Whether the server closed `frames` without a word (a refused connection).
async fn closed_silently(frames: &mut RawFrames) -> bool {
    tokio::time::timeout(PATIENCE, frames.next())
        .await
        .is_ok_and(|next| next.is_none_or(|frame| frame.is_err()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_frames_sessions_and_idle_time_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), config());
    settings.limits = ConnectionLimits {
        max_connections: 16,
        max_per_ip: 4,
        max_sessions_per_key: 2,
        max_client_frame: 4096,
        idle_timeout: Duration::from_secs(2),
    };
    let server = start(settings).await;

    // A frame longer than any client message is refused by its header, before its body is
    // read (the probe sent 1,000 of these, each with 1 MiB-1 of body).
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, &((1u32 << 20) - 1).to_be_bytes())
        .await
        .unwrap();
    let mut frames = Framed::new(stream, protocol::codec());
    let message = closed_with_error(&mut frames).await;
    assert!(message.contains("frame size too big"), "{message}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Four connections from one address are all it gets; the fifth is closed at once.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw(server.address).await);
    }
    let mut fifth = raw(server.address).await;
    assert!(closed_silently(&mut fifth).await, "a fifth connection");
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third session of one key closes its oldest; the newer ones go on.
    let identity = Identity::generate().unwrap();
    let mut oldest = authenticated(server.address, &identity).await;
    let _second = authenticated(server.address, &identity).await;
    let _third = authenticated(server.address, &identity).await;
    let message = closed_with_error(&mut oldest).await;
    assert!(message.contains("newer session"), "{message}");

    // A session that sends nothing for the idle time-out is closed; a client reconnects.
    let started = Instant::now();
    let mut idle = authenticated(server.address, &Identity::generate().unwrap()).await;
    let message = closed_with_error(&mut idle).await;
    assert!(message.contains("no request for 2 s"), "{message}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    joined(server.address, 1).await;
    server.stop().await;
}
