//! Networked DeMo on loopback: `demeter local` with three client processes, per preset. Prints
//! the step split (train, compress, publish, fetch, aggregate, apply), wall time per step and
//! bytes per step against a bf16 all-reduce.
//!
//! `make bench` runs it; LOOPBACK_PRESETS (default "tiny,20m") and LOOPBACK_STEPS (default 20)
//! change what it runs.

use std::process::Command;
use std::time::Instant;

use demeter_trainer::commands::{ClientSummary, Table, phase_table};
use demeter_trainer::simulate::ring_all_reduce_bytes;

fn main() -> anyhow::Result<()> {
    let presets = std::env::var("LOOPBACK_PRESETS").unwrap_or_else(|_| "tiny,20m".into());
    let steps = std::env::var("LOOPBACK_STEPS").unwrap_or_else(|_| "20".into());
    let mut overview = Table::new(&[
        "preset",
        "parameters",
        "steps",
        "wall s/step",
        "payload bytes",
        "bf16 all-reduce bytes",
        "ratio",
    ]);
    for preset in presets.split(',') {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_demeter"))
            .args([
                "local",
                "--clients",
                "3",
                "--steps",
                &steps,
                "--preset",
                preset,
            ])
            .arg("--dir")
            .arg(dir.path())
            .status()?;
        anyhow::ensure!(status.success(), "demeter local --preset {preset} failed");
        let seconds = started.elapsed().as_secs_f64();
        let summaries: Vec<ClientSummary> = (0..3)
            .map(|index| {
                let path = dir.path().join(format!("client-{index}.summary.json"));
                Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
            })
            .collect::<anyhow::Result<_>>()?;
        let s = &summaries[0];
        let all_reduce = ring_all_reduce_bytes(s.parameters, 3);
        overview.row(vec![
            preset.to_owned(),
            s.parameters.to_string(),
            s.steps.to_string(),
            format!("{:.2}", seconds / s.steps as f64),
            s.payload_bytes.to_string(),
            all_reduce.to_string(),
            format!("{:.2}%", 100.0 * s.payload_bytes as f64 / all_reduce as f64),
        ]);
        println!("{preset}:\n{}", phase_table(&summaries));
    }
    println!("{overview}");
    println!(
        "3 client processes and the coordinator on one machine's loopback; wall time includes the \
         1 s witness window of every round."
    );
    Ok(())
}
