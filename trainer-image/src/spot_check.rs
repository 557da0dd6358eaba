//! Spot checks: a result recomputed from the momentum its sender committed to, on the model it
//! was trained from and the samples it was assigned, and compared byte for byte, or within the
//! run's tolerance where clients compute on different kinds of device; then the sender's next
//! result checked to start from the momentum the recompute left (the chain). One recompute and
//! one chain for the networked client (`train/verify.rs`) and the simulation
//! (`simulate/verifiers.rs`) alike.

use std::thread::JoinHandle;

use bytes::Bytes;
use demeter_coordinator_core::Finding;
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::demo::{Demo, SparseUpdate, momentum_to_bytes};
use crate::payload;
use crate::replica::Replica;
use crate::screening::Picks;

/// A sender's commitment to the momentum its step starts from, in the making: the momentum's
/// bytes (what it serves for a spot check) and their SHA-256 (what its payload commits to).
/// Where the step runs on a GPU, the hash (four bytes a parameter) runs on a thread of its own
/// while the step's forward and backward keep the GPU busy. On the CPU it runs at once: there
/// the step already uses every core, and hashing beside it cost twice as much as hashing
/// alone (the spot-check bench, docs/benchmarks.md).
pub struct Commitment {
    momentum: Bytes,
    hashing: Hashing,
}

enum Hashing {
    Done([u8; 32]),
    Running(JoinHandle<[u8; 32]>),
}

impl Commitment {
    /// Starts committing to `demo`'s momentum as it is now: before the step.
    pub fn start(demo: &Demo) -> Self {
        let momentum = Bytes::from(demo.momentum_bytes());
        let on_gpu = demo
            .deltas()
            .first()
            .is_some_and(|delta| delta.device().is_cuda());
        let hashing = match on_gpu {
            true => Hashing::Running(std::thread::spawn({
                let momentum = momentum.clone();
                move || Sha256::digest(&momentum).into()
            })),
            false => Hashing::Done(Sha256::digest(&momentum).into()),
        };
        Self { momentum, hashing }
    }

    /// The commitment and the momentum it commits to.
    pub fn finish(self) -> ([u8; 32], Bytes) {
        let hash = match self.hashing {
            Hashing::Done(hash) => hash,
            Hashing::Running(hashing) => hashing.join().expect("hashing bytes does not panic"),
        };
        (hash, self.momentum)
    }
}

/// How closely a recompute reproduces a sent result: what a run that tolerates another
/// device's last bits judges by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// The share of the sent result's picks that the recompute also picks, with the same sign.
    pub picked: f64,
    /// Over the picks they agree on: the distance of the sent values from the recomputed ones,
    /// as a share of the scale it was measured against.
    pub values: f64,
}

impl Agreement {
    /// `sent` as its recompute `again` reproduces it, value distances measured against `scale`
    /// (a spot check's: the recomputed step's `lr·‖g‖`; a zero scale makes any distance whole).
    pub fn of(sent: &Picks, again: &Picks, scale: f64) -> Self {
        let (mut agreeing, mut distance) = (0usize, 0.0);
        for (a, b) in sent.shared_values(again) {
            if sign(a) == sign(b) {
                agreeing += 1;
                distance += f64::from(a - b).powi(2);
            }
        }
        let distance = distance.sqrt();
        Self {
            picked: match sent.len() {
                0 => 0.0,
                len => agreeing as f64 / len as f64,
            },
            values: match scale > 0.0 {
                true => distance / scale,
                false => f64::from(u8::from(distance > 0.0)),
            },
        }
    }
}

/// -1, 0 or 1.
fn sign(value: f32) -> i8 {
    i8::from(value > 0.0) - i8::from(value < 0.0)
}

/// The L2 distance between two momenta of one model: how far a sender's next momentum strays
/// from the one a recompute left.
pub fn momentum_distance(a: &[Tensor], b: &[Tensor]) -> f64 {
    tch::no_grad(|| {
        a.iter()
            .zip(b)
            .map(|(a, b)| {
                (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
                    .square()
                    .sum(tch::Kind::Double)
                    .double_value(&[])
            })
            .sum::<f64>()
            .sqrt()
    })
}

/// How closely a recompute must reproduce the result it checks: the run's
/// `spot_check_tolerance`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Bit for bit: verifiers and senders compute on one kind of device.
    Exact,
    /// Within this share (of one, from the run's per mille): the recompute picks at least
    /// `1 - share` of the result's picks with the same sign, and the result's values where they
    /// agree, like its sender's next momentum, are at most `share` of the step's gradient
    /// (`lr·‖g‖`, the recompute's) away from the recompute's. Another kind of device changes a
    /// gradient's last bits, which moves neither by more than a tiny share of it; training on
    /// other samples or from another momentum moves both by about the whole of it.
    Within(f64),
}

impl Tolerance {
    /// The run's tolerance from its config's per mille (0: exact).
    pub fn from_per_mille(per_mille: u16) -> Self {
        match per_mille {
            0 => Self::Exact,
            per_mille => Self::Within(f64::from(per_mille) / 1000.0),
        }
    }
}

/// What the sender's next result is checked against once a recompute matched: the momentum
/// the recomputed step left, which that result must start from.
#[derive(Debug)]
pub enum Chain {
    /// Exactly: its SHA-256, which the next result must commit to.
    Committed([u8; 32]),
    /// Within `share` of `scale` (the recomputed step's `lr·‖g‖`): the momentum itself. The
    /// next result's momentum, as its sender serves it, is compared with it.
    Near {
        momentum: Vec<Tensor>,
        scale: f64,
        share: f64,
    },
}

impl Chain {
    /// Whether checking the next result needs the momentum its sender serves for it.
    pub fn needs_momentum(&self) -> bool {
        matches!(self, Self::Near { .. })
    }

    /// Whether `next`, the sender's result of the round after, continues the chain; `served`
    /// is the momentum it served for it (needed for a chain within a tolerance), already
    /// checked against the payload's commitment.
    pub fn holds(&self, demo: &Demo, next: &[u8], served: Option<&[u8]>) -> bool {
        match self {
            Self::Committed(after) => payload::momentum_commitment(next) == Some(*after),
            Self::Near {
                momentum,
                scale,
                share,
            } => served
                .and_then(|bytes| demo.momentum_from_bytes(bytes))
                .is_some_and(|next| momentum_distance(&next, momentum) <= share * scale),
        }
    }
}

/// What recomputing one result found.
#[derive(Debug)]
pub enum Recompute {
    /// The recompute reproduces the result (bit for bit, or within the run's tolerance).
    Matched { chain: Chain },
    /// No momentum of this model was served for the commitment: nothing to recompute from.
    Unserved,
    /// The recompute does not reproduce the result; `picked` is the share of the sent result's
    /// picks the recompute also picks with the same sign.
    Differs { picked: f64 },
}

impl Recompute {
    /// The finding a verifier sends about the result, if any.
    pub fn finding(&self) -> Option<Finding> {
        match *self {
            Self::Matched { .. } => None,
            Self::Unserved => Some(Finding::Unserved),
            Self::Differs { picked } => Some(Finding::Recomputed {
                picked: (picked * 1000.0).round() as u16,
            }),
        }
    }
}

/// The verifier's side of a spot check: recomputes the result `sent` (a payload; `update`,
/// the same decoded) on `replica`, the model it was trained from, with the gradients of its
/// assigned `batch` (inputs, targets; clipped like every client's to `grad_clip`) and
/// `demo`'s step from `served`, the momentum its sender served, already checked against the
/// payload's commitment (`None` when it served none), and judges it by `tolerance`.
#[allow(clippy::too_many_arguments)]
pub fn recompute(
    replica: &Replica,
    demo: &Demo,
    (inputs, targets): &(Tensor, Tensor),
    grad_clip: Option<f64>,
    lr: f64,
    sent: &[u8],
    update: &SparseUpdate,
    served: Option<&[u8]>,
    tolerance: Tolerance,
) -> Recompute {
    let Some(mut momentum) = served.and_then(|bytes| demo.momentum_from_bytes(bytes)) else {
        return Recompute::Unserved;
    };
    let (_, gradients) = replica.gradients(inputs, targets, grad_clip);
    let again = demo.recompute_step(&mut momentum, &gradients, lr, update);
    match tolerance {
        Tolerance::Exact => {
            let commitment = payload::momentum_commitment(sent).unwrap_or(payload::UNCOMMITTED);
            let recomputed = payload::encode(&again, &commitment, demo.compressor().layouts());
            if recomputed.as_slice() == sent {
                Recompute::Matched {
                    chain: Chain::Committed(Sha256::digest(momentum_to_bytes(&momentum)).into()),
                }
            } else {
                Recompute::Differs {
                    picked: Agreement::of(&Picks::of(update), &Picks::of(&again), 1.0).picked,
                }
            }
        }
        Tolerance::Within(share) => {
            let scale = step_scale(&gradients, lr);
            let agreement = Agreement::of(&Picks::of(update), &Picks::of(&again), scale);
            if agreement.picked >= 1.0 - share && agreement.values <= share {
                Recompute::Matched {
                    chain: Chain::Near {
                        momentum,
                        scale,
                        share,
                    },
                }
            } else {
                Recompute::Differs {
                    picked: agreement.picked,
                }
            }
        }
    }
}

/// The scale a tolerance is a share of: the step's gradient as it enters the momentum,
/// `lr·‖g‖`.
pub fn step_scale(gradients: &[Tensor], lr: f64) -> f64 {
    lr * crate::optim::global_norm(gradients)
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::data::{BatchPlan, Dataset};
    use crate::demo::{DemoConfig, SparseBlocks, ValueEncoding};
    use crate::model::{LlamaConfig, Preset};
    use crate::optim::clip_global_norm;

    fn update(indices: &[i64], values: &[f32]) -> SparseUpdate {
        let k = indices.len() as i64;
        SparseUpdate {
            values: ValueEncoding::F32,
            tensors: vec![SparseBlocks {
                indices: Tensor::from_slice(indices).view([1, k]),
                values: Tensor::from_slice(values).view([1, k]),
            }],
        }
    }

    #[test]
    fn agreement_counts_picks_with_the_same_sign_and_measures_their_values() {
        let sent = Picks::of(&update(&[0, 1, 2, 3], &[1.0, 1.0, 1.0, 1.0]));
        let again = Picks::of(&update(&[0, 1, 2, 9], &[1.0, -1.0, 1.5, 1.0]));
        let agreement = Agreement::of(&sent, &again, 2.0);
        // Picks 0 and 2 agree; 1 has the other sign; 3 was not picked again.
        assert_eq!(agreement.picked, 0.5);
        assert_eq!(agreement.values, 0.25, "|1 - 1.5| over the scale of 2");
        assert_eq!(Agreement::of(&sent, &sent, 0.0).values, 0.0);
        assert_eq!(Agreement::of(&sent, &again, 0.0).values, 1.0);
    }

    /// A sender whose arithmetic differs in the last bits (here: its gradients summed sample
    /// by sample, another order, as another kind of device would) fails an exact check and
    /// passes one within a tolerance, and its next momentum continues the chain; a momentum
    /// made up, or none served, breaks it.
    #[test]
    fn another_summation_order_fails_exactly_and_holds_within_a_tolerance() {
        tch::manual_seed(3);
        let dataset = Dataset::embedded(0.02);
        let config = LlamaConfig::for_training(Preset::Tiny, dataset.meta.vocab_size, 32);
        let replica = Replica::new(&config, 7, Device::Cpu).unwrap();
        let mut sender = Demo::new(replica.parameters(), DemoConfig::default()).unwrap();
        let verifier = Demo::new(replica.parameters(), DemoConfig::default()).unwrap();
        let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
        let plan = BatchPlan::new(11, 32, 4, &shard_lens).unwrap();
        let batch = |step: u64| {
            let ranges: Vec<_> = (0..4).map(|id| plan.token_range(step, id)).collect();
            dataset.training_batch(&ranges)
        };
        // A momentum that is not all zeros.
        let (_, gradients) = replica.gradients(&batch(1).0, &batch(1).1, Some(1.0));
        sender.compress_step(&gradients, 2e-3);

        let momentum = sender.momentum_bytes();
        let commitment: [u8; 32] = Sha256::digest(&momentum).into();
        let assigned = batch(0);
        let mut summed: Vec<Tensor> = Vec::new();
        for sample in 0..4 {
            let (_, gradients) = replica.gradients(
                &assigned.0.narrow(0, sample, 1),
                &assigned.1.narrow(0, sample, 1),
                None,
            );
            summed = match summed.is_empty() {
                true => gradients.iter().map(|g| g / 4.0).collect(),
                false => summed
                    .iter()
                    .zip(&gradients)
                    .map(|(s, g)| s + g / 4.0)
                    .collect(),
            };
        }
        clip_global_norm(&mut summed, 1.0);
        let sent = sender.compress_step(&summed, 2e-3);
        let bytes = payload::encode(&sent, &commitment, sender.compressor().layouts());
        let check = |tolerance| {
            recompute(
                &replica,
                &verifier,
                &assigned,
                Some(1.0),
                2e-3,
                &bytes,
                &sent,
                Some(&momentum),
                tolerance,
            )
        };
        match check(Tolerance::Exact) {
            Recompute::Differs { picked } => assert!(picked > 0.99, "{picked}"),
            other => panic!("the last bits differ, so the bytes do: {other:?}"),
        }
        let Recompute::Matched { chain } = check(Tolerance::from_per_mille(10)) else {
            panic!("within 10 per mille");
        };
        assert!(chain.needs_momentum());
        assert!(chain.holds(&verifier, &[], Some(&sender.momentum_bytes())));
        let made_up: Vec<Tensor> = sender.deltas().iter().map(|delta| -delta).collect();
        assert!(!chain.holds(&verifier, &[], Some(&momentum_to_bytes(&made_up))));
        assert!(!chain.holds(&verifier, &[], None), "not served");
    }
}
