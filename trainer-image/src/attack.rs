//! Dishonest clients, for measurements and tests: what each named attack sends in place of an
//! honest result. `demeter simulate --byzantine N --attack NAME` makes its last N workers send
//! these, and `demeter train --attack NAME` a real client (docs/verification.md).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use demeter_coordinator_core::shuffle::mix;

use crate::demo::{Demo, SparseBlocks, SparseUpdate};

/// A client that cheats on purpose, to see a run catch it: `demeter train --attack NAME
/// --attack-from-step N` (drills and tests; it gets the client ejected and slashed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drill {
    pub attack: Attack,
    /// The first step it cheats in; honest before.
    pub from_step: u64,
}

/// How much a `scale` attacker multiplies its honest update by.
pub const SCALE: f64 = 1000.0;

/// The most a `noisy-copy` attacker moves each copied value, as a share of it.
pub const COPY_NOISE: f64 = 0.01;

/// One way a client cheats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attack {
    /// Noise of the right shape and size: its honest selection's magnitudes, random signs.
    Random,
    /// All values zero: a result that costs nothing and moves nothing.
    Zero,
    /// Its own previous result sent again.
    Stale,
    /// An honest peer's result, byte for byte (the simulation passes the copy on).
    Copy,
    /// An honest peer's selection with every value moved by up to 1%: a copy no hash matches
    /// (the simulation makes it from the peer's result, [`jitter`]).
    NoisyCopy,
    /// Its honest update a thousand times larger.
    Scale,
    /// Its honest update negated.
    SignFlip,
    /// An honest-looking update trained on batches other than the ones assigned.
    WrongData,
    /// An honest step on the assigned batch from a momentum it makes up each round (its own,
    /// negated): every result recomputes from the momentum it commits to, but that momentum is
    /// not what its last step left, and its results pull against the run's.
    ForgedMomentum,
}

impl Attack {
    /// Whether the attacker trains on data other than its assignment.
    pub fn trains_on_wrong_data(self) -> bool {
        self == Self::WrongData
    }

    /// Before its step: a `forged-momentum` attacker replaces its momentum with one it makes
    /// up (its own, negated); every other attack leaves it be.
    pub fn forge_momentum(self, demo: &mut Demo) {
        if self == Self::ForgedMomentum {
            let negated: Vec<Tensor> = demo.deltas().iter().map(|delta| -delta).collect();
            demo.load_deltas(&negated);
        }
    }

    /// What the attacker sends, from the update it computed honestly (on the data it chose)
    /// and what it sent the step before. `step` and `worker` seed `random`'s signs.
    pub fn forge(
        self,
        honest: SparseUpdate,
        previous: Option<&SparseUpdate>,
        step: u64,
        worker: usize,
    ) -> SparseUpdate {
        match self {
            Self::Copy | Self::NoisyCopy | Self::WrongData | Self::ForgedMomentum => honest,
            Self::Stale => previous.map_or(honest, duplicate),
            Self::Zero => map_values(&honest, &|_, values| values.zeros_like()),
            Self::Scale => map_values(&honest, &|_, values| values * SCALE),
            Self::SignFlip => map_values(&honest, &|_, values| -values),
            Self::Random => map_values(&honest, &|index, values| {
                random_signs(values, seed(step, worker, index))
            }),
        }
    }
}

/// A copy of `update` (its tensors shared: nobody writes them).
pub fn duplicate(update: &SparseUpdate) -> SparseUpdate {
    SparseUpdate {
        values: update.values,
        tensors: update
            .tensors
            .iter()
            .map(|blocks| SparseBlocks {
                indices: blocks.indices.shallow_clone(),
                values: blocks.values.shallow_clone(),
            })
            .collect(),
    }
}

/// A peer's `update` with every value moved by up to [`COPY_NOISE`] of itself, reproducibly
/// from `step` and `worker`: what a `noisy-copy` attacker sends.
pub fn jitter(update: &SparseUpdate, step: u64, worker: usize) -> SparseUpdate {
    map_values(update, &|index, values| {
        seeded(values, seed(step, worker, index), |value, random| {
            // Uniform in [-1, 1).
            let unit = (random >> 11) as f64 / (1u64 << 52) as f64 - 1.0;
            (f64::from(value) * (1.0 + COPY_NOISE * unit)) as f32
        })
    })
}

/// `update` with each tensor's values replaced by `f(tensor index, values)`, its picks kept.
fn map_values(update: &SparseUpdate, f: &dyn Fn(usize, &Tensor) -> Tensor) -> SparseUpdate {
    SparseUpdate {
        values: update.values,
        tensors: update
            .tensors
            .iter()
            .enumerate()
            .map(|(index, blocks)| SparseBlocks {
                indices: blocks.indices.shallow_clone(),
                values: f(index, &blocks.values),
            })
            .collect(),
    }
}

fn seed(step: u64, worker: usize, tensor: usize) -> u64 {
    step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((worker as u64) << 32) ^ tensor as u64
}

/// `values`' magnitudes with signs from SplitMix64 seeded by `seed`: reproducible noise.
fn random_signs(values: &Tensor, seed: u64) -> Tensor {
    seeded(values, seed, |value, random| {
        if random & 1 == 0 {
            value.abs()
        } else {
            -value.abs()
        }
    })
}

/// `values` (same shape, f32) with each value replaced by `f(value, random)`, where `random`
/// is the next word of SplitMix64 seeded by `seed`: reproducible noise.
fn seeded(values: &Tensor, seed: u64, f: impl Fn(f32, u64) -> f32) -> Tensor {
    let shape = values.size();
    let values = Vec::<f32>::try_from(values.to_kind(Kind::Float).flatten(0, -1)).expect("f32");
    let mut state = seed;
    let noisy: Vec<f32> = values
        .into_iter()
        .map(|value| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            f(value, mix(state))
        })
        .collect();
    Tensor::from_slice(&noisy).view(shape.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::ValueEncoding;

    fn honest() -> SparseUpdate {
        SparseUpdate {
            values: ValueEncoding::F32,
            tensors: vec![SparseBlocks {
                indices: Tensor::from_slice(&[0i64, 3, 1, 2]).view([2, 2]),
                values: Tensor::from_slice(&[0.5f32, -2.0, 1.5, -0.25]).view([2, 2]),
            }],
        }
    }

    fn values(update: &SparseUpdate) -> [f32; 4] {
        Vec::<f32>::try_from(update.tensors[0].values.flatten(0, -1))
            .unwrap()
            .try_into()
            .unwrap()
    }

    #[test]
    fn each_attack_sends_what_its_name_says() {
        let own = values(&honest());
        let forged = |attack: Attack, previous: Option<&SparseUpdate>| {
            values(&attack.forge(honest(), previous, 4, 7))
        };
        assert_eq!(forged(Attack::Zero, None), [0.0; 4]);
        assert_eq!(forged(Attack::SignFlip, None), own.map(|v| -v));
        assert_eq!(forged(Attack::Scale, None), own.map(|v| v * SCALE as f32));
        assert_eq!(
            forged(Attack::Copy, None),
            own,
            "the exchange makes the copy"
        );
        assert_eq!(
            forged(Attack::WrongData, None),
            own,
            "its data is what differs"
        );
        assert_eq!(
            forged(Attack::ForgedMomentum, None),
            own,
            "its momentum is what differs"
        );
        let mut before = honest();
        before.tensors[0].values = before.tensors[0].values.ones_like();
        assert_eq!(forged(Attack::Stale, Some(&before)), [1.0; 4]);
        assert_eq!(forged(Attack::Stale, None), own, "nothing to repeat yet");
        assert_eq!(
            forged(Attack::NoisyCopy, None),
            own,
            "the exchange makes it"
        );
        // A noisy copy keeps the picks and moves each value by at most 1%, reproducibly.
        let noisy = jitter(&honest(), 4, 7);
        let moved = values(&noisy);
        assert!(
            moved
                .iter()
                .zip(&own)
                .all(|(m, o)| (m - o).abs() <= o.abs() * 0.01 + 1e-7)
        );
        assert_ne!(moved, own);
        assert_eq!(values(&jitter(&honest(), 4, 7)), moved);
        assert!(noisy.tensors[0].indices.equal(&honest().tensors[0].indices));
        // Random keeps the magnitudes, draws the signs, and draws them the same way again.
        let random = forged(Attack::Random, None);
        assert_eq!(random.map(f32::abs), own.map(f32::abs));
        assert_eq!(forged(Attack::Random, None), random);
    }
}
