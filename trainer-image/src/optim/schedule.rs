//! Learning-rate schedules, each with a linear warmup.

use serde::{Deserialize, Serialize};

/// The shape of the learning rate after warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ScheduleKind {
    /// Stays at the peak.
    Constant,
    /// Falls linearly from the peak to the minimum at the last step.
    Linear,
    /// Half a cosine from the peak to the minimum.
    #[default]
    Cosine,
    /// Warmup-stable-decay: the peak until the last `decay_fraction` of steps, then linear down.
    Wsd,
}

/// A learning-rate schedule over `total_steps` steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Share of the post-warmup steps spent decaying (WSD only).
    pub decay_fraction: f64,
}

/// A schedule that cannot work, naming the field and the fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    #[error("schedule.peak_lr = {0}: must be finite and > 0")]
    PeakLr(f64),
    #[error("schedule.min_lr = {min}: must be in [0, peak_lr = {peak}]")]
    MinLr { min: f64, peak: f64 },
    #[error("schedule.warmup_steps = {warmup}: must be below total_steps = {total}")]
    Warmup { warmup: u64, total: u64 },
    #[error("schedule.decay_fraction = {0}: must be in [0, 1]")]
    DecayFraction(f64),
}

impl Schedule {
    /// A constant learning rate with no warmup.
    pub fn constant(lr: f64, total_steps: u64) -> Self {
        Self {
            kind: ScheduleKind::Constant,
            peak_lr: lr,
            min_lr: lr,
            warmup_steps: 0,
            total_steps,
            decay_fraction: 0.0,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if !self.peak_lr.is_finite() || self.peak_lr <= 0.0 {
            return Err(ScheduleError::PeakLr(self.peak_lr));
        }
        if !(0.0..=self.peak_lr).contains(&self.min_lr) {
            return Err(ScheduleError::MinLr {
                min: self.min_lr,
                peak: self.peak_lr,
            });
        }
        if self.warmup_steps >= self.total_steps.max(1) {
            return Err(ScheduleError::Warmup {
                warmup: self.warmup_steps,
                total: self.total_steps,
            });
        }
        if !(0.0..=1.0).contains(&self.decay_fraction) {
            return Err(ScheduleError::DecayFraction(self.decay_fraction));
        }
        Ok(())
    }

    /// The learning rate of step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let range = self.peak_lr - self.min_lr;
        match self.kind {
            ScheduleKind::Constant => self.peak_lr,
            ScheduleKind::Linear => self.peak_lr - range * progress,
            ScheduleKind::Cosine => {
                self.min_lr + 0.5 * range * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            ScheduleKind::Wsd => {
                let decay_start = 1.0 - self.decay_fraction;
                if progress < decay_start || self.decay_fraction == 0.0 {
                    self.peak_lr
                } else {
                    self.peak_lr - range * (progress - decay_start) / self.decay_fraction
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            peak_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
            decay_fraction: 0.2,
        }
    }

    #[test]
    fn warmup_is_linear_for_every_kind() {
        for kind in [
            ScheduleKind::Constant,
            ScheduleKind::Linear,
            ScheduleKind::Cosine,
            ScheduleKind::Wsd,
        ] {
            let s = schedule(kind);
            assert!((s.lr(0) - 0.1).abs() < 1e-12);
            assert!((s.lr(4) - 0.5).abs() < 1e-12);
            assert!((s.lr(9) - 1.0).abs() < 1e-12);
            assert!(
                (s.lr(10) - 1.0).abs() < 1e-12,
                "{kind:?} starts at the peak"
            );
        }
    }

    #[test]
    fn shapes_after_warmup() {
        let end = 110;
        assert_eq!(schedule(ScheduleKind::Constant).lr(end), 1.0);
        assert!((schedule(ScheduleKind::Linear).lr(60) - 0.55).abs() < 1e-12);
        assert!((schedule(ScheduleKind::Linear).lr(end) - 0.1).abs() < 1e-12);
        assert!((schedule(ScheduleKind::Cosine).lr(60) - 0.55).abs() < 1e-12);
        assert!((schedule(ScheduleKind::Cosine).lr(end) - 0.1).abs() < 1e-12);
        let wsd = schedule(ScheduleKind::Wsd);
        assert_eq!(wsd.lr(89), 1.0);
        assert!((wsd.lr(100) - 0.55).abs() < 1e-12);
        assert!((wsd.lr(end) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let mut s = schedule(ScheduleKind::Cosine);
        s.warmup_steps = 200;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .starts_with("schedule.warmup_steps")
        );
        s = schedule(ScheduleKind::Cosine);
        s.min_lr = 2.0;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .starts_with("schedule.min_lr")
        );
    }
}
