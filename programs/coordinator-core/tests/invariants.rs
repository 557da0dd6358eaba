//! Random sequences of inputs never break the run's invariants.

use demeter_coordinator::{
    Bloom, Config, Coordinator, Endpoint, MemberStatus, RunState, WitnessReport,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Input {
    Join(u8),
    Withdraw(u8),
    Tick(i64),
    WarmupWitness(u8),
    /// A client reports as witness `position`, having seen the clients in the mask.
    Witness {
        client: u8,
        position: u16,
        seen: u8,
    },
    HealthCheck {
        from: u8,
        rounds_back: u64,
        target: u8,
    },
    Pause,
    Resume,
}

const CLIENTS: u8 = 6;

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => (0..CLIENTS).prop_map(Input::Join),
        1 => (0..CLIENTS).prop_map(Input::Withdraw),
        6 => prop_oneof![Just(0i64), 1..15i64, 15..90i64].prop_map(Input::Tick),
        3 => (0..CLIENTS).prop_map(Input::WarmupWitness),
        5 => (0..CLIENTS, 0..4u16, any::<u8>()).prop_map(|(client, position, seen)| Input::Witness { client, position, seen }),
        1 => (0..CLIENTS, 1..3u64, 0..CLIENTS).prop_map(|(from, rounds_back, target)| Input::HealthCheck { from, rounds_back, target }),
        1 => Just(Input::Pause),
        1 => Just(Input::Resume),
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

fn apply(c: &mut Coordinator, input: &Input, now: &mut i64, counter: u64) -> bool {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&counter.to_le_bytes());
    let result = match *input {
        Input::Join(client) => c.join(id(client), Endpoint::default(), *now),
        Input::Withdraw(client) => c.withdraw(id(client), *now),
        Input::Tick(seconds) => {
            *now += seconds;
            c.tick(*now, &seed).map(|_| ())
        }
        Input::WarmupWitness(client) => c.warmup_witness(id(client), *now, &seed),
        Input::Witness {
            client,
            position,
            seen,
        } => {
            let round_seed = c.rounds[c.step as usize % 4].seed;
            let mut report = WitnessReport {
                participants: Bloom::default(),
                commitments: Bloom::default(),
            };
            for other in (0..CLIENTS).filter(|other| seen & (1 << other) != 0) {
                report.participants.insert(&id(other), &round_seed);
            }
            c.witness(id(client), c.step, position, &report, *now)
        }
        Input::HealthCheck {
            from,
            rounds_back,
            target,
        } => c.health_check(
            id(from),
            c.step.saturating_sub(rounds_back),
            id(target),
            *now,
        ),
        Input::Pause => c.pause(*now),
        Input::Resume => c.resume(*now),
    };
    result.is_ok()
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
        init_min_clients: 3,
        min_clients: 2,
        witness_nodes,
        _padding: 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(witness_nodes in 1..4u16, inputs in prop::collection::vec(input(), 1..400)) {
        let mut c: Box<Coordinator> = bytemuck::zeroed_box();
        let mut now = 0i64;
        c.init([1; 32], config(witness_nodes), now).unwrap();
        for (counter, input) in inputs.iter().enumerate() {
            let before = *c;
            let accepted = apply(&mut c, input, &mut now, counter as u64);
            if !accepted {
                prop_assert_eq!(&*c, &before, "a rejected {:?} changed the state", input);
                continue;
            }
            let (from, to) = (before.run_state(), c.run_state());
            prop_assert!(allowed(from, to), "{:?} -> {:?} on {:?}", from, to, input);
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
