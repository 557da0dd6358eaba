//! The treasurer's accounts: the pool's layout (in `demeter_coordinator_core::accounts`, so the
//! coordinator can read it when a run closes) and the seeds of the pool and its escrow.

pub use demeter_coordinator_core::accounts::{Pool, PoolOverflow};

pub const POOL_SEED: &[u8] = b"pool";
pub const ESCROW_SEED: &[u8] = b"escrow";
