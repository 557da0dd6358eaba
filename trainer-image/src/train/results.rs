//! Gathering a round's results: commitments from the round's peers and the payloads they
//! name, each verified before it is kept.

use super::*;

impl<B: CoordinatorBackend> Trainer<B> {
    /// Gathers the round's commitments and the payloads they name, checking each: a valid
    /// signature, a participant of the round, and a payload that decodes against this model.
    pub(super) async fn collect(&mut self, state: &Coordinator, round: &Round) {
        let started = Instant::now();
        self.collect_missing(state, round).await;
        self.metrics.time("fetch", started.elapsed());
    }

    pub(super) async fn collect_missing(&mut self, state: &Coordinator, round: &Round) {
        let missing: Vec<(usize, Option<SocketAddr>)> = participants(state, round)
            .filter(|(slot, _)| !self.work.received.contains_key(slot))
            .collect();
        for (slot, address) in missing {
            // While the round runs, only the owner is asked: it may simply not have published.
            let id = state.members[slot].id;
            let Some(commitment) = self.commitment_of(state, round.step, id, address).await else {
                continue;
            };
            if let Some(bytes) = self.fetch_verified(state, round, &commitment.hash).await {
                self.work.received.insert(slot, (commitment.hash, bytes));
            }
        }
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
