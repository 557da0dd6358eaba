//! The HTTP side every client runs: its results, its snapshot and its metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus::{IntCounter, IntCounterVec, Opts, Registry, TextEncoder};
use tokio::net::TcpListener;

use super::fetch::DownloadFailure;
use super::store::ResultStore;

/// How long a peer has to send a request's headers; a connection that trickles them (or sends
/// nothing) is closed instead of being held open forever.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of the exchange, registered in the client's registry.
#[derive(Clone)]
pub struct ExchangeMetrics {
    pub payloads_served: IntCounter,
    pub bytes_up: IntCounter,
    pub bytes_down: IntCounter,
    /// Failed downloads by reason: unreachable, status, too_large, hash_mismatch.
    pub downloads_failed: IntCounterVec,
}

impl ExchangeMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let by = |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
            let counter = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let downloads_failed = by(
            "demeter_downloads_failed_total",
            "Payload downloads that failed, by reason",
            "reason",
        )?;
        for reason in DownloadFailure::ALL {
            downloads_failed.with_label_values(&[reason.label()]);
        }
        Ok(Self {
            payloads_served: counter(
                "demeter_payloads_served_total",
                "Payloads (or ranges of them) served to peers",
            )?,
            bytes_up: counter("demeter_bytes_up_total", "Payload bytes served to peers")?,
            bytes_down: counter(
                "demeter_bytes_down_total",
                "Payload bytes fetched from peers and verified",
            )?,
            downloads_failed,
        })
    }
}

/// The replica as of an epoch's end, for late joiners and restarted clients.
#[derive(Clone)]
pub struct Snapshot {
    pub step: u64,
    /// The weights as safetensors.
    pub model: Bytes,
}

/// The header that carries a snapshot's step.
pub const SNAPSHOT_STEP: &str = "x-demeter-step";

/// What the routes share.
pub struct Exchange {
    pub store: Arc<ResultStore>,
    pub registry: Registry,
    pub metrics: ExchangeMetrics,
    pub snapshot: std::sync::RwLock<Option<Snapshot>>,
}

/// Serves `app` on `listener` over HTTP/1.1 until the task is dropped, closing every
/// connection whose request headers take longer than `header_timeout` (axum's own `serve` has
/// no such bound).
pub async fn serve(listener: TcpListener, app: Router, header_timeout: Duration) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: wait and keep serving.
                tracing::warn!(%error, "exchange: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "exchange: connection ended");
            }
        });
    }
}

/// The exchange's routes.
pub fn router(exchange: Arc<Exchange>) -> Router {
    Router::new()
        .route("/v1/payloads/{hash}", get(payload))
        .route("/v1/momenta/{hash}", get(momentum))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .with_state(exchange)
}

fn parse_hash(hex_text: &str) -> Option<[u8; 32]> {
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut hash).ok()?;
    Some(hash)
}

/// `bytes=a-b`, `bytes=a-` or the suffix `bytes=-n` (the last n bytes) within `len`, as an
/// inclusive range; `None` when unsatisfiable or not a single range.
fn parse_range(value: &HeaderValue, len: usize) -> Option<(usize, usize)> {
    let spec = value.to_str().ok()?.strip_prefix("bytes=")?;
    let (start, end) = spec.split_once('-')?;
    if start.trim().is_empty() {
        let suffix: usize = end.trim().parse().ok()?;
        return (suffix > 0 && len > 0).then(|| (len - suffix.min(len), len - 1));
    }
    let start: usize = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.checked_sub(1)?,
        end => end.parse::<usize>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

async fn payload(
    State(exchange): State<Arc<Exchange>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(hash) = parse_hash(&hash) else {
        return (
            StatusCode::BAD_REQUEST,
            "a payload is named by 64 hex digits",
        )
            .into_response();
    };
    let Some(payload) = exchange.store.payload(&hash) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    exchange.metrics.payloads_served.inc();
    let len = payload.len();
    match headers.get(header::RANGE) {
        None => {
            exchange.metrics.bytes_up.inc_by(len as u64);
            (
                [(header::CONTENT_TYPE, "application/octet-stream")],
                payload,
            )
                .into_response()
        }
        Some(range) => match parse_range(range, len) {
            Some((start, end)) => {
                exchange.metrics.bytes_up.inc_by((end + 1 - start) as u64);
                (
                    StatusCode::PARTIAL_CONTENT,
                    [
                        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                        (header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                    ],
                    payload.slice(start..=end),
                )
                    .into_response()
            }
            None => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            )
                .into_response(),
        },
    }
}

/// This client's momentum of a recent step, by its SHA-256 (the commitment its result
/// carries), for a verifier that spot-checks the result.
async fn momentum(State(exchange): State<Arc<Exchange>>, Path(hash): Path<String>) -> Response {
    let Some(hash) = parse_hash(&hash) else {
        return (
            StatusCode::BAD_REQUEST,
            "a momentum is named by 64 hex digits",
        )
            .into_response();
    };
    let Some(momentum) = exchange.store.momentum(&hash) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    exchange.metrics.bytes_up.inc_by(momentum.len() as u64);
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        momentum,
    )
        .into_response()
}

async fn model(State(exchange): State<Arc<Exchange>>) -> Response {
    let snapshot = exchange
        .snapshot
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match snapshot {
        Some(snapshot) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::HeaderName::from_static(SNAPSHOT_STEP),
                    snapshot.step.to_string(),
                ),
            ],
            snapshot.model,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metrics(State(exchange): State<Arc<Exchange>>) -> Response {
    match TextEncoder::new().encode_to_string(&exchange.registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_single_and_clamped() {
        let range = |text: &'static str| parse_range(&HeaderValue::from_static(text), 100);
        assert_eq!(range("bytes=0-9"), Some((0, 9)));
        assert_eq!(range("bytes=90-"), Some((90, 99)));
        assert_eq!(range("bytes=90-500"), Some((90, 99)));
        assert_eq!(range("bytes=100-"), None);
        assert_eq!(range("bytes=5-1"), None);
        assert_eq!(range("bytes=-5"), Some((95, 99)), "the last five bytes");
        assert_eq!(range("bytes=-500"), Some((0, 99)));
        assert_eq!(range("bytes=-0"), None);
        assert_eq!(range("bytes=-"), None);
        assert_eq!(range("bytes=0-1,5-6"), None);
        assert_eq!(range("items=0-1"), None);
    }
}
