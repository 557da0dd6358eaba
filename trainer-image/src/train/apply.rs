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

    /// The payloads of `round` that count (a witness quorum saw their commitments), in
    /// participant slot order: the same list on every client.
    pub(super) async fn counted_results(
        &mut self,
        state: &Coordinator,
        round: &Round,
    ) -> anyhow::Result<Vec<Bytes>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut counted = Vec::new();
            let mut missing = 0;
            for (slot, address) in participants(state, round) {
                let id = state.members[slot].id;
                // The round is closed: anyone may hold the commitment, so everyone is asked.
                let others = participants(state, round).filter_map(|(_, address)| address);
                let mut askable: Vec<SocketAddr> = address.into_iter().chain(others).collect();
                askable.extend(self.dns_peers().await);
                let commitment = self.commitment_of(state, round.step, id, askable).await;
                let Some(commitment) = commitment.filter(|c| round.result_counts(&c.hash)) else {
                    // No commitment at all: a quorum cannot have seen it either, unless every
                    // peer that holds it is unreachable; then the deadline below decides.
                    if round.was_seen(&id) {
                        missing += 1;
                    }
                    continue;
                };
                match self.fetch_verified(state, round, &commitment.hash).await {
                    Some(bytes) => counted.push(bytes),
                    None => missing += 1,
                }
            }
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

    /// `id`'s commitment for `step`: held already, or asked of `peers` in order, checked and
    /// then kept.
    pub(super) async fn commitment_of(
        &mut self,
        state: &Coordinator,
        step: u64,
        id: [u8; 32],
        peers: impl IntoIterator<Item = SocketAddr>,
    ) -> Option<Commitment> {
        if let Some(commitment) = self.exchange.store.commitment(step, &id) {
            return Some(commitment);
        }
        for address in peers {
            if let Some(commitment) = self
                .peers
                .commitments(address, step)
                .await
                .into_iter()
                .find(|c| c.client == id && c.is_valid(&state.run_id))
            {
                self.exchange.store.add_commitment(commitment.clone());
                return Some(commitment);
            }
        }
        None
    }
}
