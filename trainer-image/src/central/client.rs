//! A client of the centralized coordinator: connects, proves its key, sends requests and
//! follows the state the server pushes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator_core::Coordinator;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::Framed;

use crate::identity::Identity;
use demeter_coordinator_core::Input;

use super::protocol::{self, ClientMessage, ServerMessage};

/// The server refused a request; `code` matches the Solana program's `Custom(code)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused ({code}): {message}")]
pub struct Rejection {
    pub code: u32,
    pub message: String,
}

/// Why a connection failed or ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the coordinator: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Protocol(#[from] protocol::ProtocolError),
    #[error("the coordinator said: {0}")]
    Server(String),
    #[error("the coordinator closed the connection")]
    Closed,
    #[error("timed out waiting for the coordinator")]
    TimedOut,
}

type Pending = oneshot::Sender<Result<(), Rejection>>;

/// A connected, authenticated client.
pub struct CoordinatorClient {
    requests: mpsc::Sender<(Vec<u8>, Pending)>,
    state: watch::Receiver<Arc<Coordinator>>,
    connection: tokio::task::JoinHandle<Result<(), ClientError>>,
}

impl CoordinatorClient {
    /// Connects to the server at `address` as `identity`, and waits for the first state.
    pub async fn connect(address: SocketAddr, identity: &Identity) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        let mut frames = Framed::new(stream, protocol::codec());
        let client = identity.public();
        send(&mut frames, &ClientMessage::Hello { client }).await?;
        let ServerMessage::Challenge { run_id, nonce } = receive(&mut frames).await? else {
            return Err(ClientError::Server("expected a challenge".into()));
        };
        let signature = identity.sign(&protocol::challenge_message(&run_id, &nonce, &client));
        send(
            &mut frames,
            &ClientMessage::Prove {
                signature: signature.to_vec(),
            },
        )
        .await?;
        let ServerMessage::State { coordinator } = receive(&mut frames).await? else {
            return Err(ClientError::Server("expected the run's state".into()));
        };
        let (state_tx, state) = watch::channel(Arc::from(protocol::decode_state(&coordinator)?));
        let (requests, outgoing) = mpsc::channel(16);
        let connection = tokio::spawn(run_connection(frames, outgoing, state_tx));
        Ok(Self {
            requests,
            state,
            connection,
        })
    }

    /// Sends `input` and waits for the server's answer.
    pub async fn request(&self, input: Input) -> Result<(), RequestError> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .send((input.pack(), answer))
            .await
            .map_err(|_| RequestError::Disconnected)?;
        answered
            .await
            .map_err(|_| RequestError::Disconnected)?
            .map_err(RequestError::Rejected)
    }

    /// The latest state the server pushed.
    pub fn state(&self) -> Arc<Coordinator> {
        self.state.borrow().clone()
    }

    /// Waits until the pushed state satisfies `condition`.
    pub async fn wait_for(
        &mut self,
        timeout: Duration,
        condition: impl Fn(&Coordinator) -> bool,
    ) -> Result<Arc<Coordinator>, ClientError> {
        let wait = self.state.wait_for(|state| condition(state));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(state)) => Ok(state.clone()),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::TimedOut),
        }
    }

    /// Whether the connection is still up.
    pub fn is_connected(&self) -> bool {
        !self.connection.is_finished()
    }

    /// Closes the connection; the member stays in the run (leaving is `Input::Withdraw`).
    pub fn disconnect(self) {
        self.connection.abort();
    }
}

/// Why a request got no acceptance.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Rejected(Rejection),
    #[error("the connection to the coordinator is gone")]
    Disconnected,
}

type Frames = Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>;

async fn send(frames: &mut Frames, message: &ClientMessage) -> Result<(), ClientError> {
    frames.send(protocol::encode(message)).await?;
    Ok(())
}

async fn receive(frames: &mut Frames) -> Result<ServerMessage, ClientError> {
    let body = frames.next().await.ok_or(ClientError::Closed)??;
    match protocol::decode(&body)? {
        ServerMessage::Error { message } => Err(ClientError::Server(message)),
        message => Ok(message),
    }
}

/// Moves requests out and answers and states in, until either side closes. Requests still
/// waiting when it ends see `Disconnected`.
async fn run_connection(
    mut frames: Frames,
    mut outgoing: mpsc::Receiver<(Vec<u8>, Pending)>,
    state: watch::Sender<Arc<Coordinator>>,
) -> Result<(), ClientError> {
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            request = outgoing.recv() => {
                let Some((input, answer)) = request else { return Ok(()) };
                next_id += 1;
                pending.insert(next_id, answer);
                send(&mut frames, &ClientMessage::Input { id: next_id, input }).await?;
            }
            message = receive(&mut frames) => match message? {
                ServerMessage::State { coordinator } => {
                    state.send_replace(Arc::from(protocol::decode_state(&coordinator)?));
                }
                ServerMessage::Accepted { id } => {
                    if let Some(answer) = pending.remove(&id) {
                        let _ = answer.send(Ok(()));
                    }
                }
                ServerMessage::Rejected { id, code, message } => {
                    if let Some(answer) = pending.remove(&id) {
                        let _ = answer.send(Err(Rejection { code, message }));
                    }
                }
                ServerMessage::Challenge { .. } | ServerMessage::Error { .. } => {
                    return Err(ClientError::Server("unexpected message".into()));
                }
            },
        }
    }
}
