//! Lists and watches: pages of a list, and a watch's stream of events from the change log.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::registry::ResourceType;
use super::store::{Filter, StoreError};
use super::table;
use super::{Params, Shared, status_body};

/// One page of a list (`limit`, `continue`). The continue token carries the first page's
/// revision, and every page reports it, so a watch started from a paged list replays every
/// change since the first page (the real API server serves all pages from one snapshot
/// instead; the store converges to the same objects either way).
pub fn page(
    items: Vec<Value>,
    revision: u64,
    params: &Params,
) -> Result<(Vec<Value>, Value), StoreError> {
    let invalid = || StoreError::BadRequest("continue: not a token this server issued".into());
    let (revision, offset) = match params.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let (revision, offset) = token.split_once(':').ok_or_else(invalid)?;
            (
                revision.parse::<u64>().map_err(|_| invalid())?,
                offset.parse::<usize>().map_err(|_| invalid())?,
            )
        }
        None => (revision, 0),
    };
    let limit = params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX);
    let end = offset.saturating_add(limit).min(items.len());
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if end < items.len() {
        metadata["continue"] = format!("{revision}:{end}").into();
    }
    let page = items
        .into_iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .collect();
    Ok((page, metadata))
}

/// A watch: the changes after `since` (or every current object as ADDED), then each new
/// change as it happens, one JSON event per line, until `timeout_seconds`.
/// How a watch sends each object: as it is, or as a one-row Table (`kubectl get -w`) with the
/// request's `includeObject`.
pub enum Shape {
    Object,
    Table(String),
}

pub fn watch(
    shared: Arc<Shared>,
    resource: usize,
    filter: Filter,
    since: Option<u64>,
    timeout_seconds: u64,
    shape: Shape,
) -> Response {
    let (lines, received) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let (mut notified, initial, mut cursor, kind) = {
            let store = shared.store.lock().expect("store lock");
            let kind = store.registry()[resource].clone();
            let event = |change: &str, object: Value| shaped_event(&shape, &kind, change, object);
            let notified = store.subscribe();
            let initial = match since {
                Some(revision) => store
                    .changes_since(resource, revision, &filter)
                    .map(|changes| {
                        changes
                            .into_iter()
                            .map(|c| event(c.kind.as_str(), c.object))
                            .collect()
                    })
                    .unwrap_or_else(|expired| vec![event("ERROR", status_body(&expired))]),
                None => store
                    .list(resource, &filter)
                    .into_iter()
                    .map(|object| event("ADDED", object))
                    .collect::<Vec<_>>(),
            };
            (notified, initial, store.revision(), kind)
        };
        for line in initial {
            if lines.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout_seconds);
        loop {
            tokio::select! {
                changed = notified.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = lines.closed() => return,
            }
            let batch = {
                let store = shared.store.lock().expect("store lock");
                let batch = store.changes_since(resource, cursor, &filter);
                cursor = store.revision();
                batch
            };
            let batch = match batch {
                Ok(changes) => changes
                    .into_iter()
                    .map(|c| shaped_event(&shape, &kind, c.kind.as_str(), c.object))
                    .collect(),
                Err(expired) => vec![event("ERROR", status_body(&expired))],
            };
            for line in batch {
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(received, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("a valid watch response")
}

/// A watch event of `object` in the watch's shape.
fn shaped_event(shape: &Shape, kind: &ResourceType, change: &str, object: Value) -> Bytes {
    match shape {
        Shape::Object => event(change, object),
        // An error is a Status, never a row.
        Shape::Table(_) if change == "ERROR" => event(change, object),
        Shape::Table(include) => {
            let revision = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            event(change, table::table(kind, &[object], revision, include))
        }
    }
}

fn event(kind: &str, object: Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": object})).expect("events serialize");
    line.push(b'\n');
    Bytes::from(line)
}
