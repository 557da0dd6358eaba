//! An in-memory Kubernetes API server, as test infrastructure: an HTTP server speaking the
//! Kubernetes REST and watch protocol for the kinds the operator uses, so that the real
//! `kube::Client` and `kube::runtime::Controller`, and a real kubectl, run against it unchanged
//! through a kubeconfig.
//!
//! What it implements: discovery (with short names), OpenAPI v3, CRDs (a kind is served once
//! its CRD is stored; custom resources are pruned, defaulted and validated from the CRD's
//! structural schema and CEL rules, with `fieldValidation` and the real 422 and 400 errors),
//! Table responses with the CRD's printer columns, list and watch with `resourceVersion`
//! (resuming from the change log, 410 Expired past it), label and field selectors, get, create
//! (`generateName` too), paged lists, replace with conflict detection, merge, JSON and
//! server-side-apply patches, the `/status` subresource, generations, delete with finalizers
//! and `deletionTimestamp`, the owner cascade of the garbage collector, and both Event APIs as
//! views of one set of Events.
//!
//! What it leaves out: authentication and RBAC, admission webhooks and the built-in kinds'
//! validation (their schemas are open objects here), field-manager conflicts (every apply is
//! forced, as the operator's are), strategic merge keys (treated as a merge patch), list
//! snapshots (pages are cut from the current objects), aggregated discovery, CRD conversion (one served version per CRD), and any controller of its
//! own (pods run nowhere; tests play the kubelet by writing pod status). What it does and does
//! not evaluate of a schema and of CEL is in `schema.rs` and `cel.rs`.

mod admission;
mod cel;
mod discovery;
mod error;
mod events;
mod openapi;
mod registry;
mod schema;
mod selector;
mod store;
mod table;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub use registry::{CRDS, Registry, ResourceType};
pub use schema::FieldError;
pub use selector::{FieldSelector, LabelSelector};
pub use store::{FieldValidation, Store, StoreError};
use store::{Filter, Patch, Scope};

/// A request as the server received it, for tests that check exactly what a client sent.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// A running server on a loopback port; it stops when dropped.
pub struct ApiServer {
    address: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ApiServer {
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "the in-memory API server stopped");
            }
        });
        Ok(Self {
            address,
            shared,
            shutdown: Some(shutdown),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig for this server, with `namespace` as the context's default.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: in-memory\n  cluster:\n    server: {}\n\
             users:\n\
             - name: test\n  user: {{}}\n\
             contexts:\n\
             - name: in-memory\n  context:\n    cluster: in-memory\n    user: test\n    namespace: {namespace}\n\
             current-context: in-memory\n",
            self.url()
        )
    }

    /// A `kube::Client` built from [`Self::kubeconfig`], as a real deployment builds one.
    pub async fn client(&self, namespace: &str) -> anyhow::Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig(namespace))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The objects and their history, for tests to read or to write as a kubelet would.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().expect("store lock")
    }

    /// Stores a CRD, or replaces the stored one of its name (as `kubectl apply` of it would),
    /// so that its kind is served with its schema.
    pub fn install_crd(&self, crd: Value) -> Result<(), StoreError> {
        let mut store = self.store();
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match store.get(CRDS, "", &name) {
            Ok(_) => store.replace(CRDS, "", &name, crd, Scope::Main).map(drop),
            Err(_) => store.create(CRDS, "", crd).map(drop),
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// Forgets the recorded requests (the benchmark's memory should not grow with them).
    pub fn clear_requests(&self) {
        self.shared.requests.lock().expect("requests lock").clear();
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Where a request points.
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    scope: Scope,
}

fn parse_path(registry: &Registry, path: &str) -> Result<Target, StoreError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(unknown_path(path)),
    };
    let (namespace, plural, name, subresource) = match rest {
        [plural] => (None, *plural, None, None),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural, name] => (None, *plural, Some(*name), None),
        [plural, name, sub] => (None, *plural, Some(*name), Some(*sub)),
        _ => return Err(unknown_path(path)),
    };
    let resource = registry
        .find(group, version, plural)
        .ok_or_else(|| unknown_path(path))?;
    let kind = &registry[resource];
    // A namespaced kind's object is always under its namespace, and a cluster-scoped kind
    // has none (a list across namespaces is the namespaced kind's only bare path).
    if name.is_some() && namespace.is_none() == kind.namespaced {
        return Err(unknown_path(path));
    }
    if namespace.is_some() && !kind.namespaced {
        return Err(unknown_path(path));
    }
    let scope = match subresource {
        None => Scope::Main,
        Some("status") if kind.status_subresource => Scope::Status,
        Some(_) => return Err(unknown_path(path)),
    };
    Ok(Target {
        resource,
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        scope,
    })
}

fn unknown_path(path: &str) -> StoreError {
    StoreError::NotFound {
        resource: "the server could not find the requested resource".into(),
        name: path.to_owned(),
    }
}

type Params = std::collections::HashMap<String, String>;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let parsed = parse_body(&body, content_type.as_deref());
    shared
        .requests
        .lock()
        .expect("requests lock")
        .push(RecordedRequest {
            method: method.clone(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            content_type: content_type.clone(),
            body: parsed.as_ref().cloned().unwrap_or(Value::Null),
        });
    if method == Method::GET
        && let Some(document) = describe(&shared, uri.path())
    {
        return document;
    }
    let table = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains("as=Table"));
    let result = async {
        let target = parse_path(
            shared.store.lock().expect("store lock").registry(),
            uri.path(),
        )?;
        let body = parsed?;
        let request = Request {
            method,
            target,
            params: &params,
            content_type: content_type.as_deref(),
            body,
            table,
        };
        route(&shared, request).await
    };
    result.await.unwrap_or_else(error_response)
}

/// What the server says about itself: version, discovery and OpenAPI documents.
fn describe(shared: &Shared, path: &str) -> Option<Response> {
    let store = shared.store.lock().expect("store lock");
    let registry = store.registry();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let document = match segments.as_slice() {
        ["version"] => discovery::version(),
        ["api"] => discovery::core_versions(),
        ["apis"] => discovery::group_list(registry),
        ["apis", group] => discovery::group(registry, group)?,
        ["api", version] => discovery::resource_list(registry, "", version)?,
        ["apis", group, version] => discovery::resource_list(registry, group, version)?,
        ["openapi", "v3"] => openapi::index(registry),
        ["openapi", "v3", "api", version] => openapi::document(registry, "", version)?,
        ["openapi", "v3", "apis", group, version] => openapi::document(registry, group, version)?,
        _ => return None,
    };
    Some(json_response(StatusCode::OK, document))
}

/// A request for objects, parsed.
struct Request<'a> {
    method: Method,
    target: Target,
    params: &'a Params,
    content_type: Option<&'a str>,
    body: Value,
    /// The client asked for a Table (`kubectl get`).
    table: bool,
}

fn parse_body(body: &[u8], content_type: Option<&str>) -> Result<Value, StoreError> {
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body).or_else(|json_error| {
        if content_type == Some("application/apply-patch+yaml") {
            serde_yaml_ng::from_slice(body)
                .map_err(|e| StoreError::BadRequest(format!("the apply body is not YAML: {e}")))
        } else {
            Err(StoreError::BadRequest(format!(
                "the body is not JSON: {json_error}"
            )))
        }
    })
}

async fn route(shared: &Arc<Shared>, request: Request<'_>) -> Result<Response, StoreError> {
    let Request {
        method,
        target,
        params,
        content_type,
        body,
        table,
    } = request;
    let filter = Filter {
        namespace: target.namespace.clone(),
        labels: LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
            .map_err(StoreError::BadRequest)?,
        fields: FieldSelector::parse(params.get("fieldSelector").map_or("", String::as_str))
            .map_err(StoreError::BadRequest)?,
    };
    let Target {
        resource,
        namespace,
        name,
        scope,
    } = target;
    let lock = || shared.store.lock().expect("store lock");
    let namespaced = lock().registry()[resource].namespaced;
    let needs_namespace = || match (&namespace, namespaced) {
        (Some(namespace), _) => Ok(namespace.clone()),
        (None, false) => Ok(String::new()),
        (None, true) => Err(StoreError::BadRequest("this verb needs a namespace".into())),
    };
    let validation = FieldValidation::parse(params.get("fieldValidation").map(String::as_str))?;
    let include = params
        .get("includeObject")
        .map_or("Metadata", String::as_str);
    match (method, name) {
        (Method::GET, None) if params.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let since = params
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&v| v > 0);
            let timeout = params
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1800);
            let shape = if table {
                watch::Shape::Table(include.to_owned())
            } else {
                watch::Shape::Object
            };
            Ok(watch::watch(
                shared.clone(),
                resource,
                filter,
                since,
                timeout,
                shape,
            ))
        }
        (Method::GET, None) => {
            let store = lock();
            let rules = &store.registry()[resource];
            let (items, metadata) =
                watch::page(store.list(resource, &filter), store.revision(), params)?;
            if table {
                let mut table = table::table(rules, &items, store.revision(), include);
                table["metadata"] = metadata;
                return Ok(table_response(table));
            }
            Ok(json_response(
                StatusCode::OK,
                json!({
                    "apiVersion": rules.api_version(),
                    "kind": format!("{}List", rules.kind),
                    "metadata": metadata,
                    "items": items,
                }),
            ))
        }
        (Method::GET, Some(name)) => {
            let store = lock();
            let object = store.get(resource, &needs_namespace()?, &name)?;
            if table {
                let kind = &store.registry()[resource];
                return Ok(table_response(table::table(
                    kind,
                    &[object],
                    store.revision(),
                    include,
                )));
            }
            Ok(json_response(StatusCode::OK, object))
        }
        (Method::POST, None) => {
            let namespace = needs_namespace()?;
            let (object, warnings) =
                lock().validating(validation, |s| s.create(resource, &namespace, body));
            Ok(written(StatusCode::CREATED, object?, warnings))
        }
        (Method::PUT, Some(name)) => {
            let namespace = needs_namespace()?;
            let (object, warnings) = lock().validating(validation, |s| {
                s.replace(resource, &namespace, &name, body, scope)
            });
            Ok(written(StatusCode::OK, object?, warnings))
        }
        (Method::PATCH, Some(name)) => {
            let patch = match content_type {
                Some("application/merge-patch+json")
                | Some("application/strategic-merge-patch+json") => Patch::Merge(body),
                Some("application/json-patch+json") => {
                    Patch::Json(serde_json::from_value(body).map_err(|e| {
                        StoreError::BadRequest(format!("the JSON patch is malformed: {e}"))
                    })?)
                }
                Some("application/apply-patch+yaml") => Patch::Apply {
                    manager: params.get("fieldManager").cloned().ok_or_else(|| {
                        StoreError::BadRequest("fieldManager is required for apply requests".into())
                    })?,
                    object: body,
                },
                other => {
                    return Err(StoreError::BadRequest(format!(
                        "unsupported patch content type {other:?}"
                    )));
                }
            };
            let namespace = needs_namespace()?;
            let (object, warnings) = lock().validating(validation, |s| {
                s.patch(resource, &namespace, &name, patch, scope)
            });
            Ok(written(StatusCode::OK, object?, warnings))
        }
        (Method::DELETE, name) => {
            let orphan = body["propagationPolicy"] == "Orphan"
                || params
                    .get("propagationPolicy")
                    .is_some_and(|p| p == "Orphan");
            let namespace = needs_namespace()?;
            let mut store = lock();
            match name {
                Some(name) => {
                    let object = store.delete(resource, &namespace, &name, orphan)?;
                    Ok(json_response(StatusCode::OK, object))
                }
                None => {
                    let mut deleted = Vec::new();
                    for object in store.list(resource, &filter) {
                        let name = object["metadata"]["name"].as_str().unwrap_or_default();
                        deleted.push(store.delete(resource, &namespace, name, orphan)?);
                    }
                    let rules = &store.registry()[resource];
                    Ok(json_response(
                        StatusCode::OK,
                        json!({
                            "apiVersion": rules.api_version(),
                            "kind": format!("{}List", rules.kind),
                            "metadata": {"resourceVersion": store.revision().to_string()},
                            "items": deleted,
                        }),
                    ))
                }
            }
        }
        (method, _) => Err(StoreError::BadRequest(format!(
            "{method} is not supported on this path"
        ))),
    }
}

fn status_body(error: &StoreError) -> Value {
    let (code, reason) = error.code_and_reason();
    let mut status = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": error.to_string(),
        "reason": reason,
        "code": code,
    });
    if let StoreError::Invalid {
        kind,
        group,
        name,
        causes,
    } = error
    {
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.body, "field": c.field}))
            .collect();
        let kind = kind.split('.').next().unwrap_or_default();
        status["details"] = json!({"name": name, "group": group, "kind": kind, "causes": causes});
    }
    status
}

/// A written object, with a `Warning` header for each unknown field that was dropped.
fn written(status: StatusCode, object: Value, warnings: Vec<String>) -> Response {
    let mut response = json_response(status, object);
    for warning in warnings {
        let value = format!("299 - {}", serde_json::Value::from(warning));
        if let Ok(value) = header::HeaderValue::from_str(&value) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

fn table_response(table: Value) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/json;as=Table;v=v1;g=meta.k8s.io",
        )],
        serde_json::to_vec(&table).expect("values serialize"),
    )
        .into_response()
}

fn error_response(error: StoreError) -> Response {
    let (code, _) = error.code_and_reason();
    json_response(
        StatusCode::from_u16(code).expect("a valid status code"),
        status_body(&error),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&body).expect("values serialize"),
    )
        .into_response()
}
