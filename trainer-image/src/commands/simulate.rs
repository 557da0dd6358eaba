//! `demeter simulate`: the main job until the networked trainer lands.

use std::path::PathBuf;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::demo_args::DemoArgs;
use super::schedule_args::ScheduleArgs;
use super::table::Table;
use crate::attack::Attack;
use crate::data::Dataset;
use crate::model::{Preset, default_device};
use crate::optim::AdamWConfig;
use crate::simulate::{
    Flagged, OptimizerKind, PhaseTimes, ScoreCounts, ScreenCounts, Simulation, SimulationConfig,
    SpotCheckCounts,
};

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Workers, each with its own replica, momentum and data.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 150)]
    pub steps: u64,
    #[arg(long, value_enum, default_value = "demo")]
    pub optimizer: OptimizerKind,
    #[arg(long, value_enum, default_value = "tiny")]
    pub preset: Preset,
    /// Prepared dataset directory (`demeter data prepare`); default: the shipped corpus.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Samples per worker per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    #[command(flatten)]
    pub demo: DemoArgs,
    /// Decoupled weight decay (both optimizers).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip each worker's gradient to this global norm.
    #[arg(long)]
    pub grad_clip: Option<f64>,
    #[arg(long, default_value_t = 1234)]
    pub seed: u64,
    /// OS threads the workers run on (default: one per core, at most one per worker; 1 on CUDA).
    /// With more than one, each worker's tensor ops run single-threaded: on a small model the
    /// workers fill the cores better than libtorch's intra-op threads do. Any count above 1 gives
    /// the same results; 1 leaves libtorch its own threads, whose reductions may round
    /// differently.
    #[arg(long)]
    pub worker_threads: Option<usize>,
    /// Validation windows evaluated at the end.
    #[arg(long, default_value_t = 64)]
    pub eval_samples: usize,
    /// Write a checkpoint (model, config.json, optimizer state) here at the end.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Resume from a checkpoint written by a run with the same settings.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress bar (benchmarks and logs).
    #[arg(long)]
    pub quiet: bool,
    /// The last N workers cheat, as --attack says (docs/verification.md).
    #[arg(long, default_value_t = 0)]
    pub byzantine: usize,
    /// How the --byzantine workers cheat.
    #[arg(long, value_enum)]
    pub attack: Option<Attack>,
    /// Screen every round's results for zeros, copies and repeats, and report what was flagged.
    #[arg(long)]
    pub screen: bool,
    /// Score every round's results against data (the loss each takes off its sender's assigned
    /// batch beyond a control batch), judge each sender over a window of rounds, and report
    /// what was flagged.
    #[arg(long)]
    pub score: bool,
    /// With --score: score a seeded one in N of every round's results, as a run with
    /// `score_one_in = N` does (the window spans N times as many rounds).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub score_one_in: u16,
    /// Recompute each result with a chance of one in N from the momentum its sender commits
    /// to (exact spot checks, as a run with `spot_check_one_in = N` does), and report what
    /// was flagged; 0 recomputes nothing.
    #[arg(long, default_value_t = 0)]
    pub spot_check_one_in: u16,
    /// With --spot-check-one-in: how far, per mille, a recompute may stray from the result it
    /// checks, as a run with `spot_check_tolerance = N` judges; 0 asks for the same bytes.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub spot_check_tolerance: u16,
    /// Eject whoever the checks flag, as a verdict quorum does: from the next round on its
    /// results are not applied and it trains no more (needs --screen, --score or
    /// --spot-check-one-in).
    #[arg(long)]
    pub eject: bool,
}

impl SimulateArgs {
    /// The simulation these arguments describe, its workers on `worker_threads` threads.
    pub fn config(&self, worker_threads: usize) -> SimulationConfig {
        SimulationConfig {
            workers: self.workers,
            preset: self.preset,
            optimizer: self.optimizer,
            seq_len: self.seq_len,
            batch_per_worker: self.batch,
            seed: self.seed,
            schedule: self.schedule.schedule(1e-3, self.steps / 20, self.steps),
            demo: self.demo.config(self.weight_decay),
            adamw: AdamWConfig {
                weight_decay: self.weight_decay,
                ..AdamWConfig::default()
            },
            grad_clip: self.grad_clip,
            worker_threads,
            byzantine: self.byzantine,
            attack: self.attack,
            screen: self.screen,
            score: self.score,
            score_one_in: self.score_one_in,
            spot_check_one_in: self.spot_check_one_in,
            spot_check_tolerance: self.spot_check_tolerance,
            eject: self.eject,
        }
    }
}

/// What a finished simulation measured.
#[derive(Clone, Debug)]
pub struct SimulationSummary {
    pub parameters: usize,
    pub workers: usize,
    pub steps: u64,
    pub tokens: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub val_loss: f64,
    pub bytes_per_worker_per_step: usize,
    pub all_reduce_bytes_per_worker: usize,
    /// Whether the replicas of the workers still in the run (all but the ejected) ended
    /// bitwise identical.
    pub replicas_identical: bool,
    pub seconds: f64,
    /// Time per phase over all workers and steps of this run.
    pub phase_times: PhaseTimes,
    /// What the screens flagged (with --screen).
    pub screens: ScreenCounts,
    /// What scoring flagged (with --score).
    pub scores: ScoreCounts,
    /// What spot checks flagged (with --spot-check-one-in).
    pub spot_checks: SpotCheckCounts,
    /// By worker, the round (from 1) from which it was ejected (with --eject).
    pub ejected: Vec<Option<u64>>,
}

/// Runs the simulation `args` describe, with a progress bar unless `quiet`.
pub fn run_simulation(args: &SimulateArgs) -> anyhow::Result<SimulationSummary> {
    let dataset = Dataset::open_or_embedded(args.data.as_deref())?;
    let device = default_device();
    let worker_threads = match args.worker_threads {
        Some(0) => anyhow::bail!("--worker-threads must be at least 1"),
        Some(threads) => threads,
        None if device.is_cuda() => 1,
        None => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(args.workers),
    };
    if worker_threads > 1 {
        // Threads libtorch starts later (the workers') take this setting on their first op.
        tch::set_num_threads(1);
    }
    let mut simulation = Simulation::new(args.config(worker_threads), dataset, device)?;
    if let Some(dir) = &args.resume {
        simulation.resume(dir)?;
    }
    let start_step = simulation.step_count();
    anyhow::ensure!(
        start_step < args.steps,
        "--resume: the checkpoint is at step {start_step}, --steps is {}",
        args.steps
    );
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
            .expect("valid template"),
    );
    bar.set_position(start_step);
    let started = Instant::now();
    let (mut first_loss, mut last_loss, mut bytes) = (f64::NAN, f64::NAN, 0);
    while simulation.step_count() < args.steps {
        let report = simulation.step()?;
        if report.step == start_step + 1 {
            first_loss = report.loss;
        }
        last_loss = report.loss;
        bytes = report.bytes_per_worker;
        bar.set_message(format!("loss {:.3}  lr {:.2e}", report.loss, report.lr));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let hashes = simulation.replica_hashes();
    let summary = SimulationSummary {
        parameters: simulation.model_config().parameter_count(),
        workers: args.workers,
        steps: args.steps - start_step,
        tokens: simulation.tokens_per_step() * (args.steps - start_step) as usize,
        first_loss,
        last_loss,
        val_loss: simulation.validation_loss(args.eval_samples),
        bytes_per_worker_per_step: bytes,
        all_reduce_bytes_per_worker: simulation.all_reduce_bytes_per_worker(),
        replicas_identical: hashes.windows(2).all(|pair| pair[0] == pair[1]),
        seconds,
        phase_times: simulation.phase_times().clone(),
        screens: simulation.screen_counts().clone(),
        scores: simulation.score_counts().clone(),
        spot_checks: simulation.spot_check_counts().clone(),
        ejected: simulation.ejections().to_vec(),
    };
    if let Some(dir) = &args.checkpoint {
        simulation.save_checkpoint(dir)?;
    }
    Ok(summary)
}

/// Milliseconds per step of each phase, summed over the workers, in the order of the row's label.
fn phase_split(times: &PhaseTimes, steps: u64) -> String {
    let per_step = |phase: std::time::Duration| phase.as_secs_f64() * 1e3 / steps.max(1) as f64;
    [
        times.forward_backward,
        times.compress,
        times.wire_encode,
        times.wire_decode,
        times.aggregate,
        times.apply,
    ]
    .map(|phase| format!("{:.1}", per_step(phase)))
    .join(" / ")
}

/// What screening a round costs a replica: its time per round, and its share of a worker's
/// step (the phase times are summed over the workers, and every worker runs every phase).
pub fn screening_cost(summary: &SimulationSummary) -> String {
    cost_per_round(summary, summary.screens.time, summary.screens.flags.rounds)
}

/// What scoring every result of a round costs a verifier, as [`screening_cost`] gives it.
pub fn scoring_cost(summary: &SimulationSummary) -> String {
    cost_per_round(summary, summary.scores.time, summary.scores.flags.rounds)
}

/// What spot checks cost one verifier a round: its recomputes' time per round, and their
/// share of a worker's step (a run spreads each check over its round's verifiers).
pub fn spot_check_cost(summary: &SimulationSummary) -> String {
    cost_per_round(
        summary,
        summary.spot_checks.time,
        summary.spot_checks.flags.rounds,
    )
}

fn cost_per_round(summary: &SimulationSummary, time: std::time::Duration, rounds: u64) -> String {
    let per_round = time.as_secs_f64() / rounds.max(1) as f64;
    let step = summary.phase_times.total().as_secs_f64()
        / summary.workers.max(1) as f64
        / summary.steps.max(1) as f64;
    format!(
        "{:.2} ms, {:.2}%",
        per_round * 1e3,
        100.0 * per_round / step.max(f64::MIN_POSITIVE)
    )
}

/// The summary's row of the rounds in which `by` flagged each worker, of those it checked it.
fn flagged_row(by: &str, flags: &Flagged) -> Vec<String> {
    let counts: Vec<String> = flags
        .by_worker
        .iter()
        .zip(&flags.checked)
        .map(|(flagged, checked)| format!("{flagged}/{checked}"))
        .collect();
    vec![
        format!("rounds flagged by {by}, per worker (of rounds checked)"),
        counts.join(" "),
    ]
}

/// `demeter simulate`: runs and prints the summary table.
pub fn simulate(args: &SimulateArgs) -> anyhow::Result<()> {
    let summary = run_simulation(args)?;
    let mut table = Table::new(&["metric", "value"]);
    let optimizer = match args.optimizer {
        OptimizerKind::Demo => format!(
            "DeMo (topk {}, chunk {}, values {:?})",
            args.demo.topk, args.demo.chunk, args.demo.values
        ),
        OptimizerKind::Adamw => "AdamW (all-reduced gradients)".to_owned(),
    };
    let rows = [
        ("optimizer", optimizer),
        (
            "workers x preset",
            format!(
                "{} x {:?} ({} parameters)",
                args.workers, args.preset, summary.parameters
            ),
        ),
        (
            "steps, tokens",
            format!("{}, {}", summary.steps, summary.tokens),
        ),
        (
            "train loss first -> last",
            format!("{:.4} -> {:.4}", summary.first_loss, summary.last_loss),
        ),
        ("validation loss", format!("{:.4}", summary.val_loss)),
        (
            "bytes per worker per step",
            summary.bytes_per_worker_per_step.to_string(),
        ),
        (
            "bf16 ring all-reduce, per worker",
            summary.all_reduce_bytes_per_worker.to_string(),
        ),
        (
            "ratio to the all-reduce",
            format!(
                "{:.2}%",
                100.0 * summary.bytes_per_worker_per_step as f64
                    / summary.all_reduce_bytes_per_worker.max(1) as f64
            ),
        ),
        (
            "replicas bitwise identical",
            if summary.replicas_identical {
                "yes".into()
            } else {
                "NO".into()
            },
        ),
        ("wall time", format!("{:.2} s", summary.seconds)),
        (
            "ms per step: fwd+bwd, compress, encode, decode, aggregate, apply",
            phase_split(&summary.phase_times, summary.steps),
        ),
        (
            "throughput",
            format!("{:.0} tokens/s", summary.tokens as f64 / summary.seconds),
        ),
    ];
    for (metric, value) in rows {
        table.row(vec![metric.to_owned(), value]);
    }
    if args.screen {
        let screens = &summary.screens;
        table.row(flagged_row("the screens", &screens.flags));
        table.row(vec![
            "largest honest overlap: two results of a round, one client's consecutive".to_owned(),
            format!(
                "{:.3}, {:.3}",
                screens.honest_overlap_max, screens.honest_repeat_max
            ),
        ]);
        table.row(vec![
            "screening: ms per round, share of a worker's step".to_owned(),
            screening_cost(&summary),
        ]);
        let or_none = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.3}"));
        table.row(vec![
            "norm over the round's median: largest honest, smallest dishonest".to_owned(),
            format!(
                "{:.3}, {}",
                screens.honest_norm_max,
                or_none(screens.dishonest_norm_min)
            ),
        ]);
        table.row(vec![
            "sign agreement with the round: smallest honest, largest dishonest".to_owned(),
            format!(
                "{}, {}",
                or_none(screens.honest_agreement_min),
                or_none(screens.dishonest_agreement_max)
            ),
        ]);
    }
    if args.score {
        let scores = &summary.scores;
        table.row(flagged_row("scoring", &scores.flags));
        let or_none = |value: Option<f64>| value.map_or("-".to_owned(), |v| format!("{v:.4}"));
        table.row(vec![
            "mean score: honest (share at or below 0), dishonest".to_owned(),
            format!(
                "{} ({:.1}%), {}",
                or_none(scores.honest_mean()),
                100.0 * scores.honest_not_positive as f64 / scores.honest_scored.max(1) as f64,
                or_none(scores.dishonest_mean())
            ),
        ]);
        table.row(vec![
            "scoring: ms per round, share of a worker's step".to_owned(),
            scoring_cost(&summary),
        ]);
    }
    if args.spot_check_one_in > 0 {
        let checks = &summary.spot_checks;
        table.row(flagged_row("spot checks", &checks.flags));
        table.row(vec![
            match args.spot_check_tolerance {
                0 => "honest results recomputed bit for bit".to_owned(),
                per_mille => format!("honest results recomputed within {per_mille} per mille"),
            },
            format!("{} of {}", checks.honest_matched, checks.honest_recomputed),
        ]);
        table.row(vec![
            "spot checks: ms per round (one verifier), share of a worker's step".to_owned(),
            spot_check_cost(&summary),
        ]);
    }
    if args.eject {
        let ejected: Vec<String> = summary
            .ejected
            .iter()
            .map(|from| from.map_or("-".to_owned(), |step| step.to_string()))
            .collect();
        table.row(vec![
            "ejected from round, per worker".to_owned(),
            ejected.join(" "),
        ]);
    }
    print!("{table}");
    if let Some(dir) = &args.checkpoint {
        println!("checkpoint: {}", dir.display());
    }
    anyhow::ensure!(
        summary.replicas_identical,
        "replicas diverged: DeMo's aggregation must be bitwise deterministic"
    );
    Ok(())
}
