//! Verdicts: verifiers judge closed rounds' results, a quorum ejects and slashes, and what the
//! coordinator can check of a finding it checks.

mod fixture;

use demeter_coordinator_core::{Config, CoordinatorError, Finding, MemberStatus, Round, RunState};
use fixture::*;

/// Closes the current round with every member's result seen; returns the closed round.
fn close_round_seen_by_all(run: &mut Run, members: &[u8]) -> Round {
    let step = run.c.step;
    run.witness_all(members);
    assert_eq!(run.tick(10), Ok(RunState::RoundTrain));
    *run.c.held_round(step).unwrap()
}

fn verdict(
    run: &mut Run,
    round: &Round,
    verifier: u8,
    target: u8,
    finding: Finding,
) -> Result<(), CoordinatorError> {
    let slot = run.c.member_index(&id(verifier)).unwrap();
    let position = round.witness_position(slot).unwrap_or(0);
    let now = run.at(1);
    run.c
        .verdict(id(verifier), round.step, position, id(target), finding, now)
}

fn member(run: &Run, m: u8) -> demeter_coordinator_core::Member {
    run.c.members[run.c.member_index(&id(m)).unwrap()]
}

/// Runs the current epoch to its end, every member seen in every round, then starts the next.
fn finish_epoch(run: &mut Run, members: &[u8]) {
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(members);
        run.tick(10).unwrap();
    }
    assert_eq!(run.tick(20), Ok(RunState::WaitingForMembers));
}

#[test]
fn a_verdict_quorum_ejects_the_cheater_slashes_its_points_and_voids_its_later_results() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    finish_epoch(&mut run, &members);
    assert!(members.iter().all(|&m| member(&run, m).points == 100));
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    for m in members {
        let now = run.at(1);
        run.c.warmup_witness(id(m), now).unwrap();
    }
    assert_eq!(run.tick(0), Ok(RunState::RoundTrain));

    let judged = close_round_seen_by_all(&mut run, &members);
    let (verifiers, others) = elected_and_others(&run, &judged, &members);
    assert_eq!((verifiers.len(), others.len()), (3, 1));
    let cheater = others[0];
    // The cheater commits to its next result before the verdicts land.
    run.commit(&[cheater]);

    assert_eq!(
        verdict(&mut run, &judged, cheater, verifiers[0], Finding::Zero),
        Err(CoordinatorError::NotAVerifier),
        "only the round's verifiers judge it"
    );
    let now = run.at(1);
    assert_eq!(
        run.c
            .verdict(id(99), judged.step, 0, id(cheater), Finding::Zero, now),
        Err(CoordinatorError::NotAMember)
    );
    verdict(&mut run, &judged, verifiers[0], cheater, Finding::Zero).unwrap();
    assert_eq!(
        verdict(&mut run, &judged, verifiers[0], cheater, Finding::Zero),
        Err(CoordinatorError::DuplicateVerdict),
        "each verifier counts once"
    );
    assert_eq!(member(&run, cheater).status(), MemberStatus::Active);
    verdict(&mut run, &judged, verifiers[1], cheater, Finding::Zero).unwrap();

    let ejected = member(&run, cheater);
    assert_eq!(ejected.status(), MemberStatus::Ejected);
    assert_eq!((ejected.points, ejected.slashed), (100, 100));
    assert_eq!(ejected.payable_points(), 0, "the treasurer pays none of it");
    assert_eq!(
        verdict(&mut run, &judged, verifiers[2], cheater, Finding::Zero),
        Err(CoordinatorError::Ejected)
    );
    let now = run.at(1);
    assert_eq!(
        run.c.join(id(cheater), endpoint(cheater), now),
        Err(CoordinatorError::Ejected),
        "an ejected member never rejoins"
    );

    // The round under way when it was ejected: witnesses saw its committed result, but it
    // does not count.
    let under_way = close_round_seen_by_all(&mut run, &members);
    let slot = run.c.member_index(&id(cheater)).unwrap();
    assert!(under_way.was_seen(slot) && under_way.was_ejected(slot));
    assert_eq!(under_way.counted(slot), None);
    assert!(verifiers.iter().all(|&v| {
        under_way
            .counted(run.c.member_index(&id(v)).unwrap())
            .is_some()
    }));
    // From then on it trains nothing and earns nothing.
    assert!(!run.c.current_round().unwrap().is_participant(slot));
    finish_epoch(&mut run, &verifiers);
    assert_eq!(member(&run, cheater).points, 100);
    assert_eq!(member(&run, cheater).slashed, 100);
    assert!(verifiers.iter().all(|&m| member(&run, m).points == 200));
}

#[test]
fn one_lying_verifier_is_outvoted() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    let judged = close_round_seen_by_all(&mut run, &members);
    let (verifiers, others) = elected_and_others(&run, &judged, &members);
    // The liar accuses an honest member; the other verifiers do not.
    verdict(&mut run, &judged, verifiers[0], others[0], Finding::Zero).unwrap();
    let honest = run.c.member_index(&id(others[0])).unwrap();
    assert_eq!(
        run.c
            .held_round(judged.step)
            .unwrap()
            .accusation_count(honest),
        1
    );
    finish_epoch(&mut run, &members);
    assert_eq!(member(&run, others[0]).status(), MemberStatus::Active);
    assert_eq!(member(&run, others[0]).points, 100);
    assert_eq!(member(&run, others[0]).slashed, 0);
}

#[test]
fn a_run_with_one_witness_ejects_nobody() {
    let config = Config {
        witness_nodes: 1,
        ..config()
    };
    let members = [1, 2, 3];
    let mut run = Run::started(config, &members);
    let judged = close_round_seen_by_all(&mut run, &members);
    assert_eq!((judged.quorum(), judged.verdict_quorum()), (1, 2));
    let (verifiers, others) = elected_and_others(&run, &judged, &members);
    verdict(&mut run, &judged, verifiers[0], others[0], Finding::Zero).unwrap();
    assert_eq!(member(&run, others[0]).status(), MemberStatus::Active);
}

#[test]
fn findings_are_checked_against_what_the_coordinator_recorded() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    let now = run.at(0);
    assert_eq!(
        run.c.verdict(id(1), 0, 0, id(2), Finding::Zero, now),
        Err(CoordinatorError::UnknownRound(0)),
        "a round is judged once it has closed"
    );
    // Members commit in a known order: 4, 3, 2, 1; a quorum sees all but member 1.
    run.commit(&[4, 3, 2, 1]);
    let judged = {
        let step = run.c.step;
        run.witness_all(&[4, 3, 2]);
        run.tick(10).unwrap();
        *run.c.held_round(step).unwrap()
    };
    let (verifiers, _) = elected_and_others(&run, &judged, &members);
    let v = verifiers[0];
    let target = *members.iter().find(|&&m| m != v && m != 1).unwrap();
    let refuted = |result| matches!(result, Err(CoordinatorError::FindingRefuted(_)));
    let slot = |run: &Run, m: u8| run.c.member_index(&id(m)).unwrap() as u16;

    assert_eq!(
        verdict(&mut run, &judged, v, 1, Finding::Zero),
        Err(CoordinatorError::NotCounted),
        "an unseen result counted for nothing"
    );
    let itself = Finding::Copy {
        of: slot(&run, target),
        overlap: 1000,
    };
    assert!(refuted(verdict(&mut run, &judged, v, target, itself)));
    // Member 4 committed first: it copied nobody.
    let of_later = Finding::Copy {
        of: slot(&run, 3),
        overlap: 1000,
    };
    assert!(refuted(verdict(&mut run, &judged, v, 4, of_later)));
    let honest_overlap = Finding::Copy {
        of: slot(&run, 4),
        overlap: 500,
    };
    let copier = if target == 4 { 3 } else { target };
    assert!(refuted(verdict(
        &mut run,
        &judged,
        v,
        copier,
        honest_overlap
    )));
    assert!(
        refuted(verdict(
            &mut run,
            &judged,
            v,
            copier,
            Finding::Stale { overlap: 1000 }
        )),
        "the first round has no earlier result to repeat"
    );
    let copy = Finding::Copy {
        of: slot(&run, 4),
        overlap: 980,
    };
    verdict(&mut run, &judged, v, copier, copy).unwrap();

    // A repeat of the round before is judged in the next round.
    let next = close_round_seen_by_all(&mut run, &members);
    let (verifiers, _) = elected_and_others(&run, &next, &members);
    let stale = Finding::Stale { overlap: 990 };
    let target = *members
        .iter()
        .find(|&&m| m != verifiers[0] && m != 1)
        .unwrap();
    verdict(&mut run, &next, verifiers[0], target, stale).unwrap();
}

#[test]
fn a_participant_assigned_no_samples_cannot_be_judged() {
    let config = Config {
        global_batch_size_start: 3,
        global_batch_size_end: 3,
        ..config()
    };
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config, &members);
    let judged = close_round_seen_by_all(&mut run, &members);
    let idle = *members
        .iter()
        .find(|&&m| {
            let slot = run.c.member_index(&id(m)).unwrap();
            judged.assignment(slot).unwrap().is_empty()
        })
        .expect("four participants share three samples");
    let (verifiers, _) = elected_and_others(&run, &judged, &members);
    let v = *verifiers.iter().find(|&&v| v != idle).unwrap();
    assert!(matches!(
        verdict(&mut run, &judged, v, idle, Finding::Zero),
        Err(CoordinatorError::FindingRefuted(_))
    ));
}

#[test]
fn norm_and_sign_findings_need_their_bound_and_a_round_to_judge_against() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    let refuted = |result| matches!(result, Err(CoordinatorError::FindingRefuted(_)));

    // Two counted results are no round to judge one against.
    let two = {
        let step = run.c.step;
        run.commit(&members);
        run.witness_all(&[1, 2]);
        run.tick(10).unwrap();
        *run.c.held_round(step).unwrap()
    };
    let (verifiers, _) = elected_and_others(&run, &two, &members);
    let v = verifiers[0];
    let target = if v == 1 { 2 } else { 1 };
    let outsized = Finding::Outsized { per_cent: 10_000 };
    let contrary = Finding::Contrary { agreement: 0 };
    assert!(refuted(verdict(&mut run, &two, v, target, outsized)));
    assert!(refuted(verdict(&mut run, &two, v, target, contrary)));

    let all = close_round_seen_by_all(&mut run, &members);
    let (verifiers, _) = elected_and_others(&run, &all, &members);
    let v = verifiers[0];
    let target = *members.iter().find(|&&m| m != v).unwrap();
    let honest_norm = Finding::Outsized { per_cent: 999 };
    let honest_signs = Finding::Contrary { agreement: 400 };
    assert!(refuted(verdict(&mut run, &all, v, target, honest_norm)));
    assert!(refuted(verdict(&mut run, &all, v, target, honest_signs)));
    verdict(&mut run, &all, v, target, outsized).unwrap();
    assert_eq!(
        verdict(&mut run, &all, v, target, contrary),
        Err(CoordinatorError::DuplicateVerdict),
        "one verdict per verifier and target, whatever the finding"
    );
}

#[test]
fn a_low_score_counts_only_for_a_scored_result_under_its_bound_in_a_scoring_run() {
    let members = [1, 2, 3, 4];
    let refuted = |result| matches!(result, Err(CoordinatorError::FindingRefuted(_)));
    let low = Finding::LowScore { share: 0 };

    // A run that scores nothing takes no verdict about scores.
    let mut unscored = Run::started(config(), &members);
    let round = close_round_seen_by_all(&mut unscored, &members);
    let (verifiers, others) = elected_and_others(&unscored, &round, &members);
    assert!(refuted(verdict(
        &mut unscored,
        &round,
        verifiers[0],
        others[0],
        low
    )));

    // One in two of four participants: two scored results a round, judged over 32 rounds,
    // all in the first epoch.
    let mut run = Run::started(
        Config {
            score_one_in: 2,
            epoch_time: 3600,
            ..config()
        },
        &members,
    );
    let first = close_round_seen_by_all(&mut run, &members);
    let (verifiers, _) = elected_and_others(&run, &first, &members);
    let scored_first = *members
        .iter()
        .find(|&&m| first.scored(run.c.member_index(&id(m)).unwrap(), 2))
        .unwrap();
    let judge = *verifiers.iter().find(|&&v| v != scored_first).unwrap();
    assert!(
        refuted(verdict(&mut run, &first, judge, scored_first, low)),
        "no window is full in a run's first round"
    );
    while run.c.step < 2 * demeter_coordinator_core::verdict::SCORE_WINDOW - 1 {
        close_round_seen_by_all(&mut run, &members);
    }
    let round = close_round_seen_by_all(&mut run, &members);
    let slot = |m: u8| run.c.member_index(&id(m)).unwrap();
    let (scored, unscored): (Vec<u8>, Vec<u8>) = members
        .iter()
        .partition(|&&m| round.scored(slot(m), run.c.config.score_one_in));
    assert_eq!((scored.len(), unscored.len()), (2, 2));
    let (verifiers, _) = elected_and_others(&run, &round, &members);
    let judge = |target: u8| *verifiers.iter().find(|&&v| v != target).unwrap();
    assert!(refuted(verdict(
        &mut run,
        &round,
        judge(unscored[0]),
        unscored[0],
        low
    )));
    let target = scored[0];
    let honest = Finding::LowScore {
        share: demeter_coordinator_core::verdict::LOW_SCORE_PER_MILLE,
    };
    assert!(refuted(verdict(
        &mut run,
        &round,
        judge(target),
        target,
        honest
    )));
    let shortfall = Finding::LowScore { share: 249 };
    verdict(&mut run, &round, judge(target), target, shortfall).unwrap();
    assert_eq!(round.verdict_quorum(), 2);
    let second = *verifiers
        .iter()
        .find(|&&v| v != target && v != judge(target))
        .unwrap();
    verdict(&mut run, &round, second, target, shortfall).unwrap();
    assert_eq!(member(&run, target).status(), MemberStatus::Ejected);
}

#[test]
fn spot_check_verdicts_hold_only_for_the_results_the_close_chose() {
    let members = [1, 2, 3, 4];
    let refuted = |result| matches!(result, Err(CoordinatorError::FindingRefuted(_)));
    let mismatch = Finding::Recomputed { picked: 480 };

    // Nothing is chosen before the round closes: nobody knows while training what is checked.
    let mut run = Run::started(
        Config {
            spot_check_one_in: 1,
            score_one_in: 1,
            ..config()
        },
        &members,
    );
    let open = *run.c.current_round().unwrap();
    assert!(
        (0..4).all(|slot| !open.spot_checked(slot, 1) && !open.scored(slot, 1)),
        "an open round checks nothing"
    );
    let closed = close_round_seen_by_all(&mut run, &members);
    assert_ne!(closed.close_seed, [0; 32], "the close draws its own seed");
    assert_ne!(closed.close_seed, closed.seed);
    let slot = |run: &Run, m: u8| run.c.member_index(&id(m)).unwrap();
    assert!(
        members
            .iter()
            .all(|&m| closed.spot_checked(slot(&run, m), 1))
    );

    // A run that spot-checks nothing takes no verdict about a recompute.
    let mut unchecked = Run::started(config(), &members);
    let round = close_round_seen_by_all(&mut unchecked, &members);
    let (verifiers, others) = elected_and_others(&unchecked, &round, &members);
    for finding in [mismatch, Finding::Unserved] {
        assert!(refuted(verdict(
            &mut unchecked,
            &round,
            verifiers[0],
            others[0],
            finding
        )));
    }

    // One in two: find a round that checks one result and leaves another, then judge both.
    let mut run = Run::started(
        Config {
            spot_check_one_in: 2,
            epoch_time: 3600,
            ..config()
        },
        &members,
    );
    let (round, checked, left) = loop {
        let round = close_round_seen_by_all(&mut run, &members);
        let (checked, left): (Vec<u8>, Vec<u8>) = members
            .iter()
            .partition(|&&m| round.spot_checked(slot(&run, m), 2));
        if !checked.is_empty() && !left.is_empty() {
            break (round, checked[0], left[0]);
        }
        assert!(
            run.c.step < 40,
            "one in two leaves both kinds within a few rounds"
        );
    };
    let (verifiers, _) = elected_and_others(&run, &round, &members);
    let judges =
        |target: u8| -> Vec<u8> { verifiers.iter().copied().filter(|&v| v != target).collect() };
    assert!(
        refuted(verdict(
            &mut run,
            &round,
            judges(left)[0],
            left,
            Finding::Unserved
        )),
        "a result the close did not choose was never asked for"
    );
    assert!(
        refuted(verdict(
            &mut run,
            &round,
            judges(checked)[0],
            checked,
            Finding::Unchained
        )),
        "a broken chain needs the next round's result, and that round is still open"
    );
    // The next round closes with the checked member's result counted: its chain can be judged.
    close_round_seen_by_all(&mut run, &members);
    verdict(
        &mut run,
        &round,
        judges(checked)[0],
        checked,
        Finding::Unchained,
    )
    .unwrap();
    assert_eq!(
        verdict(&mut run, &round, judges(checked)[0], checked, mismatch),
        Err(CoordinatorError::DuplicateVerdict),
        "one verdict a verifier, whatever the finding"
    );
    assert_eq!(
        member(&run, checked).status(),
        MemberStatus::Active,
        "one verifier is not a quorum"
    );
    verdict(
        &mut run,
        &round,
        judges(checked)[1],
        checked,
        Finding::Unserved,
    )
    .unwrap();
    assert_eq!(member(&run, checked).status(), MemberStatus::Ejected);
    assert_eq!(member(&run, left).status(), MemberStatus::Active);
}
