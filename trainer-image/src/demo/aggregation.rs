//! How a replica combines a round's results into the one update whose sign it applies.
//!
//! DeMo's own rule averages each coefficient over the clients that selected it. A client that
//! scales its update up outweighs everyone there, and one that flips or randomizes it drags the
//! mean; in a permissionless run some will. The robust rules bound what any one result can do,
//! and stay deterministic: the same results in the same order give the same bits on every
//! replica (norms are summed on the host in a fixed order, votes are exact integers).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::compressor::{Compressor, SparseUpdate};
use super::sparse::SparseBlocks;

/// A run's aggregation rule: every client of a run must use the same one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    /// Each coefficient averaged over the clients that selected it (DeMo's own rule).
    #[default]
    Mean,
    /// The mean after each result is scaled down, tensor by tensor, to at most the median
    /// result's norm: no result counts for more than a typical one, however large it is.
    ClippedMean,
    /// Each weight moves by the majority of the results' signs there (signSGD with majority
    /// vote): every result has one vote per weight, whatever its size.
    SignVote,
}

impl Compressor {
    /// The round's update for every parameter under `rule`, before DeMo takes its sign.
    pub fn aggregate_by(&self, rule: Aggregation, updates: &[&SparseUpdate]) -> Vec<Tensor> {
        (0..self.layouts().len())
            .map(|index| {
                let selections: Vec<&SparseBlocks> = updates
                    .iter()
                    .map(|update| &update.tensors[index])
                    .collect();
                match rule {
                    Aggregation::Mean => self.aggregate(index, &selections),
                    Aggregation::ClippedMean => {
                        let clipped = clip_to_median_norm(&selections);
                        let clipped: Vec<&SparseBlocks> = clipped.iter().collect();
                        self.aggregate(index, &clipped)
                    }
                    Aggregation::SignVote => self.sign_votes(index, &selections),
                }
            })
            .collect()
    }

    /// The sum over results of the sign of each result's decoded update: its sign is the
    /// majority, and a tie (or no result) leaves the weight where it is.
    fn sign_votes(&self, index: usize, selections: &[&SparseBlocks]) -> Tensor {
        let mut votes: Option<Tensor> = None;
        for selection in selections {
            let vote = self.decode(index, selection).sign();
            votes = Some(match votes {
                Some(sum) => sum + vote,
                None => vote,
            });
        }
        // No result: the mean of none, zero everywhere.
        votes.unwrap_or_else(|| self.aggregate(index, &[]))
    }
}

/// A selection's L2 norm, summed on the host in index order so every replica gets the same
/// bits. The DCT is orthonormal and a client picks each coefficient once, so this is also the
/// norm of the update it decodes to.
fn norm(selection: &SparseBlocks) -> f64 {
    let values = Vec::<f32>::try_from(selection.values.to_kind(Kind::Float).flatten(0, -1))
        .expect("f32 values");
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Each selection scaled down to at most the median norm among them (the lower median for an
/// even count); those at or below it unchanged.
fn clip_to_median_norm(selections: &[&SparseBlocks]) -> Vec<SparseBlocks> {
    let norms: Vec<f64> = selections.iter().map(|s| norm(s)).collect();
    let mut sorted = norms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted
        .get(sorted.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    selections
        .iter()
        .zip(norms)
        .map(|(selection, norm)| {
            let scale = if norm > median && norm > 0.0 {
                median / norm
            } else {
                1.0
            };
            SparseBlocks {
                indices: selection.indices.shallow_clone(),
                values: selection.values.to_kind(Kind::Float) * scale,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::ValueEncoding;
    use tch::Device;

    fn compressor() -> Compressor {
        let tensors = [(
            "w".to_owned(),
            Tensor::zeros([64, 64], (Kind::Float, Device::Cpu)),
        )];
        Compressor::for_tensors(&tensors, 32, 8, ValueEncoding::F32)
    }

    /// A momentum from its own generator (SplitMix64, uniform in [-1, 1)): not libtorch's
    /// global one, which tests running in parallel would share.
    fn update(compressor: &Compressor, seed: u64, scale: f32) -> SparseUpdate {
        let mut state = seed;
        let values: Vec<f32> = (0..64 * 64)
            .map(|_| {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let z = demeter_coordinator_core::shuffle::mix(state);
                ((z >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect();
        let momentum = Tensor::from_slice(&values).view([64, 64]);
        compressor.compress_all(&[momentum])
    }

    fn signs(tensor: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(tensor.sign().flatten(0, -1)).unwrap()
    }

    #[test]
    fn one_huge_result_outweighs_the_mean_but_not_the_robust_rules() {
        let compressor = compressor();
        let honest = [update(&compressor, 1, 1.0), update(&compressor, 2, 1.0)];
        // The attacker sends the first honest result negated and a thousand times larger.
        let mut attack = update(&compressor, 1, 1.0);
        attack.tensors[0].values = &attack.tensors[0].values * -1000.0;
        let all: Vec<&SparseUpdate> = [&honest[0], &honest[1], &attack].into();
        let attacker_alone = signs(&compressor.aggregate_by(Aggregation::Mean, &[&attack])[0]);
        let agree = |rule| {
            let got = signs(&compressor.aggregate_by(rule, &all)[0]);
            let same = got
                .iter()
                .zip(&attacker_alone)
                .filter(|(a, b)| a == b)
                .count();
            same as f64 / got.len() as f64
        };
        assert!(
            agree(Aggregation::Mean) > 0.99,
            "the mean follows the attacker"
        );
        assert!(agree(Aggregation::ClippedMean) < 0.6);
        assert!(agree(Aggregation::SignVote) < 0.6);
    }

    #[test]
    fn a_sign_vote_is_the_majority_and_a_tie_moves_nothing() {
        let compressor = compressor();
        let a = update(&compressor, 3, 1.0);
        let mut minus_a = update(&compressor, 3, 1.0);
        minus_a.tensors[0].values = -&minus_a.tensors[0].values;
        let own = signs(&compressor.aggregate_by(Aggregation::Mean, &[&a])[0]);
        let majority = compressor.aggregate_by(Aggregation::SignVote, &[&a, &minus_a, &a]);
        assert_eq!(signs(&majority[0]), own);
        let tie = compressor.aggregate_by(Aggregation::SignVote, &[&a, &minus_a]);
        assert!(signs(&tie[0]).iter().all(|&s| s == 0.0));
        let none = compressor.aggregate_by(Aggregation::SignVote, &[]);
        assert!(signs(&none[0]).iter().all(|&s| s == 0.0));
    }

    #[test]
    fn clipping_scales_only_what_exceeds_the_median_norm() {
        let compressor = compressor();
        let updates: Vec<SparseUpdate> = [(4, 1.0), (5, 2.0), (6, 50.0)]
            .iter()
            .map(|&(seed, scale)| update(&compressor, seed, scale))
            .collect();
        let selections: Vec<&SparseBlocks> = updates.iter().map(|u| &u.tensors[0]).collect();
        let before: Vec<f64> = selections.iter().map(|s| norm(s)).collect();
        let clipped = clip_to_median_norm(&selections);
        let after: Vec<f64> = clipped.iter().map(norm).collect();
        assert_eq!(after[0], before[0], "below the median: untouched");
        assert_eq!(after[1], before[1], "the median itself");
        assert!(
            (after[2] - before[1]).abs() < 1e-4 * before[1],
            "{after:?} {before:?}"
        );
        // The same inputs give the same bits.
        let again = clip_to_median_norm(&selections);
        assert!(
            clipped
                .iter()
                .zip(&again)
                .all(|(a, b)| a.values.equal(&b.values))
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Under every rule the same results give the same bits. Under the robust rules, a
        /// minority of attackers, whatever their size and signs, cannot overturn the honest
        /// majority: a weight every honest result moves one way moves that way under the sign
        /// vote, and no result, an attacker's included, counts for more than the largest honest
        /// one under the clipped mean.
        #[test]
        fn robust_rules_are_deterministic_and_a_minority_cannot_overturn_the_honest(
            honest_seeds in proptest::collection::vec(0u64..1 << 32, 3..7),
            attackers in proptest::collection::vec((0u64..1 << 32, -1000.0f32..1000.0), 0..3),
        ) {
            let compressor = compressor();
            let honest: Vec<SparseUpdate> =
                honest_seeds.iter().map(|&seed| update(&compressor, seed, 1.0)).collect();
            let dishonest: Vec<SparseUpdate> = attackers
                .iter()
                .map(|&(seed, scale)| update(&compressor, seed ^ (1 << 40), scale))
                .collect();
            let all: Vec<&SparseUpdate> = honest.iter().chain(&dishonest).collect();
            for rule in [Aggregation::Mean, Aggregation::ClippedMean, Aggregation::SignVote] {
                let once = compressor.aggregate_by(rule, &all);
                let twice = compressor.aggregate_by(rule, &all);
                proptest::prop_assert!(once[0].equal(&twice[0]), "{rule:?}: other bits");
            }

            // The sign vote: where the honest results agree, the majority is theirs.
            let decoded: Vec<Vec<f32>> = honest
                .iter()
                .map(|update| signs(&compressor.decode(0, &update.tensors[0])))
                .collect();
            let voted = signs(&compressor.aggregate_by(Aggregation::SignVote, &all)[0]);
            for (weight, &sign) in voted.iter().enumerate() {
                let first = decoded[0][weight];
                if first != 0.0 && decoded.iter().all(|signs| signs[weight] == first) {
                    proptest::prop_assert_eq!(sign, first, "weight {}", weight);
                }
            }

            // The clipped mean: every result clipped to at most the largest honest norm.
            let selections: Vec<&SparseBlocks> = all.iter().map(|update| &update.tensors[0]).collect();
            let largest_honest = selections[..honest.len()]
                .iter()
                .map(|selection| norm(selection))
                .fold(0.0, f64::max);
            for clipped in clip_to_median_norm(&selections) {
                proptest::prop_assert!(norm(&clipped) <= largest_honest * (1.0 + 1e-6));
            }
        }
    }
}
