//! What to do with a run's client pods, decided from the spec, the pods that exist and the
//! restarts recorded in status: a pure function, so every rule of the failure policy is tested
//! without an API server.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::children;
use crate::crd::{ClientRestarts, Phase, TrainingRun};
use crate::spec::SpecError;

/// The label with a client pod's index.
pub const INDEX_LABEL: &str = "demeter.dev/client-index";
/// The annotation with a digest of the pod spec it was built from: a pod whose spec the
/// TrainingRun no longer produces is replaced.
pub const SPEC_HASH_ANNOTATION: &str = "demeter.dev/pod-spec-hash";
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Container waiting reasons that a restart does not fix; they are reported, not retried.
const STUCK_REASONS: [&str; 5] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// A client pod that failed, as seen in this pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub index: u16,
    pub reason: String,
    /// Failures of this client so far, this one included.
    pub count: u32,
    /// Past failurePolicy.maxRestarts: it is not restarted again.
    pub gave_up: bool,
}

/// The plan for one reconcile.
#[derive(Debug, Default)]
pub struct Plan {
    /// Clients whose pod is to be created now.
    pub create: Vec<u16>,
    /// Pods to delete: failed (to be restarted), outdated, beyond `replicas`, or suspended.
    pub delete: Vec<String>,
    /// The restarts to record in status; written before any pod is deleted, so a count is
    /// never lost.
    pub restarts: Vec<ClientRestarts>,
    pub failures: Vec<Failure>,
    /// Clients whose container cannot start, with the kubelet's reason.
    pub stuck: Vec<(u16, String)>,
    /// Clients past their restart budget.
    pub given_up: Vec<u16>,
    /// Clients whose failed pod is gone and whose restart waits for its backoff.
    pub backing_off: Vec<u16>,
    pub ready: u16,
    pub running: u16,
    pub succeeded: u16,
    /// When the next backoff ends.
    pub retry_after: Option<Duration>,
}

/// Decides what to do with `pods` (the run's client pods) at `now`.
pub fn plan(run: &TrainingRun, pods: &[Pod], now: Timestamp) -> Result<Plan, SpecError> {
    let spec = &run.spec;
    let generation = run.metadata.generation.unwrap_or(0);
    let status = run.status.clone().unwrap_or_default();
    let finished = status.observed_generation == Some(generation)
        && matches!(status.phase, Some(Phase::Succeeded | Phase::Failed));
    let policy = &spec.failure_policy;
    let mut plan = Plan {
        // A spec change gives every client a new restart budget: the admin fixed something.
        restarts: status
            .restarts
            .into_iter()
            .filter(|r| r.generation == generation && r.index < spec.clients.replicas)
            .collect(),
        ..Plan::default()
    };

    for pod in pods {
        let index = pod_index(pod);
        let unwanted = index.is_none_or(|i| i >= spec.clients.replicas) || spec.suspend;
        if unwanted && pod.metadata.deletion_timestamp.is_none() {
            plan.delete.push(pod.name_any());
        }
    }
    if spec.suspend {
        return Ok(plan);
    }

    for index in 0..spec.clients.replicas {
        let restarts = plan.restarts.iter().find(|r| r.index == index).cloned();
        let count = restarts.as_ref().map_or(0, |r| r.count);
        if count > policy.max_restarts {
            plan.given_up.push(index);
        }
        let pod = pods.iter().find(|p| pod_index(p) == Some(index));
        let Some(pod) = pod else {
            if finished || count > policy.max_restarts {
                continue;
            }
            match restarts.map(|r| backoff_left(&r, policy.backoff_seconds, now)) {
                Some(wait) if !wait.is_zero() => {
                    plan.backing_off.push(index);
                    plan.retry_after = Some(plan.retry_after.map_or(wait, |w| w.min(wait)));
                }
                _ => plan.create.push(index),
            }
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        match phase {
            Some("Failed") => {
                let reason = failure_reason(pod);
                let count = count + 1;
                let gave_up = count > policy.max_restarts;
                record_restart(&mut plan.restarts, index, count, &reason, generation, now);
                plan.failures.push(Failure {
                    index,
                    reason,
                    count,
                    gave_up,
                });
                if gave_up {
                    plan.given_up.push(index);
                }
                plan.delete.push(pod.name_any());
            }
            Some("Succeeded") => plan.succeeded += 1,
            _ => {
                if pod_spec_hash(&children::client_pod(run, index)?) != spec_hash_of(pod) {
                    plan.delete.push(pod.name_any());
                    continue;
                }
                if let Some(reason) = stuck_reason(pod) {
                    plan.stuck.push((index, reason));
                }
                if phase == Some("Running") {
                    plan.running += 1;
                }
                if is_ready(pod) {
                    plan.ready += 1;
                }
            }
        }
    }
    plan.given_up.sort_unstable();
    plan.given_up.dedup();
    plan.restarts.sort_by_key(|r| r.index);
    Ok(plan)
}

/// Client `index`'s pod as the operator applies it: the builder's pod with its spec digest.
pub fn desired_pod(run: &TrainingRun, index: u16) -> Result<Pod, SpecError> {
    let mut pod = children::client_pod(run, index)?;
    let hash = pod_spec_hash(&pod);
    pod.metadata
        .annotations
        .get_or_insert_default()
        .insert(SPEC_HASH_ANNOTATION.into(), hash);
    Ok(pod)
}

/// The wait before restart number `count`: backoff·2^(count-1), at most five minutes.
pub fn backoff(backoff_seconds: u32, count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    Duration::from_secs(u64::from(backoff_seconds) << doublings).min(MAX_BACKOFF)
}

fn backoff_left(restarts: &ClientRestarts, backoff_seconds: u32, now: Timestamp) -> Duration {
    let due = restarts.last_failure_time.0 + backoff(backoff_seconds, restarts.count);
    let left = due.duration_since(now);
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

fn record_restart(
    restarts: &mut Vec<ClientRestarts>,
    index: u16,
    count: u32,
    reason: &str,
    generation: i64,
    now: Timestamp,
) {
    restarts.retain(|r| r.index != index);
    restarts.push(ClientRestarts {
        index,
        count,
        last_failure_time: Time(now),
        last_failure: reason.to_owned(),
        generation,
    });
}

fn pod_index(pod: &Pod) -> Option<u16> {
    pod.labels().get(INDEX_LABEL)?.parse().ok()
}

fn pod_spec_hash(pod: &Pod) -> String {
    let spec = serde_json::to_vec(&pod.spec).expect("pod specs serialize");
    hex::encode(&Sha256::digest(&spec)[..8])
}

fn spec_hash_of(pod: &Pod) -> String {
    pod.annotations()
        .get(SPEC_HASH_ANNOTATION)
        .cloned()
        .unwrap_or_default()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// Why a pod failed, in the words `kubectl describe` uses: the trainer container's
/// termination (`OOMKilled (exit code 137)`, `Error (exit code 1)`), or the pod's own reason
/// (`Evicted: …`).
pub fn failure_reason(pod: &Pod) -> String {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref());
    if let Some(terminated) = terminated {
        let reason = terminated.reason.as_deref().unwrap_or("Error");
        return format!("{reason} (exit code {})", terminated.exit_code);
    }
    match status.and_then(|s| s.reason.as_deref()) {
        Some(reason) => match status.and_then(|s| s.message.as_deref()) {
            Some(message) => format!("{reason}: {message}"),
            None => reason.to_owned(),
        },
        None => "Failed".to_owned(),
    }
}

fn stuck_reason(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|c| {
        let waiting = c.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        STUCK_REASONS
            .contains(&reason)
            .then(|| match &waiting.message {
                Some(message) => format!("{reason}: {message}"),
                None => reason.to_owned(),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TrainingRunStatus;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, PodStatus,
    };

    fn run() -> TrainingRun {
        let mut run = TrainingRun::test().replicas(2);
        run.spec.failure_policy.max_restarts = 2;
        run.spec.failure_policy.backoff_seconds = 10;
        run
    }

    fn pod(run: &TrainingRun, index: u16, phase: &str) -> Pod {
        let mut pod = desired_pod(run, index).unwrap();
        pod.status = Some(PodStatus {
            phase: Some(phase.into()),
            ..PodStatus::default()
        });
        pod
    }

    fn oom(mut pod: Pod) -> Pod {
        pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "trainer".into(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 137,
                    reason: Some("OOMKilled".into()),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        pod
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn missing_pods_are_created_and_extra_ones_deleted() {
        let mut run = run();
        let mut extra = pod(&run, 1, "Running");
        extra
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(INDEX_LABEL.into(), "5".into());
        extra.metadata.name = Some("moby-150m-client-5".into());
        let plan = plan(&run, &[pod(&run, 0, "Running"), extra], at(0)).unwrap();
        assert_eq!(plan.create, [1]);
        assert_eq!(plan.delete, ["moby-150m-client-5"]);
        assert_eq!(plan.running, 1);

        run.spec.suspend = true;
        let plan = super::plan(&run, &[pod(&run, 0, "Running")], at(0)).unwrap();
        assert!(plan.create.is_empty());
        assert_eq!(plan.delete, ["moby-150m-client-0"]);
    }

    #[test]
    fn a_failed_pod_is_restarted_after_a_doubling_backoff_then_given_up() {
        let mut run = run();
        let failed = oom(pod(&run, 0, "Failed"));
        let first = plan(&run, &[failed.clone(), pod(&run, 1, "Running")], at(0)).unwrap();
        assert_eq!(first.delete, ["moby-150m-client-0"]);
        assert_eq!(first.failures[0].reason, "OOMKilled (exit code 137)");
        assert_eq!(first.restarts[0].count, 1);
        assert!(!first.failures[0].gave_up);

        // The failure is in status; the pod is gone. It comes back after 10 s.
        run.status = Some(TrainingRunStatus {
            restarts: first.restarts.clone(),
            ..TrainingRunStatus::default()
        });
        let waiting = plan(&run, &[pod(&run, 1, "Running")], at(4)).unwrap();
        assert!(waiting.create.is_empty());
        assert_eq!(waiting.backing_off, [0]);
        assert_eq!(waiting.retry_after, Some(Duration::from_secs(6)));
        let due = plan(&run, &[pod(&run, 1, "Running")], at(10)).unwrap();
        assert_eq!(due.create, [0]);

        // Two more failures: the second waits 20 s, the third is past maxRestarts (2).
        let second = plan(&run, std::slice::from_ref(&failed), at(11)).unwrap();
        assert_eq!(second.restarts[0].count, 2);
        run.status.as_mut().unwrap().restarts = second.restarts;
        let early = plan(&run, &[], at(30)).unwrap();
        assert_eq!(early.retry_after, Some(Duration::from_secs(1)));
        let third = plan(&run, &[failed], at(40)).unwrap();
        assert!(third.failures[0].gave_up);
        assert_eq!(third.given_up, [0]);
        run.status.as_mut().unwrap().restarts = third.restarts;
        let after = plan(&run, &[], at(1000)).unwrap();
        assert_eq!(after.create, [1], "client 0 is not restarted again");
        assert_eq!(after.given_up, [0]);

        // A spec change is a new budget.
        run.metadata.generation = Some(2);
        assert_eq!(plan(&run, &[], at(1000)).unwrap().create, [0, 1]);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=7).map(|n| backoff(10, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff(10, 40).as_secs(), 300);
    }

    #[test]
    fn image_pull_errors_are_reported_not_restarted() {
        let run = run();
        let mut stuck = pod(&run, 0, "Pending");
        stuck.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: "trainer".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: Some("Back-off pulling image \"ghcr.io/x:bad\"".into()),
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        let plan = plan(&run, &[stuck, pod(&run, 1, "Running")], at(0)).unwrap();
        assert!(plan.delete.is_empty());
        assert_eq!(plan.stuck[0].0, 0);
        assert!(
            plan.stuck[0]
                .1
                .starts_with("ImagePullBackOff: Back-off pulling")
        );
    }

    #[test]
    fn a_pod_built_from_an_older_spec_is_replaced() {
        let mut run = run();
        let old = pod(&run, 0, "Running");
        run.spec.clients.image = "ghcr.io/demeter-network/demeter:v2".into();
        let plan = plan(&run, &[old, pod(&run, 1, "Running")], at(0)).unwrap();
        assert_eq!(plan.delete, ["moby-150m-client-0"]);
    }

    #[test]
    fn finished_runs_create_nothing() {
        let mut run = run();
        run.status = Some(TrainingRunStatus {
            phase: Some(Phase::Succeeded),
            observed_generation: Some(1),
            ..TrainingRunStatus::default()
        });
        let plan = plan(&run, &[pod(&run, 0, "Succeeded")], at(0)).unwrap();
        assert!(plan.create.is_empty());
        assert_eq!(plan.succeeded, 1);
    }
}
