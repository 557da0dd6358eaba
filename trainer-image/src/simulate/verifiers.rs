//! What a simulation's verifiers find: every round's results screened by their shape
//! (`screening`) and scored against data (`scoring`), as any replica could, with counts of what
//! was flagged, for whom and from when, and what honest and dishonest results measured.

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::demo::{Demo, SparseUpdate};
use crate::replica::Replica;
use crate::scoring::{Probe, ScoreWindows, score};
use crate::screening::{Picks, Screened, Streaks, screen};

/// Whom a check flagged, in how many of the rounds it checked them, and from when.
#[derive(Clone, Debug, Default)]
pub struct Flagged {
    /// Rounds seen.
    pub rounds: u64,
    /// Rounds in which each worker's result was checked, by worker (every round for the
    /// screens; the rounds it was chosen in for sampled scores).
    pub checked: Vec<u64>,
    /// Rounds in which each worker was flagged, by worker.
    pub by_worker: Vec<u64>,
    /// The first round (from 1) each worker was flagged in: a verdict quorum ejects it in the
    /// round after.
    pub first: Vec<Option<u64>>,
}

impl Flagged {
    /// Counts one more round of `workers` workers, every one checked, in which `flagged` were
    /// flagged.
    fn round(&mut self, workers: usize, flagged: impl IntoIterator<Item = usize>) {
        self.round_of(workers, 0..workers, flagged);
    }

    /// Counts one more round of `workers` workers, in which `checked` were checked and
    /// `flagged` (of those) flagged.
    fn round_of(
        &mut self,
        workers: usize,
        checked: impl IntoIterator<Item = usize>,
        flagged: impl IntoIterator<Item = usize>,
    ) {
        self.rounds += 1;
        self.checked.resize(workers, 0);
        self.by_worker.resize(workers, 0);
        self.first.resize(workers, None);
        for worker in checked {
            self.checked[worker] += 1;
        }
        for worker in flagged {
            self.by_worker[worker] += 1;
            self.first[worker].get_or_insert(self.rounds);
        }
    }

    /// "F of N": the rounds flagged of `workers`, of all their rounds checked.
    pub fn share(&self, workers: Range<usize>) -> String {
        let flagged: u64 = self.by_worker[workers.clone()].iter().sum();
        let checked: u64 = self.checked[workers].iter().sum();
        format!("{flagged} of {checked}")
    }

    /// The round by which every one of `workers` had been flagged, if all were.
    pub fn all_flagged_by(&self, workers: Range<usize>) -> Option<u64> {
        self.first[workers]
            .iter()
            .try_fold(0, |last, first| Some(last.max((*first)?)))
    }
}

/// What the screens found over a simulation.
#[derive(Clone, Debug, Default)]
pub struct ScreenCounts {
    /// Results flagged (a flag a verifier acts on: a contrary sign once it persisted).
    pub flags: Flagged,
    /// The largest share of picks two honest results of one round had in common.
    pub honest_overlap_max: f64,
    /// The largest share of picks an honest result had in common with its sender's previous.
    pub honest_repeat_max: f64,
    /// Time spent screening (the decoded results: a replica decodes them to apply them anyway).
    pub time: Duration,
    /// The largest norm of an honest result over its round's median.
    pub honest_norm_max: f64,
    /// The smallest share of an honest result's signs that agreed with the rest of its round.
    pub honest_agreement_min: Option<f64>,
    /// The smallest norm ratio of a dishonest result (what the outsized screen must stay under).
    pub dishonest_norm_min: Option<f64>,
    /// The largest sign agreement of a dishonest result (what the contrary screen must stay
    /// above).
    pub dishonest_agreement_max: Option<f64>,
}

/// What scoring against data found over a simulation.
#[derive(Clone, Debug, Default)]
pub struct ScoreCounts {
    /// Senders flagged (their mean over the window fell short).
    pub flags: Flagged,
    /// Every honest result's score, summed, and how many there were.
    pub honest_sum: f64,
    pub honest_scored: u64,
    /// Honest results that scored zero or less (why one round is never enough).
    pub honest_not_positive: u64,
    pub dishonest_sum: f64,
    pub dishonest_scored: u64,
    /// Time spent scoring (applying each result alone and measuring four losses).
    pub time: Duration,
}

impl ScoreCounts {
    pub fn honest_mean(&self) -> Option<f64> {
        (self.honest_scored > 0).then(|| self.honest_sum / self.honest_scored as f64)
    }

    pub fn dishonest_mean(&self) -> Option<f64> {
        (self.dishonest_scored > 0).then(|| self.dishonest_sum / self.dishonest_scored as f64)
    }
}

/// The verifiers' state between rounds and what they found.
#[derive(Default)]
pub(super) struct Verifiers {
    pub(super) screens: ScreenCounts,
    /// What every worker's result of the round before picked, for the stale screen.
    previous_picks: Vec<Option<Picks>>,
    /// How long each worker's result has gone against the round's.
    contrary: Streaks<usize>,
    pub(super) scores: ScoreCounts,
    /// Made at the first scored round, for the run's share of scored results.
    windows: Option<ScoreWindows>,
}

impl Verifiers {
    /// Screens a round's results (the first `honest` are honest workers') and counts what is
    /// flagged and what honest and dishonest results measured.
    pub(super) fn screen(&mut self, results: &[&SparseUpdate], honest: usize) {
        let previous: Vec<Option<&Picks>> =
            self.previous_picks.iter().map(Option::as_ref).collect();
        let started = Instant::now();
        let Screened {
            flags,
            measures,
            picks,
        } = screen(results, &previous);
        let judged = self.contrary.judge(flags.iter().copied().enumerate());
        let counts = &mut self.screens;
        counts.time += started.elapsed();
        counts.flags.round(
            results.len(),
            judged
                .iter()
                .filter(|(_, flags)| flags.any())
                .map(|(worker, _)| *worker),
        );
        for (index, own) in picks[..honest].iter().enumerate() {
            for other in &picks[..index] {
                counts.honest_overlap_max = counts.honest_overlap_max.max(own.overlap(other));
            }
            if let Some(Some(before)) = self.previous_picks.get(index) {
                counts.honest_repeat_max = counts.honest_repeat_max.max(own.overlap(before));
            }
        }
        let (honest_measures, dishonest_measures) = measures.split_at(honest.min(measures.len()));
        let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for m in honest_measures {
            counts.honest_norm_max = counts.honest_norm_max.max(m.norm_ratio);
            counts.honest_agreement_min = min(counts.honest_agreement_min, m.agreement);
        }
        for m in dishonest_measures {
            counts.dishonest_norm_min = min(counts.dishonest_norm_min, Some(m.norm_ratio));
            counts.dishonest_agreement_max = max(counts.dishonest_agreement_max, m.agreement);
        }
        self.previous_picks = picks.into_iter().map(Some).collect();
    }

    /// Scores round `step`'s results that have a probe (those chosen for scoring this round,
    /// one in `one_in`) on `replica` (the round's common model), each against its sender's
    /// probe, and judges the senders scored over the window.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn score(
        &mut self,
        step: u64,
        one_in: u16,
        replica: &Replica,
        demo: &Demo,
        results: &[&SparseUpdate],
        probes: &[Option<Probe>],
        lr: f64,
        honest: usize,
    ) {
        let started = Instant::now();
        let scores: Vec<(usize, f64)> = results
            .iter()
            .zip(probes)
            .enumerate()
            .filter_map(|(worker, (result, probe))| {
                Some((worker, score(replica, demo, result, lr, probe.as_ref()?)))
            })
            .collect();
        let windows = self
            .windows
            .get_or_insert_with(|| ScoreWindows::new(one_in));
        let flagged = windows.judge(step, &scores);
        let counts = &mut self.scores;
        counts.time += started.elapsed();
        counts.flags.round_of(
            results.len(),
            scores.iter().map(|(worker, _)| *worker),
            flagged.iter().map(|(worker, _)| *worker),
        );
        for &(worker, score) in &scores {
            if worker < honest {
                counts.honest_sum += score;
                counts.honest_scored += 1;
                counts.honest_not_positive += u64::from(score <= 0.0);
            } else {
                counts.dishonest_sum += score;
                counts.dishonest_scored += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_count_rounds_per_worker_and_the_first_round() {
        let mut flags = Flagged::default();
        flags.round(3, [2]);
        flags.round(3, []);
        flags.round(3, [1, 2]);
        flags.round_of(3, [0, 2], [2]);
        assert_eq!(flags.checked, [4, 3, 4]);
        assert_eq!(flags.by_worker, [0, 1, 3]);
        assert_eq!(flags.first, [None, Some(3), Some(1)]);
        assert_eq!(
            flags.share(1..3),
            "4 of 7",
            "of the rounds each was checked in"
        );
        assert_eq!(
            flags.all_flagged_by(1..3),
            Some(3),
            "by the later first flag"
        );
        assert_eq!(flags.all_flagged_by(0..3), None, "worker 0 never flagged");
    }
}
