//! The centralized coordinator server: one [`Coordinator`] behind TCP.
//!
//! Every change goes through the state machine on a copy of the state, is saved to disk, and
//! only then becomes the state clients see, so a failed save loses nothing and a restart
//! resumes exactly where the last client was told the run stood. A ticker applies time-outs on
//! wall-clock time; every change is pushed to every connected client.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{Bytes, BytesMut};
use demeter_coordinator_core::input::MalformedInput;
use demeter_coordinator_core::{
    AccessError, Config, Coordinator, CoordinatorError, Input, MALFORMED_INPUT,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};

use super::limits::{Admitted, ConnectionLimits, Connections};
use super::protocol::{self, ClientMessage, ServerMessage};
use super::store::StateStore;
use crate::identity::{to_base58, verify};
use crate::run_file::RunFile;

/// How long a client has to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time-outs applied in one tick at most (a server that was down for a while catches up over
/// several ticks, each saved).
const TICKS_PER_CHECK: usize = 8;
/// The code of a request the server could not save; the state is unchanged.
pub const STORAGE_FAILURE: u32 = 2000;

/// What the server serves.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub run_id: [u8; 32],
    pub config: Config,
    /// May pause and resume.
    pub authority: Option<[u8; 32]>,
    /// The only keys allowed to connect, when set.
    pub allowed_clients: Option<Vec<[u8; 32]>>,
    pub state_path: PathBuf,
    pub tick_interval: Duration,
    /// What connections may cost the server.
    pub limits: ConnectionLimits,
}

impl ServerSettings {
    pub fn from_run_file(
        run: &RunFile,
        state_path: PathBuf,
        tick_interval: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            run_id: run.run_id_bytes()?,
            config: run.config,
            authority: run.authority_key()?,
            allowed_clients: run.client_keys()?,
            state_path,
            tick_interval,
            limits: ConnectionLimits::default(),
        })
    }
}

/// A coordinator server, ready to serve.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    settings: ServerSettings,
    connections: Arc<Connections>,
    store: StateStore,
    state: Mutex<Box<Coordinator>>,
    updates: watch::Sender<Arc<Vec<u8>>>,
}

/// The coordinator's clock: unix seconds (the state machine's time).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// A seed nobody can know in advance, for a transition the state machine takes.
pub(crate) fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).context("reading the system's randomness")?;
    Ok(seed)
}

/// The config fields in which two configs differ, by name.
fn differing_fields(saved: &Config, file: &Config) -> Vec<String> {
    let (Ok(toml::Value::Table(saved)), Ok(toml::Value::Table(file))) =
        (toml::Value::try_from(saved), toml::Value::try_from(file))
    else {
        return vec!["config".into()];
    };
    saved
        .iter()
        .filter(|(field, value)| file.get(*field) != Some(value))
        .map(|(field, value)| format!("{field} (saved {value}, run file {})", file[field]))
        .collect()
}

impl Server {
    /// Resumes the run from its state file, or starts it when there is none. A state file of
    /// another run, or of this run with another config, is an error that says what differs:
    /// the file holds members' points and is never overwritten by accident.
    pub fn open(settings: ServerSettings) -> anyhow::Result<Self> {
        let store = StateStore::new(&settings.state_path);
        let state = match store.load()? {
            Some(state) => {
                anyhow::ensure!(
                    state.run_id == settings.run_id,
                    "{} holds another run's state: point --state elsewhere",
                    store.path().display()
                );
                let differences = differing_fields(&state.config, &settings.config);
                anyhow::ensure!(
                    differences.is_empty(),
                    "{} was saved with another config: {}. Restore the run file, or move the \
                     state file away to start the run over",
                    store.path().display(),
                    differences.join(", ")
                );
                tracing::info!(
                    path = %store.path().display(),
                    step = state.step,
                    epoch = state.epoch,
                    state = ?state.run_state(),
                    "resumed the run from its saved state"
                );
                state
            }
            None => {
                let mut state: Box<Coordinator> = bytemuck::zeroed_box();
                state.init(settings.run_id, settings.config, unix_now())?;
                store.save(&state)?;
                tracing::info!(path = %store.path().display(), "started a new run");
                state
            }
        };
        let (updates, _) = watch::channel(Arc::new(bytemuck::bytes_of(&*state).to_vec()));
        Ok(Self {
            shared: Arc::new(Shared {
                connections: Connections::new(settings.limits.clone()),
                settings,
                store,
                state: Mutex::new(state),
                updates,
            }),
        })
    }

    /// A copy of the current state.
    pub fn state(&self) -> Box<Coordinator> {
        self.shared.lock().clone()
    }

    /// Serves clients on `listener` and applies time-outs until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let ticker = tokio::spawn({
            let shared = self.shared.clone();
            async move {
                let mut interval = tokio::time::interval(shared.settings.tick_interval);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    interval.tick().await;
                    shared.apply_time_outs();
                }
            }
        });
        let mut connections = tokio::task::JoinSet::new();
        let accept = async {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(connection) => connection,
                    Err(error) => {
                        // Out of file descriptors and the like: wait and keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while connections.try_join_next().is_some() {}
                // Over the limits: closed at once, before a byte is read.
                let Some(admitted) = self.shared.connections.admit(peer.ip()) else {
                    tracing::debug!(
                        %peer,
                        open = self.shared.connections.open(),
                        "connection refused: at the connection limit"
                    );
                    continue;
                };
                let shared = self.shared.clone();
                connections.spawn(async move {
                    if let Err(error) = shared.connection(stream, admitted).await {
                        tracing::info!(%peer, %error, "connection closed");
                    }
                });
            }
        };
        tokio::select! {
            () = accept => {}
            () = shutdown => tracing::info!("shutting down; the state is saved"),
        }
        // Nothing may change the state once `serve` returns: a restarted server owns the file.
        ticker.abort();
        let _ = ticker.await;
        connections.shutdown().await;
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Box<Coordinator>> {
        // A panic while holding the lock cannot leave a half-applied change (changes are made
        // on a copy), so the state behind a poisoned lock is still whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` to a copy of the state, saves the copy, then publishes it.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut Coordinator) -> Result<T, CoordinatorError>,
    ) -> Result<T, Refusal> {
        let mut state = self.lock();
        let mut next = state.clone();
        let outcome = change(&mut next).map_err(Refusal::Machine)?;
        self.store.save(&next).map_err(|error| {
            tracing::error!(%error, "could not save the state; the change is dropped");
            Refusal::Storage(error.to_string())
        })?;
        let before = (state.run_state(), state.step);
        *state = next;
        if before != (state.run_state(), state.step) {
            tracing::info!(
                state = ?state.run_state(),
                step = state.step,
                epoch = state.epoch,
                members = state.count(demeter_coordinator_core::MemberStatus::Active),
                "run moved"
            );
        }
        self.updates
            .send_replace(Arc::new(bytemuck::bytes_of(&**state).to_vec()));
        Ok(outcome)
    }

    fn apply_time_outs(&self) {
        for _ in 0..TICKS_PER_CHECK {
            let seed = match random_seed() {
                Ok(seed) => seed,
                Err(error) => {
                    tracing::error!(%error, "no seed for the next round");
                    return;
                }
            };
            match self.update(|state| state.tick(unix_now(), &seed)) {
                Ok(_) => {}
                Err(Refusal::Machine(CoordinatorError::NothingDue)) => return,
                Err(error) => {
                    tracing::error!(%error, "tick failed");
                    return;
                }
            }
        }
    }

    /// Applies one input from `client`: the run authority's inputs only from the authority
    /// the run file names, a fresh random seed for an input that may start a round.
    fn apply(&self, client: [u8; 32], input: &[u8]) -> Result<(), Refusal> {
        let input = Input::unpack(input).map_err(Refusal::Malformed)?;
        if input.needs_run_authority() && self.settings.authority != Some(client) {
            return Err(Refusal::Access(AccessError::NotRunAuthority));
        }
        let seed = if input.needs_seed() {
            random_seed().map_err(|e| Refusal::Storage(e.to_string()))?
        } else {
            [0; 32]
        };
        let now = unix_now();
        self.update(|s| s.apply(client, &input, now, &seed))
    }

    /// One client connection: the handshake, then requests and state pushes until either side
    /// closes, the session goes idle, or a newer session of the same key replaces it. Holds
    /// its place among the live connections until it ends.
    async fn connection(&self, stream: TcpStream, _admitted: Admitted) -> anyhow::Result<()> {
        let limits = self.connections.limits().clone();
        let mut frames = Framed::new(stream, ServerCodec::new(limits.max_client_frame));
        let client = match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&mut frames))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("handshake timed out")))
        {
            Ok(client) => client,
            Err(error) => {
                let message = ServerMessage::Error {
                    message: error.to_string(),
                };
                let _ = frames.send(protocol::encode(&message)).await;
                return Err(error);
            }
        };
        tracing::info!(client = %to_base58(&client), "client connected");
        let mut session = self.connections.session(client);
        let idle = tokio::time::sleep(limits.idle_timeout);
        tokio::pin!(idle);
        let mut updates = self.updates.subscribe();
        let state = updates.borrow_and_update().clone();
        frames
            .send(protocol::encode(&ServerMessage::State {
                coordinator: state.to_vec(),
            }))
            .await?;
        loop {
            tokio::select! {
                frame = frames.next() => {
                    let Some(frame) = frame else { return Ok(()) };
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    let reply = match frame
                        .map_err(anyhow::Error::from)
                        .and_then(|body| Ok(protocol::decode::<ClientMessage>(&body)?))
                    {
                        Ok(ClientMessage::Input { id, input }) => {
                            match self.apply(client, &input) {
                                Ok(()) => ServerMessage::Accepted { id },
                                Err(refusal) => ServerMessage::Rejected {
                                    id,
                                    code: refusal.code(),
                                    message: refusal.to_string(),
                                },
                            }
                        }
                        Ok(other) => {
                            let message = format!("unexpected after the handshake: {other:?}");
                            frames.send(protocol::encode(&ServerMessage::Error { message: message.clone() })).await?;
                            anyhow::bail!(message);
                        }
                        Err(error) => {
                            let message = format!("bad frame: {error}");
                            frames.send(protocol::encode(&ServerMessage::Error { message: message.clone() })).await?;
                            anyhow::bail!(message);
                        }
                    };
                    // The state first, so a client that sees its request accepted already
                    // holds a state that includes it.
                    if updates.has_changed().unwrap_or(false) {
                        let state = updates.borrow_and_update().clone();
                        frames.send(protocol::encode(&ServerMessage::State { coordinator: state.to_vec() })).await?;
                    }
                    frames.send(protocol::encode(&reply)).await?;
                }
                changed = updates.changed() => {
                    changed?;
                    let state = updates.borrow_and_update().clone();
                    frames.send(protocol::encode(&ServerMessage::State { coordinator: state.to_vec() })).await?;
                }
                _ = &mut session.replaced => {
                    let message = "a newer session of this key replaced this one".to_owned();
                    let _ = frames.send(protocol::encode(&ServerMessage::Error { message: message.clone() })).await;
                    anyhow::bail!(message);
                }
                () = &mut idle => {
                    let message = format!(
                        "no request for {} s: closed (connect again when needed)",
                        limits.idle_timeout.as_secs()
                    );
                    let _ = frames.send(protocol::encode(&ServerMessage::Error { message: message.clone() })).await;
                    anyhow::bail!(message);
                }
            }
        }
    }

    /// Hello, challenge, proof: returns the client's verified key.
    async fn handshake(&self, frames: &mut Frames) -> anyhow::Result<[u8; 32]> {
        let ClientMessage::Hello { client } = receive(frames).await? else {
            anyhow::bail!("the first message must be Hello");
        };
        if let Some(allowed) = &self.settings.allowed_clients
            && !allowed.contains(&client)
        {
            anyhow::bail!(
                "client {} is not in this run's client list",
                to_base58(&client)
            );
        }
        let nonce = random_seed()?;
        let run_id = self.settings.run_id;
        frames
            .send(protocol::encode(&ServerMessage::Challenge {
                run_id,
                nonce,
            }))
            .await?;
        let ClientMessage::Prove { signature } = receive(frames).await? else {
            anyhow::bail!("the second message must be Prove");
        };
        let signature: [u8; 64] = signature
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("a signature has 64 bytes"))?;
        anyhow::ensure!(
            verify(
                &client,
                &protocol::challenge_message(&run_id, &nonce, &client),
                &signature
            ),
            "the signature does not prove key {}",
            to_base58(&client)
        );
        Ok(client)
    }
}

type Frames = Framed<TcpStream, ServerCodec>;

/// The protocol's framing with a tighter bound on what the client may send: its frames are
/// capped at the size of its largest message, while the server's own state pushes (~64 KB)
/// go out under [`protocol::MAX_FRAME`]. One `LengthDelimitedCodec` bounds both directions
/// alike, hence two.
struct ServerCodec {
    from_client: LengthDelimitedCodec,
    to_client: LengthDelimitedCodec,
}

impl ServerCodec {
    fn new(max_client_frame: usize) -> Self {
        let mut from_client = protocol::codec();
        from_client.set_max_frame_length(max_client_frame);
        Self {
            from_client,
            to_client: protocol::codec(),
        }
    }
}

impl Decoder for ServerCodec {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, std::io::Error> {
        self.from_client.decode(src)
    }
}

impl Encoder<Bytes> for ServerCodec {
    type Error = std::io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.to_client.encode(frame, dst)
    }
}

async fn receive(frames: &mut Frames) -> anyhow::Result<ClientMessage> {
    let body = frames
        .next()
        .await
        .context("the client left during the handshake")??;
    Ok(protocol::decode(&body)?)
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error(transparent)]
    Machine(CoordinatorError),
    #[error(transparent)]
    Access(AccessError),
    #[error("a malformed input: {0}")]
    Malformed(MalformedInput),
    #[error("the server could not save the change ({0}); nothing changed, try again")]
    Storage(String),
}

impl Refusal {
    fn code(&self) -> u32 {
        match self {
            Self::Machine(error) => error.code(),
            Self::Access(error) => error.code(),
            Self::Malformed(_) => MALFORMED_INPUT,
            Self::Storage(_) => STORAGE_FAILURE,
        }
    }
}
