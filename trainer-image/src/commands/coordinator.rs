//! `demeter coordinator`: the run file of the centralized coordinator.

use std::path::{Path, PathBuf};

use anyhow::Context;
use demeter_coordinator::Config;
use serde::Deserialize;

use super::table::Table;

#[derive(clap::Subcommand, Debug)]
pub enum CoordinatorCommand {
    /// Validate a run file and print the run it describes.
    CheckConfig { path: PathBuf },
}

/// A run file: the run's id and its coordinator settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// At most 32 bytes; it names the run on-chain and off.
    pub run_id: String,
    pub config: Config,
}

impl RunFile {
    /// Reads and validates a run file; errors name the file and the field.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let run: Self = toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        anyhow::ensure!(
            !run.run_id.is_empty() && run.run_id.len() <= 32,
            "{}: run_id {:?} must be 1 to 32 bytes",
            path.display(),
            run.run_id
        );
        run.config
            .validate()
            .with_context(|| format!("{}: config", path.display()))?;
        Ok(run)
    }
}

pub fn coordinator(command: &CoordinatorCommand) -> anyhow::Result<()> {
    match command {
        CoordinatorCommand::CheckConfig { path } => {
            let run = RunFile::read(path)?;
            let c = run.config;
            let round = c.max_round_train_time + c.round_witness_time;
            let samples: u64 = (0..c.total_steps)
                .map(|step| c.global_batch_size(step))
                .sum();
            let mut table = Table::new(&["setting", "value"]);
            for (setting, value) in [
                ("run id", run.run_id.clone()),
                (
                    "members to start an epoch / to keep it going",
                    format!("{} / {}", c.init_min_clients, c.min_clients),
                ),
                (
                    "witnesses per round (quorum)",
                    format!(
                        "{} ({})",
                        c.witness_nodes,
                        (2 * c.witness_nodes).div_ceil(3)
                    ),
                ),
                ("longest round", format!("{round} s")),
                (
                    "rounds per epoch, at least",
                    (c.epoch_time / round).max(1).to_string(),
                ),
                (
                    "total steps, samples",
                    format!("{}, {samples}", c.total_steps),
                ),
                (
                    "batch size",
                    format!(
                        "{} -> {} over {} steps",
                        c.global_batch_size_start,
                        c.global_batch_size_end,
                        c.global_batch_size_ramp_steps
                    ),
                ),
                (
                    "points per healthy member per epoch",
                    c.points_per_epoch.to_string(),
                ),
            ] {
                table.row(vec![setting.to_owned(), value]);
            }
            print!("{table}");
            println!("{}: valid", path.display());
            Ok(())
        }
    }
}
