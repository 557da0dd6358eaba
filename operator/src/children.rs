//! The objects a `TrainingRun` owns, built from its spec alone: pure functions, so the
//! reconciler only applies them and tests can read them. What the spec means to the coordinator
//! and the trainer (validation, the run file, client arguments) is `spec`'s.
//!
//! | object | name | when |
//! | --- | --- | --- |
//! | ConfigMap (the coordinator's run file) | `RUN-config` | always |
//! | headless Service (peer discovery) | `RUN-peers` | always |
//! | Pod per client | `RUN-client-N` | not suspended |
//! | Secret per client (its keypair) | `RUN-client-N-identity` | always; kept after the run by default |
//! | Deployment + Service (`demeter coordinator serve`) | `RUN-coordinator` | centralized mode |

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaimVolumeSource,
    Pod, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret,
    SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::{IdentityPolicy, TrainingRun};
use crate::spec::{SpecError, client_args, join, run_file};

/// The centralized coordinator's TCP port.
pub const COORDINATOR_PORT: u16 = 7300;
/// Where a client's keypair is mounted.
pub(crate) const IDENTITY_DIR: &str = "/var/run/demeter/identity";
/// The key of the keypair in its Secret (a Solana CLI wallet file).
pub const KEYPAIR_KEY: &str = "keypair.json";
pub(crate) const DATA_DIR: &str = "/data";
pub(crate) const CHECKPOINT_DIR: &str = "/checkpoints";
const CONFIG_DIR: &str = "/etc/demeter";
const RUN_FILE_KEY: &str = "run.toml";

/// The names of a run's objects.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    pub fn config(&self) -> String {
        format!("{}-config", self.0)
    }
    pub fn peers(&self) -> String {
        format!("{}-peers", self.0)
    }
    pub fn coordinator(&self) -> String {
        format!("{}-coordinator", self.0)
    }
    pub fn client(&self, index: u16) -> String {
        format!("{}-client-{index}", self.0)
    }
    pub fn identity(&self, index: u16) -> String {
        format!("{}-client-{index}-identity", self.0)
    }
}

/// Labels every object of a run carries; `selector` picks the run's clients.
pub fn labels(run: &TrainingRun, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "demeter".into()),
        ("app.kubernetes.io/instance".into(), run.name_any()),
        ("app.kubernetes.io/component".into(), component.into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "demeter-operator".into(),
        ),
        ("demeter.dev/run".into(), run.name_any()),
    ])
}

/// The labels that pick the client pods of the run named `run`: what its peers Service
/// selects.
pub fn client_selector(run: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("demeter.dev/run".into(), run.into()),
        ("app.kubernetes.io/component".into(), "client".into()),
    ])
}

/// [`client_selector`] as a list's label selector (`key=value,…`): how the operator, and
/// anyone watching a run, lists its client pods.
pub fn client_selector_query(run: &str) -> String {
    client_selector(run)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn owner(run: &TrainingRun) -> OwnerReference {
    run.controller_owner_ref(&())
        .expect("a TrainingRun read from the API has a name and uid")
}

fn metadata(run: &TrainingRun, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: run.namespace(),
        labels: Some(labels(run, component)),
        owner_references: Some(vec![owner(run)]),
        ..ObjectMeta::default()
    }
}

pub fn config_map(run: &TrainingRun, client_keys: &[String]) -> Result<ConfigMap, SpecError> {
    Ok(ConfigMap {
        metadata: metadata(run, Names(&run.name_any()).config(), "config"),
        data: Some(BTreeMap::from([(
            RUN_FILE_KEY.to_owned(),
            run_file(run, client_keys)?,
        )])),
        ..ConfigMap::default()
    })
}

/// A headless Service over the run's client pods: its DNS name resolves to every client, which
/// is how clients find each other (`--peers-dns`), and gives each pod a stable name.
pub fn peer_service(run: &TrainingRun) -> Service {
    Service {
        metadata: metadata(run, Names(&run.name_any()).peers(), "client"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must find a restarted client before it is ready: it serves its snapshot
            // requests and results while it catches up.
            publish_not_ready_addresses: Some(true),
            selector: Some(client_selector(&run.name_any())),
            ports: Some(vec![ServicePort {
                name: Some("exchange".into()),
                port: i32::from(run.spec.clients.port),
                target_port: Some(IntOrString::String("exchange".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A client's keypair Secret. With `Retain` it has no owner, so it outlives the run: the key
/// holds the points its client earned.
pub fn identity_secret(run: &TrainingRun, index: u16, keypair_json: String) -> Secret {
    let mut meta = metadata(run, Names(&run.name_any()).identity(index), "identity");
    if run.spec.identity_policy == IdentityPolicy::Retain {
        meta.owner_references = None;
    }
    Secret {
        metadata: meta,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(KEYPAIR_KEY.to_owned(), keypair_json)])),
        ..Secret::default()
    }
}

/// The Pod Security Standards' "restricted" profile for every container.
fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// Probes on the client's exchange server, which answers as soon as the client is up.
fn metrics_probe(port: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/metrics".into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Client `index`'s pod. It never restarts in place (`restartPolicy: Never`): the operator
/// sees every failure and restarts it with its own backoff and limit.
pub fn client_pod(run: &TrainingRun, index: u16) -> Result<Pod, SpecError> {
    let spec = &run.spec;
    let name = run.name_any();
    let names = Names(&name);
    let mut meta = metadata(run, names.client(index), "client");
    meta.labels
        .get_or_insert_default()
        .insert("demeter.dev/client-index".into(), index.to_string());

    let mut volumes = vec![
        Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.identity(index)),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..volume("identity")
        },
        Volume {
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..volume("tmp")
        },
    ];
    let mut mounts = vec![
        mount("identity", IDENTITY_DIR, true),
        mount("tmp", "/tmp", false),
    ];
    if let Some(data) = &spec.data.volume {
        volumes.push(Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: data.claim_name.clone(),
                read_only: Some(true),
            }),
            ..volume("data")
        });
        mounts.push(mount("data", DATA_DIR, true));
    }
    if let Some(checkpoint) = &spec.checkpoint {
        volumes.push(Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: checkpoint.claim_name.clone(),
                read_only: Some(false),
            }),
            ..volume("checkpoints")
        });
        mounts.push(mount("checkpoints", CHECKPOINT_DIR, false));
    }

    let mut env = vec![EnvVar {
        name: "POD_IP".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    env.extend(spec.clients.env.iter().cloned());

    let container = Container {
        name: "trainer".into(),
        image: Some(spec.clients.image.clone()),
        image_pull_policy: spec.clients.image_pull_policy.clone(),
        command: Some(vec!["demeter".into()]),
        args: Some(client_args(run, index)?),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("exchange".into()),
            container_port: i32::from(spec.clients.port),
            ..ContainerPort::default()
        }]),
        resources: spec.clients.resources.clone(),
        readiness_probe: Some(metrics_probe("exchange", 10)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            ..metrics_probe("exchange", 30)
        }),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    Ok(Pod {
        metadata: meta,
        spec: Some(PodSpec {
            hostname: Some(names.client(index)),
            subdomain: Some(names.peers()),
            restart_policy: Some("Never".into()),
            containers: vec![container],
            volumes: Some(volumes),
            node_selector: (!spec.clients.node_selector.is_empty())
                .then(|| spec.clients.node_selector.clone()),
            tolerations: (!spec.clients.tolerations.is_empty())
                .then(|| spec.clients.tolerations.clone()),
            affinity: spec.clients.affinity.clone(),
            priority_class_name: spec.clients.priority_class_name.clone(),
            service_account_name: spec.clients.service_account_name.clone(),
            automount_service_account_token: Some(false),
            security_context: Some(pod_security()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    })
}

/// The centralized coordinator (`demeter coordinator serve`): one replica, replaced with
/// `Recreate` so two never serve the same run. Its state file lives on the checkpoint volume
/// when there is one, so a rescheduled coordinator resumes the run; otherwise in an emptyDir,
/// which survives container restarts but not a new pod.
pub fn coordinator_deployment(run: &TrainingRun) -> Option<Deployment> {
    let centralized = run.spec.coordinator.centralized.as_ref()?;
    let name = run.name_any();
    let names = Names(&name);
    let labels = labels(run, "coordinator");
    let selector = BTreeMap::from([
        ("demeter.dev/run".to_owned(), name.clone()),
        (
            "app.kubernetes.io/component".to_owned(),
            "coordinator".to_owned(),
        ),
    ]);
    let (state_volume, state_dir) = match &run.spec.checkpoint {
        Some(checkpoint) => (
            Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: checkpoint.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..volume("state")
            },
            join(
                &join(CHECKPOINT_DIR, &checkpoint.path),
                &names.coordinator(),
            ),
        ),
        None => (
            Volume {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..volume("state")
            },
            CHECKPOINT_DIR.to_owned(),
        ),
    };
    let container = Container {
        name: "coordinator".into(),
        image: Some(
            centralized
                .image
                .clone()
                .unwrap_or_else(|| run.spec.clients.image.clone()),
        ),
        image_pull_policy: run.spec.clients.image_pull_policy.clone(),
        command: Some(vec!["demeter".into()]),
        args: Some(vec![
            "coordinator".into(),
            "serve".into(),
            format!("--config={CONFIG_DIR}/{RUN_FILE_KEY}"),
            format!("--listen=0.0.0.0:{COORDINATOR_PORT}"),
            format!("--state={state_dir}/coordinator.state"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("coordinator".into()),
            container_port: i32::from(COORDINATOR_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::String("coordinator".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![
            mount("config", CONFIG_DIR, true),
            mount("state", CHECKPOINT_DIR, false),
        ]),
        ..Container::default()
    };
    Some(Deployment {
        metadata: metadata(run, names.coordinator(), "coordinator"),
        spec: Some(DeploymentSpec {
            replicas: Some(if run.spec.suspend { 0 } else { 1 }),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..DeploymentStrategy::default()
            }),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            config_map: Some(ConfigMapVolumeSource {
                                name: names.config(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..volume("config")
                        },
                        state_volume,
                    ]),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

/// The centralized coordinator's Service, which clients dial.
pub fn coordinator_service(run: &TrainingRun) -> Option<Service> {
    run.spec.coordinator.centralized.as_ref()?;
    let name = run.name_any();
    Some(Service {
        metadata: metadata(run, Names(&name).coordinator(), "coordinator"),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([
                ("demeter.dev/run".to_owned(), name.clone()),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "coordinator".to_owned(),
                ),
            ])),
            ports: Some(vec![ServicePort {
                name: Some("coordinator".into()),
                port: i32::from(COORDINATOR_PORT),
                target_port: Some(IntOrString::String("coordinator".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_pods_are_stable_restricted_and_owned() {
        let run = TrainingRun::test();
        let pod = client_pod(&run, 2).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("moby-150m-client-2"));
        let owners = pod.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners[0].kind, "TrainingRun");
        assert_eq!(owners[0].controller, Some(true));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.subdomain.as_deref(), Some("moby-150m-peers"));
        let container = &spec.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.run_as_non_root, Some(true));
        let gpu = &container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap()["nvidia.com/gpu"];
        assert_eq!(gpu.0, "1");
        let args = container.args.as_ref().unwrap();
        for expected in [
            "--coordinator=tcp://moby-150m-coordinator.ml.svc:7300",
            "--advertise=$(POD_IP):7070",
            "--peers-dns=moby-150m-peers.ml.svc:7070",
            "--preset=150m",
            "--seq-len=512",
            "--checkpoint-dir=/checkpoints/moby-150m-client-2",
        ] {
            assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
        }
    }

    #[test]
    fn identities_outlive_the_run_unless_told_otherwise() {
        let mut run = TrainingRun::test();
        let secret = identity_secret(&run, 0, "[1,2]".into());
        assert!(secret.metadata.owner_references.is_none());
        run.spec.identity_policy = IdentityPolicy::Delete;
        let secret = identity_secret(&run, 0, "[1,2]".into());
        assert!(secret.metadata.owner_references.is_some());
    }

    #[test]
    fn a_centralized_run_gets_a_coordinator_and_a_run_file() {
        let run = TrainingRun::test();
        let deployment = coordinator_deployment(&run).unwrap();
        assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(1));
        assert!(coordinator_service(&run).is_some());
        let file = run_file(&run, &["Key1".into()]).unwrap();
        assert!(file.contains("run_id = \"moby-150m\""));
        assert!(file.contains("clients = [\"Key1\"]"));
        assert!(file.contains("total_steps = 5000"));

        let mut long = run.clone();
        long.metadata.name = Some("a".repeat(40));
        assert_eq!(
            run_file(&long, &[]),
            Err(SpecError::NameTooLong("a".repeat(40), 40))
        );
    }

    #[test]
    fn a_chain_run_has_no_coordinator_objects() {
        let text = include_str!("../../deploy/examples/trainingrun-solana.yaml");
        let mut run: TrainingRun = serde_yaml_ng::from_str(text).unwrap();
        run.metadata.namespace = Some("ml".into());
        run.metadata.uid = Some("u".into());
        assert!(coordinator_deployment(&run).is_none());
        assert!(coordinator_service(&run).is_none());
        let args = client_args(&run, 0).unwrap();
        assert!(args.contains(&"--coordinator=solana".to_owned()));
        assert!(args.contains(&"--run-id=moby-150m-devnet".to_owned()));
        assert!(
            args.contains(
                &"--run-authority=4oZA1X4phYLgaHYeLTMfSoVfawYkpPvwTAUDgUT4P4fM".to_owned()
            )
        );
    }
}
