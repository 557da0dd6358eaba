//! Applying closed rounds: every replica applies exactly the results a witness quorum saw, in
//! slot order, fetching any it is missing, so replicas stay bitwise identical.

use super::*;

impl<B: CoordinatorBackend> Trainer<B> {
    /// Applies every closed round up to the run's step, in order.
    pub(super) async fn apply_closed_rounds(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        while self.applied < state.step {
            let step = self.applied;
            // A round no longer held can only be skipped by catching up from a snapshot.
            let Some(&round) = state.held_round(step) else {
                return Ok(());
            };
            let fetching = Instant::now();
            let counted = self.counted_results(state, &round).await?;
            self.metrics.time("fetch", fetching.elapsed());
            let lr = self.schedule(state).lr(step);
            let (applied, times) = tokio::task::block_in_place(|| {
                self.replica
                    .apply_results(&self.demo, counted.iter().map(AsRef::as_ref), lr)
            })?;
            if applied > 0 {
                self.metrics
                    .time("aggregate", times.decode + times.aggregate);
                self.metrics.time("apply", times.apply);
            }
            self.applied += 1;
            self.metrics.applied_step.set(self.applied as i64);
            self.metrics.results_applied.set(applied as i64);
            self.health_check(state, &round).await;
        }
        Ok(())
    }

    /// The payloads of `round` that count (committed, and held by a witness quorum), in
    /// participant slot order: the same bytes on every client.
    pub(super) async fn counted_results(
        &mut self,
        state: &Coordinator,
        round: &Round,
    ) -> anyhow::Result<Vec<Bytes>> {
        let counted_hashes: Vec<[u8; 32]> = participants(state, round)
            .filter_map(|(slot, _)| round.counted(slot).copied())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut counted = Vec::new();
            for hash in &counted_hashes {
                // The round is closed: anyone may hold the payload, so everyone is asked.
                if let Some(bytes) = self.fetch_verified(state, round, hash).await {
                    counted.push(bytes);
                }
            }
            let missing = counted_hashes.len() - counted.len();
            if missing == 0 {
                return Ok(counted);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {}: {missing} results a quorum saw cannot be fetched from any peer; \
                 this replica cannot stay identical and stops",
                round.step
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
