//! Exact spot checks: a result recomputed from the momentum its sender committed to, on the
//! model it was trained from and the samples it was assigned, and compared byte for byte. One
//! recompute for the networked client (`train/verify.rs`) and the simulation
//! (`simulate/verifiers.rs`) alike.

use demeter_coordinator_core::Finding;
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::demo::{Demo, SparseUpdate, momentum_to_bytes};
use crate::payload;
use crate::replica::Replica;
use crate::screening::Picks;

/// What recomputing one result found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recompute {
    /// The recompute encodes to the bytes sent; `after` is the SHA-256 of the momentum the
    /// step left, which the sender's next result must commit to.
    Matched { after: [u8; 32] },
    /// No momentum of this model was served for the commitment: nothing to recompute from.
    Unserved,
    /// The recompute encodes to other bytes; `picked` is the share of the sent result's picks
    /// the recompute also picks.
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
/// payload's commitment (`None` when it served none).
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
) -> Recompute {
    let Some(mut momentum) = served.and_then(|bytes| demo.momentum_from_bytes(bytes)) else {
        return Recompute::Unserved;
    };
    let commitment = payload::momentum_commitment(sent).unwrap_or(payload::UNCOMMITTED);
    let (_, gradients) = replica.gradients(inputs, targets, grad_clip);
    let again = demo.recompute_step(&mut momentum, &gradients, lr);
    let recomputed = payload::encode(&again, &commitment, demo.compressor().layouts());
    if recomputed.as_slice() == sent {
        Recompute::Matched {
            after: Sha256::digest(momentum_to_bytes(&momentum)).into(),
        }
    } else {
        Recompute::Differs {
            picked: Picks::of(update).overlap(&Picks::of(&again)),
        }
    }
}
