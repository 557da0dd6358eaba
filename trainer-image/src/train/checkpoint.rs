//! Checkpoints: written at an epoch's end and attested by the last round's witnesses, read to
//! resume, and the catch-up of a replica that fell behind the rounds the coordinator still holds
//! (from a peer's snapshot, only if it is the attested model).

use super::*;
use crate::checkpoint::{self, CheckpointWriter, SavedState, named_state};

/// This client's DeMo state in its checkpoints.
const OPTIMIZER: &str = "optimizer.safetensors";

fn parameter_names(replica: &Replica) -> impl Iterator<Item = &str> {
    replica.parameters().iter().map(|(name, _)| name.as_str())
}

impl<B: CoordinatorBackend> Trainer<B> {
    /// Continues from the newest checkpoint in the checkpoint directory, if there is one: a
    /// restarted client loses no applied step and keeps its own DeMo momentum.
    pub(super) fn resume(&mut self) -> anyhow::Result<()> {
        let Some(root) = &self.settings.checkpoint_dir else {
            return Ok(());
        };
        let Some((step, dir)) = latest_checkpoint(root)? else {
            return Ok(());
        };
        self.replica.load(&dir.join(checkpoint::MODEL))?;
        let saved = SavedState::read(&dir.join(OPTIMIZER))?;
        let deltas = saved.take(parameter_names(&self.replica), "demo_delta")?;
        self.demo.load_deltas(&deltas);
        self.applied = step;
        self.checkpointed_epoch = None;
        tracing::info!(dir = %dir.display(), step, "resumed from checkpoint");
        Ok(())
    }

    /// Once per epoch, at its end: keeps a snapshot of the weights for peers that need to
    /// catch up, and writes `step-N/` (model, config, this client's DeMo state) to the
    /// checkpoint directory.
    pub(super) fn checkpoint(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        if self.checkpointed_epoch == Some(state.epoch) {
            return Ok(());
        }
        let scratch = tempfile::tempdir()?;
        let model_path = scratch.path().join("model.safetensors");
        self.replica.save(&model_path)?;
        let model = Bytes::from(std::fs::read(&model_path)?);
        *self
            .exchange
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Snapshot {
            step: self.applied,
            model,
        });
        if let Some(root) = &self.settings.checkpoint_dir {
            let writer = CheckpointWriter::begin(&root.join(format!("step-{}", self.applied)))?;
            std::fs::copy(&model_path, writer.file(checkpoint::MODEL))?;
            writer.write_config(&self.model_config)?;
            let deltas = named_state(
                parameter_names(&self.replica),
                "demo_delta",
                self.demo.deltas(),
            );
            crate::model::save_safetensors(&writer.file(OPTIMIZER), &deltas)?;
            let dir = writer.commit()?;
            tracing::info!(dir = %dir.display(), step = self.applied, "checkpoint written");
        }
        self.checkpointed_epoch = Some(state.epoch);
        Ok(())
    }

    /// Between rounds, as an elected witness of the last round before them: attests the model
    /// this replica holds after every round so far (its weights hash), once. A witness quorum
    /// of equal hashes is what catching-up clients accept a snapshot by.
    pub(super) async fn attest(&mut self, state: &Coordinator, slot: usize) {
        let step = state.step;
        if self.attested == Some(step) || self.applied != step {
            return;
        }
        let Some(position) = step
            .checked_sub(1)
            .and_then(|last| state.held_round(last))
            .and_then(|last| last.witness_position(slot))
        else {
            return;
        };
        if state.checkpoint.has_voted(step, position) {
            self.attested = Some(step);
            return;
        }
        let hash = tokio::task::block_in_place(|| self.replica.hash());
        match self
            .send(Input::Attest {
                step,
                position,
                hash,
            })
            .await
        {
            Ok(()) => {
                tracing::info!(step, hash = %hex::encode(hash), "attested the model");
                self.attested = Some(step);
            }
            Err(BackendError::Rejected(_)) => self.attested = Some(step),
            Err(BackendError::Unavailable(_)) => {}
        }
    }

    /// A replica that fell behind the rounds the coordinator still holds (a restarted or late
    /// client) loads a peer's epoch-end snapshot, then applies the held rounds after it. Only
    /// the model the run's witnesses attested: one peer cannot hand it a poisoned model. Asks
    /// at most every two seconds; peers have snapshots from the first epoch's end on.
    pub(super) async fn catch_up(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        if self
            .last_catch_up
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return Ok(());
        }
        self.last_catch_up = Some(Instant::now());
        // Usable when newer than this replica and the rounds after it are still held.
        let Some((attested_step, &attested)) = state.checkpoint.attested().filter(|&(step, _)| {
            step > self.applied && (step == state.step || state.held_round(step).is_some())
        }) else {
            // Said once per step of the run: it waits for the witnesses at the epoch's end.
            if self.behind_noted != Some(state.step) {
                self.behind_noted = Some(state.step);
                tracing::info!(
                    applied = self.applied,
                    run_step = state.step,
                    "behind the rounds the coordinator holds, and no attested model to catch up \
                     from: waiting for the witnesses to attest the next epoch's end"
                );
            }
            return Ok(());
        };
        let me = self.me();
        let mut peers: Vec<SocketAddr> = state
            .members
            .iter()
            .filter(|m| m.status() == MemberStatus::Active && m.id != me)
            .filter_map(|m| m.endpoint.socket_addr())
            .collect();
        peers.extend(self.dns_peers().await);
        // Weights are f32: 4 bytes a parameter, plus the safetensors header.
        let max_len = self.model_config.parameter_count() * 4 + (1 << 20);
        for peer in peers {
            let Some((step, model)) = self.peers.snapshot(peer, max_len).await else {
                continue;
            };
            if step != attested_step {
                continue;
            }
            let scratch = tempfile::tempdir()?;
            let path = scratch.path().join("model.safetensors");
            std::fs::write(&path, &model)?;
            if let Err(error) = self.replica.load_attested(&path, &attested) {
                tracing::warn!(%peer, %error, "a peer's snapshot is not the attested model");
                continue;
            }
            tracing::info!(%peer, from = self.applied, to = step, "caught up from a peer's snapshot");
            self.applied = step;
            return Ok(());
        }
        Ok(())
    }
}

/// The newest `step-N` checkpoint under `root`.
fn latest_checkpoint(root: &std::path::Path) -> anyhow::Result<Option<(u64, PathBuf)>> {
    if !root.exists() {
        return Ok(None);
    }
    let mut newest = None;
    for entry in std::fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let path = entry?.path();
        let step = path
            .file_name()
            .and_then(|name| name.to_str()?.strip_prefix("step-")?.parse::<u64>().ok());
        if let Some(step) = step
            && newest.as_ref().is_none_or(|(best, _)| step > *best)
        {
            newest = Some((step, path));
        }
    }
    Ok(newest)
}
