//! What a `TrainingRun`'s spec means to the programs it runs: the checks the CRD's schema cannot
//! make ([`validate`]), the coordinator's `Config` and run file, and each client's `demeter
//! train` command line. Pure functions of the run; the Kubernetes objects that carry them are
//! built in `children`.

use kube::ResourceExt;
use solana_sdk::pubkey::Pubkey;

use demeter_coordinator_core::Config;

use crate::children::{
    CHECKPOINT_DIR, COORDINATOR_PORT, DATA_DIR, IDENTITY_DIR, KEYPAIR_KEY, Names,
};
use crate::crd::{
    Aggregation, LrSchedule, ModelPreset, SolanaCoordinator, TrainingRun, TrainingRunSpec,
    ValueEncoding,
};

/// Why a spec cannot be turned into objects. Reported on the TrainingRun, never retried
/// until the spec changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error(
        "metadata.name {0:?} is {1} bytes; a centralized run's id is its name, at most 32 bytes: \
         choose a shorter name"
    )]
    NameTooLong(String, usize),
    #[error("the TrainingRun has no namespace")]
    NoNamespace,
    /// The coordinator would refuse the config the schedule and verification make.
    #[error("{0}: fix the spec's field named")]
    Schedule(String),
    #[error(
        "coordinator.solana.programId {given:?}: this operator speaks to the coordinator \
         program at {expected}; use that address, or an operator built for your deployment"
    )]
    ProgramId { given: String, expected: String },
    #[error(
        "coordinator.solana.runId {0:?} is {1} bytes in UTF-8; the program stores at most 32: \
         choose a shorter id"
    )]
    RunIdTooLong(String, usize),
    #[error(
        "coordinator.solana.authority {0:?} is not a base58 public key: give the run \
         authority's key (solana-keygen pubkey WALLET.json)"
    )]
    Authority(String),
    #[error("coordinator: set exactly one of coordinator.centralized and coordinator.solana")]
    CoordinatorChoice,
    #[error(
        "clients.replicas {replicas} is below schedule.initMinClients {init_min_clients}: the run \
         could never start; raise replicas or lower initMinClients"
    )]
    TooFewReplicas {
        replicas: u16,
        init_min_clients: u16,
    },
    /// A setting every client would refuse at start, with its field path.
    #[error("{0}")]
    Trainer(String),
}

/// The largest DCT block side a client accepts (`demeter train --chunk`).
pub const MAX_CHUNK: u32 = 1024;
/// The shortest training sequence the CRD allows.
pub const MIN_SEQUENCE_LENGTH: u32 = 8;

/// What `demeter train` would refuse of the spec's optimizer and data, so a run that cannot
/// start is Invalid at once instead of a crash loop of client pods.
fn check_trainer_settings(spec: &TrainingRunSpec) -> Result<(), SpecError> {
    let o = &spec.optimizer;
    let lr = &o.learning_rate;
    let problem = if !(lr.peak.is_finite() && lr.peak > 0.0) {
        format!("optimizer.learningRate.peak {}: must be above 0", lr.peak)
    } else if !(0.0..=1.0).contains(&lr.min_ratio) {
        format!(
            "optimizer.learningRate.minRatio {}: must be in [0, 1]",
            lr.min_ratio
        )
    } else if lr.warmup_steps >= spec.schedule.total_steps {
        format!(
            "optimizer.learningRate.warmupSteps {}: must be below schedule.totalSteps {}",
            lr.warmup_steps, spec.schedule.total_steps
        )
    } else if !(1..=MAX_CHUNK).contains(&o.chunk) {
        format!("optimizer.chunk {}: must be in 1..={MAX_CHUNK}", o.chunk)
    } else if o.topk == 0 {
        "optimizer.topk 0: at least one coefficient per block must be shared".to_owned()
    } else if !(0.0..=1.0).contains(&o.beta) {
        format!("optimizer.beta {}: must be in [0, 1]", o.beta)
    } else if !(o.grad_clip.is_finite() && o.grad_clip >= 0.0) {
        format!(
            "optimizer.gradClip {}: must be finite and >= 0",
            o.grad_clip
        )
    } else if spec.data.sequence_length < MIN_SEQUENCE_LENGTH {
        format!(
            "data.sequenceLength {}: must be at least {MIN_SEQUENCE_LENGTH}",
            spec.data.sequence_length
        )
    } else {
        return Ok(());
    };
    Err(SpecError::Trainer(problem))
}

/// Checks what the CRD's schema cannot: everything the builders need from the spec and the
/// object. A run that passes gets all its children built.
pub fn validate(run: &TrainingRun) -> Result<(), SpecError> {
    centralized_run_id(run)?;
    run.namespace().ok_or(SpecError::NoNamespace)?;
    let coordinator = &run.spec.coordinator;
    if coordinator.centralized.is_some() == coordinator.solana.is_some() {
        return Err(SpecError::CoordinatorChoice);
    }
    coordinator_config(&run.spec)
        .validate()
        .map_err(|error| SpecError::Schedule(in_spec_terms(&error.to_string())))?;
    let (replicas, init_min_clients) = (
        run.spec.clients.replicas,
        run.spec.schedule.init_min_clients,
    );
    if replicas < init_min_clients {
        return Err(SpecError::TooFewReplicas {
            replicas,
            init_min_clients,
        });
    }
    check_trainer_settings(&run.spec)?;
    if let Some(solana) = &run.spec.coordinator.solana {
        solana_run_id(solana)?;
        solana_authority(solana)?;
        if solana.program_id != demeter_coordinator::ID.to_string() {
            return Err(SpecError::ProgramId {
                given: solana.program_id.clone(),
                expected: demeter_coordinator::ID.to_string(),
            });
        }
    }
    Ok(())
}

/// The run's id on chain, zero-padded to 32 bytes as the program stores it.
pub fn solana_run_id(solana: &SolanaCoordinator) -> Result<[u8; 32], SpecError> {
    demeter_coordinator_core::accounts::run_id_from_name(&solana.run_id)
        .ok_or_else(|| SpecError::RunIdTooLong(solana.run_id.clone(), solana.run_id.len()))
}

/// The run authority's public key, which scopes the run's name on chain.
pub fn solana_authority(solana: &SolanaCoordinator) -> Result<Pubkey, SpecError> {
    solana
        .authority
        .parse()
        .map_err(|_| SpecError::Authority(solana.authority.clone()))
}

/// A coordinator config error with the spec's field names in place of the config's.
fn in_spec_terms(message: &str) -> String {
    // Longest first: `min_clients` is inside `init_min_clients`.
    const FIELDS: [(&str, &str); 16] = [
        (
            "global_batch_size_ramp_steps",
            "schedule.globalBatch.rampSteps",
        ),
        ("global_batch_size_start", "schedule.globalBatch.start"),
        ("global_batch_size_end", "schedule.globalBatch.end"),
        ("max_round_train_time", "schedule.roundTrainSeconds"),
        ("round_witness_time", "schedule.roundWitnessSeconds"),
        ("init_min_clients", "schedule.initMinClients"),
        ("points_per_epoch", "schedule.pointsPerEpoch"),
        ("cooldown_time", "schedule.cooldownSeconds"),
        ("witness_nodes", "schedule.witnessNodes"),
        ("warmup_time", "schedule.warmupSeconds"),
        ("total_steps", "schedule.totalSteps"),
        ("min_clients", "schedule.minClients"),
        ("epoch_time", "schedule.epochSeconds"),
        ("score_one_in", "verification.scoreOneIn"),
        ("spot_check_tolerance", "verification.spotCheckTolerance"),
        ("spot_check_one_in", "verification.spotCheckOneIn"),
    ];
    let mut message = message.replace("join_window", "schedule.joinWindowSeconds");
    for (config, spec) in FIELDS {
        message = message.replace(config, spec);
    }
    message
}

/// The run's id on the centralized coordinator: its name.
pub fn centralized_run_id(run: &TrainingRun) -> Result<String, SpecError> {
    let name = run.name_any();
    if name.len() > 32 {
        return Err(SpecError::NameTooLong(name.clone(), name.len()));
    }
    Ok(name)
}

/// The coordinator's config from the spec's schedule and verification: what the run file
/// carries and what the operator writes on chain.
pub fn coordinator_config(spec: &TrainingRunSpec) -> Config {
    let s = &spec.schedule;
    Config {
        warmup_time: s.warmup_seconds,
        cooldown_time: s.cooldown_seconds,
        max_round_train_time: s.round_train_seconds,
        round_witness_time: s.round_witness_seconds,
        epoch_time: s.epoch_seconds,
        join_window: s.join_window_seconds,
        total_steps: s.total_steps,
        global_batch_size_start: s.global_batch.start,
        global_batch_size_end: s.global_batch.end,
        global_batch_size_ramp_steps: s.global_batch.ramp_steps,
        points_per_epoch: s.points_per_epoch,
        init_min_clients: s.init_min_clients,
        min_clients: s.min_clients,
        witness_nodes: s.witness_nodes,
        score_one_in: spec.verification.score_one_in,
        spot_check_one_in: spec.verification.spot_check_one_in,
        spot_check_tolerance: spec.verification.spot_check_tolerance,
        _padding: [0; 4],
    }
}

/// The run file `demeter coordinator serve` reads: the run's id, the coordinator config from
/// the schedule, and the clients' public keys as the allowlist. Serialized from the core's
/// `Config`, so its fields are the config's own; `e2e/tests/operator_contract.rs` reads it back
/// with the trainer's parser.
pub fn run_file(run: &TrainingRun, client_keys: &[String]) -> Result<String, SpecError> {
    #[derive(serde::Serialize)]
    struct RunFile<'a> {
        run_id: &'a str,
        clients: &'a [String],
        config: Config,
    }
    let run_id = centralized_run_id(run)?;
    let file = RunFile {
        run_id: &run_id,
        clients: client_keys,
        config: coordinator_config(&run.spec),
    };
    let body = toml::to_string(&file).expect("a run file serializes: strings, lists, numbers");
    Ok(format!(
        "# Written by demeter-operator from TrainingRun {run_id}.\n{body}"
    ))
}

/// The `demeter train` arguments of client `index`.
pub fn client_args(run: &TrainingRun, index: u16) -> Result<Vec<String>, SpecError> {
    let spec = &run.spec;
    let name = run.name_any();
    let namespace = run.namespace().ok_or(SpecError::NoNamespace)?;
    let names = Names(&name);
    let port = spec.clients.port;
    let mut args = vec!["train".to_owned()];
    match (&spec.coordinator.centralized, &spec.coordinator.solana) {
        (_, Some(solana)) => args.extend([
            "--coordinator=solana".to_owned(),
            format!("--rpc={}", solana.rpc_url),
            format!("--program-id={}", solana.program_id),
            format!("--run-authority={}", solana.authority),
            format!("--run-id={}", solana.run_id),
        ]),
        _ => args.push(format!(
            "--coordinator=tcp://{}.{namespace}.svc:{COORDINATOR_PORT}",
            names.coordinator()
        )),
    }
    args.extend([
        format!("--wallet={IDENTITY_DIR}/{KEYPAIR_KEY}"),
        format!("--listen=0.0.0.0:{port}"),
        // Kubernetes expands $(POD_IP) from the container's environment.
        format!("--advertise=$(POD_IP):{port}"),
        format!("--peers-dns={}.{namespace}.svc:{port}", names.peers()),
    ]);
    args.extend(model_args(spec));
    if let Some(volume) = &spec.data.volume {
        args.push(format!("--data={}", join(DATA_DIR, &volume.path)));
    }
    if let Some(checkpoint) = &spec.checkpoint {
        let dir = join(
            &join(CHECKPOINT_DIR, &checkpoint.path),
            &names.client(index),
        );
        args.push(format!("--checkpoint-dir={dir}"));
    }
    Ok(args)
}

/// The settings every client must share, as `demeter train` flags.
fn model_args(spec: &TrainingRunSpec) -> Vec<String> {
    let o = &spec.optimizer;
    let lr = &o.learning_rate;
    vec![
        format!("--preset={}", preset_name(spec.model.preset)),
        format!("--seed={}", spec.model.seed),
        format!("--seq-len={}", spec.data.sequence_length),
        format!("--lr={}", lr.peak),
        format!("--schedule={}", schedule_name(lr.schedule)),
        format!("--warmup={}", lr.warmup_steps),
        format!("--min-lr-ratio={}", lr.min_ratio),
        format!("--topk={}", o.topk),
        format!("--chunk={}", o.chunk),
        format!("--beta={}", o.beta),
        format!("--values={}", values_name(o.values)),
        format!("--aggregation={}", aggregation_name(o.aggregation)),
        format!("--grad-clip={}", o.grad_clip),
    ]
}

fn preset_name(preset: ModelPreset) -> &'static str {
    match preset {
        ModelPreset::Tiny => "tiny",
        ModelPreset::M20 => "20m",
        ModelPreset::M150 => "150m",
        ModelPreset::B1 => "1b",
    }
}

fn schedule_name(schedule: LrSchedule) -> &'static str {
    match schedule {
        LrSchedule::Constant => "constant",
        LrSchedule::Linear => "linear",
        LrSchedule::Cosine => "cosine",
        LrSchedule::Wsd => "wsd",
    }
}

fn values_name(values: ValueEncoding) -> &'static str {
    match values {
        ValueEncoding::F32 => "f32",
        ValueEncoding::Bf16 => "bf16",
        ValueEncoding::Sign => "sign",
    }
}

fn aggregation_name(aggregation: Aggregation) -> &'static str {
    match aggregation {
        Aggregation::Mean => "mean",
        Aggregation::ClippedMean => "clipped-mean",
        Aggregation::SignVote => "sign-vote",
    }
}

/// `path` under `dir`, as a volume mount sees it (`path` empty: `dir` itself).
pub(crate) fn join(dir: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    if path.is_empty() {
        dir.to_owned()
    } else {
        format!("{dir}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_clients_would_refuse_are_invalid_with_the_field_named() {
        assert_eq!(validate(&TrainingRun::test()), Ok(()));
        let invalid = |change: &dyn Fn(&mut TrainingRun)| {
            let mut run = TrainingRun::test();
            change(&mut run);
            validate(&run).unwrap_err()
        };
        assert_eq!(
            invalid(&|run| run.spec.clients.replicas = 1),
            SpecError::TooFewReplicas {
                replicas: 1,
                init_min_clients: 3
            }
        );
        let solana = {
            let text = include_str!("../../deploy/examples/trainingrun-solana.yaml");
            serde_yaml_ng::from_str::<TrainingRun>(text)
                .unwrap()
                .spec
                .coordinator
                .solana
        };
        assert_eq!(
            invalid(&|run| run.spec.coordinator.solana = solana.clone()),
            SpecError::CoordinatorChoice
        );
        assert_eq!(
            invalid(&|run| run.spec.coordinator.centralized = None),
            SpecError::CoordinatorChoice
        );
        for (change, field) in [
            (
                (&|run: &mut TrainingRun| run.spec.optimizer.learning_rate.peak = -0.5)
                    as &dyn Fn(&mut TrainingRun),
                "optimizer.learningRate.peak -0.5",
            ),
            (
                &|run: &mut TrainingRun| run.spec.optimizer.chunk = 4096,
                "optimizer.chunk 4096",
            ),
            (
                &|run: &mut TrainingRun| run.spec.optimizer.learning_rate.warmup_steps = 1 << 40,
                "optimizer.learningRate.warmupSteps",
            ),
            (
                &|run: &mut TrainingRun| run.spec.data.sequence_length = 0,
                "data.sequenceLength 0",
            ),
            (
                &|run: &mut TrainingRun| run.spec.verification.score_one_in = 300,
                "verification.scoreOneIn = 300",
            ),
            (
                &|run: &mut TrainingRun| run.spec.verification.spot_check_tolerance = 5,
                "verification.spotCheckTolerance = 5: must be 0 while verification.spotCheckOneIn is 0",
            ),
        ] {
            let error = invalid(change).to_string();
            assert!(error.contains(field), "{error}");
        }
    }

    #[test]
    fn a_chain_run_names_its_authority_by_a_public_key() {
        let mut run = TrainingRun::test_solana();
        run.spec.coordinator.solana.as_mut().unwrap().authority = "not-a-key".into();
        let error = validate(&run).unwrap_err().to_string();
        assert!(
            error.starts_with(
                "coordinator.solana.authority \"not-a-key\" is not a base58 public key"
            ),
            "{error}"
        );
    }
}
