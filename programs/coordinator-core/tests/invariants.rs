//! Random sequences of inputs never break the run's invariants.

use demeter_coordinator_core::{
    Config, Coordinator, Endpoint, Finding, Input, MemberStatus, RunState, WitnessReport,
};
use proptest::prelude::*;

/// What a generated client does; applied as the run's [`Input`] through
/// [`Coordinator::apply`], the path every host takes.
#[derive(Clone, Debug)]
enum Action {
    Join(u8),
    Withdraw(u8),
    Tick(i64),
    WarmupWitness(u8),
    /// A client commits to a result of the current round.
    Commit(u8, u8),
    /// `client` reports as witness `position` (`None`: the member elected there), having seen
    /// the clients in the mask (`None`: every participant that committed, as an honest witness
    /// holding everything reports).
    Witness {
        client: Option<u8>,
        position: u16,
        seen: Option<u8>,
    },
    HealthCheck {
        from: u8,
        rounds_back: u64,
        target: u8,
    },
    /// `client` (`None`: the member elected there) judges `target`'s result of a round
    /// `rounds_back` before the current step, as verifier `position`.
    Verdict {
        client: Option<u8>,
        rounds_back: u64,
        position: u16,
        target: u8,
        finding: Finding,
    },
    /// `client` (`None`: the member elected there) attests, as witness `position` of the round
    /// before the current step, the model with hash `[hash; 32]`.
    Attest {
        client: Option<u8>,
        position: u16,
        hash: u8,
    },
    Pause,
    Resume,
    /// Shorthand, expanded before it is applied: every client commits, then every elected
    /// witness reports what was committed (so rounds close with results that count).
    HonestRound,
    /// Shorthand: every witness of the round before the current step attests `[hash; 32]`.
    AttestAll {
        hash: u8,
    },
    /// Shorthand: every verifier of the two rounds before judges `target` by `finding`.
    Judge {
        target: u8,
        finding: Finding,
    },
}

impl Action {
    /// The inputs' actions this one stands for.
    fn expand(&self) -> Vec<Action> {
        match *self {
            Action::HonestRound => (0..CLIENTS)
                .map(|client| Action::Commit(client, client))
                .chain((0..4).map(|position| Action::Witness {
                    client: None,
                    position,
                    seen: None,
                }))
                .collect(),
            Action::Judge { target, finding } => (1..3)
                .flat_map(|rounds_back| {
                    (0..4).map(move |position| Action::Verdict {
                        client: None,
                        rounds_back,
                        position,
                        target,
                        finding,
                    })
                })
                .collect(),
            Action::AttestAll { hash } => (0..4)
                .map(|position| Action::Attest {
                    client: None,
                    position,
                    hash,
                })
                .collect(),
            ref action => vec![action.clone()],
        }
    }
}

const CLIENTS: u8 = 6;

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => (0..CLIENTS).prop_map(Action::Join),
        1 => (0..CLIENTS).prop_map(Action::Withdraw),
        6 => prop_oneof![Just(0i64), 1..15i64, 15..90i64].prop_map(Action::Tick),
        3 => (0..CLIENTS).prop_map(Action::WarmupWitness),
        5 => (0..CLIENTS, any::<u8>()).prop_map(|(client, hash)| Action::Commit(client, hash)),
        5 => (proptest::option::of(0..CLIENTS), 0..4u16, prop_oneof![Just(None), Just(Some(0xFFu8)), any::<u8>().prop_map(Some)])
            .prop_map(|(client, position, seen)| Action::Witness { client, position, seen }),
        1 => (0..CLIENTS, 1..3u64, 0..CLIENTS).prop_map(|(from, rounds_back, target)| Action::HealthCheck { from, rounds_back, target }),
        3 => (
            proptest::option::of(0..CLIENTS),
            1..3u64,
            0..4u16,
            0..CLIENTS,
            prop_oneof![
                Just(Finding::Zero),
                (0..CLIENTS as u16).prop_map(|of| Finding::Copy { of, overlap: 1000 }),
                Just(Finding::Stale { overlap: 960 }),
            ],
        )
            .prop_map(|(client, rounds_back, position, target, finding)| Action::Verdict {
                client,
                rounds_back,
                position,
                target,
                finding,
            }),
        3 => (proptest::option::of(0..CLIENTS), 0..4u16, 0..3u8)
            .prop_map(|(client, position, hash)| Action::Attest { client, position, hash }),
        2 => (0..2u8).prop_map(|hash| Action::AttestAll { hash }),
        1 => Just(Action::Pause),
        1 => Just(Action::Resume),
        4 => Just(Action::HonestRound),
        3 => (0..CLIENTS, prop_oneof![Just(Finding::Zero), Just(Finding::Stale { overlap: 1000 })])
            .prop_map(|(target, finding)| Action::Judge { target, finding }),
    ]
}

fn id(client: u8) -> [u8; 32] {
    [client + 1; 32]
}

fn allowed(from: RunState, to: RunState) -> bool {
    use RunState::*;
    from == to
        || matches!(
            (from, to),
            (WaitingForMembers, Warmup | Paused)
                | (Warmup, RoundTrain | WaitingForMembers | Paused)
                | (RoundTrain, RoundWitness)
                | (RoundWitness, RoundTrain | Cooldown)
                | (Cooldown, WaitingForMembers | Paused | Finished)
                | (Paused, WaitingForMembers)
        )
}

/// The run authority in these runs (hosts check it before `apply`; the machine does not).
const AUTHORITY: [u8; 32] = [0; 32];

/// Applies `action`; returns who signed it and whether it was accepted.
fn apply(c: &mut Coordinator, action: &Action, now: &mut i64, counter: u64) -> ([u8; 32], bool) {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&counter.to_le_bytes());
    let mut report = WitnessReport::default();
    let (signer, input) = match *action {
        Action::Join(client) => (
            id(client),
            Input::Join {
                endpoint: Endpoint::default(),
            },
        ),
        Action::Withdraw(client) => (id(client), Input::Withdraw),
        Action::Tick(seconds) => {
            *now += seconds;
            (AUTHORITY, Input::Tick)
        }
        Action::WarmupWitness(client) => (id(client), Input::WarmupWitness),
        Action::Commit(client, hash) => (
            id(client),
            Input::Commit {
                step: c.step,
                hash: [hash; 32],
            },
        ),
        Action::Witness {
            client,
            position,
            seen,
        } => {
            // Any members' slots: honest reports (committed participants only) and false ones.
            for slot in (0..CLIENTS).filter_map(|other| {
                let marked = match (seen, c.current_round()) {
                    (Some(mask), _) => mask & (1 << other) != 0,
                    (None, Some(round)) => c
                        .member_index(&id(other))
                        .is_some_and(|slot| round.commitment(slot).is_some()),
                    (None, None) => false,
                };
                marked.then(|| c.member_index(&id(other))).flatten()
            }) {
                report.insert(slot);
            }
            let input = Input::Witness {
                step: c.step,
                position,
                report,
            };
            let elected = c
                .current_round()
                .and_then(|round| round.elected(position))
                .map(|slot| c.members[slot].id);
            let signer = match client {
                Some(client) => id(client),
                None => elected.unwrap_or(id(0)),
            };
            (signer, input)
        }
        Action::HealthCheck {
            from,
            rounds_back,
            target,
        } => (
            id(from),
            Input::HealthCheck {
                step: c.step.saturating_sub(rounds_back),
                target: id(target),
            },
        ),
        Action::Verdict {
            client,
            rounds_back,
            position,
            target,
            finding,
        } => {
            let step = c.step.saturating_sub(rounds_back);
            let signer = signer_or_elected(c, client, step, position);
            let input = Input::Verdict {
                step,
                position,
                target: id(target),
                finding,
            };
            (signer, input)
        }
        Action::Attest {
            client,
            position,
            hash,
        } => {
            let signer = signer_or_elected(c, client, c.step.saturating_sub(1), position);
            let input = Input::Attest {
                step: c.step,
                position,
                hash: [hash; 32],
            };
            (signer, input)
        }
        Action::Pause => (AUTHORITY, Input::Pause),
        Action::Resume => (AUTHORITY, Input::Resume),
        Action::HonestRound | Action::Judge { .. } | Action::AttestAll { .. } => {
            unreachable!("expanded before applied")
        }
    };
    (signer, c.apply(signer, &input, *now, &seed).is_ok())
}

/// `client`'s key, or (`None`) the member elected witness `position` of held round `step`.
fn signer_or_elected(c: &Coordinator, client: Option<u8>, step: u64, position: u16) -> [u8; 32] {
    let elected = c
        .held_round(step)
        .and_then(|round| round.elected(position))
        .map(|slot| c.members[slot].id);
    match client {
        Some(client) => id(client),
        None => elected.unwrap_or(id(0)),
    }
}

fn config(witness_nodes: u16) -> Config {
    Config {
        warmup_time: 20,
        cooldown_time: 10,
        max_round_train_time: 30,
        round_witness_time: 5,
        epoch_time: 200,
        join_window: 3,
        total_steps: 25,
        global_batch_size_start: 4,
        global_batch_size_end: 16,
        global_batch_size_ramp_steps: 10,
        points_per_epoch: 7,
        witness_nodes,
        ..Config::example()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(witness_nodes in 1..4u16, actions in prop::collection::vec(action(), 1..400)) {
        let mut c: Box<Coordinator> = bytemuck::zeroed_box();
        let mut now = 0i64;
        c.init([1; 32], config(witness_nodes), now).unwrap();
        let actions: Vec<Action> = actions.iter().flat_map(Action::expand).collect();
        for (counter, action) in actions.iter().enumerate() {
            let before = *c;
            let (signer, accepted) = apply(&mut c, action, &mut now, counter as u64);
            if !accepted {
                prop_assert_eq!(&*c, &before, "a rejected {:?} changed the state", action);
                continue;
            }
            let (from, to) = (before.run_state(), c.run_state());
            prop_assert!(allowed(from, to), "{:?} -> {:?} on {:?}", from, to, action);
            prop_assert!(c.step >= before.step && c.epoch >= before.epoch, "progress only grows");
            let ids: Vec<_> = c.members.iter().filter(|m| m.status() != MemberStatus::Empty).map(|m| m.id).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), ids.len(), "no duplicate member");
            for (old, new) in before.members.iter().zip(&c.members) {
                prop_assert!(new.points >= old.points, "points never shrink");
                if new.points > old.points {
                    prop_assert!(from == RunState::Cooldown && old.status() == MemberStatus::Active,
                        "points only at an epoch's end, only to members healthy for the epoch");
                    // Audit finding 1: points follow evidence.
                    prop_assert!(before.epoch_quorum_rounds > 0 && old.seen_rounds > 0,
                        "points only to members a witness quorum saw in a round of the epoch");
                    let most = config(witness_nodes).points_per_epoch * u64::from(old.seen_rounds)
                        / u64::from(before.epoch_quorum_rounds);
                    prop_assert_eq!(new.points - old.points, most, "the share its evidence earns");
                }
                // Audit finding 3: slots are freed, but never one that holds points.
                if old.points > 0 {
                    prop_assert_eq!(new.id, old.id, "a member with points keeps its slot");
                }
                prop_assert!(new.slashed <= new.points, "only points held are slashed");
                if new.id == old.id {
                    prop_assert!(new.slashed >= old.slashed, "a slash is never undone");
                    if old.status() == MemberStatus::Ejected {
                        prop_assert_eq!(new.status(), MemberStatus::Ejected, "an ejection is for good");
                    }
                }
                if new.slashed > old.slashed || (new.status() == MemberStatus::Ejected && old.status() != MemberStatus::Ejected && new.id == old.id) {
                    prop_assert!(matches!(action, Action::Verdict { .. }), "only a verdict ejects and slashes");
                    prop_assert_eq!(new.slashed, new.points, "an ejection slashes every point held");
                }
            }
            // Verdicts come from a verifier of the judged round that stands in the epoch, are
            // about a result that counted, and eject only with two or more verifiers agreeing.
            if let Action::Verdict { rounds_back, position, target, .. } = action {
                let step = before.step.saturating_sub(*rounds_back);
                let round = before.closed_round(step).unwrap();
                let slot = before.member_index(&signer).unwrap();
                prop_assert_eq!(before.members[slot].status(), MemberStatus::Active);
                prop_assert_eq!(round.elected(*position), Some(slot), "a verdict comes from an elected verifier");
                let accused = before.member_index(&id(*target)).unwrap();
                prop_assert!(round.counted(accused).is_some(), "only a counted result is judged");
                let after = &c.rounds[step as usize % 4];
                if c.members[accused].status() == MemberStatus::Ejected {
                    prop_assert!(after.accusation_count(accused) >= after.verdict_quorum().max(2));
                }
            }
            // Only an attestation moves the attested checkpoint, only forward, only to the model
            // a witness quorum of the last round before it voted for.
            if c.checkpoint.attested() != before.checkpoint.attested() {
                prop_assert!(matches!(action, Action::Attest { .. }), "only witnesses attest");
                let (step, hash) = c.checkpoint.attested().unwrap();
                prop_assert!(before.checkpoint.attested().is_none_or(|(old, _)| step >= old));
                prop_assert!(!matches!(before.run_state(), RunState::RoundTrain | RunState::RoundWitness));
                let last = before.held_round(step - 1).unwrap();
                let agreeing = (0..last.witness_count)
                    .filter(|&p| c.checkpoint.has_voted(step, p) && c.checkpoint.votes[usize::from(p)] == *hash)
                    .count();
                prop_assert!(agreeing >= usize::from(last.quorum()), "a quorum of equal votes");
            }
            // What a closed round counts never changes: replicas applied it.
            for (old, new) in before.rounds.iter().zip(&c.rounds) {
                if old.closed == 1 && new.step == old.step {
                    for slot in 0..256 {
                        prop_assert_eq!(new.counted(slot), old.counted(slot), "a closed round's results are fixed");
                    }
                }
            }
            // Audit finding 10: only a member standing in the epoch reports as a witness.
            if let Action::Witness { .. } = action {
                let slot = before.member_index(&signer).unwrap();
                prop_assert_eq!(before.members[slot].status(), MemberStatus::Active,
                    "an accepted report comes from an Active member");
                // Audit findings 4 and 5: a report is an exact set of committed participants.
                let round = before.current_round().unwrap();
                let position = usize::from(match action { Action::Witness { position, .. } => *position, _ => unreachable!() });
                let report = c.rounds[before.step as usize % 4].reports[position];
                prop_assert!(report.slots().all(|slot| round.is_participant(slot) && round.commitment(slot).is_some()),
                    "an accepted report marks only participants that committed");
            }
            // A commitment, once made, is what the round holds for that participant until the
            // round is replaced, so what witnesses vouched for is what replicas apply.
            for (old, new) in before.rounds.iter().zip(&c.rounds) {
                if old.in_use == 1 && new.step == old.step {
                    for slot in (0..256).filter(|&slot| old.commitment(slot).is_some()) {
                        prop_assert_eq!(new.commitment(slot), old.commitment(slot), "a commitment never changes");
                    }
                }
            }
            if to == RunState::RoundTrain && (from != to || c.step != before.step) {
                let round = c.current_round().unwrap();
                for (slot, member) in c.members.iter().enumerate() {
                    prop_assert_eq!(round.is_participant(slot), member.status() == MemberStatus::Active,
                        "exactly the healthy members train a new round");
                }
                let mut assigned: Vec<_> = (0..256).filter_map(|slot| round.assignment(slot)).collect();
                // By start, then end: a participant with no sample (more participants than
                // samples) has an empty range, which sits before the range starting there.
                assigned.sort_by_key(|r| (r.start, r.end));
                let covered: u64 = assigned.iter().map(|r| r.end - r.start).sum();
                prop_assert_eq!(covered, round.batch_size, "the batch is shared out exactly");
                prop_assert!(assigned.windows(2).all(|w| w[0].end == w[1].start), "contiguous, no overlap");
            }
        }
    }
}
