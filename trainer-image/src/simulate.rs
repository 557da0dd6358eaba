//! Many DeMo (or AdamW) workers in one process, each with its own replica and its own data, every
//! update going through the real wire format. The main job until the networked trainer lands, and
//! the harness of the learning-quality benchmark.

use std::time::{Duration, Instant};

use demeter_coordinator_core::shuffle::{mix, one_chance_in};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::attack::{Attack, duplicate, jitter};
use crate::data::{BatchPlan, Dataset};
use crate::demo::{Demo, DemoConfig, SparseUpdate};
use crate::model::{LlamaConfig, Preset};
use crate::optim::{AdamW, AdamWConfig, Schedule};
use crate::payload;
use crate::replica::Replica;
use crate::spot_check::Commitment;

mod checkpoint;
mod verifiers;
use verifiers::Verifiers;
pub use verifiers::{Flagged, ScoreCounts, ScreenCounts, SpotCheckCounts};

/// Which optimizer the workers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// DeMo: each worker shares only its top-k DCT coefficients.
    Demo,
    /// AdamW on the all-reduced mean gradient (what data-parallel training does).
    Adamw,
}

/// Everything a simulation needs besides its data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SimulationConfig {
    pub workers: usize,
    pub preset: Preset,
    pub optimizer: OptimizerKind,
    pub seq_len: usize,
    /// Samples per worker per step.
    pub batch_per_worker: usize,
    pub seed: u64,
    pub schedule: Schedule,
    pub demo: DemoConfig,
    pub adamw: AdamWConfig,
    /// Global gradient-norm limit per worker, if any.
    pub grad_clip: Option<f64>,
    /// OS threads the workers' steps run on. Workers share nothing mutable, so this changes
    /// only the speed, never a result (libtorch's own thread count is the caller's to set).
    pub worker_threads: usize,
    /// The last this many workers cheat (DeMo only).
    pub byzantine: usize,
    /// How they cheat.
    pub attack: Option<Attack>,
    /// Run the cheap screens (`screening`) on every round's results and count what they flag.
    pub screen: bool,
    /// Score round results against data (`scoring`) and count whom the window flags.
    #[serde(default)]
    pub score: bool,
    /// Score a seeded one in this many of every round's results, as a run with this
    /// `score_one_in` does; 0 or 1: every result.
    #[serde(default)]
    pub score_one_in: u16,
    /// Recompute each result with a chance of one in this many from the momentum its sender
    /// commits to (exact spot checks, as a run with this `spot_check_one_in` does) and count
    /// whom the recomputes flag; 0 recomputes nothing.
    #[serde(default)]
    pub spot_check_one_in: u16,
    /// How far, per mille, a recompute may stray from the result it checks (as a run with this
    /// `spot_check_tolerance` judges); 0: bit for bit.
    #[serde(default)]
    pub spot_check_tolerance: u16,
    /// Eject whoever a check flags, as a verdict quorum of the round's verifiers does: from the
    /// next round on its results are not counted (nobody applies or checks them), and it
    /// trains no more.
    #[serde(default)]
    pub eject: bool,
}

/// Steps a `wrong-data` attacker's batches are taken from ahead of the assigned ones.
const WRONG_DATA_OFFSET: u64 = 1_000_003;

/// Whether `worker`'s result of `step` is spot-checked: a seeded chance of one in `one_in`
/// (never at 0), as `Round::spot_checked` draws it for a run (with a key of the simulation's
/// seed and step, apart from the one that chooses the scored results).
pub(super) fn spot_checked(seed: u64, step: u64, worker: usize, one_in: u16) -> bool {
    const SPOT_CHECKS: u64 = 0x5907;
    let key = mix(seed ^ SPOT_CHECKS) ^ mix(step);
    one_chance_in(key, worker as u64, u64::from(one_in))
}

/// Seconds spent in each phase, summed over workers and steps.
#[derive(Clone, Debug, Default)]
pub struct PhaseTimes {
    pub forward_backward: Duration,
    /// DeMo: momentum update, DCT, top-k, error feedback. AdamW: nothing.
    pub compress: Duration,
    /// Payload serialization (DeMo) or the all-reduce sum (AdamW).
    pub wire_encode: Duration,
    pub wire_decode: Duration,
    /// Mean of the selections and inverse DCT.
    pub aggregate: Duration,
    /// Sign and parameter update (DeMo) or the AdamW update.
    pub apply: Duration,
}

impl PhaseTimes {
    /// All phases together.
    pub fn total(&self) -> Duration {
        self.forward_backward
            + self.compress
            + self.wire_encode
            + self.wire_decode
            + self.aggregate
            + self.apply
    }
}

impl std::ops::AddAssign<&PhaseTimes> for PhaseTimes {
    fn add_assign(&mut self, other: &PhaseTimes) {
        self.forward_backward += other.forward_backward;
        self.compress += other.compress;
        self.wire_encode += other.wire_encode;
        self.wire_decode += other.wire_decode;
        self.aggregate += other.aggregate;
        self.apply += other.apply;
    }
}

/// What one step did.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: u64,
    pub lr: f64,
    /// Mean training loss over workers.
    pub loss: f64,
    /// Bytes each worker sent this step (its payload, or its share of a bf16 ring all-reduce).
    pub bytes_per_worker: usize,
}

enum WorkerOptimizer {
    Demo(Box<Demo>),
    AdamW(AdamW),
}

struct Worker {
    replica: Replica,
    optimizer: WorkerOptimizer,
    /// What this worker sent the step before (kept for a `stale` attacker only).
    previous: Option<SparseUpdate>,
}

/// What a worker hands to the exchange after its local step.
enum LocalOutput {
    /// DeMo: its serialized payload.
    Payload(Vec<u8>),
    /// AdamW: its gradients, for the all-reduce.
    Gradients(Vec<Tensor>),
}

/// The payloads of a DeMo step's outputs, by worker: none from an ejected one.
fn payloads(outputs: &[Option<LocalOutput>]) -> Vec<Option<&[u8]>> {
    outputs
        .iter()
        .map(|output| match output.as_ref()? {
            LocalOutput::Payload(bytes) => Some(bytes.as_slice()),
            LocalOutput::Gradients(_) => unreachable!("a DeMo step's outputs are payloads"),
        })
        .collect()
}

/// Runs `work` on every worker with its own input, spread over up to `threads` OS threads in
/// contiguous runs of workers, and returns the results in worker order. Workers share nothing
/// mutable, so the results do not depend on `threads`.
fn for_each_worker<I: Send, T: Send>(
    workers: &mut [Worker],
    inputs: Vec<I>,
    threads: usize,
    work: impl Fn(usize, &mut Worker, I) -> T + Sync,
) -> Vec<T> {
    let mut jobs: Vec<_> = workers.iter_mut().zip(inputs).enumerate().collect();
    let per_thread = jobs.len().div_ceil(threads.max(1)).max(1);
    let run = |jobs: Vec<(usize, (&mut Worker, I))>| -> Vec<T> {
        jobs.into_iter()
            .map(|(index, (worker, input))| work(index, worker, input))
            .collect()
    };
    if per_thread >= jobs.len() {
        return run(jobs);
    }
    let mut chunks = Vec::new();
    while jobs.len() > per_thread {
        let rest = jobs.split_off(per_thread);
        chunks.push(std::mem::replace(&mut jobs, rest));
    }
    chunks.push(jobs);
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || run(chunk)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("a worker thread panicked"))
            .collect()
    })
}

/// Bytes each of `workers` sends per step in a ring all-reduce of `parameters` bf16 gradients:
/// 2·(n−1)/n of the model, 2 bytes a value. What DeMo's payloads are compared against.
pub fn ring_all_reduce_bytes(parameters: usize, workers: usize) -> usize {
    2 * workers.saturating_sub(1) * parameters * 2 / workers.max(1)
}

/// A running simulation.
pub struct Simulation {
    config: SimulationConfig,
    model_config: LlamaConfig,
    dataset: Dataset,
    plan: BatchPlan,
    workers: Vec<Worker>,
    step: u64,
    times: PhaseTimes,
    verifiers: Verifiers,
    /// By worker, the round (from 1) from which it is ejected (with `config.eject`).
    ejected: Vec<Option<u64>>,
}

impl Simulation {
    /// Builds `config.workers` identical replicas (seeded by `config.seed`) on `device`.
    pub fn new(config: SimulationConfig, dataset: Dataset, device: Device) -> anyhow::Result<Self> {
        anyhow::ensure!(config.workers > 0, "--workers must be at least 1");
        anyhow::ensure!(config.batch_per_worker > 0, "--batch must be at least 1");
        anyhow::ensure!(
            config.byzantine < config.workers,
            "--byzantine {} of --workers {}: at least one worker must be honest",
            config.byzantine,
            config.workers
        );
        anyhow::ensure!(
            (config.byzantine > 0) == config.attack.is_some(),
            "--byzantine N and --attack NAME go together"
        );
        anyhow::ensure!(
            config.byzantine == 0 || config.optimizer == OptimizerKind::Demo,
            "--byzantine: attacks are on DeMo results (--optimizer demo)"
        );
        anyhow::ensure!(
            !config.eject || config.screen || config.score || config.spot_check_one_in > 0,
            "--eject ejects whom a check flags: add --screen, --score or --spot-check-one-in N"
        );
        config.schedule.validate()?;
        config.demo.validate()?;
        let model_config =
            LlamaConfig::for_training(config.preset, dataset.meta.vocab_size, config.seq_len);
        let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
        let plan = BatchPlan::new(
            config.seed,
            config.seq_len,
            config.workers * config.batch_per_worker,
            &shard_lens,
        )?;
        let mut workers: Vec<Worker> = Vec::with_capacity(config.workers);
        for _ in 0..config.workers {
            let replica = Replica::new(&model_config, config.seed, device)?;
            let optimizer = match config.optimizer {
                OptimizerKind::Demo => WorkerOptimizer::Demo(Box::new(Demo::new(
                    replica.parameters(),
                    config.demo.clone(),
                )?)),
                OptimizerKind::Adamw => {
                    WorkerOptimizer::AdamW(AdamW::new(&replica.tensors(), config.adamw.clone()))
                }
            };
            workers.push(Worker {
                replica,
                optimizer,
                previous: None,
            });
        }
        Ok(Self {
            model_config,
            dataset,
            plan,
            workers,
            step: 0,
            times: PhaseTimes::default(),
            verifiers: Verifiers::default(),
            ejected: vec![None; config.workers],
            config,
        })
    }

    /// The model every worker trains.
    pub fn model_config(&self) -> &LlamaConfig {
        &self.model_config
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Time spent per phase so far.
    pub fn phase_times(&self) -> &PhaseTimes {
        &self.times
    }

    /// Tokens trained per step over all workers.
    pub fn tokens_per_step(&self) -> usize {
        self.config.workers * self.config.batch_per_worker * self.config.seq_len
    }

    /// Bytes each worker would send per step in a bf16 ring all-reduce of the gradients.
    pub fn all_reduce_bytes_per_worker(&self) -> usize {
        ring_all_reduce_bytes(self.model_config.parameter_count(), self.config.workers)
    }

    /// Runs one step on every worker.
    pub fn step(&mut self) -> anyhow::Result<StepReport> {
        let lr = self.config.schedule.lr(self.step);
        let (dataset, plan, config, step) = (&self.dataset, &self.plan, &self.config, self.step);
        let workers = self.workers.len();
        // An ejected worker trains no more: a client that finds itself ejected stops.
        let in_run = self.in_run();
        let local = for_each_worker(
            &mut self.workers,
            in_run,
            config.worker_threads,
            |index, worker, in_run| {
                if !in_run {
                    return None;
                }
                let start = Instant::now();
                let attack = config
                    .attack
                    .filter(|_| index >= config.workers - config.byzantine);
                let first = (index * config.batch_per_worker) as u64;
                let data_step = match attack {
                    Some(attack) if attack.trains_on_wrong_data() => step + WRONG_DATA_OFFSET,
                    _ => step,
                };
                let ranges: Vec<_> = (first..first + config.batch_per_worker as u64)
                    .map(|id| plan.token_range(data_step, id))
                    .collect();
                let (inputs, targets) = dataset.training_batch(&ranges);
                let (loss, grads) = worker
                    .replica
                    .gradients(&inputs, &targets, config.grad_clip);
                let mut times = PhaseTimes {
                    forward_backward: start.elapsed(),
                    ..PhaseTimes::default()
                };
                // DeMo compresses on the worker itself: its momentum never leaves it.
                let mut served = None;
                let output = match &mut worker.optimizer {
                    WorkerOptimizer::Demo(demo) => {
                        let start = Instant::now();
                        if let Some(attack) = attack {
                            attack.forge_momentum(demo);
                        }
                        // A run that spot-checks commits to each result's momentum, and its
                        // sender serves it to the verifiers that ask.
                        let committed = (config.spot_check_one_in > 0)
                            .then(|| Commitment::start(demo).finish());
                        let commitment = committed
                            .as_ref()
                            .map_or(payload::UNCOMMITTED, |(commitment, _)| *commitment);
                        served = committed.map(|(_, momentum)| momentum);
                        let mut update = demo.compress_step(&grads, lr);
                        if let Some(attack) = attack {
                            update = attack.forge(update, worker.previous.as_ref(), step, index);
                            if attack == Attack::Stale {
                                worker.previous = Some(duplicate(&update));
                            }
                        }
                        times.compress = start.elapsed();
                        let start = Instant::now();
                        let bytes =
                            payload::encode(&update, &commitment, demo.compressor().layouts());
                        times.wire_encode = start.elapsed();
                        LocalOutput::Payload(bytes)
                    }
                    WorkerOptimizer::AdamW(_) => LocalOutput::Gradients(grads),
                };
                Some((loss, output, times, served))
            },
        );
        let (mut loss_sum, mut trained) = (0.0, 0);
        let mut outputs = Vec::with_capacity(local.len());
        let mut served = Vec::with_capacity(local.len());
        for worker in local {
            let Some((loss, output, times, momentum)) = worker else {
                outputs.push(None);
                served.push(None);
                continue;
            };
            (loss_sum, trained) = (loss_sum + loss, trained + 1);
            self.times += &times;
            outputs.push(Some(output));
            served.push(momentum);
        }
        // A copier sends the first worker's (an honest one's) result as its own, byte for byte
        // or with its values jittered.
        if let Some(attack @ (Attack::Copy | Attack::NoisyCopy)) = self.config.attack
            && let Some(LocalOutput::Payload(honest)) = &outputs[0]
        {
            let honest = honest.clone();
            let WorkerOptimizer::Demo(demo) = &self.workers[0].optimizer else {
                unreachable!("attacks are on DeMo results")
            };
            let layouts = demo.compressor().layouts();
            let original = match attack {
                Attack::NoisyCopy => Some(
                    payload::decode_all([honest.as_slice()], demo.compressor(), Device::Cpu)?
                        .remove(0),
                ),
                _ => None,
            };
            for (worker, output) in outputs
                .iter_mut()
                .enumerate()
                .skip(workers - self.config.byzantine)
                .filter(|(_, output)| output.is_some())
            {
                *output = Some(LocalOutput::Payload(match &original {
                    Some(original) => payload::encode(
                        &jitter(original, self.step, worker),
                        &payload::UNCOMMITTED,
                        layouts,
                    ),
                    None => honest.clone(),
                }));
            }
        }
        if self.config.screen || self.config.score || self.config.spot_check_one_in > 0 {
            let flagged = self.verify(&outputs, served, lr)?;
            if self.config.eject {
                // Its verifiers' verdicts, sent as they apply this round (`self.step + 1`),
                // eject it before the next round closes.
                for worker in flagged {
                    self.ejected[worker].get_or_insert(self.step + 2);
                }
                anyhow::ensure!(
                    self.ejected.iter().any(Option::is_none),
                    "round {}: the checks flagged every worker still in the run",
                    self.step + 1
                );
            }
        }
        let bytes_per_worker = match self.config.optimizer {
            OptimizerKind::Demo => self.demo_exchange(&outputs, lr)?,
            OptimizerKind::Adamw => self.adamw_exchange(&outputs, lr),
        };
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            lr,
            loss: loss_sum / f64::from(trained),
            bytes_per_worker,
        })
    }

    /// Every replica still in the run decodes every counted payload and applies the same
    /// aggregate on its own.
    fn demo_exchange(&mut self, outputs: &[Option<LocalOutput>], lr: f64) -> anyhow::Result<usize> {
        let payloads: Vec<&[u8]> = payloads(outputs).into_iter().flatten().collect();
        let in_run = self.in_run();
        let applied = for_each_worker(
            &mut self.workers,
            in_run,
            self.config.worker_threads,
            |_, worker, in_run| -> anyhow::Result<PhaseTimes> {
                if !in_run {
                    return Ok(PhaseTimes::default());
                }
                let WorkerOptimizer::Demo(demo) = &worker.optimizer else {
                    unreachable!("demo run")
                };
                let (_, times) =
                    worker
                        .replica
                        .apply_results(demo, payloads.iter().copied(), lr)?;
                Ok(PhaseTimes {
                    wire_decode: times.decode,
                    aggregate: times.aggregate,
                    apply: times.apply,
                    ..PhaseTimes::default()
                })
            },
        );
        for times in applied {
            self.times += &times?;
        }
        Ok(payloads[0].len())
    }

    fn adamw_exchange(&mut self, outputs: &[Option<LocalOutput>], lr: f64) -> usize {
        let gradients: Vec<&[Tensor]> = outputs
            .iter()
            .flatten()
            .map(|output| match output {
                LocalOutput::Gradients(grads) => grads.as_slice(),
                LocalOutput::Payload(_) => unreachable!("adamw run"),
            })
            .collect();
        let start = Instant::now();
        // The all-reduce: the same sum, in worker order, for every replica.
        let workers = gradients.len() as f64;
        let mean: Vec<Tensor> = (0..gradients[0].len())
            .map(|i| {
                let mut sum = gradients[0][i].copy();
                for grads in &gradients[1..] {
                    sum += &grads[i];
                }
                sum / workers
            })
            .collect();
        self.times.wire_encode += start.elapsed();
        // Tensors cannot be shared between threads, so each worker gets its own handle on the
        // mean (a shallow clone: the same storage).
        let means = self
            .workers
            .iter()
            .map(|_| mean.iter().map(Tensor::shallow_clone).collect::<Vec<_>>())
            .collect();
        let applied = for_each_worker(
            &mut self.workers,
            means,
            self.config.worker_threads,
            |_, worker, mean| {
                let start = Instant::now();
                let tensors = worker.replica.tensors();
                let WorkerOptimizer::AdamW(adamw) = &mut worker.optimizer else {
                    unreachable!("adamw run")
                };
                adamw.step(&tensors, &mean, lr);
                start.elapsed()
            },
        );
        self.times.apply += applied.into_iter().sum::<Duration>();
        self.all_reduce_bytes_per_worker()
    }

    /// By worker, whether it is still in the run in this step's round (not ejected).
    fn in_run(&self) -> Vec<bool> {
        let round = self.step + 1;
        self.ejected
            .iter()
            .map(|from| from.is_none_or(|from| round < from))
            .collect()
    }

    /// The index of the first worker still in the run: its replica is the run's model.
    fn first_in_run(&self) -> usize {
        let index = self.in_run().iter().position(|&in_run| in_run);
        index.expect("`step` never ejects the last worker")
    }

    /// Mean loss of the run's model on the first `samples` validation windows.
    pub fn validation_loss(&self, samples: usize) -> f64 {
        self.workers[self.first_in_run()].replica.validation_loss(
            &self.dataset,
            self.config.seq_len,
            samples,
        )
    }

    /// By worker, the round (from 1) from which it was ejected, if it was (with `eject`).
    pub fn ejections(&self) -> &[Option<u64>] {
        &self.ejected
    }

    /// SHA-256 of every parameter of every replica still in the run, in parameter order.
    pub fn replica_hashes(&self) -> Vec<[u8; 32]> {
        self.workers
            .iter()
            .zip(self.in_run())
            .filter(|(_, in_run)| *in_run)
            .map(|(worker, _)| worker.replica.hash())
            .collect()
    }
}
