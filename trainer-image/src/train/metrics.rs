//! The trainer's Prometheus metrics, served at `/metrics` beside the exchange's counters.

use demeter_coordinator_core::client_metrics as names;
use demeter_coordinator_core::{Coordinator, Finding, MemberStatus};
use std::time::Duration;

use prometheus::{CounterVec, Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// The phases of a step, as `demeter_phase_seconds_total{phase}` labels them.
pub const PHASES: [&str; 9] = [
    "train",
    "compress",
    "publish",
    "fetch",
    "verify",
    "score",
    "spot-check",
    "aggregate",
    "apply",
];

/// Gauges and counters of one client.
#[derive(Clone)]
pub struct TrainerMetrics {
    pub loss: Gauge,
    pub lr: Gauge,
    pub step: IntGauge,
    pub epoch: IntGauge,
    pub applied_step: IntGauge,
    pub tokens: IntCounter,
    pub tokens_per_second: Gauge,
    pub payload_bytes: IntGauge,
    /// Results applied in the last step (those a witness quorum saw).
    pub results_applied: IntGauge,
    /// Participants of the current round.
    pub round_participants: IntGauge,
    pub members_active: IntGauge,
    /// Members a verdict quorum ejected.
    pub members_ejected: IntGauge,
    /// The step of the model the witnesses attested last (0 for none yet): what a client
    /// catching up can start from.
    pub attested_step: IntGauge,
    pub round_seconds: IntGauge,
    /// Committed payloads that did not decode against this model.
    pub rejected_payloads: IntCounter,
    /// Committed results of the current round this client holds, its own included.
    pub results_held: IntGauge,
    /// Seconds spent per phase of the step (see `PHASES`).
    pub phase_seconds: CounterVec,
    /// Counted results the screens flagged, by finding (zero, copy, stale, outsized, contrary).
    pub results_flagged: IntCounterVec,
    /// Counted results scored against data (the run's seeded share).
    pub results_scored: IntCounter,
    /// Counted results this client recomputed as a verifier (the run's spot-checked share).
    pub results_spot_checked: IntCounter,
    /// Verdicts this client sent as a verifier that the coordinator took.
    pub verdicts_sent: IntCounter,
}

impl TrainerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        fn add<M: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: M,
        ) -> prometheus::Result<M> {
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        }
        let metrics = Self {
            loss: add(
                registry,
                Gauge::new(names::LOSS, "Training loss of the last step")?,
            )?,
            lr: add(
                registry,
                Gauge::new("demeter_learning_rate", "Learning rate of the last step")?,
            )?,
            step: add(
                registry,
                IntGauge::new(names::STEP, "The run's completed steps")?,
            )?,
            epoch: add(registry, IntGauge::new(names::EPOCH, "The run's epoch")?)?,
            applied_step: add(
                registry,
                IntGauge::new("demeter_applied_step", "Steps applied to this replica")?,
            )?,
            tokens: add(
                registry,
                IntCounter::new(names::TOKENS_TOTAL, "Tokens this client trained on")?,
            )?,
            tokens_per_second: add(
                registry,
                Gauge::new(
                    "demeter_tokens_per_second",
                    "Tokens trained per second since start",
                )?,
            )?,
            payload_bytes: add(
                registry,
                IntGauge::new(
                    "demeter_payload_bytes",
                    "Bytes of this client's last result",
                )?,
            )?,
            results_applied: add(
                registry,
                IntGauge::new(
                    names::RESULTS_APPLIED,
                    "Results a witness quorum saw, applied in the last step",
                )?,
            )?,
            round_participants: add(
                registry,
                IntGauge::new(
                    "demeter_round_participants",
                    "Participants of the current round",
                )?,
            )?,
            members_active: add(
                registry,
                IntGauge::new(names::MEMBERS_ACTIVE, "Members active in the epoch")?,
            )?,
            members_ejected: add(
                registry,
                IntGauge::new(
                    names::MEMBERS_EJECTED,
                    "Members a verdict quorum ejected for faked results",
                )?,
            )?,
            attested_step: add(
                registry,
                IntGauge::new(
                    names::ATTESTED_STEP,
                    "The step of the model the run's witnesses attested last (0: none yet)",
                )?,
            )?,
            round_seconds: add(
                registry,
                IntGauge::new(
                    names::ROUND_SECONDS,
                    "Seconds from the last closed round's start to the next round's start",
                )?,
            )?,
            rejected_payloads: add(
                registry,
                IntCounter::new(
                    "demeter_rejected_payloads_total",
                    "Committed payloads that did not fit this model",
                )?,
            )?,
            results_held: add(
                registry,
                IntGauge::new(
                    "demeter_results_held",
                    "Committed results of the current round this client holds, its own included",
                )?,
            )?,
            phase_seconds: add(
                registry,
                CounterVec::new(
                    Opts::new(
                        "demeter_phase_seconds_total",
                        "Seconds spent per phase: train (forward and backward), compress \
                         (DeMo and payload encoding), publish (the commitment to the coordinator), \
                         fetch (committed payloads, verified), verify (the screens of counted results), \
                         score (the run's share of them scored against data), spot-check \
                         (recomputing the chosen results, as a verifier), aggregate (decode and \
                         mean), apply (inverse DCT and sign)",
                    ),
                    &["phase"],
                )?,
            )?,
            results_flagged: add(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "demeter_results_flagged_total",
                        "Counted results the screens, the scores or a recompute flagged, by \
                         finding (zero, copy, stale, outsized, contrary, low-score, recomputed, \
                         unserved, unchained)",
                    ),
                    &["finding"],
                )?,
            )?,
            results_scored: add(
                registry,
                IntCounter::new(
                    "demeter_results_scored_total",
                    "Counted results this client scored against data (the run's score_one_in \
                     share)",
                )?,
            )?,
            results_spot_checked: add(
                registry,
                IntCounter::new(
                    "demeter_results_spot_checked_total",
                    "Counted results this client recomputed as a round's verifier (the run's \
                     spot_check_one_in share), the momentum they commit to fetched from their \
                     sender",
                )?,
            )?,
            verdicts_sent: add(
                registry,
                IntCounter::new(
                    "demeter_verdicts_sent_total",
                    "Verdicts this client sent as a round's verifier that the coordinator took",
                )?,
            )?,
        };
        // Every finding's series from the start, at 0: a run nobody cheats in reads 0, not
        // nothing (and the dashboard's verification panel has a line to draw).
        for name in Finding::NAMES {
            metrics.results_flagged.with_label_values(&[name]);
        }
        Ok(metrics)
    }

    /// Counts each of a round's `findings` (by member slot) under its finding's name.
    pub fn count_flagged(&self, findings: &[(usize, Finding)]) {
        for (_, finding) in findings {
            self.results_flagged
                .with_label_values(&[finding.name()])
                .inc();
        }
    }

    pub fn time(&self, phase: &str, elapsed: Duration) {
        self.phase_seconds
            .with_label_values(&[phase])
            .inc_by(elapsed.as_secs_f64());
    }

    /// Seconds spent in each phase so far.
    pub fn phase_totals(&self) -> Vec<(String, f64)> {
        PHASES
            .iter()
            .map(|phase| {
                let seconds = self.phase_seconds.with_label_values(&[phase]).get();
                ((*phase).to_owned(), seconds)
            })
            .collect()
    }

    pub fn observe_state(&self, state: &Coordinator) {
        self.step.set(state.step as i64);
        self.epoch.set(state.epoch as i64);
        self.members_active
            .set(state.count(MemberStatus::Active) as i64);
        self.members_ejected
            .set(state.count(MemberStatus::Ejected) as i64);
        self.attested_step.set(
            state
                .checkpoint
                .attested()
                .map_or(0, |(step, _)| step as i64),
        );
        if let Some(seconds) = state.last_round_seconds() {
            self.round_seconds
                .set(i64::try_from(seconds).unwrap_or(i64::MAX));
        }
        self.round_participants.set(
            state
                .current_round()
                .map_or(0, |round| i64::from(round.participant_count)),
        );
    }
}
