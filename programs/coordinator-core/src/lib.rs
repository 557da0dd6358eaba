//! Demeter's run coordinator as pure logic: one state machine that decides who is in a run,
//! which batches each client trains, when a round closes, whose results count and who earned
//! points.
//!
//! The machine is deterministic: no I/O, no clock and no randomness of its own (time and seeds
//! are inputs), and its state is fixed-size plain old data. Every host applies the same
//! [`Input`]s through [`Coordinator::apply`]: the Solana program (`demeter-coordinator`, beside
//! this crate) stores the state in the run account, and the trainer's centralized server keeps
//! it in memory and on disk. Nothing here depends on Solana, so this crate builds and tests in
//! seconds.

pub mod accounts;
pub mod attestation;
pub mod client_metrics;
pub mod config;
pub mod error;
pub mod input;
mod machine;
pub mod shuffle;
pub mod state;
pub mod verdict;

pub use attestation::Attestation;
pub use config::Config;
pub use error::{AccessError, CoordinatorError, MALFORMED_INPUT};
pub use input::Input;
pub use state::{Coordinator, Endpoint, Member, MemberStatus, Round, RunState, WitnessReport};
pub use verdict::Finding;
