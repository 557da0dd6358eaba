//! A simulation's checkpoints: the model as `transformers` loads it, each worker's optimizer
//! state, and where the run stood, written whole or not at all (`crate::checkpoint`).

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{OptimizerKind, Simulation, WorkerOptimizer};
use crate::checkpoint::{self, CheckpointWriter, SavedState, named_state};
use crate::model::save_safetensors;

impl Simulation {
    /// Writes the model (`model.safetensors` + `config.json`, loadable by `transformers`), each
    /// worker's optimizer state (`optimizer-worker-N.safetensors`) and `trainer_state.json` into
    /// `dir`.
    pub fn save_checkpoint(&self, dir: &Path) -> anyhow::Result<()> {
        let writer = CheckpointWriter::begin(dir)?;
        self.workers[self.first_in_run()]
            .replica
            .save(&writer.file(checkpoint::MODEL))?;
        writer.write_config(&self.model_config)?;
        let mut adamw_steps = 0;
        for (index, worker) in self.workers.iter().enumerate() {
            let names = || worker.replica.parameters().iter().map(|(n, _)| n.as_str());
            let tensors = match &worker.optimizer {
                WorkerOptimizer::Demo(demo) => named_state(names(), "demo_delta", demo.deltas()),
                WorkerOptimizer::AdamW(adamw) => {
                    adamw_steps = adamw.step_count();
                    let (first, second) = adamw.moments();
                    let mut state = named_state(names(), "adamw_m", first);
                    state.extend(named_state(names(), "adamw_v", second));
                    state
                }
            };
            save_safetensors(&writer.file(&optimizer_file(index)), &tensors)?;
        }
        let state = TrainerState {
            step: self.step,
            optimizer: self.config.optimizer,
            workers: self.workers.len(),
            adamw_steps,
            ejected: self.ejected.clone(),
        };
        writer.write_json(TRAINER_STATE, &state)?;
        writer.commit()?;
        Ok(())
    }

    /// Restores a checkpoint written by [`Simulation::save_checkpoint`] for the same settings.
    pub fn resume(&mut self, dir: &Path) -> anyhow::Result<()> {
        let state_path = dir.join(TRAINER_STATE);
        let state: TrainerState = serde_json::from_str(
            &std::fs::read_to_string(&state_path)
                .with_context(|| format!("--resume: reading {}", state_path.display()))?,
        )
        .with_context(|| format!("--resume: parsing {}", state_path.display()))?;
        anyhow::ensure!(
            state.optimizer == self.config.optimizer && state.workers == self.workers.len(),
            "--resume {}: written by {} {:?} workers; this run has {} {:?} workers",
            dir.display(),
            state.workers,
            state.optimizer,
            self.workers.len(),
            self.config.optimizer
        );
        for (index, worker) in self.workers.iter_mut().enumerate() {
            worker
                .replica
                .load(&dir.join(checkpoint::MODEL))
                .context("--resume")?;
            let saved = SavedState::read(&dir.join(optimizer_file(index)))?;
            let names = || worker.replica.parameters().iter().map(|(n, _)| n.as_str());
            match &mut worker.optimizer {
                WorkerOptimizer::Demo(demo) => {
                    demo.load_deltas(&saved.take(names(), "demo_delta")?)
                }
                WorkerOptimizer::AdamW(adamw) => adamw.load(
                    state.adamw_steps,
                    &saved.take(names(), "adamw_m")?,
                    &saved.take(names(), "adamw_v")?,
                ),
            }
        }
        self.step = state.step;
        if !state.ejected.is_empty() {
            self.ejected = state.ejected;
        }
        Ok(())
    }
}

const TRAINER_STATE: &str = "trainer_state.json";

/// Worker `index`'s optimizer state in a checkpoint.
fn optimizer_file(index: usize) -> String {
    format!("optimizer-worker-{index}.safetensors")
}

/// What a checkpoint records besides tensors.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainerState {
    step: u64,
    optimizer: OptimizerKind,
    workers: usize,
    adamw_steps: u64,
    /// By worker, the round (from 1) from which it was ejected (empty in checkpoints written
    /// before simulations ejected anyone).
    #[serde(default)]
    ejected: Vec<Option<u64>>,
}
