//! Demeter's development and test infrastructure. Nothing here ships in the `demeter` binary or
//! the operator: it starts real services in-process (a Solana validator, a Kubernetes API
//! server) so that tests and `demeter local --chain` run without a chain or a cluster.

pub mod apiserver;
pub mod localnet;

pub use apiserver::ApiServer;
pub use localnet::{Localnet, LocalnetOptions};

use std::time::Duration;

/// Polls `check` every 50 ms until it returns Some, or panics after `limit` naming `what`: how
/// tests wait on a server, a chain or a controller that gets there in its own time.
pub async fn eventually_within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
