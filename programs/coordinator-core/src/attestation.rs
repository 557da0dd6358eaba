//! Attested checkpoints: the witnesses of an epoch's last round vote for the hash of the model
//! every replica holds at the epoch's end, and a quorum of equal votes records it. A client that
//! catches up from a peer's snapshot accepts only one whose weights hash to what was attested,
//! so one lying peer cannot hand a newcomer a poisoned model.
//!
//! The hash is SHA-256 over the parameters' names and bytes in the model's order (the trainer's
//! `Replica::hash`): replicas are bitwise identical, so honest witnesses vote the same hash.

use bytemuck::{Pod, Zeroable};

use crate::error::CoordinatorError;
use crate::state::{Coordinator, MAX_WITNESSES, RunState};

type Result<T> = core::result::Result<T, CoordinatorError>;

/// The newest attested model, and the votes for the one being attested.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Attestation {
    /// The step of the attested model: the rounds `0..step` applied. Zero for none yet.
    pub step: u64,
    /// The step the votes below are for.
    pub voting_step: u64,
    /// The attested model's hash; all zero for none yet.
    pub hash: [u8; 32],
    /// Bitmap over the witness positions of round `voting_step - 1` that voted.
    pub voted: u32,
    pub _padding: [u8; 4],
    /// By witness position: the hash it voted for.
    pub votes: [[u8; 32]; MAX_WITNESSES],
}

impl Attestation {
    /// The attested model's step and hash, if one has been attested.
    pub fn attested(&self) -> Option<(u64, &[u8; 32])> {
        (self.hash != [0; 32]).then_some((self.step, &self.hash))
    }

    /// Whether witness `position` has voted for the model at `step`.
    pub fn has_voted(&self, step: u64, position: u16) -> bool {
        self.voting_step == step && position < 32 && self.voted & (1 << position) != 0
    }
}

impl Coordinator {
    /// Witness `position` of round `step - 1`, the last round before the run stopped training,
    /// attests that the model after `step` rounds hashes to `hash`. Taken between rounds only
    /// (cooldown, waiting, warmup, paused or finished), while `step` is still the run's step;
    /// once per witness. Records the attestation when a witness quorum of that round voted the
    /// same hash.
    pub fn attest(
        &mut self,
        id: [u8; 32],
        step: u64,
        position: u16,
        hash: [u8; 32],
        now: i64,
    ) -> Result<()> {
        self.check_clock(now)?;
        let state = self.run_state();
        if matches!(state, RunState::RoundTrain | RunState::RoundWitness) {
            return Err(CoordinatorError::WrongState(state));
        }
        if step != self.step {
            return Err(CoordinatorError::WrongRound {
                step,
                current: self.step,
            });
        }
        let last = step
            .checked_sub(1)
            .and_then(|last| self.held_round(last))
            .ok_or(CoordinatorError::UnknownRound(step.saturating_sub(1)))?;
        let slot = self.active_slot(&id)?;
        if last.elected(position) != Some(slot) {
            return Err(CoordinatorError::NotAnAttester);
        }
        if hash == [0; 32] {
            return Err(CoordinatorError::EmptyAttestation);
        }
        if self.checkpoint.has_voted(step, position) {
            return Err(CoordinatorError::DuplicateAttestation);
        }
        let quorum = last.quorum();
        let checkpoint = &mut self.checkpoint;
        if checkpoint.voting_step != step {
            checkpoint.voting_step = step;
            checkpoint.voted = 0;
            checkpoint.votes = [[0; 32]; MAX_WITNESSES];
        }
        checkpoint.voted |= 1 << position;
        checkpoint.votes[usize::from(position)] = hash;
        let agreeing = (0..MAX_WITNESSES)
            .filter(|&p| checkpoint.voted & (1 << p) != 0 && checkpoint.votes[p] == hash)
            .count();
        // Two different hashes cannot both reach two thirds of the same witnesses.
        if agreeing >= usize::from(quorum) {
            checkpoint.step = step;
            checkpoint.hash = hash;
        }
        self.last_update = now;
        Ok(())
    }
}
