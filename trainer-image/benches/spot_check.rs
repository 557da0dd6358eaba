//! What spot checks cost (docs/verification.md): a sender's round (forward and backward on its
//! batch, its DeMo step, the payload), what committing to its momentum costs (the momentum as
//! bytes and their SHA-256, every round of a run that spot-checks: alone, and what it adds to
//! the round as a client commits, hashing during the step on a GPU), and what one
//! recompute costs a verifier (the served momentum read back, the same forward and backward, the
//! DeMo step from that momentum, the payload, compared byte for byte); and the bytes a check
//! moves (the sender's momentum, to each of the round's verifiers).
//!
//! A second table turns them into a client's average cost per round at several shares: every
//! client commits each round, and each result is recomputed by the round's verifiers (three here)
//! with a chance of one in `spot_check_one_in`, so a client recomputes `3 / spot_check_one_in`
//! results a round on average (the network time of the momentum is not in it).
//!
//! A third table measures what a tolerance must allow (`spot_check_tolerance`): how far honest
//! senders whose arithmetic differs, and cheating ones, stray from their recomputes.
//!
//! `make bench-spot-check`. SPOT_CHECK_PRESETS picks presets (default `tiny,20m`),
//! SPOT_CHECK_STEPS the measured rounds (default 5). Runs on CUDA when one is visible.

use std::time::{Duration, Instant};

use demeter_trainer::commands::Table;
use demeter_trainer::data::{BatchPlan, Dataset};
use demeter_trainer::demo::{Demo, DemoConfig};
use demeter_trainer::model::{LlamaConfig, Preset, default_device};
use demeter_trainer::optim::clip_global_norm;
use demeter_trainer::payload;
use demeter_trainer::replica::Replica;
use demeter_trainer::screening::Picks;
use demeter_trainer::spot_check::{
    Agreement, Chain, Commitment, Recompute, Tolerance, momentum_distance, recompute, step_scale,
};
use sha2::{Digest, Sha256};

/// Verifiers per round (a run's usual `witness_nodes`).
const VERIFIERS: f64 = 3.0;
const SHARES: [u16; 4] = [4, 16, 32, 64];

/// The model of preset `name` and the batch a client trains it on here: samples, tokens each.
fn shape(name: &str, dataset: &Dataset) -> anyhow::Result<(LlamaConfig, u64, usize)> {
    let preset: Preset =
        clap::ValueEnum::from_str(name.trim(), true).map_err(anyhow::Error::msg)?;
    let (batch, seq_len) = match preset {
        Preset::Tiny => (8, 128),
        Preset::M20 => (4, 128),
        Preset::M150 | Preset::B1 => (4, 512),
    };
    let config = LlamaConfig::for_training(preset, dataset.meta.vocab_size, seq_len);
    Ok((config, batch, seq_len))
}

fn millis(total: Duration, count: u32) -> f64 {
    total.as_secs_f64() * 1000.0 / f64::from(count)
}

fn main() -> anyhow::Result<()> {
    let presets = std::env::var("SPOT_CHECK_PRESETS").unwrap_or_else(|_| "tiny,20m".into());
    let steps: u32 = std::env::var("SPOT_CHECK_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let device = default_device();
    println!(
        "device {device:?}, {} libtorch threads, {steps} measured rounds after 1 warmup round\n",
        tch::get_num_threads()
    );
    let mut costs = Table::new(&[
        "preset",
        "params",
        "batch x seq",
        "sender's round ms",
        "commit alone ms",
        "commit as a client runs it: adds ms",
        "recompute ms",
        "bit for bit",
        "bytes a check moves",
    ]);
    let mut shares = Table::new(&[
        "preset",
        "spot_check_one_in",
        "recomputes a client runs a round",
        "cost a round (share of the sender's round)",
    ]);
    let dataset = Dataset::embedded(0.01);
    let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
    for name in presets.split(',') {
        let (config, batch, seq_len) = shape(name, &dataset)?;
        let replica = Replica::new(&config, 1, device)?;
        let mut sender = Demo::new(replica.parameters(), DemoConfig::default())?;
        let verifier = Demo::new(replica.parameters(), DemoConfig::default())?;
        let layouts = sender.compressor().layouts().to_vec();
        let plan = BatchPlan::new(1, seq_len, 1, &shard_lens)?;

        // The sender's step without a commitment, for its cost alone: a twin from the same
        // momentum every round.
        let mut twin = Demo::new(replica.parameters(), DemoConfig::default())?;
        let (mut round, mut commit, mut committed_round, mut recompute) = Default::default();
        let mut identical = true;
        for step in 0..=steps {
            let ranges: Vec<_> = (0..batch)
                .map(|sample| plan.sample_range(u64::from(step) * batch + sample))
                .collect();
            let (inputs, targets) = dataset.training_batch(&ranges);

            twin.load_deltas(sender.deltas());
            let started = Instant::now();
            let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
            let update = twin.compress_step(&gradients, 1e-3);
            payload::encode(&update, &payload::UNCOMMITTED, &layouts);
            let sending = started.elapsed();

            let started = Instant::now();
            let momentum = sender.momentum_bytes();
            let _: [u8; 32] = Sha256::digest(&momentum).into();
            let committing = started.elapsed();

            // The round as a client runs it (on a GPU, the hash on its own thread during the
            // step).
            let started = Instant::now();
            let commitment = Commitment::start(&sender);
            let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
            let update = sender.compress_step(&gradients, 1e-3);
            let (commitment, momentum) = commitment.finish();
            let sent = payload::encode(&update, &commitment, &layouts);
            let committed = started.elapsed();

            let started = Instant::now();
            let mut served = verifier
                .momentum_from_bytes(&momentum)
                .expect("a momentum of this model");
            let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
            let again = verifier.recompute_step(&mut served, &gradients, 1e-3, &update);
            let recomputed = payload::encode(&again, &commitment, &layouts);
            identical &= payload::content_hash(&recomputed) == payload::content_hash(&sent);
            let checking = started.elapsed();
            // The first round warms the allocator and the DCT bases.
            if step > 0 {
                round += sending;
                commit += committing;
                committed_round += committed;
                recompute += checking;
            }
        }
        let (round, commit, committed_round, recompute) = (
            millis(round, steps),
            millis(commit, steps),
            millis(committed_round, steps),
            millis(recompute, steps),
        );
        // What committing adds to a round as the client runs it (never below nothing).
        let overlapped = (committed_round - round).max(0.0);
        costs.row(vec![
            name.to_owned(),
            config.parameter_count().to_string(),
            format!("{batch} x {seq_len}"),
            format!("{round:.1}"),
            format!("{commit:.1}"),
            format!("{overlapped:.1}"),
            format!("{recompute:.1}"),
            if identical { "yes" } else { "NO" }.to_owned(),
            verifier.momentum_len().to_string(),
        ]);
        for one_in in SHARES {
            let recomputes = VERIFIERS / f64::from(one_in);
            let cost = overlapped + recomputes * recompute;
            shares.row(vec![
                name.to_owned(),
                one_in.to_string(),
                format!("{recomputes:.3}"),
                format!("{:.1}%", 100.0 * cost / round),
            ]);
        }
    }
    println!("{costs}");
    println!(
        "{}",
        tolerance(&dataset, &shard_lens, &presets, steps, device)?
    );
    println!("{shares}");
    println!(
        "A client's cost a round: what its commit adds to its round, plus {VERIFIERS} verifiers' \
         recomputes of one in spot_check_one_in results spread over the clients; the momentum's \
         transfer is not timed."
    );
    Ok(())
}

/// The tolerance the table judges by: 10 per mille.
const BENCH_TOLERANCE: f64 = 0.01;

/// The gradients `kind` of sender sends its step from: its `assigned` batch's (in its own
/// arithmetic), or another batch's (`other`).
fn sender_gradients(
    replica: &Replica,
    (inputs, targets): &(tch::Tensor, tch::Tensor),
    kind: Sender,
    threads: i32,
    other: impl FnOnce() -> (tch::Tensor, tch::Tensor),
) -> Vec<tch::Tensor> {
    let copied = |gradients: Vec<tch::Tensor>| gradients.iter().map(|g| g.copy()).collect();
    match kind {
        Sender::MicroBatches => {
            let samples = inputs.size()[0];
            let mut sum: Option<Vec<tch::Tensor>> = None;
            for sample in 0..samples {
                let (_, g) = replica.gradients(
                    &inputs.narrow(0, sample, 1),
                    &targets.narrow(0, sample, 1),
                    None,
                );
                sum = Some(match sum {
                    None => copied(g),
                    Some(sum) => sum.iter().zip(&g).map(|(s, g)| s + g).collect(),
                });
            }
            let mut mean: Vec<tch::Tensor> = sum
                .expect("a sample")
                .iter()
                .map(|g| g / samples as f64)
                .collect();
            clip_global_norm(&mut mean, 1.0);
            mean
        }
        Sender::OneThread => {
            tch::set_num_threads(1);
            let (_, g) = replica.gradients(inputs, targets, Some(1.0));
            tch::set_num_threads(threads);
            copied(g)
        }
        Sender::WrongData => {
            let (inputs, targets) = other();
            copied(replica.gradients(&inputs, &targets, Some(1.0)).1)
        }
        Sender::ForgedMomentum | Sender::OtherDevice => {
            copied(replica.gradients(inputs, targets, Some(1.0)).1)
        }
    }
}

/// How a sender's result differs from its recompute when the sender's arithmetic differs.
#[derive(Clone, Copy)]
enum Sender {
    /// Gradients summed over micro-batches of one sample: another summation order.
    MicroBatches,
    /// One libtorch thread: another split of the reductions.
    OneThread,
    /// The next batch's gradients, not the assigned one's.
    WrongData,
    /// Its momentum negated before each step (what it commits to is not what it kept).
    ForgedMomentum,
    /// Honest, on the accelerator, its verifier on the CPU: another kind of device.
    OtherDevice,
}

fn tolerance(
    dataset: &Dataset,
    shard_lens: &[usize],
    presets: &str,
    steps: u32,
    device: tch::Device,
) -> anyhow::Result<Table> {
    let mut table = Table::new(&[
        "preset",
        "sender",
        "picked with the same sign (min)",
        "value distance (max)",
        "next momentum: distance (max)",
        "rounds passed at 10 per mille",
    ]);
    let threads = tch::get_num_threads();
    for name in presets.split(',') {
        let (config, batch, seq_len) = shape(name, dataset)?;
        let replica = Replica::new(&config, 1, device)?;
        // The same weights on the CPU (the initializer is the same on every device).
        let on_cpu = Replica::new(&config, 1, tch::Device::Cpu)?;
        let plan = BatchPlan::new(1, seq_len, 1, shard_lens)?;
        let mut senders = vec![
            ("micro-batches of 1".to_owned(), Sender::MicroBatches),
            ("1 libtorch thread".to_owned(), Sender::OneThread),
            ("wrong-data".to_owned(), Sender::WrongData),
            ("forged-momentum".to_owned(), Sender::ForgedMomentum),
        ];
        if device != tch::Device::Cpu {
            senders.push((
                format!("on {device:?}, checked on the CPU"),
                Sender::OtherDevice,
            ));
        }
        for (label, kind) in senders {
            let checker = match kind {
                Sender::OtherDevice => &on_cpu,
                _ => &replica,
            };
            let mut sender = Demo::new(replica.parameters(), DemoConfig::default())?;
            let verifier = Demo::new(checker.parameters(), DemoConfig::default())?;
            let layouts = sender.compressor().layouts().to_vec();
            let (mut picked, mut values, mut after) = (1.0f64, 0.0f64, 0.0f64);
            let mut passed = 0;
            // The last recompute's chain and the momentum it left, with its scale.
            let mut chain: Option<(Chain, Vec<tch::Tensor>, f64)> = None;
            for step in 0..=steps {
                let batch_of = |step: u64| {
                    let ranges: Vec<_> = (0..batch)
                        .map(|sample| plan.sample_range(step * batch + sample))
                        .collect();
                    dataset.training_batch(&ranges)
                };
                let assigned = batch_of(u64::from(step));
                if let Sender::ForgedMomentum = kind {
                    let forged: Vec<tch::Tensor> = sender.deltas().iter().map(|d| -d).collect();
                    sender.load_deltas(&forged);
                }
                let momentum = sender.momentum_bytes();
                let commitment: [u8; 32] = Sha256::digest(&momentum).into();
                // The chain of the step before: this step must start from what it left.
                let chained = chain.take().map(|(chain, left, scale)| {
                    let served = verifier.momentum_from_bytes(&momentum).expect("a momentum");
                    let holds = chain.holds(&verifier, &[], Some(&momentum));
                    (holds, momentum_distance(&served, &left) / scale)
                });
                let gradients = sender_gradients(&replica, &assigned, kind, threads, || {
                    batch_of(u64::from(step) + 1000)
                });
                let update = sender.compress_step(&gradients, 1e-3);
                let sent = payload::encode(&update, &commitment, &layouts);

                // What the verifier receives, on its own device.
                let encoding = verifier.compressor().values();
                let update = payload::decode(&sent, &layouts, encoding, checker.device())?;
                let (_, verified) = checker.gradients(&assigned.0, &assigned.1, Some(1.0));
                let scale = step_scale(&verified, 1e-3);
                let mut left = verifier.momentum_from_bytes(&momentum).expect("a momentum");
                let again = verifier.recompute_step(&mut left, &verified, 1e-3, &update);
                let agreement = Agreement::of(&Picks::of(&update), &Picks::of(&again), scale);
                let outcome = recompute(
                    checker,
                    &verifier,
                    &assigned,
                    Some(1.0),
                    1e-3,
                    &sent,
                    &update,
                    Some(&momentum),
                    Tolerance::Within(BENCH_TOLERANCE),
                );
                if let Recompute::Matched { chain: next } = outcome {
                    chain = Some((next, left, scale));
                }
                if step > 0 {
                    picked = picked.min(agreement.picked);
                    values = values.max(agreement.values);
                    let (holds, distance) = chained.unwrap_or((false, f64::INFINITY));
                    after = after.max(distance);
                    passed += u32::from(chain.is_some() && holds);
                }
            }
            table.row(vec![
                name.to_owned(),
                label,
                format!("{picked:.4}"),
                format!("{values:.2e}"),
                match after.is_finite() {
                    true => format!("{after:.2e}"),
                    false => "- (no recompute held)".to_owned(),
                },
                format!("{passed} of {steps}"),
            ]);
        }
    }
    Ok(table)
}
