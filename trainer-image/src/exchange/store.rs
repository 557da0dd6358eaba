//! What a client holds for the exchange: payloads by content hash, and the momentum its own
//! results were computed from by its SHA-256 (for spot checks), for the steps near the run's
//! current one only.
//!
//! Nothing a peer sends is kept unasked: the trainer inserts a payload only after it fetched it
//! by a hash the coordinator holds as a participant's commitment and checked every byte
//! against it, and which steps are kept is set from the coordinator's state
//! ([`ResultStore::follow`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use bytes::Bytes;
use demeter_coordinator_core::state::ROUNDS_KEPT;

/// Steps after the run's current one that are kept already: a replica whose view of the
/// coordinator is one state update behind a peer's.
pub const STEPS_AHEAD: u64 = 1;

/// Blobs by step, then by SHA-256.
type ByStep = BTreeMap<u64, HashMap<[u8; 32], Bytes>>;

#[derive(Default)]
struct Inner {
    /// Payloads by step, then by content hash.
    steps: ByStep,
    /// This client's momentum by step, then by SHA-256: what its results of the step were
    /// computed from, which a verifier recomputes them from.
    momenta: ByStep,
    /// Steps `oldest..=newest` are kept: the rounds the coordinator still holds (a lagging
    /// replica applies them) up to [`STEPS_AHEAD`] past the current one. Nothing is kept
    /// before the first [`ResultStore::follow`].
    window: Option<(u64, u64)>,
}

impl Inner {
    /// Keeps `bytes` of `step` under `hash` in `blobs` (one of this store's maps) if the step
    /// is in the window.
    fn keep(
        window: Option<(u64, u64)>,
        blobs: &mut ByStep,
        step: u64,
        hash: [u8; 32],
        bytes: Bytes,
    ) {
        if window.is_some_and(|(oldest, newest)| (oldest..=newest).contains(&step)) {
            blobs.entry(step).or_default().insert(hash, bytes);
        }
    }

    /// The blob with `hash` in `blobs`, of any kept step.
    fn find(blobs: &ByStep, hash: &[u8; 32]) -> Option<Bytes> {
        blobs.values().find_map(|step| step.get(hash).cloned())
    }
}

/// Payloads of recent steps, shared by the HTTP server and the trainer.
#[derive(Default)]
pub struct ResultStore {
    inner: RwLock<Inner>,
}

impl ResultStore {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows the run as the coordinator reports it: `run_step` is its current step. Steps
    /// older than the rounds it still holds are dropped.
    pub fn follow(&self, run_step: u64) {
        let mut inner = self.write();
        let oldest = run_step.saturating_sub(ROUNDS_KEPT as u64);
        inner.window = Some((oldest, run_step.saturating_add(STEPS_AHEAD)));
        inner.steps.retain(|&step, _| step >= oldest);
        inner.momenta.retain(|&step, _| step >= oldest);
    }

    /// Keeps a payload of `step` whose bytes the caller has checked against `hash`, a
    /// commitment the coordinator holds (or its own); a step outside the window is not kept.
    pub fn insert_payload(&self, step: u64, hash: [u8; 32], payload: Bytes) {
        let inner = &mut *self.write();
        Inner::keep(inner.window, &mut inner.steps, step, hash, payload);
    }

    /// Keeps this client's own momentum of `step` (whose SHA-256 is `hash`, the commitment its
    /// result of the step carries), to serve while the round's verifiers may ask for it; a step
    /// outside the window is not kept.
    pub fn insert_momentum(&self, step: u64, hash: [u8; 32], momentum: Bytes) {
        let inner = &mut *self.write();
        Inner::keep(inner.window, &mut inner.momenta, step, hash, momentum);
    }

    /// A momentum held for any kept step.
    pub fn momentum(&self, hash: &[u8; 32]) -> Option<Bytes> {
        Inner::find(&self.read().momenta, hash)
    }

    /// A payload held for any kept step.
    pub fn payload(&self, hash: &[u8; 32]) -> Option<Bytes> {
        Inner::find(&self.read().steps, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn keeps_the_runs_recent_steps_only() {
        let store = ResultStore::default();
        store.insert_payload(0, [9; 32], bytes("early"));
        assert!(
            store.payload(&[9; 32]).is_none(),
            "nothing is kept before the run is known"
        );
        store.follow(10);
        store.insert_payload(10, [1; 32], bytes("p"));
        store.insert_payload(11, [2; 32], bytes("next"));
        for far in [12, 5, u64::MAX] {
            store.insert_payload(far, [3; 32], bytes("far"));
        }
        assert_eq!(store.payload(&[1; 32]), Some(bytes("p")));
        assert_eq!(store.payload(&[2; 32]), Some(bytes("next")));
        assert!(store.payload(&[3; 32]).is_none(), "outside the window");

        store.follow(10 + ROUNDS_KEPT as u64);
        assert!(store.payload(&[1; 32]).is_some(), "10 is still held");
        store.follow(11 + ROUNDS_KEPT as u64);
        assert!(store.payload(&[1; 32]).is_none(), "10 fell out");
        assert!(store.payload(&[2; 32]).is_some());
    }

    #[test]
    fn momenta_are_kept_apart_from_payloads_for_the_same_window() {
        let store = ResultStore::default();
        store.follow(10);
        store.insert_momentum(10, [4; 32], bytes("momentum"));
        store.insert_momentum(20, [5; 32], bytes("far"));
        assert_eq!(store.momentum(&[4; 32]), Some(bytes("momentum")));
        assert!(store.payload(&[4; 32]).is_none(), "not served as a payload");
        assert!(store.momentum(&[5; 32]).is_none(), "outside the window");
        store.follow(11 + ROUNDS_KEPT as u64);
        assert!(store.momentum(&[4; 32]).is_none(), "10 fell out");
    }
}
