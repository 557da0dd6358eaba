//! What a spot-check tolerance must allow (`spot_check_tolerance`, docs/verification.md): how
//! far honest senders whose arithmetic differs (another summation order, another thread count,
//! on a GPU another kind of device), and cheating ones (`wrong-data`, `forged-momentum`), stray
//! from their recomputes, in units of the step's `lr·‖g‖`, and how many of their rounds pass at
//! 10 per mille. What spot checks cost is the `verification_cost` bench's.
//!
//! `make bench-spot-check`. SPOT_CHECK_PRESETS picks shapes (`PRESET` at its small bench batch,
//! or `PRESET:BxS`; default `tiny,20m`), SPOT_CHECK_STEPS the measured rounds (default 5). Runs
//! on CUDA when one is visible.

mod common;

use demeter_trainer::commands::Table;
use demeter_trainer::data::{BatchPlan, Dataset};
use demeter_trainer::demo::{Demo, DemoConfig};
use demeter_trainer::model::default_device;
use demeter_trainer::optim::clip_global_norm;
use demeter_trainer::payload;
use demeter_trainer::replica::Replica;
use demeter_trainer::screening::Picks;
use demeter_trainer::spot_check::{
    Agreement, Chain, Recompute, Tolerance, momentum_distance, recompute, step_scale,
};
use sha2::{Digest, Sha256};

use common::Shape;

fn main() -> anyhow::Result<()> {
    let dataset = Dataset::embedded(0.01);
    let shapes = common::shapes("SPOT_CHECK_PRESETS", "tiny,20m", &dataset)?;
    let steps = common::count("SPOT_CHECK_STEPS", 5)?.max(1);
    let device = default_device();
    println!(
        "device {device:?}, {} libtorch threads, {steps} measured rounds after 1 warmup round\n",
        tch::get_num_threads()
    );
    println!("{}", tolerance(&dataset, &shapes, steps, device)?);
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
    shapes: &[Shape],
    steps: u32,
    device: tch::Device,
) -> anyhow::Result<Table> {
    let shard_lens: Vec<usize> = dataset.train.iter().map(|shard| shard.len()).collect();
    let mut table = Table::new(&[
        "preset",
        "sender",
        "picked with the same sign (min)",
        "value distance (max)",
        "next momentum: distance (max)",
        "rounds passed at 10 per mille",
    ]);
    let threads = tch::get_num_threads();
    for shape in shapes {
        let (batch, name) = (shape.batch, &shape.name);
        let replica = Replica::new(&shape.config, 1, device)?;
        // The same weights on the CPU (the initializer is the same on every device).
        let on_cpu = Replica::new(&shape.config, 1, tch::Device::Cpu)?;
        let plan = BatchPlan::new(1, shape.seq_len, 1, &shard_lens)?;
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
                name.clone(),
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
