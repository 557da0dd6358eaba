//! Demeter's development and test infrastructure. Nothing here ships in the `demeter` binary or
//! the operator: it starts real services in-process (a Solana validator, a Kubernetes API
//! server) so that tests and `demeter local --chain` run without a chain or a cluster.

pub mod apiserver;
pub mod localnet;

pub use apiserver::ApiServer;
pub use localnet::{Localnet, LocalnetOptions};
