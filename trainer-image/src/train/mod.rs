//! `demeter train`: one client of a run. It trains the batches the coordinator assigns,
//! publishes its DeMo result, fetches every peer's, and applies exactly the results a witness
//! quorum saw, so that every replica stays bitwise identical.
//!
//! The client is a loop over coordinator states; each pass does whatever is due:
//!
//! 1. membership: join (again) when not in the run;
//! 2. apply every closed round not yet applied, in step order (fetching any counted result it
//!    lacks from any peer), screening its results (and, as one of its verifiers, sending a
//!    verdict against each the screens flag), then health-check participants a quorum did not
//!    see;
//! 3. warmup: report ready once the replica is at the run's step;
//! 4. training round: train the assigned samples, compress, serve the payload, and commit its
//!    content hash to the coordinator;
//! 5. fetch the payloads the round's participants committed to, verifying each;
//! 6. as an elected witness, report whose committed payloads it holds;
//! 7. at an epoch's end, write a checkpoint.

mod apply;
pub mod backend;
mod checkpoint;
pub mod in_memory;
mod metrics;
pub mod on_chain;
mod outage;
mod results;
mod verify;
mod witness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use demeter_coordinator_core::{
    Coordinator, Finding, Input, MemberStatus, Round, RunState, WitnessReport, state::MAX_CLIENTS,
};
use tch::{Device, Tensor};

use self::backend::{BackendError, CoordinatorBackend};
pub use self::metrics::TrainerMetrics;
use crate::attack::Drill;
use crate::data::{BatchPlan, Dataset, TokenRange};
use crate::demo::{Demo, DemoConfig};
use crate::exchange::serve::{Exchange, ExchangeMetrics, HEADER_READ_TIMEOUT, Snapshot, serve};
use crate::exchange::{PeerClient, PeerDns, ResultStore, router};
use crate::identity::Identity;
use crate::model::{LlamaConfig, Preset};
use crate::optim::Schedule;
use crate::payload;
use crate::replica::Replica;
use crate::spot_check::Commitment;
use outage::Outage;

/// How often the loop looks again when nothing changed (payloads arrive between states).
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
    /// Drills and tests only: send forged results (`demeter train --attack`), to see a run
    /// eject this client.
    pub drill: Option<Drill>,
}

impl TrainSettings {
    /// A small client for tests: the tiny preset, 64-token sequences, DeMo's defaults, a
    /// cosine schedule from 2e-3 with one warmup step, gradients clipped at 1, no checkpoints.
    /// Tests state how theirs differs.
    #[cfg(any(test, feature = "test-support"))]
    pub fn example() -> Self {
        Self {
            preset: Preset::Tiny,
            seq_len: 64,
            seed: 5,
            demo: DemoConfig::default(),
            schedule: Schedule {
                kind: crate::optim::ScheduleKind::Cosine,
                peak_lr: 2e-3,
                min_lr: 2e-4,
                warmup_steps: 1,
                total_steps: 0,
                decay_fraction: 0.0,
            },
            grad_clip: Some(1.0),
            checkpoint_dir: None,
            drill: None,
        }
    }
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
    /// This client's result is trained and served.
    published: bool,
    /// The coordinator took (or refused for good) this client's commitment to its result.
    committed: bool,
    reported: bool,
    /// Verified results of the round by participant slot: (content hash, payload).
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
    /// What the last round's screen saw, for the next.
    screens: verify::ScreenMemory,
    /// The window of scores, once the run scores results.
    scores: Option<verify::ScoreMemory>,
    /// What this client's recomputes as a verifier left, for the senders' next results.
    chains: verify::Chains,
    /// The result this client sent last, kept only for a drill's `stale` attack.
    sent_before: Option<crate::demo::SparseUpdate>,
    work: RoundWork,
    checkpointed_epoch: Option<u64>,
    /// The step whose model this client attested last (as a witness of the round before it).
    attested: Option<u64>,
    /// When this client last asked peers for a snapshot.
    last_catch_up: Option<Instant>,
    /// The run step at which this client last said it waits for an attested model.
    behind_noted: Option<u64>,
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
        let model_config =
            LlamaConfig::for_training(settings.preset, dataset.meta.vocab_size, settings.seq_len);
        let replica = Replica::new(&model_config, settings.seed, Device::cuda_if_available())?;
        let demo = Demo::new(replica.parameters(), settings.demo.clone())?;
        let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
        // The plan's own batch size is unused here: samples are the coordinator's positions.
        let plan = BatchPlan::new(settings.seed, settings.seq_len, 1, &shard_lens)?;

        let registry = prometheus::Registry::new();
        let exchange_metrics = ExchangeMetrics::register(&registry)?;
        let metrics = TrainerMetrics::register(&registry)?;
        let store = Arc::new(ResultStore::default());
        store.follow(state.step);
        let exchange = Arc::new(Exchange {
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
            screens: verify::ScreenMemory::default(),
            scores: None,
            chains: verify::Chains::default(),
            sent_before: None,
            work: RoundWork::default(),
            checkpointed_epoch: None,
            attested: None,
            first_loss: None,
            last_loss: None,
            tokens: 0,
            started: Instant::now(),
            last_catch_up: None,
            behind_noted: None,
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
                if let Some(slot) = state.member_index(&self.me()) {
                    self.attest(&state, slot).await;
                }
                if let Err(error) = self.backend.settle().await {
                    tracing::warn!(%error, "could not take back what the coordinator holds for this client; withdraw later");
                }
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

    async fn send(&mut self, input: Input) -> Result<(), BackendError> {
        let result = self.backend.send(input).await;
        if let Err(error) = &result {
            tracing::debug!(input = input.name(), %error, "not accepted");
        }
        result
    }

    /// One look at `state`: does whatever is due.
    async fn pass(&mut self, state: &Coordinator) -> anyhow::Result<()> {
        self.metrics.observe_state(state);
        self.exchange.store.follow(state.step);
        let slot = state.member_index(&self.me());
        let status = slot.map_or(MemberStatus::Empty, |slot| state.members[slot].status());
        if let Some(slot) = slot.filter(|_| status == MemberStatus::Ejected) {
            let member = &state.members[slot];
            anyhow::bail!(
                "this client was ejected from the run: a quorum of verifiers judged a result it \
                 sent faked; its {} points are slashed and it cannot rejoin with this key",
                member.slashed
            );
        }

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
                if let Some(slot) = participant {
                    self.commit(&round, slot).await;
                }
                self.collect(state, &round).await;
                if let Some(slot) = participant {
                    self.witness_if_elected(state, &round, slot).await;
                }
            }
            RunState::Cooldown if in_sync => self.checkpoint(state)?,
            _ => {}
        }
        // Between rounds (a short cooldown must not keep a witness from attesting).
        if let Some(slot) = slot
            && in_sync
            && !matches!(
                state.run_state(),
                RunState::RoundTrain | RunState::RoundWitness
            )
        {
            self.attest(state, slot).await;
        }
        Ok(())
    }

    /// Trains the samples assigned to `slot`, then serves the result.
    async fn train_and_publish(
        &mut self,
        state: &Coordinator,
        round: &Round,
        slot: usize,
    ) -> anyhow::Result<()> {
        let assignment = round.assignment(slot).expect("a participant");
        // A drill's wrong-data attacker trains the samples of a round to come instead.
        let shift = match self.settings.drill {
            Some(drill) if drill.attack.trains_on_wrong_data() && round.step >= drill.from_step => {
                round.batch_size
            }
            _ => 0,
        };
        let ranges: Vec<_> = assignment
            .map(|sample| self.plan.sample_range(sample + shift))
            .collect();
        let lr = self.schedule(state).lr(round.step);
        // A run that spot-checks gets the momentum each result is computed from, to recompute
        // it; one that does not pays nothing for it.
        let committing = state.config.spot_check_one_in > 0;
        let started = Instant::now();
        let (loss, update, momentum, train_time) = tokio::task::block_in_place(|| {
            if let Some(drill) = self
                .settings
                .drill
                .filter(|drill| round.step >= drill.from_step)
            {
                drill.attack.forge_momentum(&mut self.demo);
            }
            // On a GPU, the momentum is hashed while the forward and backward run.
            let commitment = committing.then(|| Commitment::start(&self.demo));
            let (loss, gradients) = self.gradients_of(&ranges);
            if let Some(loss) = loss {
                self.first_loss.get_or_insert(loss);
                self.last_loss = Some(loss);
                self.metrics.loss.set(loss);
            }
            let train_time = started.elapsed();
            let momentum = commitment.map(Commitment::finish);
            let update = self.demo.compress_step(&gradients, lr);
            let update = match self.settings.drill {
                Some(drill) if round.step >= drill.from_step => {
                    let forged =
                        drill
                            .attack
                            .forge(update, self.sent_before.as_ref(), round.step, slot);
                    self.sent_before = Some(crate::attack::duplicate(&forged));
                    forged
                }
                Some(_) => {
                    self.sent_before = Some(crate::attack::duplicate(&update));
                    update
                }
                None => update,
            };
            (loss, update, momentum, train_time)
        });
        let commitment = match momentum {
            Some((commitment, momentum)) => {
                self.exchange
                    .store
                    .insert_momentum(round.step, commitment, momentum);
                commitment
            }
            None => payload::UNCOMMITTED,
        };
        let bytes: Bytes =
            payload::encode(&update, &commitment, self.demo.compressor().layouts()).into();
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

        self.exchange
            .store
            .insert_payload(round.step, hash, bytes.clone());
        self.work.received.insert(slot, (hash, bytes));
        self.work.published = true;
        Ok(())
    }

    /// The gradients of the samples in `ranges` on the replica as it stands, and their loss:
    /// what this client trains a round with. Zeros and no loss for no samples (more
    /// participants than samples: nothing to learn from, but a result is due).
    fn gradients_of(&self, ranges: &[TokenRange]) -> (Option<f64>, Vec<Tensor>) {
        if ranges.is_empty() {
            let zeros = self
                .replica
                .tensors()
                .iter()
                .map(|t| t.zeros_like())
                .collect();
            return (None, zeros);
        }
        let (inputs, targets) = self.dataset.training_batch(ranges);
        let (loss, gradients) = self
            .replica
            .gradients(&inputs, &targets, self.settings.grad_clip);
        (Some(loss), gradients)
    }

    /// Commits this client's served result of `round` to the coordinator, once: its content
    /// hash is what witnesses vouch for and every replica applies. Retried while the
    /// coordinator cannot be reached.
    async fn commit(&mut self, round: &Round, slot: usize) {
        if !self.work.published || self.work.committed || round.commitment(slot).is_some() {
            return;
        }
        let Some(&(hash, _)) = self.work.received.get(&slot) else {
            return;
        };
        let committing = Instant::now();
        match self
            .send(Input::Commit {
                step: round.step,
                hash,
            })
            .await
        {
            Ok(()) | Err(BackendError::Rejected(_)) => self.work.committed = true,
            Err(BackendError::Unavailable(_)) => {}
        }
        self.metrics.time("publish", committing.elapsed());
    }
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
