//! Verifying: every replica screens each round's counted results as it applies them, scores
//! the run's seeded share of them against data, and the round's verifiers (its witnesses) send
//! a verdict against each result the screens or the scores flag. The screens need only the
//! decoded selections; a score costs four forward passes of two samples, which is why a run
//! scores one in `score_one_in` (docs/verification.md says what each catches and what not).

use super::*;
use crate::demo::SparseUpdate;
use crate::scoring::{Probe, ScoreWindows, score};
use crate::screening::{Picks, Screened, Streaks, screen};

/// The scores of past rounds that senders are judged over, for the run's `score_one_in`.
pub(super) struct ScoreMemory {
    one_in: u16,
    windows: ScoreWindows,
}

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
        self.metrics.count_flagged(&findings);
        findings
    }

    /// Scores `round`'s counted `results` (by member slot, decoded) that the round chose for
    /// scoring, on the replica before it applies them (the model they were trained from), and
    /// judges their senders over the window. Returns the findings by member slot. A client
    /// that joined or restarted late holds fewer scores than the rest and judges fewer senders
    /// until its window fills; the verdict quorum does not need it.
    pub(super) fn score_round(
        &mut self,
        state: &Coordinator,
        round: &Round,
        results: &[(usize, SparseUpdate)],
    ) -> Vec<(usize, Finding)> {
        let one_in = state.config.score_one_in;
        if one_in == 0 {
            self.scores = None;
            return Vec::new();
        }
        let started = Instant::now();
        let lr = self.schedule(state).lr(round.step);
        let scores: Vec<(usize, f64)> = tokio::task::block_in_place(|| {
            results
                .iter()
                .filter(|(slot, _)| round.scored(*slot, one_in))
                .filter_map(|(slot, update)| {
                    let probe = Probe::of(&self.dataset, &self.plan, round.assignment(*slot)?)?;
                    Some((*slot, score(&self.replica, &self.demo, update, lr, &probe)))
                })
                .collect()
        });
        let memory = match &mut self.scores {
            Some(memory) if memory.one_in == one_in => memory,
            // A new share of scored results: scores of the old share judge nobody.
            memory => memory.insert(ScoreMemory {
                one_in,
                windows: ScoreWindows::new(one_in),
            }),
        };
        let findings = memory.windows.judge(round.step, &scores);
        self.metrics.time("score", started.elapsed());
        self.metrics.results_scored.inc_by(scores.len() as u64);
        self.metrics.count_flagged(&findings);
        findings
    }

    /// As one of `round`'s verifiers still in the epoch, sends a verdict against each result
    /// in `findings` but this client's own: one per target, so the first finding of a result
    /// that is flagged twice.
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
        let mut judged = BTreeSet::new();
        for (slot, finding) in findings {
            if slot == my_slot || !judged.insert(slot) {
                continue;
            }
            let target = state.members[slot].id;
            tracing::warn!(
                step = round.step,
                target = %crate::identity::to_base58(&target),
                finding = finding.name(),
                "a result failed the screens or its scores fell short: sending a verdict"
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
