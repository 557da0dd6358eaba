//! Verifying: every replica screens each round's counted results as it applies them, and the
//! round's verifiers (its witnesses) send a verdict against each result the screens flag. The
//! screens need only the decoded selections, so verifying costs no forward pass
//! (docs/verification.md says what they catch and what they do not).

use super::*;
use crate::demo::SparseUpdate;
use crate::screening::{Picks, Screened, Streaks, screen};

/// What the screen of the last applied round keeps for the next: each result's picks, by
/// member slot, for the stale screen.
#[derive(Default)]
pub(super) struct ScreenMemory {
    /// The round the picks are of.
    step: Option<u64>,
    picks: BTreeMap<usize, Picks>,
    /// How long each participant's result has gone against the round's, by member slot.
    contrary: Streaks<usize>,
}

impl<B: CoordinatorBackend> Trainer<B> {
    /// Screens `round`'s counted `results` (by member slot, decoded) and remembers their picks
    /// for the next round's screen. Returns the findings by member slot.
    pub(super) fn screen_round(
        &mut self,
        round: &Round,
        results: &[(usize, SparseUpdate)],
    ) -> Vec<(usize, Finding)> {
        let started = Instant::now();
        // In commit order, so a copy is flagged and never the original it copied.
        let mut order: Vec<usize> = (0..results.len()).collect();
        order.sort_by_key(|&index| round.commit_order[results[index].0]);
        let updates: Vec<&SparseUpdate> = order.iter().map(|&index| &results[index].1).collect();
        let previous_round = round.step.checked_sub(1) == self.screens.step;
        let previous: Vec<Option<&Picks>> = order
            .iter()
            .map(|&index| {
                previous_round
                    .then(|| self.screens.picks.get(&results[index].0))
                    .flatten()
            })
            .collect();
        let Screened { flags, picks, .. } = screen(&updates, &previous);
        let slot_of = |position: usize| results[order[position]].0;
        // Streaks run over consecutive rounds only.
        let mut contrary = match previous_round {
            true => std::mem::take(&mut self.screens.contrary),
            false => Streaks::default(),
        };
        let judged = contrary.judge(
            flags
                .iter()
                .enumerate()
                .map(|(position, flags)| (slot_of(position), *flags)),
        );
        let findings: Vec<(usize, Finding)> = judged
            .iter()
            .filter_map(|(slot, flags)| Some((*slot, flags.finding(slot_of)?)))
            .collect();
        self.screens = ScreenMemory {
            step: Some(round.step),
            picks: order
                .iter()
                .map(|&index| results[index].0)
                .zip(picks)
                .collect(),
            contrary,
        };
        self.metrics.time("verify", started.elapsed());
        for (_, finding) in &findings {
            self.metrics
                .results_flagged
                .with_label_values(&[finding.name()])
                .inc();
        }
        findings
    }

    /// As one of `round`'s verifiers still in the epoch, sends a verdict against each result
    /// in `findings` but this client's own.
    pub(super) async fn send_verdicts(
        &mut self,
        state: &Coordinator,
        round: &Round,
        findings: Vec<(usize, Finding)>,
    ) {
        let me = self.me();
        let Some(my_slot) = state.member_index(&me) else {
            return;
        };
        let Some(position) = round.witness_position(my_slot) else {
            return;
        };
        if state.members[my_slot].status() != MemberStatus::Active {
            return;
        }
        for (slot, finding) in findings {
            if slot == my_slot {
                continue;
            }
            let target = state.members[slot].id;
            tracing::warn!(
                step = round.step,
                target = %crate::identity::to_base58(&target),
                finding = finding.name(),
                "a result failed the screens: sending a verdict"
            );
            let verdict = Input::Verdict {
                step: round.step,
                position,
                target,
                finding,
            };
            if self.send(verdict).await.is_ok() {
                self.metrics.verdicts_sent.inc();
            }
        }
    }
}
