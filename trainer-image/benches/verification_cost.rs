//! What verifying costs a client a round (docs/verification.md), part by part, at the batch a
//! client trains. Every client screens every result of every round; in a run that spot-checks,
//! every client commits to its momentum each round, and the round's verifiers recompute each
//! result with a chance of one in `spot_check_one_in`; in a run that scores, every client scores
//! one in `score_one_in` of the round's results (each judges every sender over the window).
//!
//! The parts: a client's round without verifying (forward and backward on its batch, its DeMo
//! step, the payload); screening a round of [`CLIENTS`] results; committing to the momentum (the
//! momentum as bytes and their SHA-256: alone, and the time a client's round spends in it,
//! which hashes during the step on a GPU, with the whole round beside it); one recompute (the served momentum read back, the same
//! forward and backward, the DeMo step from that momentum, the payload, compared byte for byte);
//! scoring one result (`scoring::score`: four forward passes of the probe's samples, the update
//! applied alone and undone); and the bytes a check moves (the sender's momentum, to each of the
//! round's verifiers). A second table adds them up for a client under several run settings.
//!
//! Scoring a result and screening do not grow with the samples a client trains (a probe is two
//! samples; scoring grows with their length), while its step does; so the shares depend on the
//! batch, and the default shapes end with the example runs'
//! (a client's 32 x 512 tokens).
//!
//! `make bench-verification-cost`. VERIFICATION_COST_SHAPES picks shapes (`PRESET` at its small
//! bench batch, or `PRESET:BxS`; default `tiny,20m,20m:32x512`), VERIFICATION_COST_STEPS the
//! measured rounds (default 3). Runs on CUDA when one is visible.

mod common;

use std::time::{Duration, Instant};

use demeter_trainer::commands::Table;
use demeter_trainer::data::{BatchPlan, Dataset};
use demeter_trainer::demo::{Demo, DemoConfig, SparseUpdate};
use demeter_trainer::model::default_device;
use demeter_trainer::payload;
use demeter_trainer::replica::Replica;
use demeter_trainer::scoring::{Probe, score};
use demeter_trainer::screening::{Picks, screen};
use demeter_trainer::spot_check::Commitment;
use sha2::{Digest, Sha256};
use tch::Tensor;

use common::Shape;

/// Results a round (the byzantine runs: 8 workers).
const CLIENTS: usize = 8;
/// Verifiers a round (a run's usual `witness_nodes`).
const VERIFIERS: f64 = 3.0;
const LR: f64 = 1e-3;

/// What each part of verifying costs at one shape, in milliseconds a round.
struct Parts {
    round: f64,
    screen: f64,
    /// The momentum as bytes and their hash, alone.
    commit: f64,
    /// The time a client's round spends in its commitment, as the client commits (at once on
    /// the CPU; started before the step and finished after it on a GPU).
    committing: f64,
    /// The client's round with its commitment: beside `round`, it shows what hashing on a
    /// thread during a GPU step costs the step.
    committed_round: f64,
    recompute: f64,
    score: f64,
    identical: bool,
    momentum_bytes: usize,
}

/// Run settings the second table costs: `(label, spot_check_one_in, score_one_in)`, 0 for off.
const SETTINGS: [(&str, u16, u16); 7] = [
    ("the defaults: screens only", 0, 0),
    ("spot_check_one_in = 32 (the example run's)", 32, 0),
    ("spot_check_one_in = 64", 64, 0),
    ("score_one_in = 4", 0, 4),
    ("score_one_in = 8", 0, 8),
    ("score_one_in = 16", 0, 16),
    ("spot_check_one_in = 32, score_one_in = 8", 32, 8),
];

fn millis(total: Duration, count: u32) -> f64 {
    total.as_secs_f64() * 1000.0 / f64::from(count)
}

fn main() -> anyhow::Result<()> {
    let dataset = Dataset::embedded(0.01);
    let shapes = common::shapes("VERIFICATION_COST_SHAPES", "tiny,20m,20m:32x512", &dataset)?;
    let steps = common::count("VERIFICATION_COST_STEPS", 3)?.max(1);
    let device = default_device();
    println!(
        "device {device:?}, {} libtorch threads, {steps} measured rounds after 1 warmup round, \
         {CLIENTS} results a round\n",
        tch::get_num_threads()
    );
    let mut parts_table = Table::new(&[
        "preset",
        "params",
        "batch x seq",
        "client's round ms",
        "screening a round ms",
        "commit alone ms",
        "commit in the client's round ms",
        "round with the commit ms",
        "recompute ms",
        "bit for bit",
        "scoring a result ms",
        "bytes a check moves",
    ]);
    let mut shares = Table::new(&[
        "preset",
        "batch x seq",
        "settings",
        "screens ms",
        "spot checks ms",
        "scoring ms",
        "verifying a round: share of the client's round",
    ]);
    for shape in &shapes {
        let parts = measure(shape, &dataset, steps, device)?;
        let batch = format!("{} x {}", shape.batch, shape.seq_len);
        parts_table.row(vec![
            shape.name.clone(),
            shape.config.parameter_count().to_string(),
            batch.clone(),
            format!("{:.1}", parts.round),
            format!("{:.1}", parts.screen),
            format!("{:.1}", parts.commit),
            format!("{:.1}", parts.committing),
            format!("{:.1}", parts.committed_round),
            format!("{:.1}", parts.recompute),
            if parts.identical { "yes" } else { "NO" }.to_owned(),
            format!("{:.1}", parts.score),
            parts.momentum_bytes.to_string(),
        ]);
        for (label, spot_check_one_in, score_one_in) in SETTINGS {
            let spot_checks = match spot_check_one_in {
                0 => 0.0,
                k => parts.committing + VERIFIERS / f64::from(k) * parts.recompute,
            };
            let scoring = match score_one_in {
                0 => 0.0,
                s => CLIENTS as f64 / f64::from(s) * parts.score,
            };
            let total = parts.screen + spot_checks + scoring;
            shares.row(vec![
                shape.name.clone(),
                batch.clone(),
                label.to_owned(),
                format!("{:.1}", parts.screen),
                format!("{spot_checks:.1}"),
                format!("{scoring:.1}"),
                format!("{:.1}%", 100.0 * total / parts.round),
            ]);
        }
    }
    println!("{parts_table}");
    println!("{shares}");
    println!(
        "A client's cost a round, {CLIENTS} clients: screening the round's results; with spot \
         checks, the time its round spends in its commitment plus {VERIFIERS} verifiers' recomputes of one \
         in spot_check_one_in results spread over the clients (the momentum's transfer is not \
         timed); with scoring, {CLIENTS} / score_one_in results scored."
    );
    Ok(())
}

/// Each part's cost at `shape`, averaged over `steps` rounds after a warmup round.
fn measure(
    shape: &Shape,
    dataset: &Dataset,
    steps: u32,
    device: tch::Device,
) -> anyhow::Result<Parts> {
    let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
    let replica = Replica::new(&shape.config, 1, device)?;
    let new_demo = || Demo::new(replica.parameters(), DemoConfig::default());
    let mut sender = new_demo()?;
    let verifier = new_demo()?;
    // The sender's step without a commitment, for its cost alone: a twin from the same momentum
    // every round.
    let mut twin = new_demo()?;
    // The round's other results, for the screens: peers stepping from the sender's gradients,
    // each with noise of its own, so that their picks differ as peers' do.
    let mut peers = (1..CLIENTS)
        .map(|_| new_demo())
        .collect::<Result<Vec<_>, _>>()?;
    let layouts = sender.compressor().layouts().to_vec();
    let plan = BatchPlan::new(1, shape.seq_len, 1, &shard_lens)?;

    let mut total = [Duration::ZERO; 7];
    let mut identical = true;
    let mut previous: Vec<Picks> = Vec::new();
    for step in 0..=u64::from(steps) {
        // The round's batches in order: the sender's first, then each peer's.
        let assignment = |index: u64| {
            let first = (step * CLIENTS as u64 + index) * shape.batch;
            first..first + shape.batch
        };
        let assigned = assignment(0);
        let ranges: Vec<_> = assigned
            .clone()
            .map(|sample| plan.sample_range(sample))
            .collect();
        let (inputs, targets) = dataset.training_batch(&ranges);

        twin.load_deltas(sender.deltas());
        let started = Instant::now();
        let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
        let update = twin.compress_step(&gradients, LR);
        payload::encode(&update, &payload::UNCOMMITTED, &layouts);
        let round = started.elapsed();

        let started = Instant::now();
        let momentum = sender.momentum_bytes();
        let _: [u8; 32] = Sha256::digest(&momentum).into();
        let commit = started.elapsed();

        // The round as a client runs it (on a GPU, the hash on its own thread during the step):
        // the time the client spends in the commitment, and the whole round.
        let started = Instant::now();
        let commitment = Commitment::start(&sender);
        let mut committing = started.elapsed();
        let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
        let update = sender.compress_step(&gradients, LR);
        let finishing = Instant::now();
        let (commitment, momentum) = commitment.finish();
        committing += finishing.elapsed();
        let sent = payload::encode(&update, &commitment, &layouts);
        let committed_round = started.elapsed();

        let started = Instant::now();
        let mut served = verifier
            .momentum_from_bytes(&momentum)
            .expect("a momentum of this model");
        let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
        let again = verifier.recompute_step(&mut served, &gradients, LR, &update);
        let recomputed = payload::encode(&again, &commitment, &layouts);
        identical &= payload::content_hash(&recomputed) == payload::content_hash(&sent);
        let recompute = started.elapsed();

        let others: Vec<SparseUpdate> = peers
            .iter_mut()
            .map(|peer| peer.compress_step(&noisy(&gradients), LR))
            .collect();
        let results: Vec<&SparseUpdate> = std::iter::once(&update).chain(&others).collect();

        // Every result of the round scored, each on a probe of its own assignment, as a client
        // scores the chosen ones.
        let started = Instant::now();
        for (index, result) in (0u64..).zip(&results) {
            let probe =
                Probe::of(dataset, &plan, assignment(index)).expect("a non-empty assignment");
            score(&replica, &verifier, result, LR, &probe);
        }
        let scoring = started.elapsed() / CLIENTS as u32;
        let started = Instant::now();
        let before: Vec<Option<&Picks>> = (0..CLIENTS).map(|index| previous.get(index)).collect();
        let screened = screen(&results, &before);
        let screening = started.elapsed();
        previous = screened.picks;

        // The first round warms the allocator and the DCT bases.
        if step > 0 {
            for (sum, part) in total.iter_mut().zip([
                round,
                commit,
                committing,
                committed_round,
                recompute,
                scoring,
                screening,
            ]) {
                *sum += part;
            }
        }
    }
    let [
        round,
        commit,
        committing,
        committed_round,
        recompute,
        scoring,
        screening,
    ] = total.map(|part| millis(part, steps));
    Ok(Parts {
        round,
        screen: screening,
        commit,
        committing,
        committed_round,
        recompute,
        score: scoring,
        identical,
        momentum_bytes: verifier.momentum_len(),
    })
}

/// `gradients` with noise of their own size added: another peer's gradients, for the screens.
fn noisy(gradients: &[Tensor]) -> Vec<Tensor> {
    tch::no_grad(|| {
        gradients
            .iter()
            .map(|g| g + g.randn_like() * g.std(true))
            .collect()
    })
}
