//! The DeMo flags, declared once for `demeter simulate` and `demeter train` (and `demeter
//! local`, which passes them on to its clients).

use crate::demo::{Aggregation, DemoConfig, ValueEncoding};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// DeMo: DCT coefficients each client shares per block.
    #[arg(long, default_value_t = 32)]
    pub topk: usize,
    /// DeMo: target side of the DCT blocks (the largest divisor of each dimension up to it).
    #[arg(long, default_value_t = 64)]
    pub chunk: usize,
    /// DeMo: momentum decay of each client's own momentum.
    #[arg(long, default_value_t = 0.999)]
    pub beta: f64,
    /// DeMo: how the shared coefficients are sent (f32, bf16, or 1-bit signs).
    #[arg(long, value_enum, default_value = "f32")]
    pub values: ValueEncodingArg,
    /// How every replica combines a round's results: DeMo's mean, a mean of results clipped
    /// to the median norm, or a per-weight sign vote (the robust two bound what one dishonest
    /// client can do). Every client of a run must use the same.
    #[arg(long, value_enum, default_value = "mean")]
    pub aggregation: Aggregation,
}

impl DemoArgs {
    /// The optimizer these flags describe, with `weight_decay` (a flag of `simulate` only).
    pub fn config(&self, weight_decay: f64) -> DemoConfig {
        DemoConfig {
            momentum_decay: self.beta,
            topk: self.topk,
            chunk: self.chunk,
            weight_decay,
            values: self.values.into(),
            aggregation: self.aggregation,
        }
    }

    /// The flags that reproduce these settings, for child processes.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            format!("--topk={}", self.topk),
            format!("--chunk={}", self.chunk),
            format!("--beta={}", self.beta),
            format!("--values={}", value_name(&self.values)),
            format!("--aggregation={}", value_name(&self.aggregation)),
        ]
    }
}

/// [`ValueEncoding`] for the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ValueEncodingArg {
    F32,
    Bf16,
    /// One bit per value.
    Sign,
}

impl From<ValueEncodingArg> for ValueEncoding {
    fn from(arg: ValueEncodingArg) -> Self {
        match arg {
            ValueEncodingArg::F32 => Self::F32,
            ValueEncodingArg::Bf16 => Self::Bf16,
            ValueEncodingArg::Sign => Self::Sign,
        }
    }
}

/// The name clap parses `value` from.
pub fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .expect("no skipped variants")
        .get_name()
        .to_owned()
}
