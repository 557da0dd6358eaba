//! The operator's Prometheus metrics: its own reconcile loop, and per run the health of
//! aggregation (clients by state, step, loss, round time). A deleted run's series
//! are removed with it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::chain::ChainView;
use crate::crd::{Phase, TrainingRunStatus};

const RUN_LABELS: &[&str] = &["namespace", "name"];
const CLIENT_LABELS: &[&str] = &["namespace", "name", "client"];
const PHASES: [Phase; 6] = [
    Phase::Pending,
    Phase::Running,
    Phase::Suspended,
    Phase::Succeeded,
    Phase::Failed,
    Phase::Invalid,
];

pub struct Metrics {
    registry: Registry,
    reconciles: IntCounter,
    failures: IntCounterVec,
    duration: HistogramVec,
    runs: IntGaugeVec,
    step: IntGaugeVec,
    epoch: IntGaugeVec,
    tokens: IntGaugeVec,
    loss: GaugeVec,
    clients: IntGaugeVec,
    witness_quorum: GaugeVec,
    round_seconds: GaugeVec,
    restarts: IntGaugeVec,
    points: IntGaugeVec,
    slashed: IntGaugeVec,
    rewards_paid: IntGaugeVec,
    rewards_owed: IntGaugeVec,
    rewards_escrow: IntGaugeVec,
    client_points: IntGaugeVec,
    client_paid: IntGaugeVec,
    chain_slot: IntGaugeVec,
    chain_slot_lag: IntGaugeVec,
    attested_step: IntGaugeVec,
    chain_last_sync: GaugeVec,
    chain_errors: IntCounterVec,
    chain_transactions: IntCounterVec,
    /// Each run's phase, to count runs by phase.
    phases: Mutex<BTreeMap<(String, String), Phase>>,
    /// The members each run's per-client series name, to remove them with the run.
    members: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("demeter_operator".into()), None)
            .expect("a valid registry prefix");
        let run_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), RUN_LABELS).expect("valid metric")
        };
        let client_gauge = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), CLIENT_LABELS).expect("valid metric")
        };
        let metrics = Self {
            reconciles: IntCounter::new("reconciles_total", "Reconciliations of TrainingRuns.")
                .expect("valid metric"),
            failures: IntCounterVec::new(
                Opts::new(
                    "reconcile_failures_total",
                    "Failed reconciliations, by error.",
                ),
                &["error"],
            )
            .expect("valid metric"),
            duration: HistogramVec::new(
                HistogramOpts::new("reconcile_duration_seconds", "Time to reconcile one run.")
                    .buckets(vec![
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ]),
                &[],
            )
            .expect("valid metric"),
            runs: IntGaugeVec::new(Opts::new("runs", "TrainingRuns by phase."), &["phase"])
                .expect("valid metric"),
            step: run_gauge("run_step", "The run's optimizer step."),
            epoch: run_gauge("run_epoch", "The run's epoch."),
            tokens: run_gauge("run_tokens", "Tokens trained over all clients."),
            loss: GaugeVec::new(
                Opts::new("run_loss", "The last loss a client reported."),
                RUN_LABELS,
            )
            .expect("valid metric"),
            clients: IntGaugeVec::new(
                Opts::new(
                    "run_clients",
                    "Clients by state: desired, ready, joined, witnessed, dropped, ejected.",
                ),
                &["namespace", "name", "state"],
            )
            .expect("valid metric"),
            witness_quorum: GaugeVec::new(
                Opts::new(
                    "run_witness_quorum_ratio",
                    "Witnessed clients over joined clients in the last closed round.",
                ),
                RUN_LABELS,
            )
            .expect("valid metric"),
            round_seconds: GaugeVec::new(
                Opts::new(
                    "run_round_duration_seconds",
                    "How long the last round took.",
                ),
                RUN_LABELS,
            )
            .expect("valid metric"),
            restarts: run_gauge(
                "run_client_restarts",
                "Client pod restarts since the spec last changed.",
            ),
            points: run_gauge(
                "run_points",
                "Points the coordinator recorded for the run's members (solana mode).",
            ),
            slashed: run_gauge(
                "run_slashed_points",
                "Points taken back from the run's members for cheating, never paid (solana mode).",
            ),
            rewards_paid: run_gauge(
                "run_rewards_paid_units",
                "Token units the run's reward pool paid its members (solana mode, with a pool).",
            ),
            rewards_owed: run_gauge(
                "run_rewards_owed_units",
                "Token units the run's reward pool owes its members now.",
            ),
            rewards_escrow: run_gauge(
                "run_rewards_escrow_units",
                "Token units the run's reward pool holds to pay with.",
            ),
            client_points: client_gauge(
                "client_points",
                "Points a member of the run earned, by its key (solana mode).",
            ),
            client_paid: client_gauge(
                "client_rewards_paid_units",
                "Token units the run's reward pool paid a member, by its key.",
            ),
            chain_slot: run_gauge(
                "run_chain_slot",
                "The slot of the last read of the run account.",
            ),
            chain_slot_lag: run_gauge(
                "run_chain_slot_lag",
                "Slots the last read of the run account trailed the RPC node's newest slot.",
            ),
            attested_step: run_gauge(
                "run_attested_step",
                "The step of the model the run's witnesses attested last (solana; 0: none yet).",
            ),
            chain_last_sync: GaugeVec::new(
                Opts::new(
                    "run_chain_last_sync_timestamp_seconds",
                    "When the run account was last read (unix time); alert on its age.",
                ),
                RUN_LABELS,
            )
            .expect("valid metric"),
            chain_errors: IntCounterVec::new(
                Opts::new(
                    "run_chain_sync_errors_total",
                    "Chain syncs that failed, by reason (the ChainSynced condition's).",
                ),
                &["namespace", "name", "reason"],
            )
            .expect("valid metric"),
            chain_transactions: IntCounterVec::new(
                Opts::new(
                    "run_chain_transactions_total",
                    "Transactions the operator landed for the run, by instruction.",
                ),
                &["namespace", "name", "instruction"],
            )
            .expect("valid metric"),
            registry,
            phases: Mutex::default(),
            members: Mutex::default(),
        };
        let r = &metrics.registry;
        for collector in [
            Box::new(metrics.reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.failures.clone()),
            Box::new(metrics.duration.clone()),
            Box::new(metrics.runs.clone()),
            Box::new(metrics.step.clone()),
            Box::new(metrics.epoch.clone()),
            Box::new(metrics.tokens.clone()),
            Box::new(metrics.loss.clone()),
            Box::new(metrics.clients.clone()),
            Box::new(metrics.witness_quorum.clone()),
            Box::new(metrics.round_seconds.clone()),
            Box::new(metrics.restarts.clone()),
            Box::new(metrics.points.clone()),
            Box::new(metrics.slashed.clone()),
            Box::new(metrics.rewards_paid.clone()),
            Box::new(metrics.rewards_owed.clone()),
            Box::new(metrics.rewards_escrow.clone()),
            Box::new(metrics.client_points.clone()),
            Box::new(metrics.client_paid.clone()),
            Box::new(metrics.chain_slot.clone()),
            Box::new(metrics.chain_slot_lag.clone()),
            Box::new(metrics.attested_step.clone()),
            Box::new(metrics.chain_last_sync.clone()),
            Box::new(metrics.chain_errors.clone()),
            Box::new(metrics.chain_transactions.clone()),
        ] {
            r.register(collector).expect("metric names are unique");
        }
        for phase in PHASES {
            metrics.runs.with_label_values(&[phase_name(phase)]).set(0);
        }
        for error in crate::controller::Error::METRIC_LABELS {
            metrics.failures.with_label_values(&[error]);
        }
        metrics
    }

    /// One reconciliation and how long it took.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration
            .with_label_values(&[] as &[&str])
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, error: &str) {
        self.failures.with_label_values(&[error]).inc();
    }

    /// Mirrors a run's status.
    pub fn observe(&self, namespace: &str, name: &str, status: &TrainingRunStatus) {
        let labels = [namespace, name];
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.step.with_label_values(&labels).set(int(status.step));
        self.epoch.with_label_values(&labels).set(int(status.epoch));
        self.tokens
            .with_label_values(&labels)
            .set(int(status.tokens));
        if let Some(loss) = status.last_loss {
            self.loss.with_label_values(&labels).set(loss);
        }
        if let Some(seconds) = status.last_round_seconds {
            self.round_seconds.with_label_values(&labels).set(seconds);
        }
        self.attested_step
            .with_label_values(&labels)
            .set(int(status.attested_step.unwrap_or(0)));
        let c = &status.clients;
        for (state, count) in [
            ("desired", c.desired),
            ("ready", c.ready),
            ("joined", c.joined),
            ("witnessed", c.witnessed),
            ("dropped", c.dropped),
            ("ejected", c.ejected),
        ] {
            self.clients
                .with_label_values(&[namespace, name, state])
                .set(i64::from(count));
        }
        if c.joined > 0 {
            self.witness_quorum
                .with_label_values(&labels)
                .set(f64::from(c.witnessed) / f64::from(c.joined));
        }
        let restarts: u32 = status.restarts.iter().map(|r| r.count).sum();
        self.restarts
            .with_label_values(&labels)
            .set(i64::from(restarts));
        if let Some(phase) = status.phase {
            let mut phases = self.phases.lock().expect("phases lock");
            phases.insert((namespace.to_owned(), name.to_owned()), phase);
            self.count_phases(&phases);
        }
    }

    /// A read of the run on chain.
    pub fn chain_synced(&self, namespace: &str, name: &str, view: &ChainView) {
        let labels = [namespace, name];
        // Every reason and instruction is exported from the first sync, at zero, so rates
        // over them read as flat lines rather than nothing.
        for reason in crate::chain::REASONS {
            self.chain_errors
                .with_label_values(&[namespace, name, reason]);
        }
        for instruction in crate::chain::INSTRUCTIONS {
            self.chain_transactions
                .with_label_values(&[namespace, name, instruction]);
        }
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.points.with_label_values(&labels).set(int(view.points));
        self.slashed
            .with_label_values(&labels)
            .set(int(view.slashed));
        if let Some(rewards) = &view.rewards {
            self.rewards_paid
                .with_label_values(&labels)
                .set(int(rewards.paid));
            self.rewards_owed
                .with_label_values(&labels)
                .set(int(rewards.owed));
            self.rewards_escrow
                .with_label_values(&labels)
                .set(int(rewards.escrow));
        }
        let mut members = self.members.lock().expect("members lock");
        let keys = members
            .entry((namespace.to_owned(), name.to_owned()))
            .or_default();
        for member in &view.members {
            let key = member.key.to_string();
            let labels = [namespace, name, key.as_str()];
            self.client_points
                .with_label_values(&labels)
                .set(int(member.points));
            self.client_paid
                .with_label_values(&labels)
                .set(int(member.paid));
            keys.insert(key);
        }
        self.chain_slot
            .with_label_values(&labels)
            .set(int(view.slot));
        self.chain_slot_lag
            .with_label_values(&labels)
            .set(int(view.slot_lag));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.chain_last_sync
            .with_label_values(&labels)
            .set(now.as_secs_f64());
    }

    pub fn chain_failed(&self, namespace: &str, name: &str, reason: &str) {
        self.chain_errors
            .with_label_values(&[namespace, name, reason])
            .inc();
    }

    pub fn chain_sent(&self, namespace: &str, name: &str, instruction: &str) {
        self.chain_transactions
            .with_label_values(&[namespace, name, instruction])
            .inc();
    }

    /// Removes every series of a deleted run.
    pub fn forget(&self, namespace: &str, name: &str) {
        let labels = [namespace, name];
        for gauge in [
            &self.step,
            &self.epoch,
            &self.tokens,
            &self.restarts,
            &self.points,
            &self.slashed,
            &self.rewards_paid,
            &self.rewards_owed,
            &self.rewards_escrow,
            &self.chain_slot,
            &self.chain_slot_lag,
            &self.attested_step,
        ] {
            let _ = gauge.remove_label_values(&labels);
        }
        let members = self
            .members
            .lock()
            .expect("members lock")
            .remove(&(namespace.to_owned(), name.to_owned()));
        for key in members.unwrap_or_default() {
            for gauge in [&self.client_points, &self.client_paid] {
                let _ = gauge.remove_label_values(&[namespace, name, key.as_str()]);
            }
        }
        for gauge in [
            &self.loss,
            &self.witness_quorum,
            &self.round_seconds,
            &self.chain_last_sync,
        ] {
            let _ = gauge.remove_label_values(&labels);
        }
        for reason in crate::chain::REASONS {
            let _ = self
                .chain_errors
                .remove_label_values(&[namespace, name, reason]);
        }
        for instruction in crate::chain::INSTRUCTIONS {
            let _ = self
                .chain_transactions
                .remove_label_values(&[namespace, name, instruction]);
        }
        for state in [
            "desired",
            "ready",
            "joined",
            "witnessed",
            "dropped",
            "ejected",
        ] {
            let _ = self.clients.remove_label_values(&[namespace, name, state]);
        }
        let mut phases = self.phases.lock().expect("phases lock");
        phases.remove(&(namespace.to_owned(), name.to_owned()));
        self.count_phases(&phases);
    }

    fn count_phases(&self, phases: &BTreeMap<(String, String), Phase>) {
        for phase in PHASES {
            let count = phases.values().filter(|p| **p == phase).count();
            self.runs
                .with_label_values(&[phase_name(phase)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("metrics encode");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Running => "Running",
        Phase::Suspended => "Suspended",
        Phase::Succeeded => "Succeeded",
        Phase::Failed => "Failed",
        Phase::Invalid => "Invalid",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn a_run_is_counted_by_phase_and_forgotten_when_deleted() {
        let metrics = Metrics::new();
        let status = TrainingRunStatus {
            phase: Some(Phase::Running),
            step: 42,
            last_loss: Some(3.5),
            ..TrainingRunStatus::default()
        };
        metrics.observe("ml", "r1", &status);
        let text = metrics.render();
        assert!(text.contains("demeter_operator_run_step{name=\"r1\",namespace=\"ml\"} 42"));
        assert!(text.contains("demeter_operator_runs{phase=\"Running\"} 1"));
        metrics.forget("ml", "r1");
        let text = metrics.render();
        assert!(!text.contains("r1"), "{text}");
        assert!(text.contains("demeter_operator_runs{phase=\"Running\"} 0"));
    }

    /// The operator's series a dashboard or rule file names.
    fn queried_series(text: &str) -> BTreeSet<&str> {
        text.match_indices("demeter_operator_")
            .map(|(at, _)| {
                let rest = &text[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .filter(|name| *name != "demeter_operator_")
            .collect()
    }

    /// Every series `deploy/dashboards/demeter-operator.json` and the chart's alerting rules
    /// query is one the operator exports, so a renamed metric cannot leave a panel silently
    /// empty or an alert silently unable to fire.
    #[test]
    fn the_dashboard_and_the_alerts_query_only_exported_series() {
        let metrics = Metrics::new();
        let status = TrainingRunStatus {
            phase: Some(Phase::Running),
            last_loss: Some(2.0),
            last_round_seconds: Some(9.0),
            clients: crate::crd::ClientCounts {
                joined: 3,
                ..Default::default()
            },
            ..TrainingRunStatus::default()
        };
        metrics.observe("ml", "r1", &status);
        metrics.reconciled(Duration::from_millis(3));
        metrics.failed("kube");
        metrics.chain_synced(
            "ml",
            "r1",
            &ChainView {
                run_account: solana_sdk::pubkey::Pubkey::new_unique(),
                slot: 10,
                slot_lag: 1,
                state: demeter_coordinator_core::RunState::RoundTrain,
                pause_pending: false,
                epoch: 1,
                step: 5,
                samples: 40,
                joined: 3,
                witnessed: 3,
                dropped: 0,
                ejected: Vec::new(),
                points: 30,
                slashed: 0,
                attested: None,
                last_round_seconds: Some(9.0),
                members: vec![crate::chain::MemberPoints {
                    key: solana_sdk::pubkey::Pubkey::new_unique(),
                    points: 30,
                    slashed: 0,
                    paid: 3_000,
                }],
                rewards: Some(crate::chain::RewardsView {
                    pool: solana_sdk::pubkey::Pubkey::new_unique(),
                    mint: solana_sdk::pubkey::Pubkey::new_unique(),
                    tokens_per_point: 100,
                    escrow: 0,
                    paid: 3_000,
                    owed: 0,
                }),
            },
        );
        metrics.chain_failed("ml", "r1", "RpcError");
        metrics.chain_sent("ml", "r1", "tick");
        let rendered = metrics.render();
        let exported: BTreeSet<&str> = rendered
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split(['{', ' ']).next())
            .collect();

        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../deploy/dashboards/demeter-operator.json"
        ))
        .expect("the dashboard is JSON");
        let dashboard = dashboard.to_string();
        let queried = queried_series(&dashboard);
        assert!(queried.len() >= 15, "{queried:?}");
        let missing: Vec<_> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "the dashboard queries, not exported: {missing:?}"
        );

        let rules = include_str!("../../charts/demeter-operator/alerts/demeter-rules.yaml");
        let queried = queried_series(rules);
        assert!(queried.len() >= 7, "{queried:?}");
        let missing: Vec<_> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "the alerts query, not exported: {missing:?}"
        );
    }
}
