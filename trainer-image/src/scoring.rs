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
//! (most senders are honest), never by one round.

use std::collections::VecDeque;

use tch::Tensor;

use crate::demo::{Demo, SparseUpdate};
use crate::replica::Replica;

/// Rounds of scores a sender is judged over.
pub const WINDOW: usize = 8;
/// A sender whose mean score over the window is under this share of the median of all senders'
/// means is flagged.
pub const LOW_SHARE: f64 = 0.25;

/// The data a result is scored on: inputs and targets of a sample of the sender's assigned
/// batch, and of a control batch.
pub struct Probe {
    pub assigned: (Tensor, Tensor),
    pub control: (Tensor, Tensor),
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

/// Each sender's last [`WINDOW`] scores, by sender index.
#[derive(Clone, Debug, Default)]
pub struct ScoreWindows {
    windows: Vec<VecDeque<f64>>,
}

impl ScoreWindows {
    /// Adds a round's scores (`None` for a sender not scored this round) and returns, by
    /// sender, whether its mean over a full window is under [`LOW_SHARE`] of the median of the
    /// full windows' means. Nothing is flagged while the median is not positive: then nobody's
    /// update helps the model, and there is no honest baseline to fall short of.
    pub fn judge(&mut self, scores: &[Option<f64>]) -> Vec<bool> {
        if self.windows.len() < scores.len() {
            self.windows.resize(scores.len(), VecDeque::new());
        }
        for (window, score) in self.windows.iter_mut().zip(scores) {
            if let Some(score) = score {
                window.push_back(*score);
                if window.len() > WINDOW {
                    window.pop_front();
                }
            }
        }
        let means: Vec<Option<f64>> = self
            .windows
            .iter()
            .map(|window| {
                (window.len() == WINDOW).then(|| window.iter().sum::<f64>() / WINDOW as f64)
            })
            .collect();
        let mut full: Vec<f64> = means.iter().flatten().copied().collect();
        if full.is_empty() {
            return vec![false; scores.len()];
        }
        full.sort_by(f64::total_cmp);
        let median = full[full.len() / 2];
        means
            .iter()
            .take(scores.len())
            .map(|mean| median > 0.0 && mean.is_some_and(|mean| mean < LOW_SHARE * median))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::attack::{Attack, duplicate};
    use crate::data::{BatchPlan, Dataset};
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
    fn a_sender_is_judged_over_a_full_window_against_the_median() {
        let mut windows = ScoreWindows::default();
        // Honest senders score noisily (one round below zero), the third never helps.
        for round in 0..WINDOW {
            let noisy = if round == 3 { -0.01 } else { 0.03 };
            let flags = windows.judge(&[Some(noisy), Some(0.02), Some(0.0)]);
            let full = round + 1 == WINDOW;
            assert_eq!(flags, [false, false, full], "round {round}");
        }
        // A sender not scored this round keeps its window.
        assert_eq!(
            windows.judge(&[Some(0.03), Some(0.02), None]),
            [false, false, true]
        );
        // When nobody helps the model, nobody is flagged.
        let mut idle = ScoreWindows::default();
        for _ in 0..WINDOW {
            assert_eq!(idle.judge(&[Some(0.0), Some(-0.01)]), [false, false]);
        }
    }
}
