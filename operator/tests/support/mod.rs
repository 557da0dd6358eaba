//! The harness the operator's integration tests share: the in-memory API server, operator
//! replicas started as `demeter-operator run` starts them, and polling helpers. Each test crate
//! uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use demeter_e2e::ApiServer;
pub use demeter_e2e::eventually_within;
use demeter_operator::controller::{self, Context};
use demeter_operator::crd::{TrainingRun, TrainingRunStatus};
use demeter_operator::leader::{LeaderElection, Timing};
use demeter_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

pub const NAMESPACE: &str = "ml";

pub struct Operator {
    pub ctx: Arc<Context>,
    pub leading: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A replica of the operator: leader election, then the controller, as `demeter-operator run`
/// starts them.
pub async fn operator(server: &ApiServer, identity: &str, timing: Timing) -> Operator {
    let client = server.client(NAMESPACE).await.unwrap();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::new()),
        identity,
    ));
    let leading = Arc::new(AtomicBool::new(false));
    let election = LeaderElection::new(
        Api::namespaced(client, "demeter-system"),
        "demeter-operator",
        identity,
        timing,
    );
    let (task_ctx, task_leading) = (ctx.clone(), leading.clone());
    let task = tokio::spawn(async move {
        let _ = election
            .run(controller::run(task_ctx, None, task_leading))
            .await;
    });
    Operator { ctx, leading, task }
}

pub fn fast() -> Timing {
    Timing {
        lease_duration: Duration::from_secs(3),
        renew_every: Duration::from_millis(500),
        retry_every: Duration::from_millis(200),
    }
}

/// An API server that serves TrainingRuns, with the operator's CRD (its schema and rules
/// check every write, as a real server's would).
pub async fn server() -> ApiServer {
    use kube::CustomResourceExt;
    let server = ApiServer::start().await.unwrap();
    server
        .install_crd(serde_json::to_value(TrainingRun::crd()).unwrap())
        .unwrap();
    server
}

/// A server, a client of it, one operator replica leading, and the TrainingRun API.
pub async fn start() -> (ApiServer, Client, Operator, Api<TrainingRun>) {
    let server = server().await;
    let client = server.client(NAMESPACE).await.unwrap();
    let operator = operator(&server, "operator-0", fast()).await;
    let runs = Api::<TrainingRun>::namespaced(client.clone(), NAMESPACE);
    (server, client, operator, runs)
}

/// Polls `check` until it returns Some, or fails after 20 s with `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(Duration::from_secs(20), what, check).await
}

pub async fn client_pods(client: &Client, run: &str) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
    let selector = demeter_operator::children::client_selector_query(run);
    let mut items = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items;
    items.sort_by_key(|p| p.name_any());
    items
}

pub async fn run_status(client: &Client, name: &str) -> Option<TrainingRunStatus> {
    let runs = Api::<TrainingRun>::namespaced(client.clone(), NAMESPACE);
    runs.get_opt(name).await.unwrap().and_then(|r| r.status)
}

pub async fn events(client: &Client, reason: &str) -> Vec<Event> {
    let events = Api::<Event>::namespaced(client.clone(), NAMESPACE);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}
