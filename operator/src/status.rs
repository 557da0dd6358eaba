//! A TrainingRun's status, derived from what one reconcile saw: the client pods' plan, the
//! chain (in solana mode) and the clients' own progress. Pure: no API calls, so every rule is
//! unit-tested here; the controller writes what this returns.

use k8s_openapi::jiff::Timestamp;

use crate::chain::{ChainError, Synced};
use crate::clients::Plan;
use crate::conditions::{self, CHAIN_SYNCED, DEGRADED, PROGRESSING, READY};
use crate::crd::{
    AttestedModel, ChainStatus, ClientCounts, Phase, RewardsStatus, TrainingRun, TrainingRunStatus,
};
use crate::progress::Progress;

/// The status for `run` now: its phase, the Ready, Progressing, Degraded and (in solana mode)
/// ChainSynced conditions, client counts and restarts, and the run's progress, from the chain
/// when it is the source (solana mode) and from the clients' `/metrics` otherwise.
pub fn derive(
    run: &TrainingRun,
    plan: &Plan,
    chain: Option<&Result<Synced, ChainError>>,
    progress: Option<&Progress>,
    now: Timestamp,
) -> TrainingRunStatus {
    let spec = &run.spec;
    let generation = run.metadata.generation.unwrap_or(0);
    let mut previous = run.status.clone().unwrap_or_default();
    let view = chain.and_then(|chain| chain.as_ref().ok()).map(|s| &s.view);
    let finished_on_chain =
        view.is_some_and(|v| v.state == demeter_coordinator_core::RunState::Finished);
    let desired = spec.clients.replicas;
    let able = desired.saturating_sub(u16::try_from(plan.given_up.len()).unwrap_or(u16::MAX));
    let finished_before = previous.observed_generation == Some(generation)
        && matches!(previous.phase, Some(Phase::Succeeded | Phase::Failed));
    let phase = if spec.suspend {
        Phase::Suspended
    } else if finished_before {
        previous.phase.unwrap_or(Phase::Failed)
    } else if able < spec.schedule.min_clients {
        Phase::Failed
    } else if plan.succeeded == desired || finished_on_chain {
        Phase::Succeeded
    } else if plan.running > 0 {
        Phase::Running
    } else {
        Phase::Pending
    };

    let mut conditions = previous.conditions.clone();
    let ready_text = format!("{}/{desired}", plan.ready);
    let all_ready = plan.ready == desired && phase == Phase::Running;
    let (ready_reason, ready_message) = match phase {
        Phase::Suspended => ("Suspended", "the run is suspended".to_owned()),
        Phase::Succeeded => ("Succeeded", "the run finished".to_owned()),
        Phase::Failed => ("Failed", failed_message(run, plan)),
        _ if all_ready => ("AllClientsReady", format!("{ready_text} clients ready")),
        _ => ("ClientsNotReady", format!("{ready_text} clients ready")),
    };
    conditions::set(
        &mut conditions,
        READY,
        all_ready,
        ready_reason,
        ready_message,
        generation,
        now,
    );
    let (progressing, progress_reason, progress_message) = match phase {
        Phase::Pending => (
            true,
            "CreatingClients",
            "waiting for client pods to run".to_owned(),
        ),
        Phase::Running => (
            true,
            "Training",
            format!("{} client pods running", plan.running),
        ),
        Phase::Suspended => (false, "Suspended", "the run is suspended".to_owned()),
        Phase::Succeeded => (false, "Succeeded", "the run finished".to_owned()),
        Phase::Failed | Phase::Invalid => (false, "Failed", failed_message(run, plan)),
    };
    conditions::set(
        &mut conditions,
        PROGRESSING,
        progressing,
        progress_reason,
        progress_message,
        generation,
        now,
    );
    let (degraded, degraded_reason, degraded_message) =
        if let Some((index, why)) = plan.stuck.first() {
            let reason = why.split(':').next().unwrap_or("ContainerCannotStart");
            (true, reason.to_owned(), format!("client {index}: {why}"))
        } else if !plan.given_up.is_empty() {
            (true, "ClientGaveUp".to_owned(), failed_message(run, plan))
        } else if let Some(failure) = plan.failures.first() {
            (
                true,
                "ClientFailed".to_owned(),
                format!("client {} failed: {}", failure.index, failure.reason),
            )
        } else if let Some(restarts) = plan
            .backing_off
            .first()
            .and_then(|index| plan.restarts.iter().find(|r| r.index == *index))
        {
            (
                true,
                "ClientRestarting".to_owned(),
                format!(
                    "client {} failed ({}); restart {} of {} waits for its backoff",
                    restarts.index,
                    restarts.last_failure,
                    restarts.count,
                    spec.failure_policy.max_restarts
                ),
            )
        } else {
            (false, "AsExpected".to_owned(), String::new())
        };
    conditions::set(
        &mut conditions,
        DEGRADED,
        degraded,
        &degraded_reason,
        degraded_message,
        generation,
        now,
    );

    if let Some(chain) = chain {
        let (synced, reason, message) = match chain {
            Ok(Synced {
                failed: Some(error),
                ..
            })
            | Err(error) => (false, error.reason(), error.to_string()),
            Ok(Synced { view, .. }) => (
                true,
                "Synced",
                format!(
                    "{} at slot {}{}",
                    view.state_name(),
                    view.slot,
                    if view.pause_pending {
                        ", pause pending"
                    } else {
                        ""
                    }
                ),
            ),
        };
        conditions::set(
            &mut conditions,
            CHAIN_SYNCED,
            synced,
            reason,
            message,
            generation,
            now,
        );
    }
    if let Some(progress) = progress {
        previous.last_loss = progress.loss.or(previous.last_loss);
        if spec.coordinator.solana.is_none() {
            // A restarted client counts its tokens from zero; the run's count never goes back.
            previous.epoch = progress.epoch;
            previous.step = progress.step;
            previous.tokens = previous.tokens.max(progress.tokens);
            previous.clients.joined = progress.joined;
            previous.clients.witnessed = progress.witnessed;
            previous.clients.ejected = previous.clients.ejected.max(progress.ejected);
            previous.last_round_seconds = progress.round_seconds.or(previous.last_round_seconds);
            // A restarted client reports 0 until it has read the run; attestation only grows.
            if progress.attested_step > 0 {
                previous.attested_step = previous.attested_step.max(Some(progress.attested_step));
            }
        }
    }
    if let Some(view) = view {
        previous.epoch = view.epoch;
        previous.step = view.step;
        previous.tokens = view
            .samples
            .saturating_mul(u64::from(spec.data.sequence_length));
        previous.clients.joined = view.joined;
        previous.clients.witnessed = view.witnessed;
        previous.clients.dropped = view.dropped;
        previous.clients.ejected = u16::try_from(view.ejected.len()).unwrap_or(u16::MAX);
        previous.last_round_seconds = view.last_round_seconds.or(previous.last_round_seconds);
        previous.attested_step = view.attested.map(|(step, _)| step);
        previous.chain = Some(ChainStatus {
            run_account: Some(view.run_account.to_string()),
            state: Some(view.state_name().to_owned()),
            pause_pending: view.pause_pending,
            points: view.points,
            slashed: view.slashed,
            ejected: view.ejected.iter().map(ToString::to_string).collect(),
            attested_model: view.attested.map(|(step, hash)| AttestedModel {
                step,
                weights_hash: hex::encode(hash),
            }),
            rewards: view.rewards.as_ref().map(|rewards| RewardsStatus {
                pool: rewards.pool.to_string(),
                mint: rewards.mint.to_string(),
                tokens_per_point: rewards.tokens_per_point,
                escrow: rewards.escrow,
                paid: rewards.paid,
                owed: rewards.owed,
            }),
            slot: view.slot,
            last_sync_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        });
    }

    TrainingRunStatus {
        phase: Some(phase),
        conditions,
        observed_generation: Some(generation),
        clients: ClientCounts {
            desired,
            ready: plan.ready,
            ready_text,
            ..previous.clients.clone()
        },
        restarts: plan.restarts.clone(),
        ..previous
    }
}

/// Why a run failed, and how to try again.
pub fn failed_message(run: &TrainingRun, plan: &Plan) -> String {
    let given_up: Vec<String> = plan.given_up.iter().map(u16::to_string).collect();
    format!(
        "client(s) {} failed more than failurePolicy.maxRestarts ({}) times; {} of {} clients \
         can run and schedule.minClients is {}; fix the cause (see the Events) and edit the \
         spec to try again",
        given_up.join(", "),
        run.spec.failure_policy.max_restarts,
        run.spec.clients.replicas as usize - plan.given_up.len(),
        run.spec.clients.replicas,
        run.spec.schedule.min_clients,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::ChainView;
    use demeter_coordinator_core::RunState;
    use solana_sdk::pubkey::Pubkey;

    const NOW: Timestamp = Timestamp::UNIX_EPOCH;

    fn plan(running: u16, ready: u16) -> Plan {
        Plan {
            running,
            ready,
            ..Plan::default()
        }
    }

    fn condition<'a>(status: &'a TrainingRunStatus, type_: &str) -> (&'a str, &'a str, &'a str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (&c.status, &c.reason, &c.message)
    }

    fn view(state: RunState) -> ChainView {
        ChainView {
            run_account: Default::default(),
            slot: 77,
            slot_lag: 0,
            state,
            pause_pending: false,
            epoch: 2,
            step: 9,
            samples: 100,
            joined: 3,
            witnessed: 2,
            dropped: 1,
            ejected: vec![Pubkey::new_from_array([7; 32])],
            points: 300,
            slashed: 40,
            attested: Some((8, [0xAB; 32])),
            last_round_seconds: Some(4.5),
            members: Vec::new(),
            rewards: None,
        }
    }

    #[test]
    fn pending_then_running_then_all_ready() {
        let run = TrainingRun::test().replicas(2);
        let status = derive(&run, &plan(0, 0), None, None, NOW);
        assert_eq!(status.phase, Some(Phase::Pending));
        assert_eq!(condition(&status, PROGRESSING).1, "CreatingClients");

        let status = derive(&run, &plan(2, 1), None, None, NOW);
        assert_eq!(status.phase, Some(Phase::Running));
        assert_eq!(
            condition(&status, READY),
            ("False", "ClientsNotReady", "1/2 clients ready")
        );
        assert_eq!(status.clients.ready_text, "1/2");

        let status = derive(&run, &plan(2, 2), None, None, NOW);
        assert_eq!(condition(&status, READY).1, "AllClientsReady");
        assert_eq!(condition(&status, DEGRADED), ("False", "AsExpected", ""));
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn suspended_wins_over_everything() {
        let run = TrainingRun::test().replicas(2).suspended();
        let status = derive(&run, &plan(2, 2), None, None, NOW);
        assert_eq!(status.phase, Some(Phase::Suspended));
        assert_eq!(condition(&status, READY).1, "Suspended");
        assert_eq!(condition(&status, PROGRESSING).0, "False");
    }

    #[test]
    fn too_many_clients_given_up_fails_the_run_and_says_how_to_retry() {
        let run = TrainingRun::test().replicas(3).min_clients(2);
        let failing = Plan {
            given_up: vec![0, 2],
            running: 1,
            ..Plan::default()
        };
        let status = derive(&run, &failing, None, None, NOW);
        assert_eq!(status.phase, Some(Phase::Failed));
        let (_, reason, message) = condition(&status, READY);
        assert_eq!(reason, "Failed");
        assert!(message.contains("client(s) 0, 2"), "{message}");
        assert!(message.contains("1 of 3 clients can run"), "{message}");
        assert!(message.contains("schedule.minClients is 2"), "{message}");
        assert_eq!(condition(&status, DEGRADED).1, "ClientGaveUp");
    }

    #[test]
    fn a_finished_phase_stays_for_its_generation() {
        let run = TrainingRun::test().replicas(2).observed(Phase::Succeeded);
        let status = derive(&run, &plan(0, 0), None, None, NOW);
        assert_eq!(status.phase, Some(Phase::Succeeded));
    }

    #[test]
    fn in_solana_mode_the_chain_is_the_source_of_progress() {
        let run = TrainingRun::test_solana().replicas(2);
        let synced = Ok(Synced {
            view: view(RunState::Finished),
            sent: Vec::new(),
            failed: None,
        });
        let progress = Progress {
            step: 1,
            epoch: 1,
            loss: Some(3.5),
            tokens: 5,
            joined: 9,
            witnessed: 9,
            ejected: 0,
            attested_step: 4,
            round_seconds: Some(99.0),
        };
        let status = derive(&run, &plan(2, 2), Some(&synced), Some(&progress), NOW);
        assert_eq!(status.phase, Some(Phase::Succeeded), "finished on chain");
        assert_eq!((status.epoch, status.step), (2, 9));
        assert_eq!(
            status.tokens,
            100 * u64::from(run.spec.data.sequence_length)
        );
        assert_eq!((status.clients.joined, status.clients.witnessed), (3, 2));
        assert_eq!(
            status.last_loss,
            Some(3.5),
            "the loss only the clients know"
        );
        let chain = status.chain.as_ref().unwrap();
        assert_eq!((chain.points, chain.slashed, chain.slot), (300, 40, 77));
        assert_eq!(status.clients.ejected, 1);
        assert_eq!(chain.ejected, [Pubkey::new_from_array([7; 32]).to_string()]);
        let attested = chain.attested_model.as_ref().unwrap();
        assert_eq!((attested.step, &attested.weights_hash[..4]), (8, "abab"));
        assert_eq!(status.attested_step, Some(8), "the chain's, not a client's");
        assert_eq!(status.last_round_seconds, Some(4.5));
        assert_eq!(condition(&status, CHAIN_SYNCED).0, "True");
    }

    #[test]
    fn in_centralized_mode_a_restarted_client_does_not_set_tokens_or_attestation_back() {
        let run = TrainingRun::test()
            .replicas(2)
            .with_status(TrainingRunStatus {
                tokens: 10_000,
                attested_step: Some(8),
                ..TrainingRunStatus::default()
            });
        let progress = Progress {
            step: 4,
            epoch: 1,
            loss: None,
            tokens: 300,
            joined: 2,
            witnessed: 2,
            ejected: 1,
            attested_step: 0,
            round_seconds: Some(3.0),
        };
        let status = derive(&run, &plan(2, 2), None, Some(&progress), NOW);
        assert_eq!((status.step, status.tokens), (4, 10_000));
        assert_eq!((status.clients.joined, status.clients.ejected), (2, 1));
        assert_eq!(status.attested_step, Some(8));
        assert_eq!(
            status.last_round_seconds,
            Some(3.0),
            "the clients' round time"
        );
    }
}
