//! Attested checkpoints: the witnesses of an epoch's last round vote for the hash of the model
//! at the epoch's end; a quorum of equal votes records it, a lying minority cannot.

mod fixture;

use demeter_coordinator_core::{CoordinatorError, Input, Round, RunState};
use fixture::*;

/// Runs the current epoch's rounds, every member seen in each, until the cooldown; returns the
/// epoch's last round.
fn train_to_cooldown(run: &mut Run, members: &[u8]) -> Round {
    while run.c.run_state() != RunState::Cooldown {
        run.witness_all(members);
        run.tick(10).unwrap();
    }
    *run.c.held_round(run.c.step - 1).unwrap()
}

/// Member `m` attests, through the one input every host applies.
fn attest(
    run: &mut Run,
    m: u8,
    step: u64,
    position: u16,
    hash: [u8; 32],
) -> Result<(), CoordinatorError> {
    let now = run.at(1);
    let input = Input::Attest {
        step,
        position,
        hash,
    };
    run.c.apply(id(m), &input, now, &[0; 32])
}

#[test]
fn a_witness_quorum_of_the_last_round_attests_the_epoch_end_model() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    let (model, poisoned) = ([7; 32], [66; 32]);
    assert_eq!(
        attest(&mut run, 1, 0, 0, model),
        Err(CoordinatorError::WrongState(RunState::RoundTrain)),
        "nothing is attested while a round is under way"
    );

    let last = train_to_cooldown(&mut run, &members);
    let step = run.c.step;
    assert_eq!(last.step, step - 1);
    let (witnesses, others) = elected_and_others(&run, &last, &members);
    assert_eq!((witnesses.len(), last.quorum()), (3, 2));
    assert_eq!(
        attest(&mut run, others[0], step, 0, model),
        Err(CoordinatorError::NotAnAttester),
        "only the last round's witnesses attest"
    );
    assert_eq!(
        attest(&mut run, witnesses[0], step, 1, model),
        Err(CoordinatorError::NotAnAttester),
        "each at its own position"
    );
    assert_eq!(
        attest(&mut run, witnesses[0], step - 1, 0, model),
        Err(CoordinatorError::WrongRound {
            step: step - 1,
            current: step
        })
    );
    assert_eq!(
        attest(&mut run, witnesses[0], step, 0, [0; 32]),
        Err(CoordinatorError::EmptyAttestation)
    );
    assert_eq!(
        attest(&mut run, 99, step, 0, model),
        Err(CoordinatorError::NotAMember)
    );

    attest(&mut run, witnesses[0], step, 0, model).unwrap();
    assert_eq!(run.c.checkpoint.attested(), None, "one vote is no quorum");
    assert_eq!(
        attest(&mut run, witnesses[0], step, 0, model),
        Err(CoordinatorError::DuplicateAttestation),
        "each witness votes once"
    );
    // A lying witness votes for another model: outvoted, not recorded.
    attest(&mut run, witnesses[1], step, 1, poisoned).unwrap();
    assert_eq!(run.c.checkpoint.attested(), None);
    attest(&mut run, witnesses[2], step, 2, model).unwrap();
    assert_eq!(run.c.checkpoint.attested(), Some((step, &model)));

    // Attesting stays open between rounds (a short cooldown must not lose it), and the record
    // outlives the next epoch's rounds until that epoch's own quorum replaces it.
    assert_eq!(run.tick(20), Ok(RunState::WaitingForMembers));
    assert_eq!(run.c.checkpoint.attested(), Some((step, &model)));
    assert_eq!(run.tick(5), Ok(RunState::Warmup));
    for m in members {
        let now = run.at(1);
        run.c.warmup_witness(id(m), now).unwrap();
    }
    assert_eq!(run.tick(0), Ok(RunState::RoundTrain));
    let next = train_to_cooldown(&mut run, &members);
    assert_eq!(run.c.checkpoint.attested(), Some((step, &model)));
    let (witnesses, _) = elected_and_others(&run, &next, &members);
    let (later, later_model) = (run.c.step, [8; 32]);
    for (position, &witness) in witnesses.iter().enumerate().take(2) {
        attest(&mut run, witness, later, position as u16, later_model).unwrap();
    }
    assert_eq!(run.c.checkpoint.attested(), Some((later, &later_model)));
}

#[test]
fn a_split_vote_attests_nothing_and_the_previous_record_stands() {
    let members = [1, 2, 3, 4];
    let mut run = Run::started(config(), &members);
    let last = train_to_cooldown(&mut run, &members);
    let step = run.c.step;
    let (witnesses, _) = elected_and_others(&run, &last, &members);
    for (position, &witness) in witnesses.iter().enumerate() {
        attest(
            &mut run,
            witness,
            step,
            position as u16,
            [position as u8 + 1; 32],
        )
        .unwrap();
    }
    assert_eq!(run.c.checkpoint.attested(), None);
    assert_eq!(run.c.checkpoint.voted.count_ones(), 3);
}
