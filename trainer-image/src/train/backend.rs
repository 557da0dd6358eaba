//! What a trainer client needs from its coordinator, whichever hosts the run: the latest state,
//! a wait for the next one, and a way to send its inputs. The client logic sees only this trait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator_core::{Coordinator, Input};

use crate::central::{ClientError, CoordinatorClient, Rejection, RequestError};
use crate::identity::Identity;

/// Why an input did not go through.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The state machine refused it: the client should act on the reason, not retry blindly.
    #[error(transparent)]
    Rejected(Rejection),
    /// The coordinator could not be reached; retrying later may work.
    #[error("the coordinator is unreachable: {0}")]
    Unavailable(String),
}

/// A run's coordinator as a trainer client sees it.
pub trait CoordinatorBackend: Send {
    /// The latest state known.
    fn state(&self) -> Arc<Coordinator>;
    /// Waits up to `timeout` for a state newer than the one last returned, reconnecting when
    /// needed; returns the latest state either way.
    fn changed(
        &mut self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Arc<Coordinator>, BackendError>> + Send;
    /// Sends one input, signed by this client.
    fn send(&mut self, input: Input) -> impl Future<Output = Result<(), BackendError>> + Send;
    /// Once the run has finished and this replica applied every step: takes back what the host
    /// holds for this client. On chain that is its join deposit, returned by withdrawing; the
    /// centralized server holds nothing.
    fn settle(&mut self) -> impl Future<Output = Result<(), BackendError>> + Send {
        async { Ok(()) }
    }
}

/// The centralized server over TCP, reconnecting (with the same key) whenever the connection
/// drops: a restarted server resumes from its saved state, so the client just goes on.
pub struct Centralized {
    address: SocketAddr,
    identity: Arc<Identity>,
    client: Option<CoordinatorClient>,
    last: Arc<Coordinator>,
}

impl Centralized {
    /// Connects, retrying for up to `patience` (the server may still be starting).
    pub async fn connect(
        address: SocketAddr,
        identity: Arc<Identity>,
        patience: Duration,
    ) -> Result<Self, BackendError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match CoordinatorClient::connect(address, &identity).await {
                Ok(client) => {
                    let last = client.state();
                    return Ok(Self {
                        address,
                        identity,
                        client: Some(client),
                        last,
                    });
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(BackendError::Unavailable(error.to_string()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    async fn connected(&mut self) -> Result<&mut CoordinatorClient, BackendError> {
        if !self
            .client
            .as_ref()
            .is_some_and(CoordinatorClient::is_connected)
        {
            self.client = None;
            let client = CoordinatorClient::connect(self.address, &self.identity)
                .await
                .map_err(|error| BackendError::Unavailable(error.to_string()))?;
            tracing::info!(address = %self.address, "reconnected to the coordinator");
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }
}

impl CoordinatorBackend for Centralized {
    fn state(&self) -> Arc<Coordinator> {
        self.last.clone()
    }

    async fn changed(&mut self, timeout: Duration) -> Result<Arc<Coordinator>, BackendError> {
        let last = self.last.clone();
        let client = match self.connected().await {
            Ok(client) => client,
            Err(error) => {
                tokio::time::sleep(timeout.min(Duration::from_millis(500))).await;
                return Err(error);
            }
        };
        let state = match client.wait_for(timeout, |state| *state != *last).await {
            Ok(state) => state,
            Err(ClientError::TimedOut) => client.state(),
            Err(error) => return Err(BackendError::Unavailable(error.to_string())),
        };
        self.last = state.clone();
        Ok(state)
    }

    async fn send(&mut self, input: Input) -> Result<(), BackendError> {
        let client = self.connected().await?;
        match client.request(input).await {
            Ok(()) => {
                self.last = client.state();
                Ok(())
            }
            Err(RequestError::Rejected(rejection)) => Err(BackendError::Rejected(rejection)),
            Err(RequestError::Disconnected) => {
                self.client = None;
                Err(BackendError::Unavailable("the connection dropped".into()))
            }
        }
    }
}
