//! The `TrainingRun` custom resource (`trainingruns.demeter.dev`, v1alpha1, short name `tr`):
//! what a cluster admin writes to start a decentralized training run, and the status the
//! operator reports back.
//!
//! Every field's doc comment is its `kubectl explain` text. Fields that would make replicas
//! disagree if they changed mid-run (the model, the optimizer, the coordinator) are immutable
//! through CEL rules, so the API server refuses such an edit before the operator sees it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, ResourceRequirements, SecretKeySelector, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A decentralized DeMo training run: client pods that train one model together, each sharing
/// only its compressed momentum, coordinated by the centralized coordinator or the Solana
/// coordinator program.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "demeter.dev",
    version = "v1alpha1",
    kind = "TrainingRun",
    plural = "trainingruns",
    shortname = "tr",
    namespaced,
    status = "TrainingRunStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.epoch"}"#,
    printcolumn = r#"{"name":"Step","type":"integer","jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.clients.readyText"}"#,
    printcolumn = r#"{"name":"Joined","type":"integer","jsonPath":".status.clients.joined"}"#,
    printcolumn = r#"{"name":"Loss","type":"number","jsonPath":".status.lastLoss"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.clients.replicas >= self.schedule.initMinClients").message("clients.replicas must be at least schedule.initMinClients, or the run never starts").field_path(".clients.replicas"))]
#[x_kube(validation = Rule::new("self.schedule.minClients <= self.schedule.initMinClients").message("schedule.minClients must not exceed schedule.initMinClients").field_path(".schedule.minClients"))]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunSpec {
    /// The model to train. Immutable: every replica must build the same one.
    #[x_kube(validation = Rule::new("self == oldSelf").message("model is immutable: create a new TrainingRun"))]
    pub model: ModelSpec,
    /// The training data. Defaults to the corpus shipped in the image.
    #[serde(default)]
    pub data: DataSpec,
    /// DeMo and the learning-rate schedule. Immutable: replicas stay identical only if every
    /// client applies the same optimizer.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("optimizer is immutable: create a new TrainingRun"))]
    pub optimizer: OptimizerSpec,
    /// Steps, batch sizes and the coordinator's timing.
    pub schedule: ScheduleSpec,
    /// What every client checks of the others' results beyond the screens it always runs.
    #[serde(default)]
    pub verification: VerificationSpec,
    /// The client pods.
    pub clients: ClientsSpec,
    /// Which coordinator runs the run. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("coordinator is immutable: create a new TrainingRun"))]
    pub coordinator: CoordinatorSpec,
    /// Where clients keep epoch-end checkpoints, to resume after a restart with no lost step.
    /// Without it a restarted client catches up from its peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Stops the run without deleting it: client pods are deleted and the run is paused (on
    /// chain, by the run authority). Setting it back to false resumes.
    #[serde(default)]
    pub suspend: bool,
    /// How failed client pods are restarted.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// What happens to the clients' keypair Secrets when the TrainingRun is deleted. They hold
    /// the points the clients earned, so by default they are kept.
    #[serde(default)]
    pub identity_policy: IdentityPolicy,
}

/// The model every client builds.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// A named LLaMA shape: tiny (~0.5M parameters, for tests), 20m, 150m or 1b.
    pub preset: ModelPreset,
    /// Seeds the initial weights and the order of the data. Every client uses the same.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ModelPreset {
    #[serde(rename = "tiny")]
    Tiny,
    #[serde(rename = "20m")]
    M20,
    #[serde(rename = "150m")]
    M150,
    #[serde(rename = "1b")]
    B1,
}

fn default_seed() -> u64 {
    1234
}

/// The token data.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataSpec {
    /// A volume with a dataset prepared by `demeter data prepare` (token shards, a validation
    /// split and the tokenizer's metadata), mounted read-only in every client. Without it the
    /// clients train on the corpus shipped in the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<DataVolume>,
    /// Tokens per training sample.
    #[serde(default = "default_sequence_length")]
    #[schemars(range(min = 8, max = 65536))]
    pub sequence_length: u32,
}

fn default_sequence_length() -> u32 {
    128
}

// By hand, not derived: a derived default would have `sequenceLength: 0`, below the schema's
// minimum, both in the CRD's `default` and in the pods of a run without `data`.
impl Default for DataSpec {
    fn default() -> Self {
        Self {
            volume: None,
            sequence_length: default_sequence_length(),
        }
    }
}

/// A PersistentVolumeClaim holding a prepared dataset.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataVolume {
    /// The claim's name, in the TrainingRun's namespace. It must allow ReadOnlyMany when
    /// clients run on several nodes.
    pub claim_name: String,
    /// The dataset's directory inside the volume.
    #[serde(default)]
    pub path: String,
}

/// DeMo's options and the learning-rate schedule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OptimizerSpec {
    /// Coefficients each client shares per DCT block.
    #[serde(default = "default_topk")]
    #[schemars(range(min = 1, max = 4096))]
    pub topk: u32,
    /// The DCT block side.
    #[serde(default = "default_chunk")]
    #[schemars(range(min = 1, max = 1024))]
    pub chunk: u32,
    /// The momentum decay β.
    #[serde(default = "default_beta")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub beta: f64,
    /// How the shared values travel: f32, bf16, or sign (one bit each).
    #[serde(default)]
    pub values: ValueEncoding,
    /// How every replica combines a round's results: mean (DeMo's own), clipped-mean (each
    /// result scaled to at most the median norm) or sign-vote (a per-weight majority); the
    /// robust two bound what a dishonest client can do (docs/verification.md).
    #[serde(default)]
    pub aggregation: Aggregation,
    /// The gradient norm clip.
    #[serde(default = "default_grad_clip")]
    #[schemars(range(min = 0.0))]
    pub grad_clip: f64,
    /// The learning-rate schedule.
    #[serde(default)]
    pub learning_rate: LearningRate,
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            topk: default_topk(),
            chunk: default_chunk(),
            beta: default_beta(),
            values: ValueEncoding::default(),
            aggregation: Aggregation::default(),
            grad_clip: default_grad_clip(),
            learning_rate: LearningRate::default(),
        }
    }
}

fn default_topk() -> u32 {
    32
}
fn default_chunk() -> u32 {
    64
}
fn default_beta() -> f64 {
    0.999
}
fn default_grad_clip() -> f64 {
    1.0
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    #[default]
    F32,
    Bf16,
    Sign,
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Aggregation {
    #[default]
    Mean,
    ClippedMean,
    SignVote,
}

/// The learning rate over the run: linear warmup, then the schedule.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearningRate {
    /// The peak rate.
    #[serde(default = "default_peak")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub peak: f64,
    /// The shape after warmup: constant, linear, cosine or wsd (warmup-stable-decay).
    #[serde(default)]
    pub schedule: LrSchedule,
    /// Steps of linear warmup.
    #[serde(default = "default_warmup_steps")]
    pub warmup_steps: u64,
    /// The final rate as a fraction of the peak.
    #[serde(default = "default_min_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_ratio: f64,
}

impl Default for LearningRate {
    fn default() -> Self {
        Self {
            peak: default_peak(),
            schedule: LrSchedule::default(),
            warmup_steps: default_warmup_steps(),
            min_ratio: default_min_ratio(),
        }
    }
}

fn default_peak() -> f64 {
    2e-3
}
fn default_warmup_steps() -> u64 {
    5
}
fn default_min_ratio() -> f64 {
    0.1
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    Constant,
    Linear,
    #[default]
    Cosine,
    Wsd,
}

/// How long the run is and how the coordinator times it. Becomes the coordinator's config.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Optimizer steps of the whole run. May grow while the run is paused or waiting.
    #[schemars(range(min = 1))]
    pub total_steps: u64,
    /// Samples per step over all clients, ramping linearly from `start` to `end`.
    pub global_batch: GlobalBatch,
    /// Clients needed to start an epoch.
    #[serde(default = "default_init_min_clients")]
    #[schemars(range(min = 1, max = 256))]
    pub init_min_clients: u16,
    /// Clients needed to keep an epoch going; fewer ends it early.
    #[serde(default = "default_min_clients")]
    #[schemars(range(min = 1, max = 256))]
    pub min_clients: u16,
    /// Witnesses elected per round (quorum: two thirds of them).
    #[serde(default = "default_witness_nodes")]
    #[schemars(range(min = 1, max = 32))]
    pub witness_nodes: u16,
    /// Seconds for clients to report ready before an epoch's first round.
    #[serde(default = "default_warmup_seconds")]
    #[schemars(range(min = 1))]
    pub warmup_seconds: u64,
    /// Longest a round's training may take, in seconds.
    #[serde(default = "default_round_train_seconds")]
    #[schemars(range(min = 1))]
    pub round_train_seconds: u64,
    /// Seconds witnesses have to report after training.
    #[serde(default = "default_round_witness_seconds")]
    #[schemars(range(min = 1))]
    pub round_witness_seconds: u64,
    /// Seconds between epochs, while clients checkpoint.
    #[serde(default = "default_cooldown_seconds")]
    #[schemars(range(min = 1))]
    pub cooldown_seconds: u64,
    /// Length of an epoch in seconds; membership changes take effect between epochs.
    #[serde(default = "default_epoch_seconds")]
    #[schemars(range(min = 1))]
    pub epoch_seconds: u64,
    /// Seconds to wait for more members once enough have joined.
    #[serde(default)]
    pub join_window_seconds: u64,
    /// Points shared by the epoch's healthy clients at each epoch's end.
    #[serde(default = "default_points_per_epoch")]
    pub points_per_epoch: u64,
}

/// A batch size that ramps linearly over the first steps.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalBatch {
    #[schemars(range(min = 1))]
    pub start: u64,
    #[schemars(range(min = 1))]
    pub end: u64,
    /// Steps over which the batch size goes from `start` to `end`.
    #[serde(default)]
    pub ramp_steps: u64,
}

fn default_init_min_clients() -> u16 {
    2
}
fn default_min_clients() -> u16 {
    1
}
fn default_witness_nodes() -> u16 {
    3
}
fn default_warmup_seconds() -> u64 {
    60
}
fn default_round_train_seconds() -> u64 {
    60
}
fn default_round_witness_seconds() -> u64 {
    5
}
fn default_cooldown_seconds() -> u64 {
    10
}
fn default_epoch_seconds() -> u64 {
    3600
}
fn default_points_per_epoch() -> u64 {
    1000
}

/// The client pods: one per replica, each with its own keypair and replica of the model.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientsSpec {
    /// How many clients.
    #[schemars(range(min = 1, max = 256))]
    pub replicas: u16,
    /// The trainer image (it runs `demeter train`).
    #[schemars(length(min = 1))]
    pub image: String,
    /// Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Resources of each client, e.g. `limits: {nvidia.com/gpu: 1}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra environment variables for the trainer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// The port each client serves results and /metrics on.
    #[serde(default = "default_client_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: u16,
}

fn default_client_port() -> u16 {
    7070
}

/// Exactly one of `centralized` and `solana`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.centralized) != has(self.solana)").message("set exactly one of coordinator.centralized and coordinator.solana"))]
pub struct CoordinatorSpec {
    /// The operator runs the coordinator as a Deployment (`demeter coordinator serve`) beside
    /// the clients: no chain, no tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub centralized: Option<CentralizedCoordinator>,
    /// The run lives in the coordinator program on a Solana cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solana: Option<SolanaCoordinator>,
}

/// The centralized coordinator's options.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CentralizedCoordinator {
    /// The coordinator's image; default: the clients' image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A run on a Solana cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.crank || has(self.authoritySecretRef)").message("coordinator.solana.crank needs authoritySecretRef: that wallet pays for the ticks").field_path(".crank"))]
pub struct SolanaCoordinator {
    /// The cluster's JSON-RPC URL.
    pub rpc_url: String,
    /// The cluster's websocket URL; default: derived from rpcUrl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_url: Option<String>,
    /// The coordinator program's address (base58).
    pub program_id: String,
    /// The run's name on chain, at most 32 bytes. Names are scoped by their authority.
    #[schemars(length(min = 1, max = 32))]
    pub run_id: String,
    /// The run authority's public key (base58, `solana-keygen pubkey WALLET.json`): the run is
    /// the one this key named runId, so a run of the same name made by anyone else is never
    /// followed or joined. With authoritySecretRef, the Secret's wallet must be this key.
    #[schemars(length(min = 32, max = 44))]
    pub authority: String,
    /// A Secret key holding the run authority's keypair (a Solana CLI wallet file), which pays
    /// the operator's transactions. With it the operator creates the run on chain if it does
    /// not exist (joins gated to this run's clients), grants joins to clients added later,
    /// writes schedule changes while the run waits or is paused, pauses it on suspend and when
    /// the TrainingRun is deleted, and resumes it. It never closes the run: the run account
    /// holds the clients' points. Without it the run must exist already and the operator only
    /// follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_secret_ref: Option<SecretKeySelector>,
    /// Send the tick transactions that advance the run when they are due (clients do too),
    /// paid by the authority's wallet.
    #[serde(default)]
    pub crank: bool,
    /// Lamports each client pays into the run account when it joins, when the operator creates
    /// the run: refunded when it withdraws (trainers do when the run finishes), lost if it is
    /// dropped (not ready in time, or unseen by the witnesses). Makes joining with throwaway
    /// keys cost something; 0 for none.
    #[serde(default)]
    pub join_deposit_lamports: u64,
}

/// The checks of results a run asks of its clients (docs/verification.md). Becomes part of the
/// coordinator's config, which judges verdicts by it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationSpec {
    /// Score a seeded one in this many of each round's results against data: the loss a
    /// result takes off its sender's assigned batch beyond a control batch. Catches noise and
    /// updates trained on other data, which the screens cannot see. 0 scores nothing, 1 every
    /// result; each scored result costs every client four forward passes of two samples.
    #[serde(default)]
    #[schemars(range(min = 0, max = 256))]
    pub score_one_in: u16,
    /// The round's verifiers recompute each result with a chance of one in this many: each
    /// client commits to the momentum its result was computed from and serves it for a few
    /// rounds; a verifier fetches it, retrains the sender's assigned samples and compares the
    /// payload bit for bit. Catches any result not computed from the assigned batch, and a
    /// sender that does not serve its momentum. 0 recomputes nothing; each check costs each of
    /// the round's verifiers one training step and the sender's momentum (four bytes a
    /// parameter) over the network.
    #[serde(default)]
    pub spot_check_one_in: u16,
    /// How far, per mille, a recompute may stray from the result it checks, for clients on
    /// different kinds of device (GPU models, or GPUs and CPUs), whose arithmetic differs in the
    /// last bits. 0 (the default) asks for the same bytes: right when every client runs the
    /// same image on the same kind of device. Otherwise the recompute must pick all but this
    /// share of the result's coefficients with the same sign, and the values, like the
    /// sender's next momentum, must be within this share of the step's gradient.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub spot_check_tolerance: u16,
}

/// Where epoch-end checkpoints go.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// A PersistentVolumeClaim (ReadWriteMany when clients run on several nodes); each client
    /// writes under its own directory.
    pub claim_name: String,
    /// The directory inside the volume.
    #[serde(default)]
    pub path: String,
}

/// How failed client pods are restarted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Restarts of one client before the run is marked Failed.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The first restart's delay in seconds; it doubles with every restart, up to 5 minutes.
    #[serde(default = "default_backoff_seconds")]
    #[schemars(range(min = 1))]
    pub backoff_seconds: u32,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        Self {
            max_restarts: default_max_restarts(),
            backoff_seconds: default_backoff_seconds(),
        }
    }
}

fn default_max_restarts() -> u32 {
    5
}
fn default_backoff_seconds() -> u32 {
    10
}

/// What happens to client keypair Secrets when the run is deleted.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum IdentityPolicy {
    /// Keep them (they hold earned points); delete them by hand when no longer wanted.
    #[default]
    Retain,
    /// Delete them with the TrainingRun.
    Delete,
}

/// What the operator observed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRunStatus {
    /// Pending, Running, Suspended, Succeeded, Failed or Invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Ready, Progressing, ChainSynced and Degraded, each with its observedGeneration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub step: u64,
    /// Tokens trained over all clients.
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub clients: ClientCounts,
    /// The last loss a client reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_loss: Option<f64>,
    /// How long the last round took, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_round_seconds: Option<f64>,
    /// The step of the model the run's witnesses attested last (late joiners start from it);
    /// in solana mode `chain.attestedModel` also has its weights hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_step: Option<u64>,
    /// The on-chain run, in solana mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainStatus>,
    /// Clients the operator restarted after a failure, since the spec last changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["index"]))]
    pub restarts: Vec<ClientRestarts>,
}

/// One client's restarts: its failed pods, each deleted and recreated after a backoff.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientRestarts {
    /// The client's index (its pod is `RUN-client-INDEX`).
    pub index: u16,
    /// Failures since the spec last changed; past failurePolicy.maxRestarts the client is not
    /// restarted again.
    pub count: u32,
    /// When the last failure was seen.
    pub last_failure_time: Time,
    /// Why the last pod failed, e.g. `OOMKilled (exit code 137)`.
    pub last_failure: String,
    /// The spec generation the count belongs to.
    pub generation: i64,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    Pending,
    Running,
    Suspended,
    Succeeded,
    Failed,
    Invalid,
}

/// Clients by state.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientCounts {
    /// spec.clients.replicas.
    pub desired: u16,
    /// Pods running and ready.
    pub ready: u16,
    /// Members of the run in the coordinator.
    pub joined: u16,
    /// Participants of the last closed round whose results a witness quorum saw.
    pub witnessed: u16,
    /// Members dropped by health checks or time-outs.
    pub dropped: u16,
    /// Members a verdict quorum ejected for faked results: their points are slashed and they
    /// never rejoin.
    pub ejected: u16,
    /// `ready/desired`, for `kubectl get`.
    pub ready_text: String,
}

/// The run's reward pool, as last read. Amounts are in the mint's smallest unit.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RewardsStatus {
    /// The pool's address.
    pub pool: String,
    /// The SPL mint it pays.
    pub mint: String,
    pub tokens_per_point: u64,
    /// What the pool's escrow holds.
    pub escrow: u64,
    /// Paid to members so far.
    pub paid: u64,
    /// Owed to members now: more than the escrow holds means claims will fall short.
    pub owed: u64,
}

/// A model the run's witnesses attested.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestedModel {
    /// The rounds applied to it.
    pub step: u64,
    /// SHA-256 of its weights (names and bytes in model order), hex.
    pub weights_hash: String,
}

/// The run on chain, as last read.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainStatus {
    /// The run account's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_account: Option<String>,
    /// The coordinator's state: WaitingForMembers, Warmup, RoundTrain, RoundWitness,
    /// Cooldown, Finished or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// A pause was asked for; it takes effect when the round under way and the epoch's
    /// cooldown end.
    #[serde(default)]
    pub pause_pending: bool,
    /// Points recorded for all members (the treasurer pays against them).
    #[serde(default)]
    pub points: u64,
    /// Points taken back from members for cheating; never paid.
    #[serde(default)]
    pub slashed: u64,
    /// The keys of members a verdict quorum ejected for faked results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ejected: Vec<String>,
    /// The model the witnesses of an epoch's last round attested: clients catching up accept
    /// only a snapshot of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_model: Option<AttestedModel>,
    /// The run's reward pool on the treasurer program, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewards: Option<RewardsStatus>,
    /// The slot of the last read.
    #[serde(default)]
    pub slot: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}
