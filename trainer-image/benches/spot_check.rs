//! What exact spot checks cost (docs/verification.md): a sender's round (forward and backward on
//! its batch, its DeMo step, the payload), what committing to its momentum adds to it (the
//! momentum as bytes and their SHA-256, every round of a run that spot-checks), and what one
//! recompute costs a verifier (the served momentum read back, the same forward and backward, the
//! DeMo step from that momentum, the payload, compared byte for byte); and the bytes a check
//! moves (the sender's momentum, to each of the round's verifiers).
//!
//! A second table turns them into a client's average cost per round at several shares: every
//! client commits each round, and each result is recomputed by the round's verifiers (three here)
//! with a chance of one in `spot_check_one_in`, so a client recomputes `3 / spot_check_one_in`
//! results a round on average (the network time of the momentum is not in it).
//!
//! `make bench-spot-check`. SPOT_CHECK_PRESETS picks presets (default `tiny,20m`),
//! SPOT_CHECK_STEPS the measured rounds (default 5). Runs on CUDA when one is visible.

use std::time::{Duration, Instant};

use demeter_trainer::commands::Table;
use demeter_trainer::data::{BatchPlan, Dataset};
use demeter_trainer::demo::{Demo, DemoConfig};
use demeter_trainer::model::{LlamaConfig, Preset, default_device};
use demeter_trainer::payload;
use demeter_trainer::replica::Replica;
use sha2::{Digest, Sha256};

/// Verifiers per round (a run's usual `witness_nodes`).
const VERIFIERS: f64 = 3.0;
const SHARES: [u16; 4] = [4, 16, 32, 64];

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
        "commit ms",
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
        let preset: Preset =
            clap::ValueEnum::from_str(name.trim(), true).map_err(anyhow::Error::msg)?;
        let (batch, seq_len) = match preset {
            Preset::Tiny => (8, 128),
            Preset::M20 => (4, 128),
            Preset::M150 | Preset::B1 => (4, 512),
        };
        let config = LlamaConfig::for_training(preset, dataset.meta.vocab_size, seq_len);
        let replica = Replica::new(&config, 1, device)?;
        let mut sender = Demo::new(replica.parameters(), DemoConfig::default())?;
        let verifier = Demo::new(replica.parameters(), DemoConfig::default())?;
        let layouts = sender.compressor().layouts().to_vec();
        let plan = BatchPlan::new(1, seq_len, 1, &shard_lens)?;

        let (mut round, mut commit, mut recompute) = Default::default();
        let mut identical = true;
        for step in 0..=steps {
            let ranges: Vec<_> = (0..batch)
                .map(|sample| plan.sample_range(u64::from(step) * batch + sample))
                .collect();
            let (inputs, targets) = dataset.training_batch(&ranges);

            let started = Instant::now();
            let momentum = sender.momentum_bytes();
            let commitment: [u8; 32] = Sha256::digest(&momentum).into();
            let committing = started.elapsed();
            let started = Instant::now();
            let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
            let update = sender.compress_step(&gradients, 1e-3);
            let sent = payload::encode(&update, &commitment, &layouts);
            let sending = started.elapsed();

            let started = Instant::now();
            let mut served = verifier
                .momentum_from_bytes(&momentum)
                .expect("a momentum of this model");
            let (_, gradients) = replica.gradients(&inputs, &targets, Some(1.0));
            let again = verifier.recompute_step(&mut served, &gradients, 1e-3);
            let recomputed = payload::encode(&again, &commitment, &layouts);
            identical &= payload::content_hash(&recomputed) == payload::content_hash(&sent);
            let checking = started.elapsed();
            // The first round warms the allocator and the DCT bases.
            if step > 0 {
                round += sending;
                commit += committing;
                recompute += checking;
            }
        }
        let (round, commit, recompute) = (
            millis(round, steps),
            millis(commit, steps),
            millis(recompute, steps),
        );
        costs.row(vec![
            name.to_owned(),
            config.parameter_count().to_string(),
            format!("{batch} x {seq_len}"),
            format!("{round:.1}"),
            format!("{commit:.1}"),
            format!("{recompute:.1}"),
            if identical { "yes" } else { "NO" }.to_owned(),
            verifier.momentum_len().to_string(),
        ]);
        for one_in in SHARES {
            let recomputes = VERIFIERS / f64::from(one_in);
            let cost = commit + recomputes * recompute;
            shares.row(vec![
                name.to_owned(),
                one_in.to_string(),
                format!("{recomputes:.3}"),
                format!("{:.1}%", 100.0 * cost / round),
            ]);
        }
    }
    println!("{costs}");
    println!("{shares}");
    println!(
        "A client's cost a round: its commit, plus {VERIFIERS} verifiers' recomputes of one in \
         spot_check_one_in results spread over the clients; the momentum's transfer is not timed."
    );
    Ok(())
}
