//! Verifying: every replica screens each round's counted results as it applies them, scores
//! the run's seeded share of them against data, the round's verifiers (its witnesses)
//! recompute the results its close chose for a spot check, and they send a verdict against
//! each result the screens, the scores or a recompute flag. The screens need only the decoded
//! selections; a score costs four forward passes of two samples, a spot check its sender's
//! whole step and momentum, which is why a run scores one in `score_one_in` and recomputes
//! one in `spot_check_one_in` (docs/verification.md says what each catches and what not).

use super::*;
use crate::demo::SparseUpdate;
use crate::payload::UNCOMMITTED;
use crate::scoring::{Probe, ScoreWindows, score};
use crate::screening::{Picks, Screened, Streaks, screen};
use crate::spot_check::{Chain, Recompute, Tolerance, recompute};

/// The scores of past rounds that senders are judged over, for the run's `score_one_in`.
pub(super) struct ScoreMemory {
    one_in: u16,
    windows: ScoreWindows,
}

/// The momenta a round's spot checks need, as their senders served them for their payloads'
/// commitments and checked against them (`None`: not served, or no commitment).
#[derive(Default)]
pub(super) struct Served {
    /// By member slot, each result this client recomputes as one of the round's verifiers.
    pub(super) checks: Vec<(usize, Option<Bytes>)>,
    /// By member slot, the momentum of each result whose sender this client recomputed the
    /// round before, where the run's tolerance compares momenta rather than commitments.
    pub(super) chained: BTreeMap<usize, Option<Bytes>>,
}

/// By member slot, the last result this client recomputed as a verifier: its round, and the
/// momentum the recompute left, which the sender's result of the next round must start from.
pub(super) type Chains = BTreeMap<usize, (u64, Chain)>;

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

    /// The momenta this client needs to check `round`'s counted results (`counted`: payloads
    /// by member slot): as one of the round's verifiers, those of the results of peers assigned
    /// samples that the round's close chose for a spot check; and those of the results whose
    /// senders it recomputed the round before, where the run's tolerance compares momenta.
    pub(super) async fn fetch_spot_checked(
        &mut self,
        state: &Coordinator,
        round: &Round,
        counted: &[(usize, Bytes)],
    ) -> Served {
        let one_in = state.config.spot_check_one_in;
        let verifier = self.verifier_of(state, round).filter(|_| one_in > 0);
        let started = Instant::now();
        let mut served = Served::default();
        for (slot, bytes) in counted {
            let chained = self
                .chains
                .get(slot)
                .is_some_and(|(step, chain)| step + 1 == round.step && chain.needs_momentum());
            let checked = verifier.is_some_and(|(my_slot, _)| {
                let assigned = round
                    .assignment(*slot)
                    .is_some_and(|samples| !samples.is_empty());
                *slot != my_slot && assigned && round.spot_checked(*slot, one_in)
            });
            if !(chained || checked) {
                continue;
            }
            // One download for both checks of a result.
            let momentum = self
                .fetch_committed_momentum(state, round, *slot, bytes)
                .await;
            if checked {
                served.checks.push((*slot, momentum.clone()));
            }
            if chained {
                served.chained.insert(*slot, momentum);
            }
        }
        if verifier.is_some() || !served.chained.is_empty() {
            self.metrics.time("spot-check", started.elapsed());
        }
        served
    }

    /// The momentum the result `bytes` of the member in `slot` commits to, as its sender serves
    /// it (checked against the commitment); `None` when it commits to none or does not serve it.
    async fn fetch_committed_momentum(
        &mut self,
        state: &Coordinator,
        round: &Round,
        slot: usize,
        bytes: &[u8],
    ) -> Option<Bytes> {
        let commitment = payload::momentum_commitment(bytes).unwrap_or(UNCOMMITTED);
        let sender = state.members[slot].endpoint.socket_addr();
        let peer = sender.filter(|_| commitment != UNCOMMITTED)?;
        let len = self.demo.momentum_len();
        match self.peers.fetch_momentum(&commitment, peer, len).await {
            Ok(momentum) => Some(momentum),
            Err(error) => {
                tracing::warn!(step = round.step, %error, "a spot-checked sender did not serve its momentum");
                None
            }
        }
    }

    /// Recomputes each of `round`'s `checks` on the replica before it applies the round (the
    /// model the results were trained from): the gradients of the samples the round assigned
    /// the sender, its DeMo step from the momentum it served, the payload with the same
    /// commitment. A result whose recompute encodes to other bytes than `counted` holds is
    /// `Recomputed` (`results`: the same payloads decoded); one whose momentum was not served
    /// is `Unserved`. Returns the findings by member slot.
    pub(super) fn spot_check_round(
        &mut self,
        state: &Coordinator,
        round: &Round,
        counted: &[(usize, Bytes)],
        results: &[(usize, SparseUpdate)],
        checks: Vec<(usize, Option<Bytes>)>,
    ) -> Vec<(usize, Finding)> {
        if checks.is_empty() {
            return Vec::new();
        }
        let started = Instant::now();
        let lr = self.schedule(state).lr(round.step);
        let tolerance = Tolerance::from_per_mille(state.config.spot_check_tolerance);
        let outcomes: Vec<(usize, Recompute)> = tokio::task::block_in_place(|| {
            checks
                .into_iter()
                .filter_map(|(checked, momentum)| {
                    let index = counted.iter().position(|(slot, _)| *slot == checked)?;
                    let ranges: Vec<TokenRange> = round
                        .assignment(checked)?
                        .map(|sample| self.plan.sample_range(sample))
                        .collect();
                    self.metrics.results_spot_checked.inc();
                    let outcome = recompute(
                        &self.replica,
                        &self.demo,
                        &self.dataset.training_batch(&ranges),
                        self.settings.grad_clip,
                        lr,
                        &counted[index].1,
                        &results[index].1,
                        momentum.as_deref(),
                        tolerance,
                    );
                    Some((checked, outcome))
                })
                .collect()
        });
        let mut findings = Vec::new();
        for (slot, outcome) in outcomes {
            findings.extend(outcome.finding().map(|finding| (slot, finding)));
            if let Recompute::Matched { chain } = outcome {
                self.chains.insert(slot, (round.step, chain));
            }
        }
        self.metrics.time("spot-check", started.elapsed());
        self.metrics.count_flagged(&findings);
        findings
    }

    /// Checks each counted result of `round` (`counted`: payloads by member slot) whose
    /// sender this client recomputed in the round before: it must start from the momentum that
    /// recompute left (commit to it, or, within the run's tolerance, serve one near it:
    /// `chained`, fetched by [`Trainer::fetch_spot_checked`]). Returns the findings against the
    /// round before, by member slot (the verdicts are about the recomputed result, whose round
    /// this client verified), and forgets the recomputes of rounds before `round`.
    pub(super) fn check_chains(
        &mut self,
        round: &Round,
        counted: &[(usize, Bytes)],
        chained: &BTreeMap<usize, Option<Bytes>>,
    ) -> Vec<(usize, Finding)> {
        let findings: Vec<(usize, Finding)> = tokio::task::block_in_place(|| {
            counted
                .iter()
                .filter(|(slot, bytes)| {
                    self.chains.get(slot).is_some_and(|(step, chain)| {
                        let served = chained.get(slot).cloned().flatten();
                        step + 1 == round.step && !chain.holds(&self.demo, bytes, served.as_deref())
                    })
                })
                .map(|(slot, _)| (*slot, Finding::Unchained))
                .collect()
        });
        self.chains.retain(|_, (step, _)| *step >= round.step);
        self.metrics.count_flagged(&findings);
        findings
    }

    /// This client's member slot and witness position if it is one of `round`'s verifiers and
    /// still Active: who may judge the round's results.
    fn verifier_of(&self, state: &Coordinator, round: &Round) -> Option<(usize, u16)> {
        let slot = state.member_index(&self.me())?;
        let position = round.witness_position(slot)?;
        (state.members[slot].status() == MemberStatus::Active).then_some((slot, position))
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
        let Some((my_slot, position)) = self.verifier_of(state, round) else {
            return;
        };
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
                "a result failed the screens, its scores fell short or its recompute differed: sending a verdict"
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
