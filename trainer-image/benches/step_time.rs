//! Where a DeMo step's time goes: forward+backward, momentum/DCT/top-k, wire encode, wire
//! decode, aggregate+inverse DCT, sign+apply; and the bytes each worker sends.
//!
//! `make bench` runs it on the tiny and 20m presets. STEP_TIME_PRESETS picks presets (e.g.
//! `150m,1b` on a GPU), STEP_TIME_STEPS the measured steps. Runs on CUDA when one is visible.

use std::time::Duration;

use demeter_trainer::commands::Table;
use demeter_trainer::data::Dataset;
use demeter_trainer::demo::DemoConfig;
use demeter_trainer::model::{Preset, default_device};
use demeter_trainer::optim::{AdamWConfig, Schedule};
use demeter_trainer::simulate::{OptimizerKind, Simulation, SimulationConfig};

fn millis(total: Duration, count: f64) -> String {
    format!("{:.1}", total.as_secs_f64() * 1000.0 / count)
}

fn main() -> anyhow::Result<()> {
    let presets = std::env::var("STEP_TIME_PRESETS").unwrap_or_else(|_| "tiny,20m".into());
    let steps: u64 = std::env::var("STEP_TIME_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let device = default_device();
    println!(
        "device {device:?}, {} libtorch threads, {steps} measured steps after 1 warmup step\n",
        tch::get_num_threads()
    );
    let mut table = Table::new(&[
        "preset",
        "params",
        "workers x batch x seq",
        "fwd+bwd",
        "momentum+DCT+top-k",
        "wire encode",
        "wire decode (all peers)",
        "aggregate+IDCT",
        "sign+apply",
        "total ms/worker",
        "tokens/s",
        "payload bytes",
        "bf16 all-reduce bytes",
    ]);
    for name in presets.split(',') {
        let preset: Preset =
            clap::ValueEnum::from_str(name.trim(), true).map_err(anyhow::Error::msg)?;
        let (workers, batch, seq_len) = match preset {
            Preset::Tiny => (4, 8, 128),
            Preset::M20 => (2, 4, 128),
            Preset::M150 | Preset::B1 => (2, 4, 512),
        };
        let config = SimulationConfig {
            workers,
            preset,
            optimizer: OptimizerKind::Demo,
            seq_len,
            batch_per_worker: batch,
            seed: 1,
            schedule: Schedule::constant(1e-3, steps + 1),
            demo: DemoConfig::default(),
            adamw: AdamWConfig::default(),
            grad_clip: None,
            // One thread, so that each phase's time is the workers' own, not shared cores'.
            worker_threads: 1,
            byzantine: 0,
            attack: None,
            screen: false,
            score: false,
            score_one_in: 1,
            spot_check_one_in: 0,
            spot_check_tolerance: 0,
            eject: false,
        };
        let mut simulation = Simulation::new(config, Dataset::embedded(0.01), device)?;
        simulation.step()?;
        let warm = simulation.phase_times().clone();
        let started = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..steps {
            bytes = simulation.step()?.bytes_per_worker;
        }
        let wall = started.elapsed();
        let times = simulation.phase_times();
        let per = (steps as usize * workers) as f64;
        let phases = [
            times.forward_backward - warm.forward_backward,
            times.compress - warm.compress,
            times.wire_encode - warm.wire_encode,
            times.wire_decode - warm.wire_decode,
            times.aggregate - warm.aggregate,
            times.apply - warm.apply,
        ];
        let total: Duration = phases.iter().sum();
        let mut row = vec![
            name.to_owned(),
            simulation.model_config().parameter_count().to_string(),
            format!("{workers} x {batch} x {seq_len}"),
        ];
        row.extend(phases.iter().map(|&phase| millis(phase, per)));
        row.push(millis(total, per));
        row.push(format!(
            "{:.0}",
            simulation.tokens_per_step() as f64 * steps as f64 / wall.as_secs_f64()
        ));
        row.push(bytes.to_string());
        row.push(simulation.all_reduce_bytes_per_worker().to_string());
        table.row(row);
    }
    println!("{table}");
    println!(
        "Phases are milliseconds per worker per step; all workers share this process and its cores."
    );
    Ok(())
}
