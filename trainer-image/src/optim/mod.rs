//! What DeMo is compared with and shares: AdamW, learning-rate schedules, gradient clipping.

mod adamw;
mod clip;
mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use clip::{clip_global_norm, global_norm};
pub use schedule::{Schedule, ScheduleError, ScheduleKind};
