//! A coordinator that cannot be reached, as the client's loop lives with it.

use std::time::{Duration, Instant};

use super::POLL;
use super::backend::BackendError;

/// A coordinator that cannot be reached: the client backs off between tries (up to
/// [`Outage::MAX_BACKOFF`]) and says so once when it starts, then every
/// [`Outage::LOG_EVERY`], and once when it ends, instead of a line per poll.
#[derive(Default)]
pub(super) struct Outage {
    started: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u32,
}

impl Outage {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    const LOG_EVERY: Duration = Duration::from_secs(30);

    pub(super) async fn failed(&mut self, error: &BackendError) {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.failures += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Self::LOG_EVERY)
        {
            self.last_logged = Some(now);
            tracing::warn!(
                %error,
                tries = self.failures,
                seconds = started.elapsed().as_secs(),
                "waiting for the coordinator"
            );
        }
        let backoff = POLL.saturating_mul(1 << self.failures.min(6));
        tokio::time::sleep(backoff.min(Self::MAX_BACKOFF)).await;
    }

    pub(super) fn ended(&mut self) {
        if let Some(started) = self.started.take() {
            tracing::info!(
                seconds = started.elapsed().as_secs(),
                "the coordinator is reachable again"
            );
        }
        *self = Self::default();
    }
}
