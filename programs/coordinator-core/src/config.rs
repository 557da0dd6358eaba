//! A run's settings, validated field by field.

use bytemuck::{Pod, Zeroable};

use crate::error::CoordinatorError;
use crate::state::{MAX_CLIENTS, MAX_WITNESSES};

/// How a run proceeds. Times are seconds; the layout is fixed so it lives in the run account.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Config {
    /// How long members have to load the model before the first round.
    pub warmup_time: u64,
    /// How long after an epoch's last round before the next epoch (checkpoints happen here).
    pub cooldown_time: u64,
    /// The longest a round's training may take before the witness phase starts anyway.
    pub max_round_train_time: u64,
    /// How long witnesses have to report after training.
    pub round_witness_time: u64,
    /// An epoch stops starting new rounds after this long.
    pub epoch_time: u64,
    /// Extra time to gather members once `init_min_clients` have joined.
    pub join_window: u64,
    /// The run finishes after this many steps.
    pub total_steps: u64,
    /// Samples per step at the first step.
    pub global_batch_size_start: u64,
    /// Samples per step once the ramp is over.
    pub global_batch_size_end: u64,
    /// Steps over which the batch size ramps linearly from start to end.
    pub global_batch_size_ramp_steps: u64,
    /// Points each healthy member earns for an epoch with at least one completed round.
    pub points_per_epoch: u64,
    /// Members needed to start an epoch.
    pub init_min_clients: u16,
    /// Fewer healthy members than this ends the epoch.
    pub min_clients: u16,
    /// Witnesses elected per round.
    pub witness_nodes: u16,
    /// Every replica scores a seeded one in this many of each round's results against data,
    /// and the round's verifiers send a verdict against a sender whose scores fall short
    /// (docs/verification.md); 0 scores nothing, 1 every result. At most 256.
    #[cfg_attr(feature = "serde", serde(default))]
    pub score_one_in: u16,
    /// The round's verifiers recompute each result with a chance of one in this many, from the
    /// momentum its sender committed to, on the assigned samples, and send a verdict against a
    /// result that differs or whose momentum its sender does not serve (docs/verification.md);
    /// 0 recomputes nothing, 1 every result.
    #[cfg_attr(feature = "serde", serde(default))]
    pub spot_check_one_in: u16,
    /// How far, per mille, a spot check's recompute may stray from the result it checks, for
    /// clients on different kinds of device: 0 asks for the same bytes (one kind of device);
    /// otherwise the recompute must pick all but this share of the result's picks with the same
    /// sign, and the result's values and its sender's next momentum must be within this share
    /// of the step's gradient of the recompute's (docs/verification.md). At most 1000.
    #[cfg_attr(feature = "serde", serde(default))]
    pub spot_check_tolerance: u16,
    #[cfg_attr(feature = "serde", serde(skip))]
    pub _padding: [u8; 4],
}

/// The bounds that keep every counter of a run in range for its whole life, so that no tick can
/// overflow and lock the run: every epoch closes at least one round, so epochs, steps and rounds
/// are at most `MAX_TOTAL_STEPS`; points at most `MAX_TOTAL_STEPS * MAX_POINTS_PER_EPOCH`; data
/// positions at most `MAX_TOTAL_STEPS * MAX_GLOBAL_BATCH_SIZE`; and times stay far from i64's
/// end. (Checked below at compile time.)
pub const MAX_TOTAL_STEPS: u64 = 1 << 32;
pub const MAX_POINTS_PER_EPOCH: u64 = 1 << 30;
pub const MAX_GLOBAL_BATCH_SIZE: u64 = 1 << 24;
/// Any duration of a run's config: ten years, in seconds.
pub const MAX_DURATION: u64 = 10 * 366 * 24 * 3600;

const _: () = {
    assert!((MAX_TOTAL_STEPS as u128) * (MAX_POINTS_PER_EPOCH as u128) < u64::MAX as u128);
    assert!((MAX_TOTAL_STEPS as u128) * (MAX_GLOBAL_BATCH_SIZE as u128) < u64::MAX as u128);
};

fn positive(field: &'static str, value: u64) -> Result<(), CoordinatorError> {
    if value == 0 {
        Err(CoordinatorError::ConfigZero { field })
    } else {
        Ok(())
    }
}

impl Config {
    /// A small, valid run for tests and examples: three members to start, two to go on, three
    /// witnesses, 12 samples a step, 100 steps, minutes-long phases. Tests state how theirs
    /// differs (`Config { total_steps: 2, ..Config::example() }`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn example() -> Self {
        Self {
            warmup_time: 30,
            cooldown_time: 20,
            max_round_train_time: 60,
            round_witness_time: 10,
            epoch_time: 300,
            join_window: 5,
            total_steps: 100,
            global_batch_size_start: 12,
            global_batch_size_end: 12,
            global_batch_size_ramp_steps: 0,
            points_per_epoch: 100,
            init_min_clients: 3,
            min_clients: 2,
            witness_nodes: 3,
            score_one_in: 0,
            spot_check_one_in: 0,
            spot_check_tolerance: 0,
            _padding: [0; 4],
        }
    }

    /// Checks every field; the error names the first one that is wrong and says how to fix it.
    pub fn validate(&self) -> Result<(), CoordinatorError> {
        positive("warmup_time", self.warmup_time)?;
        positive("max_round_train_time", self.max_round_train_time)?;
        positive("round_witness_time", self.round_witness_time)?;
        positive("epoch_time", self.epoch_time)?;
        positive("total_steps", self.total_steps)?;
        positive("global_batch_size_start", self.global_batch_size_start)?;
        positive("global_batch_size_end", self.global_batch_size_end)?;
        positive("min_clients", self.min_clients.into())?;
        positive("witness_nodes", self.witness_nodes.into())?;
        let bounds = [
            (
                "warmup_time",
                self.warmup_time,
                MAX_DURATION,
                "1..=315360000 (ten years)",
            ),
            (
                "cooldown_time",
                self.cooldown_time,
                MAX_DURATION,
                "0..=315360000 (ten years)",
            ),
            (
                "max_round_train_time",
                self.max_round_train_time,
                MAX_DURATION,
                "1..=315360000 (ten years)",
            ),
            (
                "round_witness_time",
                self.round_witness_time,
                MAX_DURATION,
                "1..=315360000 (ten years)",
            ),
            (
                "epoch_time",
                self.epoch_time,
                MAX_DURATION,
                "1..=315360000 (ten years)",
            ),
            (
                "join_window",
                self.join_window,
                MAX_DURATION,
                "0..=315360000 (ten years)",
            ),
            (
                "total_steps",
                self.total_steps,
                MAX_TOTAL_STEPS,
                "1..=4294967296",
            ),
            (
                "global_batch_size_start",
                self.global_batch_size_start,
                MAX_GLOBAL_BATCH_SIZE,
                "1..=16777216",
            ),
            (
                "global_batch_size_end",
                self.global_batch_size_end,
                MAX_GLOBAL_BATCH_SIZE,
                "1..=16777216",
            ),
            (
                "points_per_epoch",
                self.points_per_epoch,
                MAX_POINTS_PER_EPOCH,
                "0..=1073741824",
            ),
        ];
        for (field, value, max, range) in bounds {
            if value > max {
                return Err(CoordinatorError::ConfigRange {
                    field,
                    value,
                    range,
                });
            }
        }
        if self.init_min_clients < self.min_clients
            || usize::from(self.init_min_clients) > MAX_CLIENTS
        {
            return Err(CoordinatorError::ConfigRange {
                field: "init_min_clients",
                value: self.init_min_clients.into(),
                range: "min_clients..=256",
            });
        }
        if usize::from(self.witness_nodes) > MAX_WITNESSES {
            return Err(CoordinatorError::ConfigRange {
                field: "witness_nodes",
                value: self.witness_nodes.into(),
                range: "1..=32",
            });
        }
        if usize::from(self.score_one_in) > MAX_CLIENTS {
            return Err(CoordinatorError::ConfigRange {
                field: "score_one_in",
                value: self.score_one_in.into(),
                range: "0..=256 (0 scores nothing; more than a round's results is one a round)",
            });
        }
        if self.spot_check_tolerance > 1000 {
            return Err(CoordinatorError::ConfigRange {
                field: "spot_check_tolerance",
                value: self.spot_check_tolerance.into(),
                range: "0..=1000 (per mille; 0 asks for the same bytes)",
            });
        }
        if self.spot_check_tolerance > 0 && self.spot_check_one_in == 0 {
            return Err(CoordinatorError::ConfigRange {
                field: "spot_check_tolerance",
                value: self.spot_check_tolerance.into(),
                range: "0 while spot_check_one_in is 0 (nothing is recomputed): set spot_check_one_in, or leave the tolerance out",
            });
        }
        if self.epoch_time
            < self
                .max_round_train_time
                .saturating_add(self.round_witness_time)
        {
            return Err(CoordinatorError::ConfigRange {
                field: "epoch_time",
                value: self.epoch_time,
                range: "at least max_round_train_time + round_witness_time (one round)",
            });
        }
        Ok(())
    }

    /// The global batch size of `step`: a linear ramp from start to end.
    pub fn global_batch_size(&self, step: u64) -> u64 {
        let (start, end, ramp) = (
            self.global_batch_size_start,
            self.global_batch_size_end,
            self.global_batch_size_ramp_steps,
        );
        if step >= ramp {
            return end;
        }
        // Exact in u128: (end - start) · step / ramp, in either direction.
        let progress = |from: u64, to: u64| {
            (u128::from(to - from) * u128::from(step) / u128::from(ramp)) as u64
        };
        if end >= start {
            start + progress(start, end)
        } else {
            start - progress(end, start)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ramp from 8 to 32 samples over 12 steps, for the batch-size tests.
    pub fn example() -> Config {
        Config {
            epoch_time: 600,
            global_batch_size_start: 8,
            global_batch_size_end: 32,
            global_batch_size_ramp_steps: 12,
            witness_nodes: 2,
            ..Config::example()
        }
    }

    #[test]
    fn validation_names_the_field() {
        example().validate().unwrap();
        type Edit = fn(&mut Config);
        let cases: [(Edit, &str); 10] = [
            (|c| c.total_steps = 0, "total_steps"),
            (|c| c.init_min_clients = 1, "init_min_clients"),
            (|c| c.witness_nodes = 33, "witness_nodes"),
            (|c| c.epoch_time = 10, "epoch_time"),
            (|c| c.points_per_epoch = u64::MAX, "points_per_epoch"),
            (|c| c.total_steps = MAX_TOTAL_STEPS + 1, "total_steps"),
            (
                |c| c.global_batch_size_end = u64::MAX,
                "global_batch_size_end",
            ),
            (|c| c.cooldown_time = u64::MAX, "cooldown_time"),
            (
                |c| c.spot_check_tolerance = 10,
                "spot_check_tolerance = 10: must be 0 while spot_check_one_in is 0",
            ),
            (
                |c| {
                    c.spot_check_one_in = 32;
                    c.spot_check_tolerance = 1001;
                },
                "spot_check_tolerance = 1001",
            ),
        ];
        for (edit, field) in cases {
            let mut config = example();
            edit(&mut config);
            let error = config.validate().unwrap_err().to_string();
            assert!(error.starts_with(field), "{error}");
        }
        let mixed_devices = Config {
            spot_check_one_in: 32,
            spot_check_tolerance: 10,
            ..example()
        };
        mixed_devices.validate().unwrap();
    }

    #[test]
    fn batch_size_ramps_linearly_both_ways() {
        let config = example();
        assert_eq!(config.global_batch_size(0), 8);
        assert_eq!(config.global_batch_size(6), 20);
        assert_eq!(config.global_batch_size(12), 32);
        assert_eq!(config.global_batch_size(1000), 32);
        let down = Config {
            global_batch_size_start: 32,
            global_batch_size_end: 8,
            ..config
        };
        assert_eq!(down.global_batch_size(6), 20);
    }
}
