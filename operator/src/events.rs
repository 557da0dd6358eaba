//! The Events a reconcile writes about a run's pods and phase: each names its pod, and each
//! says what happened and what comes next (a restart and when, a client given up, a phase
//! change). Written through `Context::publish`, which never fails a reconcile.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::children;
use crate::clients::{self, Plan};
use crate::controller::Context;
use crate::crd::{Phase, TrainingRun, TrainingRunStatus};
use crate::status;

/// Events for what changed: failures, restarts, clients given up, containers that cannot
/// start, and phase transitions.
pub async fn report_changes(
    run: &TrainingRun,
    previous: &TrainingRunStatus,
    status: &TrainingRunStatus,
    plan: &Plan,
    ctx: &Context,
) {
    let reference = run.object_ref(&());
    let policy = &run.spec.failure_policy;
    for failure in &plan.failures {
        let pod = children::Names(&run.name_any()).client(failure.index);
        let note = if failure.gave_up {
            format!(
                "Pod {pod} failed: {}; that is failure {} and failurePolicy.maxRestarts is {}, \
                 so client {} is not restarted again",
                failure.reason, failure.count, policy.max_restarts, failure.index
            )
        } else {
            let wait = clients::backoff(policy.backoff_seconds, failure.count);
            format!(
                "Pod {pod} failed: {}; restart {} of {} in {}s",
                failure.reason,
                failure.count,
                policy.max_restarts,
                wait.as_secs()
            )
        };
        let reason = if failure.gave_up {
            "ClientGaveUp"
        } else {
            "ClientRestarting"
        };
        ctx.publish_related(
            &reference,
            Some(pod_reference(run, &pod)),
            EventType::Warning,
            reason,
            note,
        )
        .await;
    }
    for (index, why) in &plan.stuck {
        let reason = why.split(':').next().unwrap_or("ContainerCannotStart");
        // Every pod Event names its pod, as the restart and create Events do.
        let pod = children::Names(&run.name_any()).client(*index);
        ctx.publish_related(
            &reference,
            Some(pod_reference(run, &pod)),
            EventType::Warning,
            reason,
            format!("Pod {pod} (client {index}): {why}"),
        )
        .await;
    }
    let was_ejected = |key: &String| {
        previous
            .chain
            .as_ref()
            .is_some_and(|chain| chain.ejected.contains(key))
    };
    let newly_ejected: Vec<&String> = status
        .chain
        .iter()
        .flat_map(|chain| &chain.ejected)
        .filter(|key| !was_ejected(key))
        .collect();
    for key in &newly_ejected {
        ctx.publish(
            &reference,
            EventType::Warning,
            "ClientEjected",
            format!(
                "Client {key} was ejected: a quorum of the run's verifiers judged a result it \
                 sent faked; its points are slashed and it cannot rejoin"
            ),
        )
        .await;
    }
    // A centralized run names no keys: its clients report how many were ejected.
    if newly_ejected.is_empty() && status.clients.ejected > previous.clients.ejected {
        ctx.publish(
            &reference,
            EventType::Warning,
            "ClientEjected",
            format!(
                "{} client(s) ejected by the run's verifiers for faked results ({} in all)",
                status.clients.ejected - previous.clients.ejected,
                status.clients.ejected
            ),
        )
        .await;
    }
    if previous.phase != status.phase {
        let phase = status.phase.unwrap_or(Phase::Pending);
        let (type_, note) = match phase {
            Phase::Failed => (EventType::Warning, status::failed_message(run, plan)),
            Phase::Suspended => (
                EventType::Normal,
                "Suspended: client pods deleted".to_owned(),
            ),
            _ => (
                EventType::Normal,
                format!(
                    "{} -> {}",
                    previous.phase.map_or("new", crate::metrics::phase_name),
                    crate::metrics::phase_name(phase)
                ),
            ),
        };
        let reason = if previous.phase == Some(Phase::Suspended) && phase != Phase::Suspended {
            "Resumed"
        } else {
            crate::metrics::phase_name(phase)
        };
        ctx.publish(&reference, type_, reason, note).await;
    }
}

/// Client pod `name` of `run`, as an Event's related object.
fn pod_reference(run: &TrainingRun, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.into()),
        namespace: run.namespace(),
        ..ObjectReference::default()
    }
}
