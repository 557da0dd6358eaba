//! Peers found by DNS as well as by the coordinator state: every address a name resolves to.
//! A Kubernetes headless Service resolves to the IP of each ready pod behind it, so clients of a
//! run can reach each other even before (or without) reading each other's announced endpoints.
//! The state's endpoints stay the primary source; these addresses are asked too, which is safe
//! because every payload is checked against its committed hash whoever serves it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long a resolution is reused; pods come and go on the scale of seconds.
const REFRESH: Duration = Duration::from_secs(10);

/// A `HOST:PORT` name and what it last resolved to.
pub struct PeerDns {
    name: String,
    addresses: Vec<SocketAddr>,
    resolved_at: Option<Instant>,
}

impl PeerDns {
    /// `name` is `HOST:PORT`, e.g. `my-run-peers.default.svc.cluster.local:8080`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            addresses: Vec::new(),
            resolved_at: None,
        }
    }

    /// The addresses the name resolves to, refreshed at most every ten seconds. A failed lookup
    /// keeps the previous answer: DNS hiccups should not make peers vanish.
    pub async fn addresses(&mut self) -> &[SocketAddr] {
        if self.resolved_at.is_none_or(|at| at.elapsed() >= REFRESH) {
            self.resolved_at = Some(Instant::now());
            match tokio::net::lookup_host(&self.name).await {
                Ok(found) => {
                    let mut found: Vec<SocketAddr> = found.collect();
                    found.sort();
                    found.dedup();
                    self.addresses = found;
                }
                Err(error) => {
                    tracing::warn!(name = %self.name, %error, "peer DNS lookup failed");
                }
            }
        }
        &self.addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_every_address_of_a_name() {
        let mut dns = PeerDns::new("localhost:7070");
        let addresses = dns.addresses().await.to_vec();
        assert!(!addresses.is_empty());
        assert!(
            addresses
                .iter()
                .all(|a| a.port() == 7070 && a.ip().is_loopback())
        );
    }

    #[tokio::test]
    async fn a_failed_lookup_keeps_nothing_and_does_not_panic() {
        let mut dns = PeerDns::new("no-such-host.invalid:7070");
        assert!(dns.addresses().await.is_empty());
    }
}
