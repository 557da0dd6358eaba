//! What a client holds for the exchange: payloads by content hash and commitments by step, for
//! the last few steps only.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use bytes::Bytes;

use super::commitment::Commitment;

/// Steps kept; older ones are dropped as new ones arrive.
pub const STEPS_KEPT: u64 = 4;
/// Commitments accepted per step: one per possible member.
const COMMITMENTS_PER_STEP: usize = demeter_coordinator::state::MAX_CLIENTS;

#[derive(Default)]
struct Step {
    payloads: HashMap<[u8; 32], Bytes>,
    /// The first valid commitment of each client; a second, different one is an equivocation.
    commitments: HashMap<[u8; 32], Commitment>,
}

/// Payloads and commitments of recent steps, shared by the HTTP server and the trainer.
#[derive(Default)]
pub struct ResultStore {
    steps: RwLock<BTreeMap<u64, Step>>,
}

/// What adding a commitment did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    New,
    Known,
    /// The client already committed to another hash for this step; the first one stands.
    Conflicting,
    /// The step is too old, or full.
    Refused,
}

impl ResultStore {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Step>> {
        self.steps
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Step>> {
        self.steps
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The step entry, creating it (and dropping steps too old to matter) when it is new;
    /// `None` for a step older than those kept.
    fn step_mut(steps: &mut BTreeMap<u64, Step>, step: u64) -> Option<&mut Step> {
        let newest = steps.last_key_value().map_or(step, |(&s, _)| s.max(step));
        let oldest_kept = newest.saturating_sub(STEPS_KEPT - 1);
        if step < oldest_kept {
            return None;
        }
        steps.retain(|&s, _| s >= oldest_kept);
        Some(steps.entry(step).or_default())
    }

    /// Keeps a payload whose hash the caller has verified.
    pub fn insert_payload(&self, step: u64, hash: [u8; 32], payload: Bytes) {
        let mut steps = self.write();
        if let Some(entry) = Self::step_mut(&mut steps, step) {
            entry.payloads.insert(hash, payload);
        }
    }

    /// A payload held for any kept step.
    pub fn payload(&self, hash: &[u8; 32]) -> Option<Bytes> {
        self.read()
            .values()
            .find_map(|step| step.payloads.get(hash).cloned())
    }

    /// Adds a commitment whose signature the caller has verified.
    pub fn add_commitment(&self, commitment: Commitment) -> Added {
        let mut steps = self.write();
        let Some(entry) = Self::step_mut(&mut steps, commitment.step) else {
            return Added::Refused;
        };
        match entry.commitments.get(&commitment.client) {
            Some(known) if known.hash == commitment.hash => Added::Known,
            Some(_) => Added::Conflicting,
            None if entry.commitments.len() >= COMMITMENTS_PER_STEP => Added::Refused,
            None => {
                entry.commitments.insert(commitment.client, commitment);
                Added::New
            }
        }
    }

    /// `client`'s commitment for `step`, if held.
    pub fn commitment(&self, step: u64, client: &[u8; 32]) -> Option<Commitment> {
        self.read()
            .get(&step)
            .and_then(|entry| entry.commitments.get(client).cloned())
    }

    /// The commitments held for `step`, by client key.
    pub fn commitments(&self, step: u64) -> Vec<Commitment> {
        let mut commitments: Vec<Commitment> = self
            .read()
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

    #[test]
    fn keeps_recent_steps_and_the_first_commitment_per_client() {
        let store = ResultStore::default();
        assert_eq!(store.add_commitment(commitment(10, 1, 1)), Added::New);
        assert_eq!(store.add_commitment(commitment(10, 1, 1)), Added::Known);
        assert_eq!(
            store.add_commitment(commitment(10, 1, 2)),
            Added::Conflicting
        );
        store.insert_payload(10, [1; 32], Bytes::from_static(b"p"));
        assert_eq!(store.payload(&[1; 32]).unwrap(), Bytes::from_static(b"p"));
        assert_eq!(store.add_commitment(commitment(13, 2, 3)), Added::New);
        assert_eq!(store.commitments(10).len(), 1, "10 is within the last four");
        assert_eq!(store.add_commitment(commitment(14, 2, 4)), Added::New);
        assert!(store.commitments(10).is_empty(), "10 fell out");
        assert!(store.payload(&[1; 32]).is_none());
        assert_eq!(store.add_commitment(commitment(9, 3, 3)), Added::Refused);
    }
}
