//! Deterministic batch assignment: `(run seed, step, batch id) -> token range`, the same on every
//! client without any coordination beyond the seed.
//!
//! The training shards are cut into windows of `seq_len + 1` tokens (inputs and shifted
//! targets). Global sample `g = step · global_batch + batch_id` falls in pass `g / windows`, and
//! takes window `π(g mod windows)`, where π is a keyed pseudo-random permutation (a 4-round Feistel
//! network with cycle walking) keyed by the run seed and the pass. Every window is seen once per
//! pass, in a fresh order each pass, and nothing is stored. The permutation is the coordinator's
//! own (`demeter_coordinator_core::shuffle`), the one that also assigns batches and elects witnesses.

use std::ops::Range;

use demeter_coordinator_core::shuffle::permute;
use serde::{Deserialize, Serialize};

/// Where one sample's tokens live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRange {
    /// Index of the training shard.
    pub shard: usize,
    /// Token positions inside that shard (`seq_len + 1` of them).
    pub tokens: Range<usize>,
}

/// The mapping from (step, batch id) to token ranges for one run.
#[derive(Clone, Debug)]
pub struct BatchPlan {
    seed: u64,
    seq_len: usize,
    global_batch: u64,
    /// Running total of windows at the end of each shard.
    window_ends: Vec<u64>,
}

/// A plan that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(
        "no training window of seq_len + 1 = {0} tokens fits in the data: lower --seq-len or add data"
    )]
    NoWindows(usize),
    #[error("global batch is 0: at least one sample per step")]
    EmptyBatch,
}

impl BatchPlan {
    /// A plan over shards of `shard_lens` tokens each.
    pub fn new(
        seed: u64,
        seq_len: usize,
        global_batch: usize,
        shard_lens: &[usize],
    ) -> Result<Self, PlanError> {
        if global_batch == 0 {
            return Err(PlanError::EmptyBatch);
        }
        let mut total = 0u64;
        let window_ends = shard_lens
            .iter()
            .map(|&len| {
                total += (len.saturating_sub(1) / seq_len.max(1)) as u64;
                total
            })
            .collect();
        if total == 0 || seq_len == 0 {
            return Err(PlanError::NoWindows(seq_len + 1));
        }
        Ok(Self {
            seed,
            seq_len,
            global_batch: global_batch as u64,
            window_ends,
        })
    }

    /// Number of windows in one pass over the data.
    pub fn windows(&self) -> u64 {
        *self.window_ends.last().expect("at least one shard")
    }

    /// The window sample `batch_id` of `step` trains on.
    pub fn window(&self, step: u64, batch_id: u64) -> u64 {
        self.window_of_sample(step * self.global_batch + batch_id)
    }

    /// The window of global sample `sample` (a coordinator's data position).
    pub fn window_of_sample(&self, sample: u64) -> u64 {
        let pass = sample / self.windows();
        permute(
            self.seed ^ pass.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            sample % self.windows(),
            self.windows(),
        )
    }

    /// The tokens sample `batch_id` of `step` trains on.
    pub fn token_range(&self, step: u64, batch_id: u64) -> TokenRange {
        self.sample_range(step * self.global_batch + batch_id)
    }

    /// The tokens of global sample `sample`: with a coordinator, the data positions of a
    /// client's assignment.
    pub fn sample_range(&self, sample: u64) -> TokenRange {
        let window = self.window_of_sample(sample);
        let shard = self.window_ends.partition_point(|&end| end <= window);
        let first = if shard == 0 {
            0
        } else {
            self.window_ends[shard - 1]
        };
        let start = (window - first) as usize * self.seq_len;
        TokenRange {
            shard,
            tokens: start..start + self.seq_len + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_window_once_per_pass_and_a_new_order_each_pass() {
        let plan = BatchPlan::new(7, 16, 8, &[16 * 40 + 1, 16 * 24 + 5]).unwrap();
        assert_eq!(plan.windows(), 64);
        let pass = |p: u64| -> Vec<u64> {
            (0..8)
                .flat_map(|step| (0..8).map(move |b| (step + 8 * p, b)))
                .map(|(s, b)| plan.window(s, b))
                .collect()
        };
        let (first, second) = (pass(0), pass(1));
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..64).collect::<Vec<_>>());
        assert_ne!(first, second);
    }

    #[test]
    fn ranges_stay_inside_their_shard_and_are_deterministic() {
        let lens = [1000, 333, 2048];
        let plan = BatchPlan::new(1, 32, 4, &lens).unwrap();
        let again = BatchPlan::new(1, 32, 4, &lens).unwrap();
        let other_seed = BatchPlan::new(2, 32, 4, &lens).unwrap();
        let mut differs = false;
        for step in 0..50 {
            for id in 0..4 {
                let range = plan.token_range(step, id);
                assert_eq!(range, again.token_range(step, id));
                assert!(range.tokens.end <= lens[range.shard]);
                assert_eq!(range.tokens.len(), 33);
                differs |= range != other_seed.token_range(step, id);
            }
        }
        assert!(differs, "the seed changes the order");
    }

    #[test]
    fn rejects_data_too_short_for_one_window() {
        assert_eq!(
            BatchPlan::new(0, 64, 1, &[64]).unwrap_err(),
            PlanError::NoWindows(65)
        );
    }
}
