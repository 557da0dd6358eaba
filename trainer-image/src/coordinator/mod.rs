//! The centralized coordinator: the run state machine of `demeter-coordinator-core` behind TCP, for
//! runs without a chain. Clients prove their identity with the same ed25519 keys they would use
//! as Solana wallets, send the same inputs the program takes, and receive the same state bytes
//! the run account holds.

pub mod client;
pub mod identity;
pub mod limits;
pub mod protocol;
pub mod run_file;
pub mod server;
pub mod store;

pub use client::{ClientError, CoordinatorClient, Rejection, RequestError};
pub use identity::Identity;
pub use limits::ConnectionLimits;
pub use run_file::{RunFile, run_id_bytes};
pub use server::{Server, ServerSettings};
