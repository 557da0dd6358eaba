//! Demeter's run coordinator: one state machine that decides who is in a run, which batches each
//! client trains, when a round closes, whose results count and who earned points.
//!
//! The machine is pure and deterministic: no I/O, no clock and no randomness of its own (time
//! and seeds are inputs), and its state is fixed-size plain old data. The Solana coordinator
//! program stores it in the run account; the centralized server keeps it in memory and on disk.
//! Both call this code.
//!
//! The Solana program around it lives in [`account`], [`instruction`] and [`processor`]; the
//! `no-entrypoint` feature leaves out its entrypoint symbol for off-chain users, and the `client`
//! feature adds [`client`], the one way off-chain code reads and writes runs over JSON-RPC.

pub mod account;
pub mod bloom;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
#[cfg(not(feature = "no-entrypoint"))]
mod entrypoint;
pub mod error;
pub mod instruction;
mod machine;
pub mod processor;
pub mod shuffle;
pub mod state;

pub use bloom::Bloom;
pub use config::Config;
pub use error::{AccessError, CoordinatorError};
pub use state::{Coordinator, Endpoint, Member, MemberStatus, Round, RunState, WitnessReport};

solana_program::declare_id!("fqHZDfAjGrAtLYtf43uMt8rtdB1TjXdft7dfu1qbwxH");
