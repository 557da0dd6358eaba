//! What a client holds for the exchange: payloads by content hash and commitments by step, for
//! the steps near the run's current one only.
//!
//! Which steps and which signers are taken is set by the trainer from the coordinator's state
//! ([`ResultStore::follow`]), never by what peers send: a commitment from a key that is not a
//! member of the run, or for a step far from the run's, is refused without touching anything
//! held, so no stranger can evict a member's result or push a replica off its round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::RwLock;

use bytes::Bytes;
use demeter_coordinator_core::state::ROUNDS_KEPT;

use super::commitment::Commitment;

/// Steps after the run's current one that peers may already announce: a peer whose view of the
/// coordinator is one state update ahead of ours.
pub const STEPS_AHEAD: u64 = 1;

#[derive(Default)]
struct Step {
    payloads: HashMap<[u8; 32], Bytes>,
    /// The first valid commitment of each client; a second, different one is an equivocation.
    commitments: HashMap<[u8; 32], Commitment>,
}

/// The steps and signers the store takes, from the coordinator's state.
#[derive(Default)]
struct Admission {
    /// Steps `oldest..=newest` are kept: the rounds the coordinator still holds (a lagging
    /// replica applies them) up to [`STEPS_AHEAD`] past the current one.
    oldest: u64,
    newest: u64,
    /// The run's members; empty until the first [`ResultStore::follow`], so nothing is taken
    /// before the client knows the run.
    members: HashSet<[u8; 32]>,
}

impl Admission {
    fn admits_step(&self, step: u64) -> bool {
        (self.oldest..=self.newest).contains(&step)
    }
}

#[derive(Default)]
struct Inner {
    steps: BTreeMap<u64, Step>,
    admission: Admission,
}

/// Payloads and commitments of recent steps, shared by the HTTP server and the trainer.
#[derive(Default)]
pub struct ResultStore {
    inner: RwLock<Inner>,
}

/// What adding a commitment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    New,
    Known,
    /// The client already committed to another hash for this step; the first one stands.
    Conflicting,
    /// The signer is not a member of the run.
    NotMember,
    /// The step is not near the run's current step (too old, or too far ahead).
    OutOfWindow,
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

    /// Follows the run as the coordinator reports it: `run_step` is its current step and
    /// `members` its members' keys. Steps older than the rounds it still holds are dropped.
    pub fn follow(&self, run_step: u64, members: impl IntoIterator<Item = [u8; 32]>) {
        let mut inner = self.write();
        let oldest = run_step.saturating_sub(ROUNDS_KEPT as u64);
        inner.admission = Admission {
            oldest,
            newest: run_step.saturating_add(STEPS_AHEAD),
            members: members.into_iter().collect(),
        };
        inner.steps.retain(|&step, _| step >= oldest);
    }

    /// Keeps a payload whose hash the caller has verified (against a commitment this store
    /// took, or its own), unless its step has been dropped already.
    pub fn insert_payload(&self, step: u64, hash: [u8; 32], payload: Bytes) {
        let mut inner = self.write();
        if step >= inner.admission.oldest {
            let entry = inner.steps.entry(step).or_default();
            entry.payloads.insert(hash, payload);
        }
    }

    /// A payload held for any kept step.
    pub fn payload(&self, hash: &[u8; 32]) -> Option<Bytes> {
        self.read()
            .steps
            .values()
            .find_map(|step| step.payloads.get(hash).cloned())
    }

    /// Adds a commitment whose signature the caller has verified.
    pub fn add_commitment(&self, commitment: Commitment) -> Added {
        let mut inner = self.write();
        if !inner.admission.members.contains(&commitment.client) {
            return Added::NotMember;
        }
        if !inner.admission.admits_step(commitment.step) {
            return Added::OutOfWindow;
        }
        let entry = inner.steps.entry(commitment.step).or_default();
        match entry.commitments.get(&commitment.client) {
            Some(known) if known.hash == commitment.hash => Added::Known,
            Some(_) => Added::Conflicting,
            // One commitment per member and step: the members bound what a step holds.
            None => {
                entry.commitments.insert(commitment.client, commitment);
                Added::New
            }
        }
    }

    /// `client`'s commitment for `step`, if held.
    pub fn commitment(&self, step: u64, client: &[u8; 32]) -> Option<Commitment> {
        self.read()
            .steps
            .get(&step)
            .and_then(|entry| entry.commitments.get(client).cloned())
    }

    /// The commitments held for `step`, by client key.
    pub fn commitments(&self, step: u64) -> Vec<Commitment> {
        let mut commitments: Vec<Commitment> = self
            .read()
            .steps
            .get(&step)
            .map(|entry| entry.commitments.values().cloned().collect())
            .unwrap_or_default();
        commitments.sort_by_key(|c| c.client);
        commitments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commitment(step: u64, client: u8, hash: u8) -> Commitment {
        Commitment {
            step,
            client: [client; 32],
            hash: [hash; 32],
            signature: vec![],
        }
    }

    fn members() -> impl Iterator<Item = [u8; 32]> {
        (1..=3).map(|client| [client; 32])
    }

    #[test]
    fn keeps_the_runs_recent_steps_and_the_first_commitment_per_member() {
        let store = ResultStore::default();
        store.follow(10, members());
        assert_eq!(store.add_commitment(commitment(10, 1, 1)), Added::New);
        assert_eq!(store.add_commitment(commitment(10, 1, 1)), Added::Known);
        assert_eq!(
            store.add_commitment(commitment(10, 1, 2)),
            Added::Conflicting
        );
        store.insert_payload(10, [1; 32], Bytes::from_static(b"p"));
        assert_eq!(store.payload(&[1; 32]).unwrap(), Bytes::from_static(b"p"));
        assert_eq!(store.add_commitment(commitment(11, 2, 3)), Added::New);
        assert_eq!(
            store.add_commitment(commitment(12, 2, 3)),
            Added::OutOfWindow,
            "two steps ahead of the run"
        );

        store.follow(10 + ROUNDS_KEPT as u64, members());
        assert_eq!(store.commitments(10).len(), 1, "10 is still held");
        store.follow(11 + ROUNDS_KEPT as u64, members());
        assert!(store.commitments(10).is_empty(), "10 fell out");
        assert!(store.payload(&[1; 32]).is_none());
        assert_eq!(
            store.add_commitment(commitment(9, 3, 3)),
            Added::OutOfWindow
        );
    }

    #[test]
    fn nothing_a_stranger_sends_is_kept_or_evicts_a_member() {
        let store = ResultStore::default();
        assert_eq!(
            store.add_commitment(commitment(0, 1, 1)),
            Added::NotMember,
            "nothing is taken before the run is known"
        );
        store.follow(5, members());
        assert_eq!(store.add_commitment(commitment(5, 1, 1)), Added::New);
        for step in [6, 7, 8, u64::MAX] {
            assert_eq!(
                store.add_commitment(commitment(step, 9, 9)),
                Added::NotMember
            );
        }
        for step in [8, 100, u64::MAX] {
            assert_eq!(
                store.add_commitment(commitment(step, 2, 2)),
                Added::OutOfWindow,
                "a member, far ahead"
            );
        }
        assert_eq!(store.commitments(5), vec![commitment(5, 1, 1)]);
        assert!(store.commitments(u64::MAX).is_empty());
    }
}
