//! Scoring a result against data, for what the screens (`screening`) cannot judge by a result's
//! shape: noise of the right size (`random`) and updates trained on other batches than the ones
//! assigned (`wrong-data`). A result's score is how much applying its update alone lowers the
//! loss on a sample of the batch its sender was assigned, less how much it lowers the loss on a
//! control batch nobody was assigned (Templar's score). An honest update was trained on the
//! assigned batch and helps it more than the control; noise helps neither; an update trained
//! on other data helps both alike. Both batches follow from the round, so any verifier can
//! recompute a score.
//!
//! One round's score is noisy: an honest update scores at or below zero in some rounds. So a
//! sender is judged by its mean over a window of rounds, against the median of everyone's
//! (most senders are honest), never by one round. A run scores a seeded one in `n` of each
//! round's results (`Config::score_one_in`, `Round::scored`): every replica scores the same
//! ones on the same bitwise-identical model and so reaches the same judgement, and the round's
//! verifiers send it as a verdict (`Finding::LowScore`).

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;

use demeter_coordinator_core::Finding;
use demeter_coordinator_core::verdict::LOW_SCORE_PER_MILLE;
use tch::Tensor;

use crate::data::{BatchPlan, Dataset};
use crate::demo::{Demo, SparseUpdate};
use crate::replica::Replica;

pub use demeter_coordinator_core::verdict::SCORE_WINDOW as WINDOW;
/// The fewest scores of a sender in the window that it is judged by (a sampled window holds
/// [`WINDOW`] on average).
pub const MIN_SCORES: usize = WINDOW as usize / 2;
/// The fewest senders judged for their median to stand for the honest majority.
const MIN_SENDERS: usize = 3;

/// Samples of a sender's assigned batch (and of the control) a result is scored on.
pub const PROBE_SAMPLES: u64 = 2;
/// Data positions a control sample lies beyond the assigned one it stands beside: data nobody
/// trains in the round (an odd prime, so no batch size divides it).
const CONTROL_SHIFT: u64 = 1_000_000_007;

/// The data a result is scored on: inputs and targets of a sample of the sender's assigned
/// batch, and of a control batch.
pub struct Probe {
    pub assigned: (Tensor, Tensor),
    pub control: (Tensor, Tensor),
}

impl Probe {
    /// The probe of a sender assigned the data positions `assigned`: its first
    /// [`PROBE_SAMPLES`], and as many control samples `CONTROL_SHIFT` positions on. Any
    /// verifier derives the same from the round. `None` for an empty assignment.
    pub fn of(dataset: &Dataset, plan: &BatchPlan, assigned: Range<u64>) -> Option<Self> {
        if assigned.is_empty() {
            return None;
        }
        let first = assigned.start..assigned.end.min(assigned.start + PROBE_SAMPLES);
        let batch = |shift: u64| {
            let ranges: Vec<_> = first
                .clone()
                .map(|sample| plan.sample_range(sample.wrapping_add(shift)))
                .collect();
            dataset.training_batch(&ranges)
        };
        Some(Self {
            assigned: batch(0),
            control: batch(CONTROL_SHIFT),
        })
    }
}

/// The score of `update` applied alone with `lr` (a sign step, as every round's aggregate is
/// applied) to `replica`, which holds the round's common model: the loss it takes off the
/// assigned sample less the loss it takes off the control. The replica's weights are restored
/// bitwise afterwards.
pub fn score(replica: &Replica, demo: &Demo, update: &SparseUpdate, lr: f64, probe: &Probe) -> f64 {
    let losses = |replica: &Replica| {
        (
            replica.loss(&probe.assigned.0, &probe.assigned.1),
            replica.loss(&probe.control.0, &probe.control.1),
        )
    };
    let (assigned_before, control_before) = losses(replica);
    let tensors = replica.tensors();
    let saved: Vec<Tensor> = tch::no_grad(|| tensors.iter().map(Tensor::copy).collect());
    replica.apply_updates(demo, &[update], lr);
    let (assigned_after, control_after) = losses(replica);
    tch::no_grad(|| {
        for (tensor, saved) in tensors.iter().zip(&saved) {
            tensor.shallow_clone().copy_(saved);
        }
    });
    (assigned_before - assigned_after) - (control_before - control_after)
}

/// Each sender's scores of the window's rounds, by sender (a simulation's worker, a client's
/// member slot).
#[derive(Clone, Debug)]
pub struct ScoreWindows {
    /// Rounds a window spans.
    span: u64,
    /// The first round scored: nobody is judged until a whole window has passed since.
    first: Option<u64>,
    senders: BTreeMap<usize, VecDeque<(u64, f64)>>,
}

impl ScoreWindows {
    /// Windows for a run that scores one in `one_in` results (0 or 1: every result).
    pub fn new(one_in: u16) -> Self {
        Self {
            span: WINDOW * u64::from(one_in.max(1)),
            first: None,
            senders: BTreeMap::new(),
        }
    }

    /// Adds round `step`'s scores by sender and judges each sender scored this round (a verdict
    /// can only be about a scored result): returns those whose mean score over the window's
    /// rounds falls short, each with the [`Finding::LowScore`] that says by how much.
    ///
    /// Every sender is judged over the same rounds (the last `span`), so a window of sparse
    /// scores is never compared with a later, shorter stretch of training, in which scores are
    /// smaller. Once a whole window has passed since the first round scored, a sender is judged
    /// if it has [`MIN_SCORES`] scores in the window, against the median of the means of all
    /// senders that have, if there are `MIN_SENDERS` of them.
    /// Nothing is flagged while that median is not positive: then nobody's update helps the
    /// model, and there is no honest baseline to fall short of.
    pub fn judge(&mut self, step: u64, scores: &[(usize, f64)]) -> Vec<(usize, Finding)> {
        for &(sender, score) in scores {
            self.senders
                .entry(sender)
                .or_default()
                .push_back((step, score));
        }
        let first = *self.first.get_or_insert(step);
        let oldest = (step + 1).saturating_sub(self.span);
        self.senders.retain(|_, window| {
            while window.front().is_some_and(|(round, _)| *round < oldest) {
                window.pop_front();
            }
            !window.is_empty()
        });
        let means: BTreeMap<usize, f64> = self
            .senders
            .iter()
            .filter(|(_, window)| window.len() >= MIN_SCORES)
            .map(|(sender, window)| {
                let sum: f64 = window.iter().map(|(_, score)| score).sum();
                (*sender, sum / window.len() as f64)
            })
            .collect();
        if means.len() < MIN_SENDERS || step + 1 < first + self.span {
            return Vec::new();
        }
        let mut sorted: Vec<f64> = means.values().copied().collect();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        if median <= 0.0 {
            return Vec::new();
        }
        scores
            .iter()
            .filter_map(|(sender, _)| {
                let mean = means.get(sender)?;
                // Per mille of the median, rounded down and at least zero: the finding's
                // field, and what the coordinator bounds.
                let share = (mean / median * 1000.0).clamp(0.0, 1000.0) as u16;
                (share < LOW_SCORE_PER_MILLE).then_some((*sender, Finding::LowScore { share }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::attack::{Attack, duplicate};
    use crate::demo::DemoConfig;
    use crate::model::{LlamaConfig, Preset};

    fn batch(dataset: &Dataset, plan: &BatchPlan, step: u64) -> (Tensor, Tensor) {
        let ranges: Vec<_> = (0..4).map(|id| plan.token_range(step, id)).collect();
        dataset.training_batch(&ranges)
    }

    /// An update trained on the assigned batch scores above noise of the same picks, and
    /// scoring leaves the common model as it was.
    #[test]
    fn an_honest_update_outscores_noise_and_the_model_is_untouched() {
        tch::manual_seed(3);
        let dataset = Dataset::embedded(0.02);
        let config = LlamaConfig::for_training(Preset::Tiny, dataset.meta.vocab_size, 32);
        let replica = Replica::new(&config, 7, Device::Cpu).unwrap();
        let mut demo = Demo::new(replica.parameters(), DemoConfig::default()).unwrap();
        let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
        let plan = BatchPlan::new(11, 32, 4, &shard_lens).unwrap();
        let probe = Probe {
            assigned: batch(&dataset, &plan, 0),
            control: batch(&dataset, &plan, 500),
        };
        let (_, grads) = replica.gradients(&probe.assigned.0, &probe.assigned.1, Some(1.0));
        let honest = demo.compress_step(&grads, 2e-3);
        let noise = Attack::Random.forge(duplicate(&honest), None, 0, 1);
        let before = replica.hash();
        let honest_score = score(&replica, &demo, &honest, 2e-3, &probe);
        let noise_score = score(&replica, &demo, &noise, 2e-3, &probe);
        assert_eq!(replica.hash(), before, "weights restored bitwise");
        assert!(
            honest_score > noise_score && honest_score > 0.0,
            "honest {honest_score}, noise {noise_score}"
        );
    }

    #[test]
    fn a_sender_is_judged_over_the_window_against_the_median() {
        let mut windows = ScoreWindows::new(1);
        let scores = |round: u64| {
            // Honest senders score noisily (one round below zero); the fourth never helps.
            let noisy = if round == 3 { -0.01 } else { 0.03 };
            [(0, noisy), (1, 0.02), (2, 0.025), (7, 0.0)]
        };
        for round in 0..WINDOW {
            // Not before a whole window has passed, though everyone has enough scores sooner.
            let judged = round + 1 == WINDOW;
            let expected = match judged {
                true => vec![(7, Finding::LowScore { share: 0 })],
                false => Vec::new(),
            };
            assert_eq!(
                windows.judge(round, &scores(round)),
                expected,
                "round {round}"
            );
        }
        // Only a sender scored this round is judged: a verdict is about a scored result.
        assert_eq!(windows.judge(WINDOW, &scores(WINDOW)[..3]), []);
        // A sender's scores leave the window with their rounds.
        let mut windows = ScoreWindows::new(1);
        for round in 0..WINDOW {
            windows.judge(round, &scores(round));
        }
        let late = 2 * WINDOW;
        let honest_only = [(0, 0.03), (1, 0.02), (2, 0.025), (7, 0.0)];
        assert_eq!(
            windows.judge(late, &honest_only),
            [],
            "one score each: nobody judged yet"
        );
    }

    #[test]
    fn a_sampled_window_spans_as_many_scores_and_a_share_is_per_mille_of_the_median() {
        // One in four: the window spans 32 rounds.
        let mut windows = ScoreWindows::new(4);
        for round in 0..6 * WINDOW {
            // Each sender scored every fourth round, in turn; sender 3 at an eighth of the rest.
            let sender = (round % 4) as usize;
            let score = if sender == 3 { 0.03125 } else { 0.25 };
            let flagged = windows.judge(round, &[(sender, score)]);
            let judged = round + 1 >= 4 * WINDOW;
            let expected = match (sender, judged) {
                (3, true) => vec![(3, Finding::LowScore { share: 125 })],
                _ => Vec::new(),
            };
            assert_eq!(flagged, expected, "round {round}");
        }
        // When nobody helps the model, nobody is flagged.
        let mut idle = ScoreWindows::new(1);
        for round in 0..WINDOW {
            let scores = [(0, 0.0), (1, -0.01), (2, 0.0), (3, -0.02)];
            assert_eq!(idle.judge(round, &scores), []);
        }
    }
}
