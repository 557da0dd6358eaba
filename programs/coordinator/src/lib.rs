//! Demeter's coordinator program: the Solana program that holds a run's state in its run
//! account and applies the run's inputs to it with the state machine of
//! `demeter-coordinator-core`, the same code the centralized server runs.
//!
//! The program adds what only a chain needs: accounts ([`account`]: the run account, the run
//! name's instance PDA, join grants), instructions that wrap the core's [`Input`] or manage
//! those accounts ([`instruction`]), and the checks of every account of every instruction
//! ([`processor`]). The `no-entrypoint` feature leaves out its entrypoint symbol for off-chain
//! users, and the `client` feature adds [`client`], the one way off-chain code reads and writes
//! runs over JSON-RPC.

pub mod account;
pub mod checks;
#[cfg(feature = "client")]
pub mod client;
#[cfg(not(feature = "no-entrypoint"))]
mod entrypoint;
pub mod error;
pub mod instruction;
pub mod processor;

pub use demeter_coordinator_core::Input;

solana_program::declare_id!("fqHZDfAjGrAtLYtf43uMt8rtdB1TjXdft7dfu1qbwxH");
