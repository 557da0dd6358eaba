//! The centralized coordinator: the run state machine of `demeter-coordinator-core` behind TCP,
//! for runs without a chain (`demeter coordinator serve`), and its client. Clients prove their
//! identity with the same ed25519 keys they would use as Solana wallets ([`crate::identity`]),
//! send the same inputs the program takes, and receive the same state bytes the run account
//! holds. The state machine itself is not here: it is the core crate's.

pub mod client;
pub mod limits;
pub mod protocol;
pub mod server;
pub mod store;

pub use client::{ClientError, CoordinatorClient, Rejection, RequestError};
pub use limits::ConnectionLimits;
pub use server::{Server, ServerSettings};
