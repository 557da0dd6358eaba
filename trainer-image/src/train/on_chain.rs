//! The coordinator program on a Solana cluster as a [`CoordinatorBackend`]: the run is read and
//! written through the coordinator crate's JSON-RPC client, and every input is a transaction
//! signed with the client's wallet. Clients also crank the run: when the state machine says a
//! tick is due at the cluster's clock, they send one (the first to land wins; the others fail
//! preflight, which costs no fee).

use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator::client::{ClientFailure, RunClient, tick_due, tick_instructions};
use demeter_coordinator::instruction as ix;
use demeter_coordinator_core::{Coordinator, Input};
use solana_sdk::instruction::Instruction;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signer::Signer;

use super::backend::{BackendError, CoordinatorBackend};
use crate::central::Rejection;
use crate::identity::Identity;

/// How often the run account is read while waiting: about one slot.
const POLL: Duration = Duration::from_millis(400);

/// Where a run lives on chain.
#[derive(Clone, Debug)]
pub struct ChainRun {
    /// A JSON-RPC URL, e.g. `http://127.0.0.1:8899`.
    pub rpc_url: String,
    pub program_id: Pubkey,
    /// The run authority, whose name for the run `run_id` is.
    pub authority: Pubkey,
    /// The run's name, zero-padded to 32 bytes.
    pub run_id: [u8; 32],
}

/// A run's coordinator program as one client sees it.
pub struct OnChain {
    run: RunClient,
    identity: Arc<Identity>,
    last: Arc<Coordinator>,
    /// The cluster's unix time at the last read, for deciding whether a tick is due.
    cluster_time: i64,
}

impl OnChain {
    /// Finds the run by its authority and name, and reads its state.
    pub async fn open(run: &ChainRun, identity: Arc<Identity>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            run.program_id == demeter_coordinator::ID,
            "--program-id {}: this build of demeter speaks to the coordinator program at {}; \
             pass that id, or build demeter for the program deployed at {}",
            run.program_id,
            demeter_coordinator::ID,
            run.program_id
        );
        let client = RunClient::find(&run.rpc_url, &run.authority, &run.run_id)
            .await
            .map_err(|error| match error {
                ClientFailure::NoSuchRun { .. } => anyhow::anyhow!(
                    "{error} on {}: create it first (`demeter run create RUN.toml`, or the \
                     operator with an authority secret)",
                    run.rpc_url
                ),
                error => error.into(),
            })?;
        let snapshot = client.read().await?;
        Ok(Self {
            last: Arc::from(snapshot.run.coordinator_boxed()),
            cluster_time: snapshot.cluster_time,
            run: client,
            identity,
        })
    }

    /// The run account's address.
    pub fn run_account(&self) -> Pubkey {
        self.run.run_account()
    }

    async fn read(&mut self) -> Result<Arc<Coordinator>, BackendError> {
        let snapshot = self.run.read().await.map_err(unavailable)?;
        self.cluster_time = snapshot.cluster_time;
        if snapshot.run.coordinator != *self.last {
            self.last = Arc::from(snapshot.run.coordinator_boxed());
        }
        Ok(self.last.clone())
    }

    async fn submit(&self, instructions: &[Instruction]) -> Result<(), BackendError> {
        match self.run.send(instructions, &[self.identity.as_ref()]).await {
            Ok(_) => Ok(()),
            Err(ClientFailure::Refused { code, message }) => {
                Err(BackendError::Rejected(Rejection { code, message }))
            }
            Err(ClientFailure::Transaction(error)) => {
                tracing::warn!(
                    wallet = %self.identity.pubkey(),
                    %error,
                    "the cluster will not run this client's transactions; fund the wallet with SOL"
                );
                Err(BackendError::Unavailable(error.to_string()))
            }
            Err(error) => Err(unavailable(error)),
        }
    }
}

fn unavailable(error: ClientFailure) -> BackendError {
    BackendError::Unavailable(error.to_string())
}

impl CoordinatorBackend for OnChain {
    fn state(&self) -> Arc<Coordinator> {
        self.last.clone()
    }

    async fn changed(&mut self, timeout: Duration) -> Result<Arc<Coordinator>, BackendError> {
        let before = self.last.clone();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.read().await;
            if let Ok(state) = &state {
                if !Arc::ptr_eq(state, &before) {
                    return Ok(state.clone());
                }
                if tick_due(state, self.cluster_time) {
                    match self
                        .submit(&tick_instructions(&self.run.run_account()))
                        .await
                    {
                        Ok(()) => continue,
                        Err(BackendError::Rejected(_)) => {}
                        Err(error) => tracing::debug!(%error, "tick not sent"),
                    }
                }
            }
            if tokio::time::Instant::now() + POLL > deadline {
                return state;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn send(&mut self, input: Input) -> Result<(), BackendError> {
        let me = self.identity.pubkey();
        self.submit(&[ix::input(&me, &self.run.run_account(), input)])
            .await?;
        // The client must see its own change before it acts again, as with the server.
        self.read().await.map(|_| ())
    }

    async fn settle(&mut self) -> Result<(), BackendError> {
        let snapshot = self.run.read().await.map_err(unavailable)?;
        let me = self.identity.public();
        let held = snapshot
            .run
            .coordinator
            .member_index(&me)
            .map_or(0, |slot| snapshot.run.deposits[slot]);
        if held == 0 {
            return Ok(());
        }
        tracing::info!(
            lamports = held,
            "withdrawing from the finished run for the join deposit"
        );
        self.send(Input::Withdraw).await
    }
}
