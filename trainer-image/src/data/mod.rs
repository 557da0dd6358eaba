//! Token data: the shipped corpus, tokenizers, memory-mapped shards, and batch assignment.

mod batches;
mod corpus;
mod shards;
mod tokenizer;

pub use batches::{BatchPlan, PlanError, TokenRange};
pub use corpus::moby_dick;
pub use shards::{
    DEFAULT_SHARD_TOKENS, DataError, Dataset, DatasetMeta, TokenFile, TokenWidth, prepare,
    split_validation,
};
pub use tokenizer::{Tokenizer, TokenizerError};

use tch::Tensor;

impl Dataset {
    /// Inputs and targets `[samples, seq_len]` for the given token ranges of the training shards.
    pub fn training_batch(&self, ranges: &[TokenRange]) -> (Tensor, Tensor) {
        let rows: Vec<Vec<i64>> = ranges
            .iter()
            .map(|range| self.train[range.shard].tokens(range.tokens.clone()))
            .collect();
        stack_windows(&rows)
    }

    /// The first `samples` non-overlapping validation windows of `seq_len + 1` tokens (fewer if
    /// the split is short).
    pub fn validation_batch(&self, seq_len: usize, samples: usize) -> (Tensor, Tensor) {
        let available = self.val.len().saturating_sub(1) / seq_len;
        let rows: Vec<Vec<i64>> = (0..samples.min(available))
            .map(|i| self.val.tokens(i * seq_len..(i + 1) * seq_len + 1))
            .collect();
        stack_windows(&rows)
    }
}

fn stack_windows(rows: &[Vec<i64>]) -> (Tensor, Tensor) {
    let width = rows.first().map_or(1, Vec::len) as i64;
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    let all = Tensor::from_slice(&flat).view([rows.len() as i64, width]);
    (all.narrow(1, 0, width - 1), all.narrow(1, 1, width - 1))
}
