//! `demeter train`: one client of a run. It trains the batches the coordinator assigns,
//! publishes its DeMo result, fetches every peer's, and applies exactly the results a witness
//! quorum saw, so that every replica stays bitwise identical.
//!
//! The client is a loop over coordinator states; each pass does whatever is due:
//!
//! 1. membership: join (again) when not in the run;
//! 2. apply every closed round not yet applied, in step order (fetching any counted result it
//!    lacks from any peer), then health-check participants a quorum did not see;
//! 3. warmup: report ready once the replica is at the run's step;
//! 4. training round: train the assigned samples, compress, publish the payload and a signed
//!    commitment to the round's participants;
//! 5. collect the round's commitments and payloads, verifying each;
//! 6. as an elected witness, report who and what it received;
//! 7. at an epoch's end, write a checkpoint.

pub mod backend;
mod metrics;
pub mod on_chain;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use demeter_coordinator_core::{
    Bloom, Coordinator, Input, MemberStatus, Round, RunState, WitnessReport, state::MAX_CLIENTS,
};
use tch::Device;

use self::backend::{BackendError, CoordinatorBackend};
pub use self::metrics::TrainerMetrics;
use crate::data::{BatchPlan, Dataset};
use crate::demo::{Demo, DemoConfig, SparseUpdate};
use crate::exchange::serve::{Exchange, ExchangeMetrics, HEADER_READ_TIMEOUT, Snapshot, serve};
use crate::exchange::{Commitment, PeerClient, PeerDns, ResultStore, router};
use crate::identity::Identity;
use crate::model::{LlamaConfig, Preset, padded_vocab};
use crate::optim::Schedule;
use crate::payload;
use crate::replica::Replica;

/// How often the loop looks again when nothing changed (commitments arrive between states).
const POLL: Duration = Duration::from_millis(100);

/// What every client of a run must agree on (the coordinator does not carry it).
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub preset: Preset,
    pub seq_len: usize,
    /// Seeds the initial weights and the data order: the same on every client.
    pub seed: u64,
    pub demo: DemoConfig,
    /// The schedule's shape; its total steps come from the coordinator's config.
    pub schedule: Schedule,
    pub grad_clip: Option<f64>,
    /// Where to write epoch checkpoints, if anywhere.
    pub checkpoint_dir: Option<PathBuf>,
}

/// How a finished client's run went.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub tokens: u64,
    pub payload_bytes: usize,
    pub replica_hash: [u8; 32],
    /// Seconds per phase of the step, summed over the run.
    pub phase_seconds: Vec<(String, f64)>,
}

/// The round this client is working on.
#[derive(Default)]
struct RoundWork {
    step: u64,
    published: bool,
    reported: bool,
    /// Verified results of the round by participant slot: (commitment hash, payload).
    received: BTreeMap<usize, ([u8; 32], Bytes)>,
}

/// One client of a run.
pub struct Trainer<B: CoordinatorBackend> {
    identity: Arc<Identity>,
    backend: B,
    settings: TrainSettings,
    model_config: LlamaConfig,
    replica: Replica,
    demo: Demo,
    dataset: Dataset,
    plan: BatchPlan,
    exchange: Arc<Exchange>,
    peers: PeerClient,
    /// More peers by DNS, beside the endpoints members announced.
    peer_dns: Option<PeerDns>,
    endpoint: SocketAddr,
    metrics: TrainerMetrics,
    /// Steps applied to the replica: the next step to apply.
    applied: u64,
    work: RoundWork,
    checkpointed_epoch: Option<u64>,
    /// When this client last asked peers for a snapshot.
    last_catch_up: Option<Instant>,
    first_loss: Option<f64>,
    last_loss: Option<f64>,
    tokens: u64,
    started: Instant,
}

impl<B: CoordinatorBackend> Trainer<B> {
    /// Builds the replica and starts the exchange server on `listen`; peers are told
    /// `advertise` (default: the bound address).
    pub async fn new(
        identity: Arc<Identity>,
        backend: B,
        settings: TrainSettings,
        dataset: Dataset,
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let state = backend.state();
        let mut model_config =
            LlamaConfig::preset(settings.preset, padded_vocab(dataset.meta.vocab_size));
        model_config.max_position_embeddings =
            model_config.max_position_embeddings.max(settings.seq_len);
        let replica = Replica::new(&model_config, settings.seed, Device::cuda_if_available())?;
        let demo = Demo::new(replica.parameters(), settings.demo.clone())?;
        let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
        // The plan's own batch size is unused here: samples are the coordinator's positions.
        let plan = BatchPlan::new(settings.seed, settings.seq_len, 1, &shard_lens)?;

        let registry = prometheus::Registry::new();
        let exchange_metrics = ExchangeMetrics::register(&registry)?;
        let metrics = TrainerMetrics::register(&registry)?;
        let store = Arc::new(ResultStore::default());
        follow_run(&store, &state);
        let exchange = Arc::new(Exchange {
            run_id: state.run_id,
            store,
            registry,
            metrics: exchange_metrics.clone(),
            snapshot: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen {listen}"))?;
        let bound = listener.local_addr()?;
        let endpoint = advertise.unwrap_or(bound);
        anyhow::ensure!(
            !endpoint.ip().is_unspecified() && endpoint.port() != 0,
            "peers cannot reach {endpoint}: pass --advertise HOST:PORT (the address peers should \
             use), or --listen on a specific address"
        );
        let app = router(exchange.clone());
        tokio::spawn(serve(listener, app, HEADER_READ_TIMEOUT));
        tracing::info!(metrics = %format!("http://{bound}/metrics"), "serving results and metrics");
        let peers = PeerClient::new(exchange_metrics, Duration::from_secs(10))?;
        let mut trainer = Self {
            identity,
            backend,
            settings,
            model_config,
            replica,
            demo,
            dataset,
            plan,
            exchange,
            peers,
            peer_dns: None,
            endpoint,
            metrics,
            applied: 0,
            work: RoundWork::default(),
            checkpointed_epoch: None,
            first_loss: None,
            last_loss: None,
            tokens: 0,
            started: Instant::now(),
            last_catch_up: None,
        };
        trainer.resume()?;
        Ok(trainer)
    }

    /// Also asks every address `dns` resolves to for results and snapshots.
    pub fn with_peer_dns(mut self, dns: PeerDns) -> Self {
        self.peer_dns = Some(dns);
        self
    }

    /// The peers found by DNS, without this client.
    async fn dns_peers(&mut self) -> Vec<SocketAddr> {
        let Some(dns) = &mut self.peer_dns else {
            return Vec::new();
        };
        let me = self.endpoint;
        dns.addresses()
            .await
            .iter()
            .copied()
            .filter(|address| *address != me)
            .collect()
    }

    /// Continues from the newest checkpoint in the checkpoint directory, if there is one: a
    /// restarted client loses no applied step and keeps its own DeMo momentum.
    fn resume(&mut self) -> anyhow::Result<()> {
        let Some(root) = &self.settings.checkpoint_dir else {
            return Ok(());
        };
        let Some((step, dir)) = latest_checkpoint(root)? else {
            return Ok(());
        };
        self.replica.load(&dir.join("model.safetensors"))?;
        let path = dir.join("optimizer.safetensors");
        let saved: BTreeMap<String, tch::Tensor> =
            crate::model::load_safetensors(&path)?.into_iter().collect();
        let deltas = self
            .replica
            .parameters()
            .iter()
            .map(|(name, _)| {
                saved
                    .get(&format!("{name}.demo_delta"))
                    .map(tch::Tensor::shallow_clone)
                    .with_context(|| format!("{}: lacks {name}.demo_delta", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.demo.load_deltas(&deltas);
        self.applied = step;
        self.checkpointed_epoch = None;
        tracing::info!(dir = %dir.display(), step, "resumed from checkpoint");
        Ok(())
    }

    /// The encoded size of a result of this model: every payload has exactly this length.
    fn payload_len(&self) -> usize {
        let compressor = self.demo.compressor();
        payload::encoded_len(compressor.layouts(), compressor.values())
    }

    /// Parameters of the model.
    pub fn parameter_count(&self) -> usize {
        self.model_config.parameter_count()
    }

    /// Where this client serves results and `/metrics`.
    pub fn endpoint(&self) -> SocketAddr {
        self.endpoint
    }

    fn me(&self) -> [u8; 32] {
        self.identity.public()
    }

    fn schedule(&self, state: &Coordinator) -> Schedule {
        Schedule {
            total_steps: state.config.total_steps,
            ..self.settings.schedule.clone()
        }
    }

    /// Runs until the run finishes and this replica has applied every step.
    pub async fn run(mut self) -> anyhow::Result<TrainSummary> {
        let mut outage = Outage::default();
        loop {
            let state = self.backend.state();
            if state.run_state() == RunState::Finished && self.applied >= state.step {
                self.checkpoint(&state)?;
                return Ok(TrainSummary {
                    steps: self.applied,
                    first_loss: self.first_loss,
                    last_loss: self.last_loss,
                    tokens: self.tokens,
                    payload_bytes: self.payload_len(),
                    phase_seconds: self.metrics.phase_totals(),
                    replica_hash: self.replica.hash(),
                });
            }
            self.pass(&state).await?;
            match self.backend.changed(POLL).await {
                Ok(_) => outage.ended(),
                Err(error) => outage.failed(&error).await,
            }
        }
    }

    async fn send(&mut self, input: Input<'_>) -> Result<(), BackendError> {
        let result = self.backend.send(input).await;
        if let Err(error) = &result {
            tracing::debug!(input = input.name(), %error, "not accepted");
        }
        result
    }

    /// One look at `state`: does whatever is due.
    async fn pass(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        self.metrics.observe_state(state);
        follow_run(&self.exchange.store, state);
        let slot = state.member_index(&self.me());
        let status = slot.map_or(MemberStatus::Empty, |slot| state.members[slot].status());

        if state.run_state() != RunState::Finished
            && matches!(
                status,
                MemberStatus::Empty | MemberStatus::Dropped | MemberStatus::Withdrawn
            )
        {
            let _ = self
                .send(Input::Join {
                    endpoint: self.endpoint.into(),
                })
                .await;
            return Ok(());
        }

        if self.applied < state.step && state.held_round(self.applied).is_none() {
            self.catch_up(state).await?;
        }
        self.apply_closed_rounds(state).await?;
        let in_sync = self.applied == state.step;

        match state.run_state() {
            RunState::Warmup if status == MemberStatus::Active && in_sync => {
                let ready = slot.is_some_and(|slot| state.members[slot].ready == 1);
                if !ready {
                    let _ = self.send(Input::WarmupWitness).await;
                }
            }
            RunState::RoundTrain | RunState::RoundWitness => {
                let round = *state.current_round().expect("a round is under way");
                if self.work.step != round.step {
                    self.work = RoundWork {
                        step: round.step,
                        ..RoundWork::default()
                    };
                }
                let participant = slot.filter(|&slot| round.is_participant(slot));
                if let Some(slot) = participant
                    && in_sync
                    && !self.work.published
                    && state.run_state() == RunState::RoundTrain
                {
                    self.train_and_publish(state, &round, slot).await?;
                }
                self.collect(state, &round).await;
                if let Some(slot) = participant {
                    self.witness_if_elected(state, &round, slot).await;
                }
            }
            RunState::Cooldown if in_sync => self.checkpoint(state)?,
            _ => {}
        }
        Ok(())
    }

    /// Trains the samples assigned to `slot`, then publishes the result.
    async fn train_and_publish(
        &mut self,
        state: &Coordinator,
        round: &Round,
        slot: usize,
    ) -> anyhow::Result<()> {
        let assignment = round.assignment(slot).expect("a participant");
        let ranges: Vec<_> = assignment
            .map(|sample| self.plan.sample_range(sample))
            .collect();
        let lr = self.schedule(state).lr(round.step);
        let started = Instant::now();
        let (loss, update, train_time) = tokio::task::block_in_place(|| -> anyhow::Result<_> {
            let gradients = if ranges.is_empty() {
                // More participants than samples: nothing to learn from, but a result is due.
                self.replica
                    .tensors()
                    .iter()
                    .map(|t| t.zeros_like())
                    .collect::<Vec<_>>()
            } else {
                let (inputs, targets) = self.dataset.training_batch(&ranges);
                let (loss, grads) =
                    self.replica
                        .gradients(&inputs, &targets, self.settings.grad_clip);
                self.first_loss.get_or_insert(loss);
                self.last_loss = Some(loss);
                self.metrics.loss.set(loss);
                grads
            };
            let train_time = started.elapsed();
            let update = self.demo.compress_step(&gradients, lr);
            Ok((self.last_loss, update, train_time))
        })?;
        let bytes: Bytes = payload::encode(&update, self.demo.compressor().layouts()).into();
        self.metrics.time("train", train_time);
        self.metrics
            .time("compress", started.elapsed() - train_time);
        let hash = payload::content_hash(&bytes).expect("an encoded payload has a trailer");
        let tokens = (ranges.len() * self.settings.seq_len) as u64;
        self.tokens += tokens;
        self.metrics.tokens.inc_by(tokens);
        self.metrics.payload_bytes.set(bytes.len() as i64);
        self.metrics.lr.set(lr);
        self.metrics
            .tokens_per_second
            .set(self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9));
        tracing::info!(
            step = round.step,
            samples = ranges.len(),
            loss = loss.unwrap_or(f64::NAN),
            ms = started.elapsed().as_millis() as u64,
            "trained"
        );

        let store = &self.exchange.store;
        store.insert_payload(round.step, hash, bytes.clone());
        let commitment = Commitment::sign(&self.identity, &state.run_id, round.step, hash);
        store.add_commitment(commitment.clone());
        self.work.received.insert(slot, (hash, bytes));
        self.work.published = true;
        let publishing = Instant::now();
        let mut reached = 0;
        for peer in participants(state, round).filter(|&(s, _)| s != slot) {
            if let Some(address) = peer.1 {
                reached += i64::from(self.peers.announce(address, &commitment).await);
            }
        }
        self.metrics.peers_reachable.set(reached);
        self.metrics.time("publish", publishing.elapsed());
        Ok(())
    }

    /// Gathers the round's commitments and the payloads they name, checking each: a valid
    /// signature, a participant of the round, and a payload that decodes against this model.
    async fn collect(&mut self, state: &Coordinator, round: &Round) {
        let started = Instant::now();
        self.collect_missing(state, round).await;
        self.metrics.time("fetch", started.elapsed());
    }

    async fn collect_missing(&mut self, state: &Coordinator, round: &Round) {
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
    async fn fetch_verified(
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

    async fn witness_if_elected(&mut self, state: &Coordinator, round: &Round, slot: usize) {
        let Some(position) = round.witness_position(slot) else {
            return;
        };
        let all_in = self.work.received.len() == usize::from(round.participant_count);
        let time_is_up = state.run_state() == RunState::RoundWitness;
        if self.work.reported || round.reported & (1 << position) != 0 || !(all_in || time_is_up) {
            return;
        }
        let mut report = WitnessReport {
            participants: Bloom::default(),
            commitments: Bloom::default(),
        };
        for (&seen, (hash, _)) in &self.work.received {
            report
                .participants
                .insert(&state.members[seen].id, &round.seed);
            report.commitments.insert(hash, &round.seed);
        }
        match self
            .send(Input::Witness {
                step: round.step,
                position,
                report: &report,
            })
            .await
        {
            Ok(()) | Err(BackendError::Rejected(_)) => self.work.reported = true,
            Err(BackendError::Unavailable(_)) => {}
        }
    }

    /// Applies every closed round up to the run's step, in order.
    async fn apply_closed_rounds(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        while self.applied < state.step {
            let step = self.applied;
            // A round no longer held can only be skipped by catching up from a snapshot.
            let Some(&round) = state.held_round(step) else {
                return Ok(());
            };
            let fetching = Instant::now();
            let counted = self.counted_results(state, &round).await?;
            self.metrics.time("fetch", fetching.elapsed());
            let aggregating = Instant::now();
            let updates = payload::decode_all(
                counted.iter().map(AsRef::as_ref),
                self.demo.compressor(),
                self.replica.device(),
            )?;
            let lr = self.schedule(state).lr(step);
            tokio::task::block_in_place(|| {
                if !updates.is_empty() {
                    let refs: Vec<&SparseUpdate> = updates.iter().collect();
                    let compressor = self.demo.compressor();
                    let aggregate = tch::no_grad(|| compressor.aggregate_all(&refs));
                    self.metrics.time("aggregate", aggregating.elapsed());
                    let applying = Instant::now();
                    tch::no_grad(|| {
                        self.demo
                            .apply_aggregate(&self.replica.tensors(), &aggregate, lr)
                    });
                    self.metrics.time("apply", applying.elapsed());
                }
            });
            self.applied += 1;
            self.metrics.applied_step.set(self.applied as i64);
            self.metrics.results_applied.set(updates.len() as i64);
            self.health_check(state, &round).await;
        }
        Ok(())
    }

    /// The payloads of `round` that count (a witness quorum saw their commitments), in
    /// participant slot order: the same list on every client.
    async fn counted_results(
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
    async fn commitment_of(
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

    /// Shows the coordinator participants of `round` that no witness quorum saw, so it drops
    /// them for the epoch.
    async fn health_check(&mut self, state: &Coordinator, round: &Round) {
        let me_active = state
            .member_index(&self.me())
            .is_some_and(|slot| state.members[slot].status() == MemberStatus::Active);
        if !me_active || round.report_count() < round.quorum() {
            return;
        }
        let unseen: Vec<[u8; 32]> = participants(state, round)
            .map(|(slot, _)| state.members[slot])
            .filter(|m| m.status() == MemberStatus::Active && !round.was_seen(&m.id))
            .map(|m| m.id)
            .collect();
        for target in unseen {
            let _ = self
                .send(Input::HealthCheck {
                    step: round.step,
                    target,
                })
                .await;
        }
    }

    /// Once per epoch, at its end: keeps a snapshot of the weights for peers that need to
    /// catch up, and writes `step-N/` (model, config, this client's DeMo state) to the
    /// checkpoint directory.
    fn checkpoint(&mut self, state: &Coordinator) -> anyhow::Result<()> {
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
            // Written beside, then renamed: a checkpoint directory is whole or absent.
            let dir = root.join(format!("step-{}", self.applied));
            let partial = root.join(format!(".step-{}.partial", self.applied));
            let _ = std::fs::remove_dir_all(&partial);
            std::fs::create_dir_all(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            std::fs::copy(&model_path, partial.join("model.safetensors"))?;
            std::fs::write(partial.join("config.json"), self.model_config.to_hf_json())?;
            let deltas: Vec<(String, tch::Tensor)> = self
                .replica
                .parameters()
                .iter()
                .zip(self.demo.deltas())
                .map(|((name, _), delta)| (format!("{name}.demo_delta"), delta.shallow_clone()))
                .collect();
            crate::model::save_safetensors(&partial.join("optimizer.safetensors"), &deltas)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&partial, &dir)?;
            tracing::info!(dir = %dir.display(), step = self.applied, "checkpoint written");
        }
        self.checkpointed_epoch = Some(state.epoch);
        Ok(())
    }

    /// A replica that fell behind the rounds the coordinator still holds (a restarted or late
    /// client) loads a peer's epoch-end snapshot, then applies the held rounds after it. Asks
    /// at most every two seconds; peers have snapshots from the first epoch's end on.
    async fn catch_up(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        if self
            .last_catch_up
            .is_some_and(|at| at.elapsed() < Duration::from_secs(2))
        {
            return Ok(());
        }
        self.last_catch_up = Some(Instant::now());
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
            let usable = step > self.applied
                && step <= state.step
                && (step == state.step || state.held_round(step).is_some());
            if !usable {
                continue;
            }
            let scratch = tempfile::tempdir()?;
            let path = scratch.path().join("model.safetensors");
            std::fs::write(&path, &model)?;
            if let Err(error) = self.replica.load(&path) {
                tracing::warn!(%peer, %error, "a peer's snapshot does not fit this model");
                continue;
            }
            tracing::info!(%peer, from = self.applied, to = step, "caught up from a peer's snapshot");
            self.applied = step;
            return Ok(());
        }
        Ok(())
    }
}

/// A coordinator that cannot be reached: the client backs off between tries (up to
/// [`Outage::MAX_BACKOFF`]) and says so once when it starts, then every
/// [`Outage::LOG_EVERY`], and once when it ends, instead of a line per poll.
#[derive(Default)]
struct Outage {
    started: Option<Instant>,
    last_logged: Option<Instant>,
    failures: u32,
}

impl Outage {
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    const LOG_EVERY: Duration = Duration::from_secs(30);

    async fn failed(&mut self, error: &BackendError) {
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        self.failures += 1;
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Self::LOG_EVERY)
        {
            self.last_logged = Some(now);
            tracing::warn!(
                %error,
                tries = self.failures,
                seconds = started.elapsed().as_secs(),
                "waiting for the coordinator"
            );
        }
        let backoff = POLL.saturating_mul(1 << self.failures.min(6));
        tokio::time::sleep(backoff.min(Self::MAX_BACKOFF)).await;
    }

    fn ended(&mut self) {
        if let Some(started) = self.started.take() {
            tracing::info!(
                seconds = started.elapsed().as_secs(),
                "the coordinator is reachable again"
            );
        }
        *self = Self::default();
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

/// Points the exchange's store at the run as the coordinator reports it: the steps it takes
/// and the members whose commitments it takes.
fn follow_run(store: &ResultStore, state: &Coordinator) {
    let members = state
        .members
        .iter()
        .filter(|m| m.status() != MemberStatus::Empty)
        .map(|m| m.id);
    store.follow(state.step, members);
}

/// The participants of `round` in slot order, with the endpoint each announced.
fn participants<'a>(
    state: &'a Coordinator,
    round: &'a Round,
) -> impl Iterator<Item = (usize, Option<SocketAddr>)> + 'a {
    (0..MAX_CLIENTS)
        .filter(|&slot| round.is_participant(slot))
        .map(|slot| (slot, state.members[slot].endpoint.socket_addr()))
}
