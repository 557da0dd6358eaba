//! One copy of the model: what a networked client trains, and what the simulation holds one of
//! per worker. Optimizers live beside it, not in it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tch::{Device, Tensor, nn};

use crate::data::Dataset;
use crate::demo::{Demo, SparseUpdate};
use crate::model::{
    Llama, LlamaConfig, initialize, load_safetensors, named_parameters, save_safetensors,
};
use crate::optim::clip_global_norm;
use crate::payload::{self, PayloadError};

/// A model replica and its named parameters (sharing storage with the model).
pub struct Replica {
    vs: nn::VarStore,
    model: Llama,
    parameters: Vec<(String, Tensor)>,
}

impl Replica {
    /// A freshly initialized replica: the same `seed` gives the same weights on every device.
    pub fn new(config: &LlamaConfig, seed: u64, device: Device) -> anyhow::Result<Self> {
        let vs = nn::VarStore::new(device);
        let model = Llama::new(&vs.root(), config)?;
        let parameters = named_parameters(&vs);
        initialize(&parameters, seed, config.initializer_range);
        Ok(Self {
            vs,
            model,
            parameters,
        })
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The parameters by HF name, in the model's natural order.
    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.parameters
    }

    /// The parameter tensors (sharing storage with the model), in parameter order.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.parameters
            .iter()
            .map(|(_, t)| t.shallow_clone())
            .collect()
    }

    /// Applies one round's DeMo results, the one path every replica takes (the networked
    /// client's and each of the simulation's workers): decodes every payload against `demo`'s
    /// layouts, aggregates them and steps by the sign of the aggregate with `lr`. The same
    /// payloads in the same order give every replica the same weights. Returns how many results
    /// were applied and how long each part took.
    pub fn apply_results<'a>(
        &self,
        demo: &Demo,
        payloads: impl IntoIterator<Item = &'a [u8]>,
        lr: f64,
    ) -> Result<(usize, ApplyTimes), PayloadError> {
        let start = Instant::now();
        let updates = payload::decode_all(payloads, demo.compressor(), self.device())?;
        let decode = start.elapsed();
        let refs: Vec<&SparseUpdate> = updates.iter().collect();
        let times = self.apply_updates(demo, &refs, lr);
        Ok((updates.len(), ApplyTimes { decode, ..times }))
    }

    /// Applies one round's decoded results (what [`Self::apply_results`] does after decoding,
    /// for a client that also screens them): aggregates them and steps by the sign of the
    /// aggregate with `lr`.
    pub fn apply_updates(&self, demo: &Demo, updates: &[&SparseUpdate], lr: f64) -> ApplyTimes {
        let mut times = ApplyTimes::default();
        if updates.is_empty() {
            return times;
        }
        let start = Instant::now();
        let aggregate = demo.aggregate(updates);
        times.aggregate = start.elapsed();
        let start = Instant::now();
        tch::no_grad(|| demo.apply_aggregate(&self.tensors(), &aggregate, lr));
        times.apply = start.elapsed();
        times
    }

    /// Forward and backward on one batch: the loss and the gradients (clipped to a global norm
    /// of `grad_clip` when given), in parameter order.
    pub fn gradients(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        grad_clip: Option<f64>,
    ) -> (f64, Vec<Tensor>) {
        let device = self.device();
        for (_, parameter) in &self.parameters {
            let mut grad = parameter.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
        let loss = self
            .model
            .loss(&inputs.to_device(device), &targets.to_device(device));
        loss.backward();
        let mut grads: Vec<Tensor> = self.parameters.iter().map(|(_, t)| t.grad()).collect();
        if let Some(max_norm) = grad_clip {
            clip_global_norm(&mut grads, max_norm);
        }
        (loss.double_value(&[]), grads)
    }

    /// The loss on one batch, without gradients.
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor) -> f64 {
        let device = self.device();
        tch::no_grad(|| {
            self.model
                .loss(&inputs.to_device(device), &targets.to_device(device))
                .double_value(&[])
        })
    }

    /// Mean loss on the first `samples` validation windows of `seq_len` tokens.
    pub fn validation_loss(&self, dataset: &Dataset, seq_len: usize, samples: usize) -> f64 {
        let (inputs, targets) = dataset.validation_batch(seq_len, samples);
        let chunks = inputs.split(16, 0).into_iter().zip(targets.split(16, 0));
        let (mut total, mut count) = (0.0, 0i64);
        for (x, y) in chunks {
            let rows = x.size()[0];
            total += self.loss(&x, &y) * rows as f64;
            count += rows;
        }
        total / count.max(1) as f64
    }

    /// SHA-256 over every parameter's name and bytes, in parameter order: equal hashes mean
    /// bitwise-identical replicas. What witnesses attest at an epoch's end.
    pub fn hash(&self) -> [u8; 32] {
        weights_hash(
            self.parameters
                .iter()
                .map(|(name, tensor)| (name.as_str(), tensor)),
        )
    }

    /// Writes the weights as safetensors with HF names.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        Ok(save_safetensors(path, &self.parameters)?)
    }

    /// Loads weights saved by [`Replica::save`] only if they hash to `attested` (see
    /// [`Replica::hash`]); otherwise an error, and the replica is left as it was.
    pub fn load_attested(&self, path: &Path, attested: &[u8; 32]) -> anyhow::Result<()> {
        let saved: BTreeMap<String, Tensor> = load_safetensors(path)?.into_iter().collect();
        let hash = self.saved_hash(&saved);
        anyhow::ensure!(
            &hash == attested,
            "{}: weights hash {} but the run's witnesses attested {}",
            path.display(),
            hex::encode(hash),
            hex::encode(attested)
        );
        self.copy_in(path, &saved)
    }

    /// The weights hash (see [`Replica::hash`]) of a file [`Replica::save`] wrote for this
    /// model, without loading it: what the witnesses attested if it holds the model they held.
    pub fn file_hash(&self, path: &Path) -> anyhow::Result<[u8; 32]> {
        let saved: BTreeMap<String, Tensor> = load_safetensors(path)?.into_iter().collect();
        Ok(self.saved_hash(&saved))
    }

    /// The weights hash of `saved`, by this model's parameter names and order; a missing
    /// tensor changes it too.
    fn saved_hash(&self, saved: &BTreeMap<String, Tensor>) -> [u8; 32] {
        weights_hash(
            self.parameters
                .iter()
                .filter_map(|(name, _)| Some((name.as_str(), saved.get(name)?))),
        )
    }

    /// Loads weights saved by [`Replica::save`] (or any safetensors file with the same names
    /// and shapes); a missing tensor or another shape is an error naming it.
    pub fn load(&self, path: &Path) -> anyhow::Result<()> {
        let saved: BTreeMap<String, Tensor> = load_safetensors(path)?.into_iter().collect();
        self.copy_in(path, &saved)
    }

    /// Copies `saved` (read from `path`) into the parameters, by name.
    fn copy_in(&self, path: &Path, saved: &BTreeMap<String, Tensor>) -> anyhow::Result<()> {
        tch::no_grad(|| {
            for (name, tensor) in &self.parameters {
                let source = saved
                    .get(name)
                    .ok_or_else(|| anyhow::anyhow!("{}: lacks tensor {name}", path.display()))?;
                anyhow::ensure!(
                    source.size() == tensor.size(),
                    "{}: tensor {name} has shape {:?}, the model {:?}",
                    path.display(),
                    source.size(),
                    tensor.size()
                );
                tensor.shallow_clone().copy_(source);
            }
            Ok(())
        })
    }
}

/// How long each part of applying a round took ([`Replica::apply_results`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct ApplyTimes {
    pub decode: Duration,
    pub aggregate: Duration,
    pub apply: Duration,
}

/// SHA-256 over each tensor's name and its bytes on the host, in the order given.
fn weights_hash<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for (name, tensor) in tensors {
        let tensor = tensor.to_device(Device::Cpu).contiguous();
        let mut bytes = vec![0u8; tensor.numel() * tensor.kind().elt_size_in_bytes()];
        tensor.copy_data_u8(&mut bytes, tensor.numel());
        hasher.update(name.as_bytes());
        hasher.update(&bytes);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Preset;

    fn replica(seed: u64) -> Replica {
        let config = LlamaConfig::for_training(Preset::Tiny, 256, 32);
        Replica::new(&config, seed, Device::Cpu).unwrap()
    }

    #[test]
    fn only_the_attested_weights_are_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (theirs, path) = (replica(1), dir.path().join("model.safetensors"));
        theirs.save(&path).unwrap();
        let mine = replica(2);
        let before = mine.hash();
        assert_ne!(before, theirs.hash());

        let error = mine.load_attested(&path, &before).unwrap_err();
        assert!(error.to_string().contains("attested"), "{error}");
        assert_eq!(mine.hash(), before, "a refused snapshot changes nothing");

        mine.load_attested(&path, &theirs.hash()).unwrap();
        assert_eq!(mine.hash(), theirs.hash());
    }
}
