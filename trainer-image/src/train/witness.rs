//! A client's duties to the run beyond training: reporting as an elected witness, and showing
//! that a participant no witness quorum saw trained nothing the run can count.

use super::*;

impl<B: CoordinatorBackend> Trainer<B> {
    pub(super) async fn witness_if_elected(
        &mut self,
        state: &Coordinator,
        round: &Round,
        slot: usize,
    ) {
        let Some(position) = round.witness_position(slot) else {
            return;
        };
        // Only what it holds under the hash the coordinator holds: its own result counts too,
        // once its commitment is in.
        let mut report = WitnessReport::default();
        for (&seen, (hash, _)) in &self.work.received {
            if round.commitment(seen) == Some(hash) {
                report.insert(seen);
            }
        }
        let all_in = report.slots().count() == usize::from(round.participant_count);
        let time_is_up = state.run_state() == RunState::RoundWitness;
        if self.work.reported || round.reported & (1 << position) != 0 || !(all_in || time_is_up) {
            return;
        }
        match self
            .send(Input::Witness {
                step: round.step,
                position,
                report,
            })
            .await
        {
            Ok(()) | Err(BackendError::Rejected(_)) => self.work.reported = true,
            Err(BackendError::Unavailable(_)) => {}
        }
    }

    /// Shows the coordinator participants of `round` that no witness quorum saw, so it drops
    /// them for the epoch.
    pub(super) async fn health_check(&mut self, state: &Coordinator, round: &Round) {
        let me_active = state
            .member_index(&self.me())
            .is_some_and(|slot| state.members[slot].status() == MemberStatus::Active);
        if !me_active || round.report_count() < round.quorum() {
            return;
        }
        let unseen: Vec<[u8; 32]> = participants(state, round)
            .filter(|&(slot, _)| {
                state.members[slot].status() == MemberStatus::Active && !round.was_seen(slot)
            })
            .map(|(slot, _)| state.members[slot].id)
            .collect();
        for target in unseen {
            let _ = self
                .send(Input::HealthCheck {
                    step: round.step,
                    target,
                })
                .await;
        }
    }
}
