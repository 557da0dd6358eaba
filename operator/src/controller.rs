//! The TrainingRun controller: `reconcile` turns a run into its children and reports its
//! state; `error_policy` backs off per object when that fails.
//!
//! The controller watches TrainingRuns as untyped objects and parses each one itself, so that
//! one malformed object (written under an older CRD, or with a field the schema could not
//! catch) is reported on that object as `Invalid` instead of failing the watch of every run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, ObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizing, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::backoff::Backoff;
use crate::chain::ChainError;
use crate::chain_sync;
use crate::children;
use crate::clients;
use crate::conditions::{self, DEGRADED, PROGRESSING, READY};
use crate::crd::{Phase, TrainingRun, TrainingRunStatus};
use crate::events;
use crate::identity::{self, IdentityError};
use crate::metrics::Metrics;
use crate::progress;
use crate::spec::{self, SpecError};
use crate::status;

/// Held on every TrainingRun while its cleanup is pending.
pub const FINALIZER: &str = "trainingruns.demeter.dev/cleanup";
/// The one field manager of everything the operator applies.
pub const MANAGER: &str = "demeter-operator";
/// How often a healthy run is looked at again without any change.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a running run's progress is read from its clients.
const PROGRESS_RESYNC: Duration = Duration::from_secs(30);
/// Runs reconciled at once: bounds the operator's memory and its load on the API server
/// when many runs change together (a restart lists every run).
const CONCURRENCY: u16 = 16;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A builder refused a spec that `validate` accepted; retried like any other failure.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The on-chain run could not be paused before its TrainingRun goes away.
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Every value of the `error` label, exported from the start at zero so a dashboard's
    /// rate over failures is a flat line, not nothing, while all is well.
    pub const METRIC_LABELS: [&'static str; 5] = ["kube", "identity", "spec", "chain", "finalizer"];

    /// The `error` label of the failure counter (one of [`Self::METRIC_LABELS`]).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Identity(_) => "identity",
            Error::Spec(_) => "spec",
            Error::Chain(_) => "chain",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "finalizer",
            },
        }
    }
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    recorder: Recorder,
    /// Failed reconciles per run, for `error_policy`'s requeue.
    errors: Backoff,
    /// Reads the clients' `/metrics`.
    http: reqwest::Client,
    /// Failed chain syncs per run: a cluster that cannot be reached slows the sync, not the
    /// pods, and events in the cluster do not hurry it.
    pub(crate) chain_failures: Backoff,
}

impl Context {
    /// `instance` names this replica in the Events it writes (its pod name).
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: &str) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(instance.into()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            errors: Backoff::default(),
            http: reqwest::Client::new(),
            chain_failures: Backoff::default(),
        }
    }

    /// An Event about the object `reference` (a TrainingRun).
    pub(crate) async fn publish(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.publish_related(reference, None, type_, reason, note)
            .await;
    }

    /// An Event about `reference` that concerns one of its objects, `related` (a client pod).
    /// The recorder folds Events of one object with the same reason into one series that
    /// shows only the last note; naming the pod keeps each pod's Event its own (creating three
    /// pods at once is three Events, not "x3" of the last).
    pub(crate) async fn publish_related(
        &self,
        reference: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: related,
        };
        // An event that cannot be written is not worth failing the reconcile over.
        if let Err(error) = self.recorder.publish(&event, reference).await {
            tracing::warn!(%error, reason, "cannot publish an event");
        }
    }
}

/// The TrainingRun kind, for the untyped watch.
pub fn training_run_resource() -> ApiResource {
    ApiResource::erase::<TrainingRun>(&())
}

/// Runs the controller until the process is told to stop. `namespace`: watch one namespace,
/// or all of them.
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>, running: Arc<AtomicBool>) {
    let client = ctx.client.clone();
    let resource = training_run_resource();
    let runs = match namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let children =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=demeter-operator");
    running.store(true, Ordering::SeqCst);
    Controller::new_with(runs, watcher::Config::default(), resource)
        .with_config(kube::runtime::controller::Config::default().concurrency(CONCURRENCY))
        .owns(scoped::<Pod>(&client, namespace), children.clone())
        .owns(scoped::<Service>(&client, namespace), children.clone())
        .owns(scoped::<ConfigMap>(&client, namespace), children.clone())
        .owns(scoped::<Deployment>(&client, namespace), children)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile did not complete");
            }
        })
        .await;
    running.store(false, Ordering::SeqCst);
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

pub async fn reconcile(object: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = object.namespace().unwrap_or_default();
    let key = (namespace.clone(), object.name_any());
    let api = Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &training_run_resource(),
    );
    let result = finalizer(&api, FINALIZER, object, |event| async {
        match event {
            Finalizing::Apply(object) => apply(&object, &ctx).await,
            Finalizing::Cleanup(object) => cleanup(&object, &ctx).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)));
    ctx.metrics.reconciled(started.elapsed());
    if result.is_ok() {
        ctx.errors.forget(&key);
    }
    result
}

/// Retries a failed run with its own exponential backoff (1 s doubling to 5 min), so one
/// broken run neither storms the API nor slows the others.
pub fn error_policy(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(error.metric_label());
    let key = (object.namespace().unwrap_or_default(), object.name_any());
    let (failures, wait) = ctx.errors.failed(key.clone());
    tracing::warn!(namespace = %key.0, run = %key.1, %error, failures, ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// Reads a TrainingRun out of its untyped object, naming the field that does not fit.
pub fn parse(object: &DynamicObject) -> Result<TrainingRun, String> {
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        format!("{path}: {}", error.into_inner())
    })
}

async fn apply(cached: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    // The watch's copy may predate our own last status write; planning restarts from it
    // would forget the ones recorded since. So plan from a fresh read, and write status only
    // if the run has not changed since (its resourceVersion), or retry.
    let namespace = cached.namespace().unwrap_or_default();
    let object = Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        &namespace,
        &training_run_resource(),
    )
    .get(&cached.name_any())
    .await?;
    let object = &object;
    let run = match parse(object) {
        Ok(run) => run,
        Err(why) => return report_invalid(object, why, ctx).await,
    };
    if let Err(why) = spec::validate(&run) {
        return report_invalid(object, why.to_string(), ctx).await;
    }
    let name = run.name_any();
    let client = &ctx.client;
    let keys =
        identity::ensure(&Api::<Secret>::namespaced(client.clone(), &namespace), &run).await?;
    let config = children::config_map(&run, &keys)?;
    let deployment = children::coordinator_deployment(&run);
    let coordinator = children::coordinator_service(&run);
    let peers = children::peer_service(&run);
    futures_util::try_join!(
        apply_child(client, &namespace, &config),
        apply_child(client, &namespace, &peers),
        async {
            match &deployment {
                Some(deployment) => apply_child(client, &namespace, deployment).await,
                None => Ok(()),
            }
        },
        async {
            match &coordinator {
                Some(service) => apply_child(client, &namespace, service).await,
                None => Ok(()),
            }
        },
    )?;

    let pods_api = Api::<Pod>::namespaced(client.clone(), &namespace);
    let pods = pods_api
        .list(&ListParams::default().labels(&children::client_selector_query(&name)))
        .await?
        .items;
    let key = (namespace.clone(), name.clone());
    let chain_backoff = ctx.chain_failures.remaining(&key);
    let chain = match &run.spec.coordinator.solana {
        Some(solana) if chain_backoff.is_none() => {
            let run_id = spec::solana_run_id(solana)?;
            let owner = spec::solana_authority(solana)?;
            Some(chain_sync::sync_chain(&run, solana, owner, run_id, &keys, ctx).await)
        }
        _ => None,
    };
    let reports = progress::scrape(&ctx.http, &pods, run.spec.clients.port).await;
    let progress = progress::combine(&reports);
    let now = Timestamp::now();
    let mut plan = clients::plan(&run, &pods, now)?;
    let previous = run.status.clone().unwrap_or_default();
    let status = status::derive(&run, &plan, chain.as_ref(), progress.as_ref(), now);
    if status.phase == Some(Phase::Failed) {
        // A run that cannot go on gives its GPUs back.
        plan.create.clear();
        for pod in &pods {
            let terminal = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if pod.metadata.deletion_timestamp.is_none()
                && !matches!(terminal, Some("Failed" | "Succeeded"))
                && !plan.delete.contains(&pod.name_any())
            {
                plan.delete.push(pod.name_any());
            }
        }
    }
    // Restart counts are in status before any pod is deleted, so none is lost.
    Api::<TrainingRun>::namespaced(client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(json!({
                "apiVersion": "demeter.dev/v1alpha1",
                "kind": "TrainingRun",
                "metadata": {"resourceVersion": run.resource_version()},
                "status": status,
            })),
        )
        .await?;
    ctx.metrics.observe(&namespace, &name, &status);
    events::report_changes(&run, &previous, &status, &plan, ctx).await;
    let chain_wait = match &chain {
        Some(chain) => Some(chain_sync::report_chain(&run, &previous, chain, ctx).await),
        None => chain_backoff,
    };

    for pod in &plan.delete {
        match pods_api.delete(pod, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(error) => return Err(error.into()),
        }
    }
    let (run, namespace) = (&run, &namespace);
    let creates = plan.create.iter().map(|&index| async move {
        let pod = clients::desired_pod(run, index)?;
        apply_child(client, namespace, &pod).await?;
        ctx.publish_related(
            &run.object_ref(&()),
            Some(pod.object_ref(&())),
            EventType::Normal,
            "SuccessfulCreate",
            format!("Created pod {}", pod.name_any()),
        )
        .await;
        Ok::<_, Error>(())
    });
    futures_util::future::try_join_all(creates).await?;
    // A training run is looked at again soon, for its progress.
    let training = (status.phase == Some(Phase::Running)).then_some(PROGRESS_RESYNC);
    let wait = [plan.retry_after, chain_wait, training]
        .into_iter()
        .flatten()
        .fold(RESYNC, Duration::min);
    Ok(Action::requeue(wait))
}

async fn apply_child<K>(client: &Client, namespace: &str, object: &K) -> Result<(), kube::Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            &object.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map(|_| ())
}

/// Reports a spec the operator cannot act on: phase Invalid, the reason in the Ready
/// condition and one Warning Event per generation. It is not retried until the spec changes.
async fn report_invalid(
    object: &DynamicObject,
    why: String,
    ctx: &Context,
) -> Result<Action, Error> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let generation = object.metadata.generation.unwrap_or(0);
    let status = &object.data["status"];
    let reported = status["phase"] == "Invalid"
        && status["observedGeneration"] == generation
        && status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == READY && c["message"] == why.as_str())
        });
    ctx.metrics.observe(
        &namespace,
        &name,
        &TrainingRunStatus {
            phase: Some(Phase::Invalid),
            ..TrainingRunStatus::default()
        },
    );
    if reported {
        return Ok(Action::await_change());
    }
    tracing::info!(%namespace, run = %name, %why, "invalid TrainingRun");
    let now = Timestamp::now();
    let mut conditions = serde_json::from_value(status["conditions"].clone()).unwrap_or_default();
    for (type_, status) in [(READY, false), (PROGRESSING, false), (DEGRADED, true)] {
        conditions::set(
            &mut conditions,
            type_,
            status,
            "InvalidSpec",
            why.clone(),
            generation,
            now,
        );
    }
    Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &namespace, &training_run_resource())
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Invalid",
                "observedGeneration": generation,
                "conditions": conditions,
            }})),
        )
        .await?;
    let reference = ObjectReference {
        api_version: Some("demeter.dev/v1alpha1".into()),
        kind: Some("TrainingRun".into()),
        name: Some(name),
        namespace: Some(namespace),
        uid: object.metadata.uid.clone(),
        resource_version: object.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    ctx.publish(&reference, EventType::Warning, "InvalidSpec", why)
        .await;
    Ok(Action::await_change())
}

/// Before a run goes away: its metrics series go with it. Children are deleted by the
/// garbage collector through their owner references; identity Secrets stay unless the spec
/// said Delete.
async fn cleanup(object: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let ObjectMeta {
        namespace, name, ..
    } = &object.metadata;
    let (namespace, name) = (
        namespace.clone().unwrap_or_default(),
        name.clone().unwrap_or_default(),
    );
    if let Ok(run) = parse(object)
        && let Some(solana) = &run.spec.coordinator.solana
        && let Some(key) = &solana.authority_secret_ref
    {
        chain_sync::pause_before_deletion(&run, solana, key, ctx).await?;
    }
    ctx.metrics.forget(&namespace, &name);
    ctx.chain_failures
        .forget(&(namespace.clone(), name.clone()));
    tracing::info!(%namespace, run = %name, "TrainingRun deleted");
    Ok(Action::await_change())
}
