//! A run's coordinator inside this process: the state machine behind a lock, shared by any
//! number of clients, each with its own [`InMemory`] backend. It is what the centralized server
//! does minus the sockets and the state file: inputs are applied as the server applies them,
//! and the time-outs are applied whenever a client waits for news, as clients crank a run on
//! chain. For testing the client loop without a server or a chain.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use demeter_coordinator_core::{Config, Coordinator, CoordinatorError, Input};
use tokio::sync::watch;

use super::backend::{BackendError, CoordinatorBackend};
use crate::central::Rejection;
use crate::central::server::{random_seed, unix_now};
use crate::identity::Identity;

/// One run, held in memory.
#[derive(Clone)]
pub struct InMemoryRun {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<Box<Coordinator>>,
    published: watch::Sender<Arc<Coordinator>>,
}

impl InMemoryRun {
    /// A new run named `run_id`, open to any client.
    pub fn new(run_id: [u8; 32], config: Config) -> Result<Self, CoordinatorError> {
        let mut state: Box<Coordinator> = bytemuck::zeroed_box();
        state.init(run_id, config, unix_now())?;
        let published = watch::Sender::new(snapshot(&state));
        Ok(Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                published,
            }),
        })
    }

    /// The run as it is now.
    pub fn state(&self) -> Arc<Coordinator> {
        self.shared.published.borrow().clone()
    }

    /// A backend for the client with `identity`.
    pub fn client(&self, identity: Arc<Identity>) -> InMemory {
        let changes = self.shared.published.subscribe();
        InMemory {
            run: self.clone(),
            identity,
            last: self.state(),
            changes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Box<Coordinator>> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` and publishes the state if it changed anything.
    fn update(
        &self,
        change: impl FnOnce(&mut Coordinator) -> Result<(), CoordinatorError>,
    ) -> Result<(), CoordinatorError> {
        let mut state = self.lock();
        change(&mut state)?;
        if **self.shared.published.borrow() != **state {
            self.shared.published.send_replace(snapshot(&state));
        }
        Ok(())
    }

    /// Applies the time-outs that are due, each tick with a fresh seed, as the server does (and,
    /// like it, at most a few per call: every tick moves the run on or finds nothing due).
    fn apply_time_outs(&self) {
        for _ in 0..TICKS_PER_CALL {
            let seed = match random_seed() {
                Ok(seed) => seed,
                Err(error) => {
                    tracing::error!(%error, "no seed for the next round");
                    return;
                }
            };
            match self.update(|state| state.tick(unix_now(), &seed).map(drop)) {
                Ok(()) => {}
                Err(CoordinatorError::NothingDue) => return,
                Err(error) => {
                    tracing::error!(%error, "tick failed");
                    return;
                }
            }
        }
    }
}

/// Ticks applied per wait at most: enough for an armed transition and the one after it.
const TICKS_PER_CALL: usize = 8;

/// One client's view of an [`InMemoryRun`].
pub struct InMemory {
    run: InMemoryRun,
    identity: Arc<Identity>,
    last: Arc<Coordinator>,
    changes: watch::Receiver<Arc<Coordinator>>,
}

impl CoordinatorBackend for InMemory {
    fn state(&self) -> Arc<Coordinator> {
        self.last.clone()
    }

    async fn changed(&mut self, timeout: Duration) -> Result<Arc<Coordinator>, BackendError> {
        self.run.apply_time_outs();
        let before = self.last.clone();
        let newer = self.changes.wait_for(|state| **state != *before);
        if let Ok(Ok(state)) = tokio::time::timeout(timeout, newer).await {
            self.last = state.clone();
        } else {
            self.last = self.run.state();
        }
        Ok(self.last.clone())
    }

    async fn send(&mut self, input: Input) -> Result<(), BackendError> {
        let signer = self.identity.public();
        let seed = if input.needs_seed() {
            random_seed().map_err(|error| BackendError::Unavailable(error.to_string()))?
        } else {
            [0; 32]
        };
        self.run
            .update(|state| state.apply(signer, &input, unix_now(), &seed))
            .map_err(|error| {
                BackendError::Rejected(Rejection {
                    code: error.code(),
                    message: error.to_string(),
                })
            })?;
        self.last = self.run.state();
        Ok(())
    }
}

/// A copy of the state for readers, made on the heap (it is too big for a stack).
fn snapshot(state: &Coordinator) -> Arc<Coordinator> {
    Arc::from(
        Coordinator::boxed_from_bytes(bytemuck::bytes_of(state))
            .expect("a state's own bytes are a state"),
    )
}
