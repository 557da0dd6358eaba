//! Per-run backoff after consecutive failures: one type for the reconcile's errors and for the
//! chain sync's, each run keyed by namespace and name. The wait doubles from one second with
//! each failure, to 256 s from the ninth on, and a success forgets the run's failures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A run: its namespace and name.
pub type RunKey = (String, String);

/// No wait is longer, whatever the count.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The wait after `failures` consecutive failures: 1 s, 2 s, 4 s, ... 256 s.
pub fn wait_after(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(9).saturating_sub(1)).min(MAX_WAIT)
}

/// Consecutive failures per run, and when each run may be tried again.
#[derive(Debug, Default)]
pub struct Backoff {
    runs: Mutex<HashMap<RunKey, (u32, Instant)>>,
}

impl Backoff {
    /// Counts a failure of `run`; returns its consecutive failures and the wait before the
    /// next try.
    pub fn failed(&self, run: RunKey) -> (u32, Duration) {
        let mut runs = self.runs.lock().expect("backoff lock");
        let entry = runs.entry(run).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        let wait = wait_after(entry.0);
        entry.1 = Instant::now() + wait;
        (entry.0, wait)
    }

    /// Forgets `run`'s failures: it succeeded, or it is gone.
    pub fn forget(&self, run: &RunKey) {
        self.runs.lock().expect("backoff lock").remove(run);
    }

    /// How long until `run` may be tried again; `None`: now.
    pub fn remaining(&self, run: &RunKey) -> Option<Duration> {
        let runs = self.runs.lock().expect("backoff lock");
        let (_, retry_at) = runs.get(run)?;
        let wait = retry_at.saturating_duration_since(Instant::now());
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str) -> RunKey {
        ("ml".into(), name.into())
    }

    #[test]
    fn waits_double_up_to_256_seconds() {
        let waits: Vec<u64> = (1..=11).map(|n| wait_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        assert!(wait_after(u32::MAX) <= MAX_WAIT);
    }

    #[test]
    fn each_run_counts_its_own_failures_until_it_succeeds() {
        let backoff = Backoff::default();
        assert_eq!(backoff.remaining(&run("a")), None);
        assert_eq!(backoff.failed(run("a")).0, 1);
        assert_eq!(backoff.failed(run("a")), (2, Duration::from_secs(2)));
        assert_eq!(backoff.failed(run("b")).0, 1, "another run is not slowed");
        let remaining = backoff.remaining(&run("a")).unwrap();
        assert!(remaining > Duration::from_secs(1) && remaining <= Duration::from_secs(2));
        backoff.forget(&run("a"));
        assert_eq!(backoff.remaining(&run("a")), None);
        assert_eq!(backoff.failed(run("a")).0, 1, "counted afresh");
    }
}
