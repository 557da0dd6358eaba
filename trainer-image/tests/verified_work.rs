//! Verified work with real processes on loopback: one of four clients starts sending forged
//! results after an honest epoch; the round's verifiers catch it (by the screens, by its
//! scores against data, or by recomputing its result), a verdict quorum ejects it, its points are slashed, and the three
//! honest replicas end bitwise identical with their loss still falling.

mod cluster;

use std::sync::Mutex;
use std::time::Duration;

use cluster::{Run, connect_when_up};
use demeter_coordinator_core::{Config, MemberStatus, RunState};
use demeter_trainer::identity::Identity;
use demeter_trainer::scoring::WINDOW;

/// The step the cheater forges its first result in.
const CHEATS_FROM: u64 = 6;

/// What an observer of the coordinator saw of the cheater: (the epoch of its first forged
/// round, the epoch and step when it was ejected, its points and slashed points then).
async fn watch_cheater(
    coordinator: std::net::SocketAddr,
    cheater: [u8; 32],
) -> (u64, u64, u64, u64, u64) {
    let observer = Identity::generate().unwrap();
    let mut client = connect_when_up(coordinator, &observer).await;
    let mut cheating_epoch = None;
    loop {
        let state = client.state();
        if let Some(round) = state.current_round()
            && round.step == CHEATS_FROM
        {
            cheating_epoch.get_or_insert(round.epoch);
        }
        if let Some(slot) = state.member_index(&cheater)
            && state.members[slot].status() == MemberStatus::Ejected
        {
            let member = state.members[slot];
            return (
                cheating_epoch.expect("ejected only after it cheated"),
                state.epoch,
                state.step,
                member.points,
                member.slashed,
            );
        }
        assert_ne!(state.run_state(), RunState::Finished, "never ejected");
        let _ = client
            .wait_for(Duration::from_millis(500), |now| *now != *state)
            .await;
    }
}

#[test]
fn a_client_sending_zero_results_is_ejected_and_slashed_and_the_rest_train_on() {
    // Epochs of about six seconds: the cheater earns points in the first before it cheats.
    let config = cluster::config(16, 6, 3);
    // The screens flag the first zeros; the verdicts land in the rounds after.
    caught_and_ejected("zero", config, "zero", CHEATS_FROM + 3, 1);
}

#[test]
fn a_client_sending_noise_is_ejected_by_its_scores_and_slashed() {
    // Noise of the right size passes every screen; scoring every result catches it once its
    // forged scores weigh its window's mean under the bound: a window at most, and the
    // verdicts' round after. Epochs of about 15 seconds: the cheater is paid for the first, in
    // which it starts forging; a 16-round window outlasts one more of these short epochs.
    let config = Config {
        score_one_in: 1,
        ..cluster::config(32, 15, 3)
    };
    caught_and_ejected("random", config, "low-score", CHEATS_FROM + WINDOW + 2, 2);
}

#[test]
fn a_client_training_other_samples_is_ejected_by_a_recompute_and_slashed() {
    // Every result recomputed by the round's verifiers: the honest three's results recompute
    // bit for bit across processes (or a quorum would eject them and they would not finish),
    // the cheater's, trained on a later round's samples, do not. Its first forged round's
    // verdicts land in the round after it closes.
    let config = Config {
        spot_check_one_in: 1,
        ..cluster::config(16, 6, 3)
    };
    caught_and_ejected("wrong-data", config, "recomputed", CHEATS_FROM + 3, 1);
}

#[test]
fn a_client_forging_its_momentum_is_ejected_by_the_broken_chain_and_slashed() {
    // Each of its results recomputes from the momentum it commits to, but from step 6 that is
    // the negation of what its last step left: the verifiers who recomputed its result of the round
    // before see its next commitment differ, and judge that round (a verdict about the last
    // round of an epoch is too late once the next epoch starts, so the bound allows one more
    // round). The run tolerates another device's last bits, as one mixing kinds of device
    // would: every verifier fetches each sender's next momentum and measures its distance from
    // the one its recompute left, which holds for the honest three in every round and breaks
    // for the cheater by the whole momentum.
    let config = Config {
        spot_check_one_in: 1,
        spot_check_tolerance: 10,
        ..cluster::config(16, 6, 3)
    };
    caught_and_ejected("forged-momentum", config, "unchained", CHEATS_FROM + 4, 1);
}

/// One run at a time: each starts four training processes, and two at once on a small machine
/// miss the rounds' deadlines.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// Runs `config` with a cheater sending `attack` from [`CHEATS_FROM`] beside three honest
/// clients: the honest ones must flag it by `finding` and eject it by step `ejected_by`, at
/// most `epochs_later` epochs after the one it started cheating in.
fn caught_and_ejected(
    attack: &str,
    config: Config,
    finding: &str,
    ejected_by: u64,
    epochs_later: u64,
) {
    let _one_run = ONE_RUN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let total_steps = config.total_steps;
    let dir = tempfile::tempdir().unwrap();
    // An epoch starts with three members, so the honest three go on once the cheater is
    // ejected; the cheater starts first, so it is in the first epoch.
    let mut run = Run::start_with(dir.path(), config, 0);
    let cheater = run.local.add_client().unwrap();
    run.start_client_with(
        cheater,
        &[
            format!("--attack={attack}"),
            format!("--attack-from-step={CHEATS_FROM}"),
        ],
    );
    let honest_clients: Vec<usize> = (0..3)
        .map(|_| {
            let index = run.local.add_client().unwrap();
            run.start_client(index);
            index
        })
        .collect();
    let cheater_key = Identity::read(&run.local.clients()[cheater].wallet)
        .unwrap()
        .public();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let watched = runtime.spawn(watch_cheater(run.coordinator, cheater_key));

    let flagged = |run: &Run| -> f64 {
        honest_clients
            .iter()
            .filter_map(|index| {
                run.gauge(
                    *index,
                    &format!(r#"demeter_results_flagged_total{{finding="{finding}"}}"#),
                )
            })
            .sum()
    };
    run.wait(&format!("the honest clients to flag {attack}"), |run| {
        flagged(run) >= 1.0
    });
    let honest = run.finished_of(&honest_clients);
    let (cheating_epoch, ejected_epoch, ejected_step, points, slashed) =
        runtime.block_on(watched).unwrap();
    assert!(
        ejected_epoch <= cheating_epoch + epochs_later,
        "ejected {epochs_later} epochs after cheating at most: epoch {cheating_epoch} to \
         {ejected_epoch}"
    );
    eprintln!(
        "{attack}: forged from step {CHEATS_FROM} (epoch {cheating_epoch}), ejected at step \
         {ejected_step} (epoch {ejected_epoch}) with {slashed} of {points} points slashed"
    );
    assert!(
        ejected_step <= ejected_by,
        "ejected at step {ejected_step}, not by {ejected_by}"
    );
    assert!(
        points > 0,
        "it earned points in the epoch before it cheated"
    );
    assert_eq!(slashed, points, "every point it held is slashed");

    for summary in &honest {
        assert_eq!(summary["steps"].as_u64(), Some(total_steps), "{summary}");
        let (first, last) = (
            summary["first_loss"].as_f64().unwrap(),
            summary["last_loss"].as_f64().unwrap(),
        );
        assert!(last < first, "the loss keeps falling: {first} to {last}");
    }
    assert!(
        honest
            .iter()
            .all(|summary| summary["replica_hash"] == honest[0]["replica_hash"]),
        "honest replicas identical: {honest:?}"
    );
    // The cheater's process stopped on its ejection and said why.
    let log =
        std::fs::read_to_string(run.local.dir().join(format!("client-{cheater}.log"))).unwrap();
    assert!(
        log.contains("this client was ejected from the run"),
        "{}",
        run.logs()
    );
}
