//! Demeter's run coordinator: one state machine that decides who is in a run, which batches each
//! client trains, when a round closes, whose results count and who earned points.
//!
//! The machine is pure and deterministic: no I/O, no clock and no randomness of its own (time
//! and seeds are inputs), and its state is fixed-size plain old data. The Solana coordinator
//! program stores it in the run account; the centralized server keeps it in memory and on disk.
//! Both call this code.

pub mod bloom;
pub mod config;
pub mod error;
mod machine;
pub mod shuffle;
pub mod state;

pub use bloom::Bloom;
pub use config::Config;
pub use error::CoordinatorError;
pub use state::{Coordinator, Member, MemberStatus, Round, RunState, WitnessReport};
