//! Does DeMo learn as well as AdamW? Four workers train the tiny byte-level LLaMA on the shipped
//! corpus with equal tokens; each optimizer gets a small learning-rate sweep, and its best final
//! validation loss is compared with AdamW's best. Targets: DeMo(k=32) <= 1.05x AdamW, 1-bit
//! DeMo(k=8) <= 1.08x.
//!
//! Each worker takes 4 sequences of 128 bytes per step for 1000 steps (2M tokens in all): with
//! only four workers, DeMo shares at most 4·k coefficients per block per step, so it needs steps
//! more than it needs large batches; AdamW gets the same steps and tokens.
//!
//! Every optimizer gets the same recipe: a cosine schedule with 25% warmup down to 10% of the
//! peak, and gradients clipped to a global norm of 1. Sign-based updates move every weight by
//! the full learning rate, so the early steps (long warmup) and outlier gradients (clipping)
//! matter more to DeMo than to AdamW: with 5% warmup and no clipping DeMo k=32 reached 1.674 at
//! lr 2e-3, and one seed in three diverged to 1.927. 25% warmup (from 15%) took 1-bit DeMo from a
//! mean of 1.698 to 1.666 over three seeds (lr 3e-3), and AdamW from 1.554 to 1.543 (lr 2e-3).
//!
//! The sweep runs on seed 1234. One seed says little about a gap of a few percent, so
//! `QUALITY_SEEDS=1,2` reruns every optimizer's best rate on those seeds too, and prints the
//! ratio of the mean losses over all seeds.
//!
//! `make bench` (QUALITY_STEPS overrides the default of 1000 steps).

use clap::Parser;
use demeter_trainer::commands::{SimulateArgs, SimulationSummary, Table, run_simulation};

#[derive(Parser)]
struct Wrapper {
    #[command(flatten)]
    args: SimulateArgs,
}

struct Candidate {
    label: &'static str,
    flags: &'static [&'static str],
    learning_rates: &'static [f64],
    target: Option<f64>,
}

/// The seed of the learning-rate sweep.
const SWEEP_SEED: u64 = 1234;

const CANDIDATES: [Candidate; 3] = [
    Candidate {
        label: "AdamW",
        flags: &["--optimizer", "adamw"],
        learning_rates: &[1e-3, 2e-3, 4e-3],
        target: None,
    },
    Candidate {
        label: "DeMo k=32",
        flags: &["--optimizer", "demo", "--topk", "32"],
        learning_rates: &[1e-3, 2e-3, 3e-3],
        target: Some(1.05),
    },
    Candidate {
        label: "DeMo 1-bit k=8 β=0.99",
        // With 8 coefficients per block, most of Δ is residual that waits many steps to be
        // sent; β = 0.99 keeps it fresher (β = 0.999 measured 1.855 at lr 1e-3; 0.95, 1.853).
        flags: &[
            "--optimizer",
            "demo",
            "--topk",
            "8",
            "--values",
            "sign",
            "--beta",
            "0.99",
        ],
        learning_rates: &[1e-3, 2e-3, 3e-3],
        target: Some(1.08),
    },
];

/// One run of the recipe: 4 workers × 4 sequences, 25% warmup, gradients clipped to norm 1.
fn simulate(
    candidate: &Candidate,
    lr: f64,
    seed: u64,
    steps: u64,
) -> anyhow::Result<SimulationSummary> {
    let (steps_text, warmup, lr_text, seed_text) = (
        steps.to_string(),
        (steps * 25 / 100).to_string(),
        lr.to_string(),
        seed.to_string(),
    );
    let mut argv = vec![
        "bench",
        "--steps",
        &steps_text,
        "--workers",
        "4",
        "--batch",
        "4",
        "--preset",
        "tiny",
        "--lr",
        &lr_text,
        "--seed",
        &seed_text,
        "--quiet",
        "--eval-samples",
        "1000",
        "--warmup",
        &warmup,
        "--grad-clip",
        "1.0",
    ];
    argv.extend_from_slice(candidate.flags);
    let summary = run_simulation(&Wrapper::parse_from(argv).args)?;
    anyhow::ensure!(
        summary.replicas_identical,
        "{} lr {lr} seed {seed}: replicas diverged",
        candidate.label
    );
    eprintln!(
        "{} lr {lr} seed {seed}: val {:.4} in {:.0} s",
        candidate.label, summary.val_loss, summary.seconds
    );
    Ok(summary)
}

/// An optimizer's best point of the sweep.
struct Best {
    lr: f64,
    val_loss: f64,
    bytes_per_worker_per_step: usize,
}

fn main() -> anyhow::Result<()> {
    let steps: u64 = std::env::var("QUALITY_STEPS").map_or(Ok(1000), |steps| steps.parse())?;
    let other_seeds: Vec<u64> = std::env::var("QUALITY_SEEDS")
        .unwrap_or_default()
        .split(',')
        .filter(|seed| !seed.trim().is_empty())
        .map(|seed| seed.trim().parse())
        .collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();

    let mut runs = Table::new(&[
        "optimizer",
        "peak lr",
        "train loss (last step)",
        "val loss",
        "bytes/worker/step",
        "seconds",
    ]);
    let mut best = Vec::new();
    for candidate in &CANDIDATES {
        let mut best_run: Option<Best> = None;
        for &lr in candidate.learning_rates {
            let summary = simulate(candidate, lr, SWEEP_SEED, steps)?;
            runs.row(vec![
                candidate.label.to_owned(),
                lr.to_string(),
                format!("{:.4}", summary.last_loss),
                format!("{:.4}", summary.val_loss),
                summary.bytes_per_worker_per_step.to_string(),
                format!("{:.0}", summary.seconds),
            ]);
            if best_run
                .as_ref()
                .is_none_or(|run| summary.val_loss < run.val_loss)
            {
                best_run = Some(Best {
                    lr,
                    val_loss: summary.val_loss,
                    bytes_per_worker_per_step: summary.bytes_per_worker_per_step,
                });
            }
        }
        best.push(best_run.expect("every candidate sweeps at least one rate"));
    }
    let sweep_seconds = started.elapsed().as_secs_f64();
    println!("{runs}");

    let mut summary = Table::new(&[
        "optimizer",
        "best lr",
        "best val loss",
        "ratio to AdamW",
        "target",
        "bytes/worker/step",
    ]);
    for (candidate, run) in CANDIDATES.iter().zip(&best) {
        summary.row(vec![
            candidate.label.to_owned(),
            run.lr.to_string(),
            format!("{:.4}", run.val_loss),
            format!("{:.3}", run.val_loss / best[0].val_loss),
            candidate.target.map_or("-".into(), |t| format!("<= {t}")),
            run.bytes_per_worker_per_step.to_string(),
        ]);
    }
    println!("{summary}");
    println!(
        "4 workers x 4 sequences x 128 tokens per step, {steps} steps, cosine schedule with 25% warmup to 10% of the peak, gradients clipped to norm 1, seed {SWEEP_SEED}; the sweep took {sweep_seconds:.0} s."
    );
    if other_seeds.is_empty() {
        return Ok(());
    }

    let mut seeds = vec![SWEEP_SEED];
    seeds.extend(&other_seeds);
    let mut header = vec!["optimizer".to_owned(), "lr".to_owned()];
    header.extend(seeds.iter().map(|seed| format!("seed {seed}")));
    header.extend(["mean".into(), "ratio of means".into(), "target".into()]);
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut by_seed = Table::new(&header);
    let mut adamw_mean = None;
    for (candidate, run) in CANDIDATES.iter().zip(&best) {
        let mut losses = vec![run.val_loss];
        for &seed in &other_seeds {
            losses.push(simulate(candidate, run.lr, seed, steps)?.val_loss);
        }
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        let adamw_mean = *adamw_mean.get_or_insert(mean);
        let mut row = vec![candidate.label.to_owned(), run.lr.to_string()];
        row.extend(losses.iter().map(|loss| format!("{loss:.4}")));
        row.extend([
            format!("{mean:.4}"),
            format!("{:.3}", mean / adamw_mean),
            candidate.target.map_or("-".into(), |t| format!("<= {t}")),
        ]);
        by_seed.row(row);
    }
    println!("\n{by_seed}");
    println!(
        "Each optimizer's best rate of the sweep, rerun on every seed; {:.0} s in all.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
