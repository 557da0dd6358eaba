//! Applying closed rounds: every replica applies exactly the results that count (a witness
//! quorum saw them, and their participant was not ejected before the close), in slot order,
//! fetching any it is missing, so replicas stay bitwise identical. It screens, scores and
//! spot-checks them on the way (`verify`).

use super::*;
use crate::demo::SparseUpdate;

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
            let served = self.fetch_spot_checked(state, &round, &counted).await;
            let decoding = Instant::now();
            let compressor = self.demo.compressor();
            let device = self.replica.device();
            let results = counted
                .iter()
                .map(|(slot, bytes)| {
                    payload::decode(bytes, compressor.layouts(), compressor.values(), device)
                        .map(|update| (*slot, update))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let decode = decoding.elapsed();
            let unchained = self.check_chains(&round, &counted, &served.chained);
            let mut findings = self.screen_round(&round, &results);
            findings.extend(self.score_round(state, &round, &results));
            findings.extend(self.spot_check_round(
                state,
                &round,
                &counted,
                &results,
                served.checks,
            ));
            let lr = self.schedule(state).lr(step);
            let times = tokio::task::block_in_place(|| {
                let updates: Vec<&SparseUpdate> =
                    results.iter().map(|(_, update)| update).collect();
                self.replica.apply_updates(&self.demo, &updates, lr)
            });
            if !results.is_empty() {
                self.metrics.time("aggregate", decode + times.aggregate);
                self.metrics.time("apply", times.apply);
            }
            self.applied += 1;
            self.metrics.applied_step.set(self.applied as i64);
            self.metrics.results_applied.set(results.len() as i64);
            drop(results);
            self.send_verdicts(state, &round, findings).await;
            if let Some(&previous) = step.checked_sub(1).and_then(|s| state.held_round(s)) {
                self.send_verdicts(state, &previous, unchained).await;
            }
            self.health_check(state, &round).await;
        }
        Ok(())
    }

    /// The payloads of `round` that count (committed, held by a witness quorum, not ejected),
    /// by participant slot, in slot order: the same bytes on every client.
    pub(super) async fn counted_results(
        &mut self,
        state: &Coordinator,
        round: &Round,
    ) -> anyhow::Result<Vec<(usize, Bytes)>> {
        let counted_hashes: Vec<(usize, [u8; 32])> = participants(state, round)
            .filter_map(|(slot, _)| Some((slot, *round.counted(slot)?)))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut counted = Vec::new();
            for (slot, hash) in &counted_hashes {
                // The round is closed: anyone may hold the payload, so everyone is asked.
                if let Some(bytes) = self.fetch_verified(state, round, hash).await {
                    counted.push((*slot, bytes));
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
