//! The run state machine, transition by transition, and whole epochs.

mod fixture;

use demeter_coordinator_core::{
    Config, Coordinator, CoordinatorError, Endpoint, MemberStatus, RunState, WitnessReport,
};
use fixture::*;

#[test]
fn endpoints_keep_v4_and_v6_addresses_and_zero_means_none() {
    for text in ["127.0.0.1:7300", "[2001:db8::7]:443", "0.0.0.0:1"] {
        let address: std::net::SocketAddr = text.parse().unwrap();
        assert_eq!(Endpoint::from(address).socket_addr(), Some(address));
    }
    assert_eq!(Endpoint::default().socket_addr(), None);
}

#[test]
fn init_validates_and_happens_once() {
    let mut c: Box<Coordinator> = bytemuck::zeroed_box();
    assert_eq!(c.tick(0, &seed(0)), Err(CoordinatorError::Uninitialized));
    let bad = Config {
        witness_nodes: 0,
        ..config()
    };
    assert_eq!(
        c.init([1; 32], bad, 0).unwrap_err().to_string(),
        "witness_nodes = 0: must be at least 1"
    );
    let bad = Config {
        score_one_in: 257,
        ..config()
    };
    assert!(
        c.init([1; 32], bad, 0)
            .unwrap_err()
            .to_string()
            .starts_with("score_one_in = 257"),
        "the field is named"
    );
    c.init([1; 32], config(), 0).unwrap();
    assert_eq!(c.run_state(), RunState::WaitingForMembers);
    assert_eq!(
        c.init([1; 32], config(), 0),
        Err(CoordinatorError::AlreadyInitialized)
    );
}

#[test]
fn enough_members_and_a_join_window_start_the_warmup() {
    let mut run = Run::new(config());
    for m in 1..=2 {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    assert_eq!(
        run.tick(100),
        Err(CoordinatorError::NothingDue),
        "two of three members"
    );
    let now = run.at(1);
    assert_eq!(
        run.c.join(id(1), endpoint(1), now),
        Err(CoordinatorError::AlreadyJoined)
    );
    run.c.join(id(3), endpoint(3), now).unwrap();
    assert_eq!(
        run.tick(4),
        Err(CoordinatorError::NothingDue),
        "join window still open"
    );
    let now = run.at(0);
    run.c.join(id(4), endpoint(4), now).unwrap();
    assert_eq!(run.tick(1), Ok(RunState::Warmup));
    assert_eq!(run.c.count(MemberStatus::Active), 4);
}

#[test]
fn a_withdrawal_below_the_threshold_closes_the_join_window() {
    let mut run = Run::new(config());
    for m in 1..=3 {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    let now = run.at(1);
    run.c.withdraw(id(2), now).unwrap();
    assert_eq!(run.tick(100), Err(CoordinatorError::NothingDue));
    let now = run.at(1);
    run.c.join(id(2), endpoint(2), now).unwrap();
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
}

#[test]
fn rounds_partition_the_batch_and_elect_distinct_witnesses() {
    let run = Run::started(config(), &[1, 2, 3, 4]);
    let round = run.c.current_round().unwrap();
    assert_eq!(
        (
            round.step,
            round.participant_count,
            round.witness_count,
            round.batch_size
        ),
        (0, 4, 3, 12)
    );
    let mut ranges: Vec<_> = (0..4).map(|slot| round.assignment(slot).unwrap()).collect();
    ranges.sort_by_key(|r| r.start);
    assert_eq!(ranges, [0..3, 3..6, 6..9, 9..12]);
    let mut witnesses: Vec<usize> = (0..3).map(|p| round.elected(p).unwrap()).collect();
    witnesses.sort_unstable();
    witnesses.dedup();
    assert_eq!(witnesses.len(), 3);
    assert_eq!(round.elected(3), None);
    for slot in witnesses {
        assert_eq!(
            round.elected(round.witness_position(slot).unwrap()),
            Some(slot),
            "the proof checks"
        );
    }
}

#[test]
fn warmup_time_out_drops_members_that_are_not_ready() {
    let mut run = Run::new(config());
    for m in 1..=3 {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    for m in 1..=2 {
        let now = run.at(1);
        run.c.warmup_witness(id(m), now).unwrap();
    }
    assert_eq!(run.tick(10), Err(CoordinatorError::NothingDue));
    assert_eq!(run.tick(30), Ok(RunState::RoundTrain));
    let slot = run.c.member_index(&id(3)).unwrap();
    assert_eq!(run.c.members[slot].status(), MemberStatus::Dropped);
    assert_eq!(
        run.c.current_round().unwrap().assignment(slot),
        None,
        "a dropped member trains nothing"
    );
}

#[test]
fn throwaway_keys_cannot_fill_a_run_for_good() {
    let mut run = Run::new(config());
    let throwaway = |n: usize| {
        let mut key = [0xEE; 32];
        key[..2].copy_from_slice(&(n as u16).to_le_bytes());
        key
    };
    for n in 0..demeter_coordinator_core::state::MAX_CLIENTS {
        let now = run.at(0);
        run.c.join(throwaway(n), endpoint(1), now).unwrap();
    }
    let now = run.at(1);
    assert_eq!(
        run.c.join(id(1), endpoint(1), now),
        Err(CoordinatorError::RunFull),
        "full while they are members"
    );
    // None of them reports ready: all are dropped at the warmup time-out.
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    assert_eq!(run.tick(30), Ok(RunState::WaitingForMembers));
    // One of them had earned points once: its slot stays, whatever its status.
    let earner = run.c.member_index(&throwaway(7)).unwrap();
    run.c.members[earner].points = 5;

    for m in 1..=3 {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    assert_eq!(run.c.members[earner].id, throwaway(7));
    assert_eq!(run.c.members[earner].points, 5);
    let joined = run.c.member_index(&id(1)).unwrap();
    assert_eq!(run.c.members[joined].points, 0);
    assert_eq!(run.c.members[joined].status(), MemberStatus::Active);
    assert_eq!(run.c.count(MemberStatus::Active), 3);
    assert_eq!(
        run.c.member_index(&throwaway(0)),
        None,
        "its slot went to a new client"
    );
}

#[test]
fn a_slot_named_by_a_held_round_keeps_its_key_until_the_round_is_gone() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    for n in 0..demeter_coordinator_core::state::MAX_CLIENTS - 3 {
        let mut key = [0xEE; 32];
        key[..2].copy_from_slice(&(n as u16).to_le_bytes());
        let now = run.at(0);
        run.c.join(key, endpoint(1), now).unwrap();
    }
    let now = run.at(1);
    run.c.withdraw(id(3), now).unwrap();
    let slot = run.c.member_index(&id(3)).unwrap();
    assert_eq!(
        run.c.join(id(4), endpoint(4), now),
        Err(CoordinatorError::RunFull),
        "round 0 names the slot of member 3"
    );
    // A witness that withdrew no longer reports.
    let round = *run.c.current_round().unwrap();
    if let Some(position) = round.witness_position(slot) {
        let now = run.at(1);
        assert_eq!(
            run.c
                .witness(id(3), round.step, position, &WitnessReport::default(), now),
            Err(CoordinatorError::NotInEpoch)
        );
    }
    for _ in 0..demeter_coordinator_core::state::ROUNDS_KEPT {
        close_round_with_active_witnesses(&mut run, &[1, 2]);
    }
    let now = run.at(1);
    run.c.join(id(4), endpoint(4), now).unwrap();
    assert_eq!(run.c.member_index(&id(4)), Some(slot));
}

#[test]
fn an_aborted_warmup_goes_back_to_waiting_and_pays_nothing() {
    let mut run = Run::new(config());
    for m in 1..=3 {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    let now = run.at(1);
    run.c.warmup_witness(id(1), now).unwrap();
    assert_eq!(run.tick(40), Ok(RunState::WaitingForMembers));
    assert!(run.c.members.iter().all(|m| m.points == 0));
    assert_eq!((run.c.step, run.c.epoch), (0, 0));
}

#[test]
fn witnesses_must_be_elected_and_report_once() {
    let mut run = Run::started(config(), &[1, 2, 3, 4]);
    let round = *run.c.current_round().unwrap();
    let outsider = (0..4)
        .find(|&slot| round.witness_position(slot).is_none())
        .unwrap();
    let report = WitnessReport::default();
    let now = run.at(1);
    let outsider_id = run.c.members[outsider].id;
    assert_eq!(
        run.c.witness(outsider_id, round.step, 0, &report, now),
        Err(CoordinatorError::NotAWitness)
    );
    let witness = run.c.members[round.elected(0).unwrap()].id;
    assert_eq!(
        run.c.witness(witness, round.step, 1, &report, now),
        Err(CoordinatorError::NotAWitness),
        "wrong proof"
    );
    run.c.witness(witness, round.step, 0, &report, now).unwrap();
    assert_eq!(
        run.c.witness(witness, round.step, 0, &report, now),
        Err(CoordinatorError::DuplicateWitness)
    );
    assert_eq!(
        run.c.witness(id(99), round.step, 0, &report, now),
        Err(CoordinatorError::NotAMember)
    );
    let late = run.c.members[round.elected(1).unwrap()].id;
    assert_eq!(
        run.c.witness(late, round.step + 1, 1, &report, now),
        Err(CoordinatorError::WrongRound {
            step: round.step + 1,
            current: round.step
        }),
        "a report for another round"
    );
}

#[test]
fn config_updates_only_between_epochs_and_keep_progress() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    let now = run.at(1);
    assert_eq!(
        run.c.update_config(config(), now),
        Err(CoordinatorError::WrongState(RunState::RoundTrain))
    );
    run.c.pause(now).unwrap();
    run.witness_all(&[1, 2, 3]);
    assert_eq!(run.tick(10), Ok(RunState::Cooldown));
    assert_eq!(run.tick(20), Ok(RunState::Paused));
    let now = run.at(1);
    let too_short = Config {
        total_steps: 1,
        ..config()
    };
    assert_eq!(
        run.c.update_config(too_short, now).unwrap_err().to_string(),
        "total_steps = 1: must be more than the steps already completed"
    );
    let longer = Config {
        total_steps: 500,
        ..config()
    };
    run.c.update_config(longer, now).unwrap();
    assert_eq!((run.c.config.total_steps, run.c.step), (500, 1));
    assert_eq!(run.c.members[0].points, 100);
}

#[test]
fn a_round_closes_on_witnesses_then_the_witness_time_out() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    run.witness_all(&[1, 2, 3]);
    assert_eq!(run.c.run_state(), RunState::RoundWitness);
    assert_eq!(run.c.last_round_seconds(), None, "no round has closed");
    assert_eq!(run.tick(5), Err(CoordinatorError::NothingDue));
    assert_eq!(run.tick(5), Ok(RunState::RoundTrain));
    assert_eq!(run.c.step, 1);
    let closed = run.c.closed_round(0).unwrap();
    let slot = run.c.member_index(&id(1)).unwrap();
    assert_eq!(closed.counted(slot), Some(&commitment(1, 0)));
    let next = run.c.current_round().unwrap();
    assert_eq!(next.data_start, 12, "the next round continues the data");
    // A round's time: from its start to the next's (three witness reports a second apart,
    // then two ticks of five seconds).
    assert_eq!(next.started_at - closed.started_at, 13);
    assert_eq!(run.c.last_round_seconds(), Some(13));
    // Training that runs past its time-out moves to the witness phase anyway.
    assert_eq!(run.tick(59), Err(CoordinatorError::NothingDue));
    assert_eq!(run.tick(1), Ok(RunState::RoundWitness));
}

#[test]
fn a_full_epoch_pays_its_healthy_members() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(&[1, 2, 3]);
        assert!(matches!(
            run.tick(10),
            Ok(RunState::RoundTrain | RunState::Cooldown)
        ));
    }
    assert!(run.c.step > 5, "the epoch ran rounds until its time was up");
    assert!(
        run.c.members.iter().all(|m| m.points == 0),
        "points come at the end of cooldown"
    );
    assert_eq!(run.tick(20), Ok(RunState::WaitingForMembers));
    let paid: Vec<u64> = (1..=3)
        .map(|m| run.c.members[run.c.member_index(&id(m)).unwrap()].points)
        .collect();
    assert_eq!(paid, [100, 100, 100]);
    assert_eq!(run.c.epoch, 1);
    // Healthy members stay for the next epoch, which starts after the join window.
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
}

/// Audit finding 2: the input that made a round's start (or close) due chose its seed. Now it
/// only arms the transition; the next tick takes it with that tick's seed.
#[test]
fn a_round_is_seeded_by_the_tick_after_the_input_that_made_it_due() {
    let mut run = Run::new(config());
    for m in [1, 2, 3] {
        let now = run.at(1);
        run.c.join(id(m), endpoint(m), now).unwrap();
    }
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    for m in [1, 2, 3] {
        let now = run.at(1);
        run.c.warmup_witness(id(m), now).unwrap();
    }
    assert_eq!(
        (run.c.run_state(), run.c.transition_armed),
        (RunState::Warmup, 1),
        "the last ready member arms the start, it does not start the round"
    );
    let now = run.at(0);
    assert_eq!(run.c.tick(now, &seed(41)), Ok(RunState::RoundTrain));
    assert_eq!(run.c.current_round().unwrap().seed, seed(41));

    run.witness_all(&[1, 2, 3]);
    let now = run.at(10);
    assert_eq!(run.c.tick(now, &seed(7)), Ok(RunState::RoundWitness));
    assert_eq!(
        (run.c.step, run.c.transition_armed),
        (0, 1),
        "armed, not closed"
    );
    let now = run.at(0);
    assert_eq!(run.c.tick(now, &seed(8)), Ok(RunState::RoundTrain));
    assert_eq!(run.c.step, 1);
    assert_eq!(
        run.c.current_round().unwrap().seed,
        seed(8),
        "the arming tick's seed is unused"
    );
    assert_eq!(run.c.transition_armed, 0);
}

#[test]
fn points_follow_the_rounds_a_quorum_saw() {
    let mut run = Run::started(config(), &[1, 2, 3, 4]);
    // Four rounds with a quorum: 4 is seen in the first only (nobody health-checks it), 3 in
    // the first two.
    for seen in [&[1, 2, 3, 4][..], &[1, 2, 3], &[1, 2], &[1, 2]] {
        run.witness_all(seen);
        assert_eq!(run.tick(10), Ok(RunState::RoundTrain));
    }
    // A round without a quorum is no evidence and ends the epoch.
    assert_eq!(run.tick(60), Ok(RunState::RoundWitness));
    assert_eq!(run.tick(10), Ok(RunState::Cooldown));
    assert_eq!(run.c.epoch_quorum_rounds, 4);
    assert_eq!(run.tick(20), Ok(RunState::WaitingForMembers));
    let paid: Vec<u64> = (1..=4)
        .map(|m| run.c.members[run.c.member_index(&id(m)).unwrap()].points)
        .collect();
    assert_eq!(
        paid,
        [100, 100, 50, 25],
        "points_per_epoch x seen / quorum rounds"
    );
    assert!(
        run.c.members.iter().all(|m| m.seen_rounds == 0),
        "counted afresh each epoch"
    );
    assert_eq!(run.c.epoch_quorum_rounds, 0);
}

#[test]
fn a_report_marks_only_participants_that_committed() {
    let mut run = Run::started(config(), &[1, 2, 3, 4]);
    let round = *run.c.current_round().unwrap();
    let witness = run.c.members[round.elected(0).unwrap()].id;
    let mut report = run.report(&[1, 2, 3]);
    // Member 4 trains this round but has not committed; slot 200 is no participant at all.
    let uncommitted = run.c.member_index(&id(4)).unwrap();
    for (slot, extra) in [(uncommitted, uncommitted), (200, 200)] {
        let mut false_report = report;
        false_report.insert(extra);
        let before = run.c.clone();
        let now = run.at(1);
        assert_eq!(
            run.c.witness(witness, round.step, 0, &false_report, now),
            Err(CoordinatorError::ReportNamesUncommitted { slot: slot as u16 })
        );
        assert_eq!(run.c, before);
    }
    // All ones (the saturated filter of audit finding 4) names every slot.
    let saturated = WitnessReport { seen: [0xFF; 32] };
    let now = run.at(1);
    assert!(matches!(
        run.c.witness(witness, round.step, 0, &saturated, now),
        Err(CoordinatorError::ReportNamesUncommitted { .. })
    ));
    report.insert(uncommitted);
    run.commit(&[4]);
    let now = run.at(1);
    run.c.witness(witness, round.step, 0, &report, now).unwrap();
}

#[test]
fn a_participant_commits_once_to_a_nonzero_hash_in_its_round() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    let step = run.c.step;
    let now = run.at(1);
    assert_eq!(
        run.c.commit(id(1), step, [0; 32], now),
        Err(CoordinatorError::EmptyCommitment)
    );
    assert_eq!(
        run.c.commit(id(1), step + 1, [1; 32], now),
        Err(CoordinatorError::WrongRound {
            step: step + 1,
            current: step
        })
    );
    assert_eq!(
        run.c.commit(id(99), step, [1; 32], now),
        Err(CoordinatorError::NotAMember)
    );
    run.c.commit(id(1), step, [1; 32], now).unwrap();
    // Once only: what a witness vouched for can never be swapped for another payload.
    assert_eq!(
        run.c.commit(id(1), step, [2; 32], now),
        Err(CoordinatorError::AlreadyCommitted)
    );
    let slot = run.c.member_index(&id(1)).unwrap();
    assert_eq!(
        run.c.current_round().unwrap().commitment(slot),
        Some(&[1; 32])
    );
    // A member that joins mid-epoch trains from the next one: it is no participant yet.
    run.c.join(id(7), endpoint(7), now).unwrap();
    let slot = run.c.member_index(&id(7)).unwrap();
    run.c.members[slot].status = MemberStatus::Active as u8;
    assert_eq!(
        run.c.commit(id(7), step, [7; 32], now),
        Err(CoordinatorError::NotAParticipant)
    );
    // After the round closes, its commitments are fixed.
    run.witness_all(&[1, 2, 3]);
    run.tick(10).unwrap();
    let now = run.at(1);
    assert_eq!(
        run.c.commit(id(2), step, [2; 32], now),
        Err(CoordinatorError::WrongRound {
            step,
            current: step + 1
        })
    );
}

/// Audit finding 5: with Bloom reports, a payload whose hash a quorum's filters "held" was found
/// in 49 tries against 256 participants. Now what counts for a participant is one hash, the one
/// it committed on chain, and a replica applies only bytes with that SHA-256: forging a result
/// is a second preimage (2^-256 per try), not a filter's false positive.
#[test]
fn what_counts_is_the_exact_hash_each_participant_committed() {
    let members: Vec<u8> = (1..=200).collect();
    let config = Config {
        init_min_clients: 200,
        min_clients: 200,
        witness_nodes: 32,
        ..config()
    };
    let mut run = Run::started(config, &members);
    // Member 200 commits, but no witness holds its result.
    run.commit(&[200]);
    run.witness_all(&members[..199]);
    run.tick(10).unwrap();
    let round = *run.c.closed_round(0).unwrap();
    for slot in 0..demeter_coordinator_core::state::MAX_CLIENTS {
        let member = run.c.members[slot].id[0];
        let expected = (1..200).contains(&member).then(|| commitment(member, 0));
        assert_eq!(round.counted(slot).copied(), expected, "slot {slot}");
    }
}

#[test]
fn health_checks_drop_members_a_quorum_did_not_see() {
    let mut run = Run::started(config(), &[1, 2, 3, 4]);
    run.witness_all(&[1, 2, 3]);
    assert_eq!(run.tick(10), Ok(RunState::RoundTrain));
    let now = run.at(1);
    assert_eq!(
        run.c.health_check(id(1), 0, id(2), now),
        Err(CoordinatorError::ClientWasSeen)
    );
    assert_eq!(
        run.c.health_check(id(1), 1, id(4), now),
        Err(CoordinatorError::UnknownRound(1))
    );
    assert_eq!(
        run.c.health_check(id(99), 0, id(4), now),
        Err(CoordinatorError::NotAMember)
    );
    run.c.health_check(id(1), 0, id(4), now).unwrap();
    let slot = run.c.member_index(&id(4)).unwrap();
    assert_eq!(run.c.members[slot].status(), MemberStatus::Dropped);
    assert_eq!(
        run.c.health_check(id(4), 0, id(1), now),
        Err(CoordinatorError::NotInEpoch),
        "dropped members cannot accuse"
    );
    // Dropped mid-round: it keeps this round's batches, gets none after, and no points. If
    // it was elected a witness of this round, it no longer reports.
    close_round_with_active_witnesses(&mut run, &[1, 2, 3]);
    assert_eq!(run.c.run_state(), RunState::RoundTrain);
    assert_eq!(run.c.current_round().unwrap().assignment(slot), None);
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(&[1, 2, 3]);
        run.tick(10).unwrap();
    }
    run.tick(20).unwrap();
    assert_eq!(run.c.members[slot].points, 0);
    assert_eq!(
        run.c.members[run.c.member_index(&id(1)).unwrap()].points,
        100
    );
}

#[test]
fn too_few_witness_reports_end_the_epoch() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    assert_eq!(run.tick(60), Ok(RunState::RoundWitness));
    assert_eq!(run.tick(10), Ok(RunState::Cooldown));
    let now = run.at(1);
    assert_eq!(
        run.c.health_check(id(1), 0, id(2), now),
        Err(CoordinatorError::NoQuorum(0)),
        "no evidence"
    );
}

#[test]
fn late_joiners_wait_for_the_next_epoch() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    let now = run.at(1);
    run.c.join(id(5), endpoint(5), now).unwrap();
    let slot = run.c.member_index(&id(5)).unwrap();
    assert_eq!(run.c.members[slot].status(), MemberStatus::Pending);
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(&[1, 2, 3]);
        run.tick(10).unwrap();
    }
    assert_eq!(run.tick(20), Ok(RunState::WaitingForMembers));
    assert_eq!(run.c.members[slot].status(), MemberStatus::Active);
    assert_eq!(
        run.c.members[slot].points, 0,
        "pending members earn nothing for the epoch they missed"
    );
}

#[test]
fn pause_waits_for_the_round_and_resume_restarts_the_epoch() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    let now = run.at(1);
    run.c.pause(now).unwrap();
    assert_eq!(run.c.pause(now), Err(CoordinatorError::AlreadyPaused));
    run.witness_all(&[1, 2, 3]);
    assert_eq!(
        run.tick(10),
        Ok(RunState::Cooldown),
        "the round finishes, then the epoch ends"
    );
    assert_eq!(run.tick(20), Ok(RunState::Paused));
    assert_eq!(
        run.c.members[0].points, 100,
        "a completed round before the pause still pays"
    );
    assert_eq!(run.tick(1000), Err(CoordinatorError::NothingDue));
    let now = run.at(1);
    run.c.resume(now).unwrap();
    assert_eq!(run.c.run_state(), RunState::WaitingForMembers);
    assert_eq!(run.c.resume(now), Err(CoordinatorError::NotPaused));
}

#[test]
fn the_run_finishes_at_total_steps() {
    let mut run = Run::started(
        Config {
            total_steps: 2,
            ..config()
        },
        &[1, 2, 3],
    );
    for _ in 0..2 {
        run.witness_all(&[1, 2, 3]);
        run.tick(10).unwrap();
    }
    assert_eq!(run.c.run_state(), RunState::Cooldown);
    assert_eq!(run.tick(20), Ok(RunState::Finished));
    let now = run.at(1);
    assert_eq!(
        run.c.join(id(7), endpoint(7), now),
        Err(CoordinatorError::WrongState(RunState::Finished))
    );
    assert_eq!(
        run.c.pause(now),
        Err(CoordinatorError::WrongState(RunState::Finished))
    );
}

#[test]
fn rejected_inputs_change_nothing() {
    let mut run = Run::started(config(), &[1, 2, 3]);
    run.witness_all(&[1, 2, 3]);
    run.tick(10).unwrap();
    let before = *run.c;
    let now = run.now;
    assert!(
        run.c.tick(now - 5, &seed(1)).is_err(),
        "time never goes back"
    );
    assert!(run.c.health_check(id(1), 0, id(2), now).is_err());
    assert!(run.c.join(id(2), endpoint(2), now).is_err());
    assert_eq!(*run.c, before);
    // Points would overflow at the end of the epoch: the tick is refused as a whole.
    let slot = run.c.member_index(&id(3)).unwrap();
    run.c.members[slot].points = u64::MAX - 10;
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(&[1, 2, 3]);
        run.tick(10).unwrap();
    }
    let before = *run.c;
    assert_eq!(run.tick(20), Err(CoordinatorError::Overflow("points")));
    assert_eq!(*run.c, before);
}
