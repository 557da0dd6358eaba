//! A checkpoint directory, as the networked client and the simulation both write it:
//! `model.safetensors` and `config.json` (loadable by `transformers`), optimizer state named
//! `{parameter}.{kind}` in safetensors files, and any JSON state beside them. Written whole or
//! not at all: files go into a partial directory next to the target, which is renamed into
//! place at the end, so a crash leaves the previous checkpoint (or none), never half of one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tch::Tensor;

use crate::model::{LlamaConfig, load_safetensors};

/// The model's weights.
pub const MODEL: &str = "model.safetensors";
/// The model's shape, as `transformers` reads it.
pub const CONFIG: &str = "config.json";

/// The weights hash of the checkpoint in `dir` (its `config.json` and `model.safetensors`):
/// the hash the run's witnesses attest of the model they hold (`Replica::hash`), so a
/// checkpoint is the attested model exactly when the two are equal.
pub fn weights_hash(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let config = LlamaConfig::from_hf_json_file(&dir.join(CONFIG))?;
    // The weights it starts with are not hashed: only the file's.
    let replica = crate::replica::Replica::new(&config, 0, tch::Device::Cpu)?;
    replica.file_hash(&dir.join(MODEL))
}

/// A checkpoint being written to `dir`.
pub struct CheckpointWriter {
    dir: PathBuf,
    partial: PathBuf,
}

impl CheckpointWriter {
    /// Starts a checkpoint that will replace `dir` (a leftover partial one is discarded).
    pub fn begin(dir: &Path) -> anyhow::Result<Self> {
        let name = dir
            .file_name()
            .with_context(|| format!("{}: a checkpoint needs a directory name", dir.display()))?;
        let partial = dir.with_file_name(format!(".{}.partial", name.to_string_lossy()));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            partial,
        })
    }

    /// Where a file of the checkpoint is written.
    pub fn file(&self, name: &str) -> PathBuf {
        self.partial.join(name)
    }

    /// Writes `config.json` for `config`.
    pub fn write_config(&self, config: &LlamaConfig) -> anyhow::Result<()> {
        let path = self.file(CONFIG);
        std::fs::write(&path, config.to_hf_json())
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `value` as pretty JSON to the file `name`.
    pub fn write_json<T: serde::Serialize>(&self, name: &str, value: &T) -> anyhow::Result<()> {
        let path = self.file(name);
        std::fs::write(&path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Puts the checkpoint in place of whatever `dir` held; returns `dir`.
    pub fn commit(self) -> anyhow::Result<PathBuf> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::rename(&self.partial, &self.dir).with_context(|| {
            format!(
                "moving {} to {}",
                self.partial.display(),
                self.dir.display()
            )
        })?;
        Ok(self.dir)
    }
}

/// Optimizer state as a checkpoint names it: `{parameter}.{kind}` for each parameter.
pub fn named_state<'a>(
    parameters: impl IntoIterator<Item = &'a str>,
    kind: &str,
    tensors: &[Tensor],
) -> Vec<(String, Tensor)> {
    parameters
        .into_iter()
        .zip(tensors)
        .map(|(name, tensor)| (format!("{name}.{kind}"), tensor.shallow_clone()))
        .collect()
}

/// A safetensors file of optimizer state, read by name.
pub struct SavedState {
    path: PathBuf,
    tensors: BTreeMap<String, Tensor>,
}

impl SavedState {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.to_owned(),
            tensors: load_safetensors(path)?.into_iter().collect(),
        })
    }

    /// The `kind` state of each of `parameters`, in their order; an error names the first one
    /// the file lacks.
    pub fn take<'a>(
        &self,
        parameters: impl IntoIterator<Item = &'a str>,
        kind: &str,
    ) -> anyhow::Result<Vec<Tensor>> {
        parameters
            .into_iter()
            .map(|name| {
                self.tensors
                    .get(&format!("{name}.{kind}"))
                    .map(Tensor::shallow_clone)
                    .with_context(|| format!("{}: lacks {name}.{kind}", self.path.display()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_replaces_the_old_one_whole_and_leaves_no_partial_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("step-4");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale.json"), "{}").unwrap();
        let writer = CheckpointWriter::begin(&dir).unwrap();
        writer.write_json("state.json", &[1, 2]).unwrap();
        // Until committed, the old checkpoint is what a reader sees.
        assert!(dir.join("stale.json").exists());
        assert!(!dir.join("state.json").exists());
        writer.commit().unwrap();
        assert!(!dir.join("stale.json").exists());
        assert!(dir.join("state.json").exists());
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["step-4"]);
    }

    #[test]
    fn state_is_named_by_parameter_and_read_back_in_order() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("optimizer.safetensors");
        let tensors = [
            Tensor::from_slice(&[1.0f32, 2.0]),
            Tensor::from_slice(&[3.0f32]),
        ];
        let named = named_state(["a.weight", "b.weight"], "demo_delta", &tensors);
        crate::model::save_safetensors(&path, &named).unwrap();
        let saved = SavedState::read(&path).unwrap();
        let back = saved.take(["a.weight", "b.weight"], "demo_delta").unwrap();
        assert_eq!(Vec::<f32>::try_from(&back[1]).unwrap(), [3.0]);
        let missing = saved.take(["c.weight"], "demo_delta").unwrap_err();
        assert!(
            missing.to_string().contains("lacks c.weight.demo_delta"),
            "{missing}"
        );
    }
}
