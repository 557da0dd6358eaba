//! Demeter's development and test infrastructure. Nothing here ships in the `demeter` binary or
//! the operator: it starts real services in-process so that tests and `demeter local --chain`
//! run without a cluster.

pub mod localnet;

pub use localnet::{Localnet, LocalnetOptions};
