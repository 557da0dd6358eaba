//! The learning-rate schedule's flags, declared once for `demeter simulate` and `demeter train`.
//! The peak and the warmup have a default per command (the simulation's are tuned for its
//! benchmark, a client's for a networked run), so they are options resolved by the command.

use super::demo_args::value_name;
use crate::optim::{Schedule, ScheduleKind};

#[derive(clap::Args, Debug, Clone)]
pub struct ScheduleArgs {
    /// Peak learning rate: each step moves every weight by lr times the sign of the aggregate
    /// (default: 2e-3 for `train`; 1e-3 for `simulate`, the best of both of its optimizers in
    /// the quality benchmark).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Learning-rate schedule after the warmup.
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: ScheduleKind,
    /// Steps of linear learning-rate warmup from 0 to --lr (default: 5 for `train`; 5% of the
    /// steps for `simulate`).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// The learning rate at the end of the schedule, as a fraction of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Share of the post-warmup steps spent decaying (WSD schedule only).
    #[arg(long, default_value_t = 0.2)]
    pub decay_fraction: f64,
}

impl ScheduleArgs {
    /// The schedule these flags describe, over `total_steps`, with the command's defaults for
    /// the peak and the warmup.
    pub fn schedule(&self, default_lr: f64, default_warmup: u64, total_steps: u64) -> Schedule {
        let peak_lr = self.lr.unwrap_or(default_lr);
        Schedule {
            kind: self.schedule,
            peak_lr,
            min_lr: peak_lr * self.min_lr_ratio,
            warmup_steps: self.warmup.unwrap_or(default_warmup),
            total_steps,
            decay_fraction: self.decay_fraction,
        }
    }

    /// The flags that reproduce these settings, for child processes.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--schedule={}", value_name(&self.schedule)),
            format!("--min-lr-ratio={}", self.min_lr_ratio),
            format!("--decay-fraction={}", self.decay_fraction),
        ];
        args.extend(self.lr.map(|lr| format!("--lr={lr}")));
        args.extend(self.warmup.map(|warmup| format!("--warmup={warmup}")));
        args
    }
}
