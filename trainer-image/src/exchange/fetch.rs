//! The fetching side: download the payloads committed to, from whichever peer has them,
//! verifying every byte, and snapshots for late joiners.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::serve::ExchangeMetrics;
use crate::payload::verified_hash;

/// Why no verified copy of a payload could be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no peer had a copy that matches hash {hash}: {last}")]
    Exhausted { hash: String, last: String },
    #[error("no peers to fetch from")]
    NoPeers,
}

/// Why one download from one peer failed: the `reason` label of
/// `demeter_downloads_failed_total`. Every reason is exported from the start, at zero, so a
/// dashboard's rate over them shows a flat line rather than nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownloadFailure {
    /// The peer could not be reached, or its connection broke mid-body.
    Unreachable,
    /// The peer answered with an error status.
    Status,
    /// The peer announced or sent more bytes than the payload can have.
    TooLarge,
    /// The bytes did not hash to the commitment.
    HashMismatch,
}

impl DownloadFailure {
    pub const ALL: [Self; 4] = [
        Self::Unreachable,
        Self::Status,
        Self::TooLarge,
        Self::HashMismatch,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Status => "status",
            Self::TooLarge => "too_large",
            Self::HashMismatch => "hash_mismatch",
        }
    }
}

/// A pooled HTTP client for the exchange.
#[derive(Clone)]
pub struct PeerClient {
    http: reqwest::Client,
    metrics: ExchangeMetrics,
    attempts: usize,
}

impl PeerClient {
    pub fn new(metrics: ExchangeMetrics, timeout: Duration) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .pool_max_idle_per_host(4)
            .build()?;
        Ok(Self {
            http,
            metrics,
            attempts: 2,
        })
    }

    /// `peer`'s latest snapshot (its step and safetensors bytes), if it has one of at most
    /// `max_len` bytes.
    pub async fn snapshot(&self, peer: SocketAddr, max_len: usize) -> Option<(u64, Bytes)> {
        let response = self
            .http
            .get(format!("http://{peer}/v1/model"))
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let step: u64 = response
            .headers()
            .get(super::serve::SNAPSHOT_STEP)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        if response.content_length()? > max_len as u64 {
            return None;
        }
        let model = response.bytes().await.ok()?;
        self.metrics.bytes_down.inc_by(model.len() as u64);
        Some((step, model))
    }

    /// Downloads the payload with content hash `hash` (at most `max_len` bytes) from the first
    /// of `peers` that serves a copy matching it, trying each a few times. A copy that does not
    /// match is dropped and counted, never kept.
    pub async fn fetch(
        &self,
        hash: &[u8; 32],
        peers: &[SocketAddr],
        max_len: usize,
    ) -> Result<Bytes, FetchError> {
        if peers.is_empty() {
            return Err(FetchError::NoPeers);
        }
        let matches = |bytes: &Bytes| verified_hash(bytes).as_ref() == Some(hash);
        self.fetch_matching("payloads", hash, peers, max_len, matches)
            .await
    }

    /// Downloads the momentum whose SHA-256 is `hash` from `peer` (the client that committed
    /// to it: nobody else holds it), which must be exactly `len` bytes, trying a few times.
    pub async fn fetch_momentum(
        &self,
        hash: &[u8; 32],
        peer: SocketAddr,
        len: usize,
    ) -> Result<Bytes, FetchError> {
        let matches =
            |bytes: &Bytes| bytes.len() == len && Sha256::digest(bytes).as_slice() == hash;
        self.fetch_matching("momenta", hash, &[peer], len, matches)
            .await
    }

    /// Downloads `/v1/{route}/{hash}` from the first of `peers` that serves bytes that
    /// `matches` accepts, trying each a few times; what it refuses is dropped and counted.
    async fn fetch_matching(
        &self,
        route: &str,
        hash: &[u8; 32],
        peers: &[SocketAddr],
        max_len: usize,
        matches: impl Fn(&Bytes) -> bool,
    ) -> Result<Bytes, FetchError> {
        let hex_hash = hex::encode(hash);
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            for peer in peers {
                match self.fetch_from(*peer, route, &hex_hash, max_len).await {
                    Ok(bytes) if matches(&bytes) => {
                        self.metrics.bytes_down.inc_by(bytes.len() as u64);
                        return Ok(bytes);
                    }
                    Ok(_) => {
                        self.failed(DownloadFailure::HashMismatch);
                        last = format!("{peer} served bytes that do not match the hash");
                    }
                    Err((reason, message)) => {
                        self.failed(reason);
                        last = format!("{peer}: {message}");
                    }
                }
            }
        }
        Err(FetchError::Exhausted {
            hash: hex_hash,
            last,
        })
    }

    fn failed(&self, reason: DownloadFailure) {
        self.metrics
            .downloads_failed
            .with_label_values(&[reason.label()])
            .inc();
    }

    /// One download from `/v1/{route}/{hex_hash}`, stopping as soon as the body grows past
    /// `max_len`.
    async fn fetch_from(
        &self,
        peer: SocketAddr,
        route: &str,
        hex_hash: &str,
        max_len: usize,
    ) -> Result<Bytes, (DownloadFailure, String)> {
        let response = self
            .http
            .get(format!("http://{peer}/v1/{route}/{hex_hash}"))
            .send()
            .await
            .map_err(|error| (DownloadFailure::Unreachable, error.to_string()))?;
        if !response.status().is_success() {
            return Err((DownloadFailure::Status, response.status().to_string()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > max_len as u64)
        {
            return Err((
                DownloadFailure::TooLarge,
                "announced more bytes than it may".into(),
            ));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| (DownloadFailure::Unreachable, error.to_string()))?;
            if body.len() + chunk.len() > max_len {
                return Err((
                    DownloadFailure::TooLarge,
                    "sent more bytes than it may".into(),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.into())
    }
}
