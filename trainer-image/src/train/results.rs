//! Gathering a round's results: the payloads its participants committed to, each verified
//! before it is kept.

use super::*;

impl<B: CoordinatorBackend> Trainer<B> {
    /// Gathers the payloads the round's participants have committed to so far, checking each
    /// against its committed hash and this model.
    pub(super) async fn collect(&mut self, state: &Coordinator, round: &Round) {
        let started = Instant::now();
        let missing: Vec<(usize, [u8; 32])> = participants(state, round)
            .filter(|(slot, _)| !self.work.received.contains_key(slot))
            .filter_map(|(slot, _)| Some((slot, *round.commitment(slot)?)))
            .collect();
        for (slot, hash) in missing {
            if let Some(bytes) = self.fetch_verified(state, round, &hash).await {
                self.work.received.insert(slot, (hash, bytes));
            }
        }
        self.metrics
            .results_held
            .set(self.work.received.len() as i64);
        self.metrics.time("fetch", started.elapsed());
    }

    /// The payload with `hash`, from the store or any participant, decoded once to check it
    /// fits this model; kept in the store so others can fetch it here.
    pub(super) async fn fetch_verified(
        &mut self,
        state: &Coordinator,
        round: &Round,
        hash: &[u8; 32],
    ) -> Option<Bytes> {
        if let Some(bytes) = self.exchange.store.payload(hash) {
            return Some(bytes);
        }
        let max_len = self.payload_len();
        let mut addresses: Vec<SocketAddr> = participants(state, round)
            .filter_map(|(_, address)| address)
            .filter(|address| *address != self.endpoint)
            .collect();
        addresses.extend(self.dns_peers().await);
        let bytes = self.peers.fetch(hash, &addresses, max_len).await.ok()?;
        let compressor = self.demo.compressor();
        if let Err(error) = payload::decode(
            &bytes,
            compressor.layouts(),
            compressor.values(),
            Device::Cpu,
        ) {
            tracing::warn!(%error, "a committed payload does not fit this model; ignored");
            self.metrics.rejected_payloads.inc();
            return None;
        }
        self.exchange
            .store
            .insert_payload(round.step, *hash, bytes.clone());
        Some(bytes)
    }
}
