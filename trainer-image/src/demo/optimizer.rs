//! The DeMo optimizer (Peng, Quesnelle, Kingma 2024), step for step as the reference algorithm.
//!
//! A step has two halves so the network can sit between them:
//! - [`Demo::compress_step`], local: `Δ ← βΔ + lr·g`; take the top-k of Δ's blockwise DCT; remove
//!   what was taken from Δ (error feedback); return the selection to share.
//! - [`Demo::apply`], shared: average every client's selection per coefficient over the clients
//!   that chose it, decode, and apply `W ← W·(1 − lr·wd) − lr·sign(G)`.
//!
//! Weight decay sits in the shared half: it only touches W, which the local half never reads, so
//! this is the reference's order, and W changes only once the round's results are in.

use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::aggregation::Aggregation;
use super::compressor::{Compressor, SparseUpdate};
use super::layout::MAX_BLOCK_SIDE;
use super::sparse::{SparseBlocks, ValueEncoding};

/// DeMo's hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// β: how much of the momentum Δ survives a step (`compression_decay` in the reference).
    pub momentum_decay: f64,
    /// Coefficients shared per DCT block.
    pub topk: usize,
    /// Target DCT block side.
    pub chunk: usize,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// How shared values travel: f32, bf16, or one bit (the sign).
    pub values: ValueEncoding,
    /// How a replica combines the round's results.
    pub aggregation: Aggregation,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            momentum_decay: 0.999,
            topk: 32,
            chunk: 64,
            weight_decay: 0.0,
            values: ValueEncoding::F32,
            aggregation: Aggregation::Mean,
        }
    }
}

/// A DeMo setting that cannot work, naming the field and the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DemoConfigError {
    #[error("demo.momentum_decay = {0}: must be in [0, 1] (the reference uses 0.999)")]
    MomentumDecay(f64),
    #[error("demo.topk = 0: at least one coefficient per block must be shared (default 32)")]
    TopK,
    #[error("demo.chunk = {0}: the DCT block side must be in 1..={max} (default 64)", max = MAX_BLOCK_SIDE)]
    Chunk(usize),
    #[error("demo.weight_decay = {0}: must be finite and >= 0")]
    WeightDecay(f64),
}

impl DemoConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), DemoConfigError> {
        if !(0.0..=1.0).contains(&self.momentum_decay) {
            return Err(DemoConfigError::MomentumDecay(self.momentum_decay));
        }
        if self.topk == 0 {
            return Err(DemoConfigError::TopK);
        }
        if !(1..=MAX_BLOCK_SIDE).contains(&self.chunk) {
            return Err(DemoConfigError::Chunk(self.chunk));
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return Err(DemoConfigError::WeightDecay(self.weight_decay));
        }
        Ok(())
    }
}

/// A momentum as bytes: every buffer's f32 values, little-endian, in parameter order (what
/// [`Demo::momentum_from_bytes`] reads back, and what a payload's momentum commitment hashes).
pub fn momentum_to_bytes(momentum: &[Tensor]) -> Vec<u8> {
    let len = momentum.iter().map(|buffer| buffer.numel() * 4).sum();
    let mut bytes = Vec::with_capacity(len);
    for buffer in momentum {
        let host = buffer.to_device(tch::Device::Cpu).contiguous();
        let start = bytes.len();
        bytes.resize(start + host.numel() * 4, 0);
        host.copy_data_u8(&mut bytes[start..], host.numel());
    }
    bytes
}

/// `Δ ← βΔ + lr·g`; select the top-k of Δ's blockwise DCT; remove what was selected from Δ.
/// Replaying a peer's step (`spent`: the selection it sent), remove what the peer selected
/// instead, so Δ ends as the peer's would if it took this step: the same as removing this
/// selection wherever the two agree.
fn step_momentum(
    config: &DemoConfig,
    compressor: &Compressor,
    deltas: &mut [Tensor],
    gradients: &[Tensor],
    lr: f64,
    spent: Option<&SparseUpdate>,
) -> SparseUpdate {
    assert_eq!(gradients.len(), deltas.len(), "one gradient per parameter");
    let beta = config.momentum_decay;
    let one_bit = config.values == ValueEncoding::Sign;
    tch::no_grad(|| {
        let tensors = deltas
            .iter_mut()
            .zip(gradients)
            .enumerate()
            .map(|(index, (delta, gradient))| {
                let _ = delta.g_mul_scalar_(beta);
                let _ = delta.g_add_(&(gradient.to_kind(tch::Kind::Float) * lr));
                let (sent, raw) = compressor.select(index, delta);
                // Error feedback removes what the peers now know. Signs carry no scale, so a
                // one-bit client removes the full values it selected: those components are
                // spent either way.
                let known = match spent.map(|update| &update.tensors[index]) {
                    None if one_bit => raw,
                    None => sent.shallow_clone(),
                    Some(theirs) if one_bit => SparseBlocks {
                        indices: theirs.indices.shallow_clone(),
                        values: compressor
                            .encode(index, delta)
                            .gather(1, &theirs.indices, false),
                    },
                    Some(theirs) => theirs.shallow_clone(),
                };
                let _ = delta.g_sub_(&compressor.decode(index, &known));
                sent
            })
            .collect();
        SparseUpdate {
            values: config.values,
            tensors,
        }
    })
}

/// One client's DeMo state: its momentum Δ per parameter and the shared codec.
#[derive(Debug)]
pub struct Demo {
    config: DemoConfig,
    compressor: Compressor,
    deltas: Vec<Tensor>,
}

impl Demo {
    /// A fresh optimizer (Δ = 0) for the named parameters.
    pub fn new(
        parameters: &[(String, Tensor)],
        config: DemoConfig,
    ) -> Result<Self, DemoConfigError> {
        config.validate()?;
        let compressor =
            Compressor::for_tensors(parameters, config.chunk, config.topk, config.values);
        let deltas = parameters
            .iter()
            .map(|(_, tensor)| tensor.zeros_like().to_kind(tch::Kind::Float))
            .collect();
        Ok(Self {
            config,
            compressor,
            deltas,
        })
    }

    /// The codec, for the wire format and for peers' results.
    pub fn compressor(&self) -> &Compressor {
        &self.compressor
    }

    /// The momentum buffers, in parameter order (for checkpoints).
    pub fn deltas(&self) -> &[Tensor] {
        &self.deltas
    }

    /// Replaces the momentum buffers (resuming from a checkpoint).
    ///
    /// # Panics
    /// If the count or a shape differs from the parameters'; checkpoints are validated first.
    pub fn load_deltas(&mut self, deltas: &[Tensor]) {
        assert_eq!(deltas.len(), self.deltas.len(), "momentum buffer count");
        tch::no_grad(|| {
            for (own, saved) in self.deltas.iter_mut().zip(deltas) {
                own.copy_(saved);
            }
        });
    }

    /// The local half of a step: fold `gradients` into Δ, select what to share, and remove it
    /// from Δ.
    pub fn compress_step(&mut self, gradients: &[Tensor], lr: f64) -> SparseUpdate {
        step_momentum(
            &self.config,
            &self.compressor,
            &mut self.deltas,
            gradients,
            lr,
            None,
        )
    }

    /// A peer's local half of a step, from its momentum `momentum` (read by
    /// [`Demo::momentum_from_bytes`]): what a verifier recomputes a spot-checked result
    /// `sent` with. Returns the selection this replica makes, which is `sent` bit for bit if
    /// the peer took the step honestly on the same kind of device, and leaves `momentum` as
    /// the peer's is after sending `sent` (what its next result must start from).
    pub fn recompute_step(
        &self,
        momentum: &mut [Tensor],
        gradients: &[Tensor],
        lr: f64,
        sent: &SparseUpdate,
    ) -> SparseUpdate {
        step_momentum(
            &self.config,
            &self.compressor,
            momentum,
            gradients,
            lr,
            Some(sent),
        )
    }

    /// The momentum Δ as bytes ([`momentum_to_bytes`]): what a client serves for a spot
    /// check of a result computed from it.
    pub fn momentum_bytes(&self) -> Vec<u8> {
        momentum_to_bytes(&self.deltas)
    }

    /// The length of [`Demo::momentum_bytes`]: four bytes per parameter.
    pub fn momentum_len(&self) -> usize {
        self.deltas.iter().map(|delta| delta.numel() * 4).sum()
    }

    /// A momentum read from bytes [`Demo::momentum_bytes`] wrote (a peer's, served for a spot
    /// check), shaped and placed like this client's own; `None` unless the length is exactly
    /// this model's.
    pub fn momentum_from_bytes(&self, bytes: &[u8]) -> Option<Vec<Tensor>> {
        if bytes.len() != self.momentum_len() {
            return None;
        }
        let mut offset = 0;
        let momentum = self
            .deltas
            .iter()
            .map(|delta| {
                let len = delta.numel() * 4;
                let values = Tensor::from_data_size(
                    &bytes[offset..offset + len],
                    &delta.size(),
                    tch::Kind::Float,
                );
                offset += len;
                values.to_device(delta.device())
            })
            .collect();
        Some(momentum)
    }

    /// The shared half of a step: aggregate every client's update (the same updates in the same
    /// order on every replica), then apply the sign of the result.
    pub fn apply(&self, parameters: &[Tensor], updates: &[&SparseUpdate], lr: f64) {
        let aggregate = self.aggregate(updates);
        self.apply_aggregate(parameters, &aggregate, lr);
    }

    /// The round's update for every parameter under the run's aggregation rule, before the
    /// sign is taken.
    pub fn aggregate(&self, updates: &[&SparseUpdate]) -> Vec<Tensor> {
        tch::no_grad(|| {
            self.compressor
                .aggregate_by(self.config.aggregation, updates)
        })
    }

    /// `W ← W·(1 − lr·wd) − lr·sign(G)` for every parameter, `G` being the decoded aggregate.
    pub fn apply_aggregate(&self, parameters: &[Tensor], aggregate: &[Tensor], lr: f64) {
        assert_eq!(
            parameters.len(),
            self.deltas.len(),
            "one tensor per parameter"
        );
        let decay = 1.0 - lr * self.config.weight_decay;
        tch::no_grad(|| {
            for (parameter, direction) in parameters.iter().zip(aggregate) {
                let mut parameter = parameter.shallow_clone();
                if self.config.weight_decay != 0.0 {
                    let _ = parameter.g_mul_scalar_(decay);
                }
                let _ = parameter.g_sub_(&(direction.sign().to_kind(parameter.kind()) * lr));
            }
        });
    }
}
