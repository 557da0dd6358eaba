//! The operator's one HTTP port: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (this replica leads and its controller runs; standbys answer 503, so
//! only the leader's metrics are scraped through a Service).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    /// Set while the controller runs.
    pub leading: Arc<AtomicBool>,
}

pub fn router(endpoints: Endpoints) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(endpoints)
}

async fn metrics(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        endpoints.metrics.render(),
    )
}

async fn ready(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    if endpoints.leading.load(Ordering::SeqCst) {
        (StatusCode::OK, "leading")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "standby")
    }
}
