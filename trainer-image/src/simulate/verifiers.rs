//! What a simulation's verifiers find: every round's results screened by their shape
//! (`screening`), scored against data (`scoring`) and recomputed from their senders' momenta
//! (spot checks), as any replica could, with counts of what was flagged, for whom and from
//! when, and what honest and dishonest results measured; and what the simulation hands them.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use demeter_coordinator_core::shuffle::{mix, one_in};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

use super::{LocalOutput, Simulation, WorkerOptimizer, payloads, spot_checked};
use crate::demo::{Demo, SparseUpdate};
use crate::payload;
use crate::replica::Replica;
use crate::scoring::{Probe, ScoreWindows, score};
use crate::screening::{Picks, Screened, Streaks, screen};
use crate::spot_check::{Chain, Recompute, Tolerance, recompute};

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

/// What exact spot checks found over a simulation.
#[derive(Clone, Debug, Default)]
pub struct SpotCheckCounts {
    /// Results flagged: recomputed to other bytes, a momentum that is not the committed one,
    /// or a commitment that is not what the sender's recomputed step before left.
    pub flags: Flagged,
    /// Honest results recomputed, and how many of them matched bit for bit.
    pub honest_recomputed: u64,
    pub honest_matched: u64,
    /// Results recomputed (their senders' momenta fetched), and the momentum bytes fetched, for
    /// one verifier of each.
    pub recomputes: u64,
    pub bytes: u64,
    /// Time spent recomputing (one verifier's).
    pub time: Duration,
}

/// A result a round spot-checks: its sender and the batch it was assigned (inputs and targets).
pub(super) struct SpotCheck {
    pub(super) worker: usize,
    pub(super) batch: (Tensor, Tensor),
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
    pub(super) spot_checks: SpotCheckCounts,
    /// By worker, its last recomputed round and the momentum its recompute left: what its
    /// next result must start from.
    chains: Vec<Option<(u64, Chain)>>,
}

impl Verifiers {
    /// Screens a round's counted results (by worker, none from an ejected one; the first
    /// `honest` workers are honest), counts what is flagged and what honest and dishonest
    /// results measured, and returns the workers flagged.
    pub(super) fn screen(
        &mut self,
        results: &[Option<&SparseUpdate>],
        honest: usize,
    ) -> Vec<usize> {
        let workers = results.len();
        // The counted results in commit order, and whose each is.
        let (senders, counted): (Vec<usize>, Vec<&SparseUpdate>) = results
            .iter()
            .enumerate()
            .filter_map(|(worker, result)| Some((worker, (*result)?)))
            .unzip();
        let previous: Vec<Option<&Picks>> = senders
            .iter()
            .map(|&worker| self.previous_picks.get(worker)?.as_ref())
            .collect();
        let started = Instant::now();
        let Screened {
            flags,
            measures,
            picks,
        } = screen(&counted, &previous);
        let judged = self
            .contrary
            .judge(senders.iter().copied().zip(flags.iter().copied()));
        let flagged: Vec<usize> = judged
            .iter()
            .filter(|(_, flags)| flags.any())
            .map(|(worker, _)| *worker)
            .collect();
        let counts = &mut self.screens;
        counts.time += started.elapsed();
        counts
            .flags
            .round_of(workers, senders.iter().copied(), flagged.iter().copied());
        let honest_picks = senders
            .iter()
            .take_while(|&&worker| worker < honest)
            .count();
        for (index, own) in picks[..honest_picks].iter().enumerate() {
            for other in &picks[..index] {
                counts.honest_overlap_max = counts.honest_overlap_max.max(own.overlap(other));
            }
            if let Some(before) = previous[index] {
                counts.honest_repeat_max = counts.honest_repeat_max.max(own.overlap(before));
            }
        }
        let (honest_measures, dishonest_measures) =
            measures.split_at(honest_picks.min(measures.len()));
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
        self.previous_picks = vec![None; workers];
        for (worker, picks) in senders.into_iter().zip(picks) {
            self.previous_picks[worker] = Some(picks);
        }
        flagged
    }

    /// Scores round `step`'s counted results (by worker) that have a probe (those chosen for
    /// scoring this round, one in `one_in`) on `replica` (the round's common model), each
    /// against its sender's probe, judges the senders scored over the window, and returns the
    /// workers flagged.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn score(
        &mut self,
        step: u64,
        one_in: u16,
        replica: &Replica,
        demo: &Demo,
        results: &[Option<&SparseUpdate>],
        probes: &[Option<Probe>],
        lr: f64,
        honest: usize,
    ) -> Vec<usize> {
        let started = Instant::now();
        let scores: Vec<(usize, f64)> = results
            .iter()
            .zip(probes)
            .enumerate()
            .filter_map(|(worker, (result, probe))| {
                Some((
                    worker,
                    score(replica, demo, (*result)?, lr, probe.as_ref()?),
                ))
            })
            .collect();
        let windows = self
            .windows
            .get_or_insert_with(|| ScoreWindows::new(one_in));
        let flagged: Vec<usize> = windows
            .judge(step, &scores)
            .into_iter()
            .map(|(worker, _)| worker)
            .collect();
        let counts = &mut self.scores;
        counts.time += started.elapsed();
        counts.flags.round_of(
            results.len(),
            scores.iter().map(|(worker, _)| *worker),
            flagged.iter().copied(),
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
        flagged
    }
}

impl Verifiers {
    /// Checks round `step`'s counted results (`payloads` by worker, none from an ejected one,
    /// decoded as `results`; the first `honest` workers are honest; `momenta`: by worker, the
    /// momentum it serves for its result): each sender recomputed the round before must start
    /// from the momentum its recompute left, and each result in `checks` (all counted) is
    /// recomputed on `replica` (the round's common model) from the momentum its sender served,
    /// with `demo`'s step and the gradients of its assigned batch, and must reproduce the
    /// result (bit for bit, or within `tolerance`). Returns the workers flagged.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spot_check(
        &mut self,
        step: u64,
        replica: &Replica,
        demo: &Demo,
        payloads: &[Option<&[u8]>],
        results: &[Option<&SparseUpdate>],
        momenta: &[Option<Bytes>],
        checks: Vec<SpotCheck>,
        (grad_clip, lr): (Option<f64>, f64),
        tolerance: Tolerance,
        honest: usize,
    ) -> Vec<usize> {
        let started = Instant::now();
        let workers = payloads.len();
        self.chains.resize_with(workers, || None);
        // What a worker serves for its result: the momentum its payload commits to, or none.
        let served: Vec<Option<&[u8]>> = (0..workers)
            .map(|worker| {
                let momentum = momenta.get(worker)?.as_deref()?;
                let hash: [u8; 32] = Sha256::digest(momentum).into();
                (payload::momentum_commitment(payloads[worker]?) == Some(hash)).then_some(momentum)
            })
            .collect();
        // Whose momentum a verifier downloads this round: once, for its recompute and its chain.
        let mut fetched = vec![false; workers];
        let mut checked = Vec::new();
        let mut flagged = Vec::new();
        for (worker, chain) in self.chains.iter().enumerate() {
            if let Some((recomputed, chain)) = chain
                && recomputed + 1 == step
                && let Some(payload) = payloads[worker]
            {
                checked.push(worker);
                let momentum = chain.needs_momentum().then_some(served[worker]).flatten();
                fetched[worker] |= chain.needs_momentum();
                if !chain.holds(demo, payload, momentum) {
                    flagged.push(worker);
                }
            }
        }
        for check in checks {
            let worker = check.worker;
            let (Some(payload), Some(result)) = (payloads[worker], results[worker]) else {
                continue;
            };
            checked.push(worker);
            self.spot_checks.recomputes += 1;
            let momentum = served[worker];
            fetched[worker] = true;
            let outcome = recompute(
                replica,
                demo,
                &check.batch,
                grad_clip,
                lr,
                payload,
                result,
                momentum,
                tolerance,
            );
            if worker < honest && momentum.is_some() {
                self.spot_checks.honest_recomputed += 1;
            }
            match outcome {
                Recompute::Matched { chain } => {
                    self.spot_checks.honest_matched += u64::from(worker < honest);
                    self.chains[worker] = Some((step, chain));
                }
                Recompute::Unserved | Recompute::Differs { .. } => flagged.push(worker),
            }
        }
        self.spot_checks.bytes += (0..workers)
            .filter(|&worker| fetched[worker])
            .map(|worker| served[worker].map_or(0, |m| m.len() as u64))
            .sum::<u64>();
        checked.sort_unstable();
        checked.dedup();
        flagged.sort_unstable();
        flagged.dedup();
        self.spot_checks.time += started.elapsed();
        self.spot_checks
            .flags
            .round_of(workers, checked, flagged.iter().copied());
        flagged
    }
}

/// What the simulation hands its verifiers.
impl Simulation {
    /// Screens, scores and spot-checks the step's counted results (`outputs`, by worker: none
    /// from an ejected one), as any replica could before applying them, counts what is
    /// flagged, and returns the workers flagged. `served`: by worker, the momentum it serves
    /// for its result (in a run that spot-checks).
    pub(super) fn verify(
        &mut self,
        outputs: &[Option<LocalOutput>],
        served: Vec<Option<Bytes>>,
        lr: f64,
    ) -> anyhow::Result<Vec<usize>> {
        let common = &self.workers[self.first_in_run()];
        let WorkerOptimizer::Demo(demo) = &common.optimizer else {
            anyhow::bail!("screens, scores and spot checks are of DeMo results (--optimizer demo)");
        };
        let payloads = payloads(outputs);
        let mut decoded = payload::decode_all(
            payloads.iter().copied().flatten(),
            demo.compressor(),
            Device::Cpu,
        )?
        .into_iter();
        let results: Vec<Option<SparseUpdate>> = payloads
            .iter()
            .map(|payload| payload.and_then(|_| decoded.next()))
            .collect();
        let refs: Vec<Option<&SparseUpdate>> = results.iter().map(Option::as_ref).collect();
        let honest = self.workers.len() - self.config.byzantine;
        let replica = &common.replica;
        let mut flagged = Vec::new();
        if self.config.screen {
            flagged.extend(self.verifiers.screen(&refs, honest));
        }
        if self.config.score {
            let probes = self.probes();
            let one_in = self.config.score_one_in.max(1);
            flagged.extend(
                self.verifiers
                    .score(self.step, one_in, replica, demo, &refs, &probes, lr, honest),
            );
        }
        if self.config.spot_check_one_in > 0 {
            let per_worker = self.config.batch_per_worker;
            let checks: Vec<SpotCheck> = (0..served.len())
                .filter(|&worker| {
                    payloads[worker].is_some()
                        && spot_checked(
                            self.config.seed,
                            self.step,
                            worker,
                            self.config.spot_check_one_in,
                        )
                })
                .map(|worker| {
                    // The batch the round assigned, whatever the sender trained on.
                    let first = (worker * per_worker) as u64;
                    let ranges: Vec<_> = (first..first + per_worker as u64)
                        .map(|id| self.plan.token_range(self.step, id))
                        .collect();
                    SpotCheck {
                        worker,
                        batch: self.dataset.training_batch(&ranges),
                    }
                })
                .collect();
            flagged.extend(self.verifiers.spot_check(
                self.step,
                replica,
                demo,
                &payloads,
                &refs,
                &served,
                checks,
                (self.config.grad_clip, lr),
                Tolerance::from_per_mille(self.config.spot_check_tolerance),
                honest,
            ));
        }
        flagged.sort_unstable();
        flagged.dedup();
        Ok(flagged)
    }

    /// The probe of each worker chosen for scoring this step (`Probe::of` the samples it was
    /// assigned, whatever it trained on). The choice is a seeded one in `score_one_in` of the
    /// workers, as `Round::scored` makes it for a run.
    fn probes(&self) -> Vec<Option<Probe>> {
        let workers = self.workers.len() as u64;
        let one_in_n = u64::from(self.config.score_one_in.max(1));
        let key = mix(self.config.seed ^ mix(self.step));
        let per_worker = self.config.batch_per_worker as u64;
        (0..workers)
            .map(|worker| {
                if !one_in(key, worker, workers, one_in_n) {
                    return None;
                }
                let first = self.step * workers * per_worker + worker * per_worker;
                Probe::of(&self.dataset, &self.plan, first..first + per_worker)
            })
            .collect()
    }

    /// What the screens found so far (nothing unless the config asks for screens).
    pub fn screen_counts(&self) -> &ScreenCounts {
        &self.verifiers.screens
    }

    /// What scoring found so far (nothing unless the config asks for scores).
    pub fn score_counts(&self) -> &ScoreCounts {
        &self.verifiers.scores
    }

    /// What spot checks found so far (nothing unless the config asks for them).
    pub fn spot_check_counts(&self) -> &SpotCheckCounts {
        &self.verifiers.spot_checks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_count_rounds_per_worker_and_the_first_round() {
        let mut flags = Flagged::default();
        flags.round_of(3, 0..3, [2]);
        flags.round_of(3, 0..3, []);
        flags.round_of(3, 0..3, [1, 2]);
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
