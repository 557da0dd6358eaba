//! The Solana program through real transactions: solana-program-test runs it natively as a
//! builtin in an in-memory bank, with the system program, rent, clock and slot hashes.

use demeter_coordinator::account::find_run_instance;
use demeter_coordinator::instruction::{self, CoordinatorInstruction};
use demeter_coordinator::processor::process_instruction;
use demeter_coordinator_core::accounts::{RunAccount, RunInstance, Tagged};
use demeter_coordinator_core::{
    AccessError, Config, CoordinatorError, Endpoint, Finding, Input, MemberStatus, RunState,
    WitnessReport,
};
use solana_program_test::{BanksClientError, ProgramTest, ProgramTestContext, processor};
use solana_sdk::account::{Account, AccountSharedData, WritableAccount};
use solana_sdk::clock::Clock;
use solana_sdk::instruction::{Instruction, InstructionError};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::{Transaction, TransactionError};

fn config() -> Config {
    Config {
        epoch_time: 600,
        total_steps: 2,
        ..Config::example()
    }
}

struct Chain {
    ctx: ProgramTestContext,
    now: i64,
    slot: u64,
}

type Sent = Result<(), BanksClientError>;

impl Chain {
    async fn start() -> Self {
        let mut test = ProgramTest::new(
            "demeter_coordinator",
            demeter_coordinator::ID,
            processor!(process_instruction),
        );
        test.prefer_bpf(false);
        let ctx = test.start_with_context().await;
        let clock: Clock = ctx.banks_client.get_sysvar().await.unwrap();
        Self {
            now: clock.unix_timestamp,
            slot: clock.slot,
            ctx,
        }
    }

    /// Moves to a new slot (a fresh blockhash, so repeated instructions are new transactions)
    /// with the chain clock at `self.now`.
    fn next_slot(&mut self) {
        self.slot += 1;
        self.ctx.warp_to_slot(self.slot).unwrap();
        let mut clock = Clock {
            slot: self.slot,
            unix_timestamp: self.now,
            ..Clock::default()
        };
        clock.epoch_start_timestamp = self.now;
        self.ctx.set_sysvar(&clock);
    }

    fn advance(&mut self, seconds: i64) {
        self.now += seconds;
    }

    async fn send(&mut self, instructions: &[Instruction], signers: &[&Keypair]) -> Sent {
        self.next_slot();
        let blockhash = self.ctx.banks_client.get_latest_blockhash().await?;
        let mut all: Vec<&Keypair> = vec![&self.ctx.payer];
        all.extend_from_slice(signers);
        let transaction = Transaction::new_signed_with_payer(
            instructions,
            Some(&self.ctx.payer.pubkey()),
            &all,
            blockhash,
        );
        self.ctx.banks_client.process_transaction(transaction).await
    }

    async fn account(&mut self, key: &Pubkey) -> Option<Account> {
        self.ctx.banks_client.get_account(*key).await.unwrap()
    }

    async fn run(&mut self, key: &Pubkey) -> Box<RunAccount> {
        let account = self.account(key).await.expect("run account exists");
        assert_eq!(account.owner, demeter_coordinator::ID);
        RunAccount::decode(&account.data).unwrap()
    }

    /// Creates a run in one transaction (create the run account, then init it), without join
    /// deposits.
    async fn create_run(
        &mut self,
        authority: &Keypair,
        run_account: &Keypair,
        run_id: [u8; 32],
        join_authority: Option<Pubkey>,
        config: Config,
    ) -> Sent {
        self.create_run_with_deposit(authority, run_account, run_id, join_authority, config, 0)
            .await
    }

    async fn create_run_with_deposit(
        &mut self,
        authority: &Keypair,
        run_account: &Keypair,
        run_id: [u8; 32],
        join_authority: Option<Pubkey>,
        config: Config,
        join_deposit: u64,
    ) -> Sent {
        let rent = self.ctx.banks_client.get_rent().await.unwrap();
        let create = instruction::create_run_account(
            &authority.pubkey(),
            &run_account.pubkey(),
            rent.minimum_balance(RunAccount::LEN),
        );
        let init = instruction::init_run(
            &authority.pubkey(),
            &run_account.pubkey(),
            run_id,
            join_authority,
            config,
            join_deposit,
        );
        self.send(&[create, init], &[authority, run_account]).await
    }

    async fn balance(&mut self, key: &Pubkey) -> u64 {
        self.account(key)
            .await
            .map_or(0, |account| account.lamports)
    }

    async fn funded(&mut self) -> Keypair {
        let key = Keypair::new();
        self.ctx.set_account(
            &key.pubkey(),
            &AccountSharedData::new(10_000_000_000, 0, &solana_system_interface::program::ID),
        );
        key
    }

    /// A tick, and when it arms a transition (a round's start or close), the tick in the next
    /// slot that takes it, as the clients' cranks do.
    async fn tick(&mut self, run: &Pubkey) -> Sent {
        self.send(&[instruction::tick(run)], &[]).await?;
        if self.run(run).await.coordinator.transition_armed == 1 {
            self.send(&[instruction::tick(run)], &[]).await?;
        }
        Ok(())
    }
}

fn endpoint() -> Endpoint {
    Endpoint::from(std::net::SocketAddr::from(([10, 0, 0, 7], 7300)))
}

fn custom(code: u32) -> TransactionError {
    TransactionError::InstructionError(0, InstructionError::Custom(code))
}

fn machine(error: CoordinatorError) -> TransactionError {
    custom(error.code())
}

fn access(error: AccessError) -> TransactionError {
    custom(error.code())
}

fn failed(sent: Sent) -> TransactionError {
    sent.expect_err("the transaction should fail").unwrap()
}

/// A run with three joined clients, at the start of the first round.
struct Started {
    chain: Chain,
    authority: Keypair,
    run: Pubkey,
    run_id: [u8; 32],
    clients: Vec<Keypair>,
}

impl Started {
    async fn new(config: Config) -> Self {
        Self::with_deposit(config, 0).await
    }

    /// Three clients, each paying `join_deposit` to join, in the first round of the run.
    async fn with_deposit(config: Config, join_deposit: u64) -> Self {
        let mut chain = Chain::start().await;
        let authority = chain.funded().await;
        let run_account = Keypair::new();
        let run_id = *b"moby-dick-tiny\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        chain
            .create_run_with_deposit(&authority, &run_account, run_id, None, config, join_deposit)
            .await
            .unwrap();
        let run = run_account.pubkey();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(chain.funded().await);
        }
        for client in &clients {
            chain.advance(1);
            chain
                .send(
                    &[instruction::join(&client.pubkey(), &run, endpoint())],
                    &[client],
                )
                .await
                .unwrap();
        }
        let mut started = Self {
            chain,
            authority,
            run,
            run_id,
            clients,
        };
        started.start_epoch().await;
        started
    }

    /// From WaitingForMembers (with the clients joined) to the first round of an epoch.
    async fn start_epoch(&mut self) {
        self.chain.advance(5);
        self.chain.tick(&self.run).await.unwrap();
        assert_eq!(
            self.chain.run(&self.run).await.coordinator.run_state(),
            RunState::Warmup
        );
        for client in &self.clients {
            self.chain.advance(1);
            self.chain
                .send(
                    &[instruction::warmup_witness(&client.pubkey(), &self.run)],
                    &[client],
                )
                .await
                .unwrap();
        }
        // All ready arms the first round's start; a tick in a later slot takes it.
        let armed = self.chain.run(&self.run).await;
        assert_eq!(
            (
                armed.coordinator.run_state(),
                armed.coordinator.transition_armed
            ),
            (RunState::Warmup, 1)
        );
        self.chain.tick(&self.run).await.unwrap();
        assert_eq!(
            self.chain.run(&self.run).await.coordinator.run_state(),
            RunState::RoundTrain
        );
    }

    fn client(&self, key: &[u8; 32]) -> &Keypair {
        self.clients
            .iter()
            .find(|c| &c.pubkey().to_bytes() == key)
            .unwrap()
    }

    /// Every client commits to its result, and every elected witness reports holding all
    /// three.
    async fn witness_round(&mut self) {
        let state = self.chain.run(&self.run).await;
        let round = *state.coordinator.current_round().unwrap();
        let mut report = WitnessReport::default();
        for client in &self.clients {
            let id = client.pubkey().to_bytes();
            let ix = instruction::commit(
                &client.pubkey(),
                &self.run,
                round.step,
                commitment(&id, round.step),
            );
            self.chain.send(&[ix], &[client]).await.unwrap();
            report.insert(state.coordinator.member_index(&id).unwrap());
        }
        for position in 0..round.witness_count {
            let slot = round.elected(position).unwrap();
            let witness = self
                .client(&state.coordinator.members[slot].id)
                .insecure_clone();
            let ix =
                instruction::witness(&witness.pubkey(), &self.run, round.step, position, report);
            self.chain.advance(1);
            self.chain.send(&[ix], &[&witness]).await.unwrap();
        }
    }
}

fn commitment(id: &[u8; 32], step: u64) -> [u8; 32] {
    let mut c = *id;
    c[..8].copy_from_slice(&step.to_le_bytes());
    c
}

#[tokio::test]
async fn a_full_epoch_with_three_clients_pays_points_and_closes() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    for step in 0..2 {
        let state = s.chain.run(&run).await;
        let round = state.coordinator.current_round().unwrap();
        assert_eq!((round.step, round.participant_count), (step, 3));
        // The three clients split the 12 samples of the round into contiguous shares.
        let mut shares: Vec<_> = (0..3).map(|slot| round.assignment(slot).unwrap()).collect();
        shares.sort_by_key(|r| r.start);
        assert_eq!(shares.iter().map(|r| r.end - r.start).sum::<u64>(), 12);
        s.witness_round().await;
        assert_eq!(
            s.chain.run(&run).await.coordinator.run_state(),
            RunState::RoundWitness
        );
        s.chain.advance(10);
        s.chain.tick(&run).await.unwrap();
        let closed = s.chain.run(&run).await;
        let round = closed.coordinator.closed_round(step).unwrap();
        let first = s.clients[0].pubkey().to_bytes();
        let slot = closed.coordinator.member_index(&first).unwrap();
        assert_eq!(round.counted(slot), Some(&commitment(&first, step)));
    }
    let state = s.chain.run(&run).await.coordinator;
    assert_eq!((state.run_state(), state.step), (RunState::Cooldown, 2));
    s.chain.advance(20);
    s.chain.tick(&run).await.unwrap();
    let state = s.chain.run(&run).await.coordinator;
    assert_eq!(state.run_state(), RunState::Finished);
    for client in &s.clients {
        let slot = state.member_index(&client.pubkey().to_bytes()).unwrap();
        assert_eq!(state.members[slot].points, 100);
        assert_eq!(state.members[slot].status(), MemberStatus::Active);
        assert_eq!(
            state.members[slot].endpoint.socket_addr(),
            Some("10.0.0.7:7300".parse().unwrap())
        );
    }
    assert_eq!(
        failed(s.chain.tick(&run).await),
        machine(CoordinatorError::NothingDue)
    );

    // The run account is the ledger of the points: it does not close while they are owed.
    let close = instruction::close_run(&s.authority.pubkey(), &s.run_id, &run, None);
    let authority = s.authority.insecure_clone();
    assert_eq!(
        failed(s.chain.send(&[close], &[&authority]).await),
        access(AccessError::PointsOwed)
    );
    assert!(s.chain.account(&run).await.is_some());
}

/// Issue 15: the last round's witnesses attest the epoch-end model through real transactions;
/// a quorum of equal hashes records it, and what is not theirs to attest is refused on chain.
#[tokio::test]
async fn the_last_rounds_witnesses_attest_the_epoch_end_model() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    for _ in 0..2 {
        s.witness_round().await;
        s.chain.advance(10);
        s.chain.tick(&run).await.unwrap();
    }
    let state = s.chain.run(&run).await.coordinator;
    assert_eq!((state.run_state(), state.step), (RunState::Cooldown, 2));
    let last = *state.held_round(1).unwrap();
    let witness = |position: u16| {
        let slot = last.elected(position).unwrap();
        s.client(&state.members[slot].id).insecure_clone()
    };
    let (first, second) = (witness(0), witness(1));
    let model = [42; 32];

    let stranger = s.chain.funded().await;
    let sent = s
        .chain
        .send(
            &[instruction::attest(&stranger.pubkey(), &run, 2, 0, model)],
            &[&stranger],
        )
        .await;
    assert_eq!(failed(sent), machine(CoordinatorError::NotAMember));
    let sent = s
        .chain
        .send(
            &[instruction::attest(&first.pubkey(), &run, 2, 1, model)],
            &[&first],
        )
        .await;
    assert_eq!(failed(sent), machine(CoordinatorError::NotAnAttester));
    let sent = s
        .chain
        .send(
            &[instruction::attest(&first.pubkey(), &run, 1, 0, model)],
            &[&first],
        )
        .await;
    assert_eq!(
        failed(sent),
        machine(CoordinatorError::WrongRound {
            step: 1,
            current: 2
        })
    );

    s.chain
        .send(
            &[instruction::attest(&first.pubkey(), &run, 2, 0, model)],
            &[&first],
        )
        .await
        .unwrap();
    s.chain.advance(1);
    let again = instruction::attest(&first.pubkey(), &run, 2, 0, model);
    assert_eq!(
        failed(s.chain.send(&[again], &[&first]).await),
        machine(CoordinatorError::DuplicateAttestation)
    );
    assert_eq!(
        s.chain.run(&run).await.coordinator.checkpoint.attested(),
        None
    );
    s.chain
        .send(
            &[instruction::attest(&second.pubkey(), &run, 2, 1, model)],
            &[&second],
        )
        .await
        .unwrap();
    let state = s.chain.run(&run).await.coordinator;
    assert_eq!(state.checkpoint.attested(), Some((2, &model)));
}

#[tokio::test]
async fn a_run_that_owes_nothing_closes_with_its_rent_back() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let run_account = Keypair::new();
    let run_id = *b"closes-at-once\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    chain
        .create_run(&authority, &run_account, run_id, None, config())
        .await
        .unwrap();
    let run = run_account.pubkey();
    chain
        .send(
            &[instruction::pause(&authority.pubkey(), &run)],
            &[&authority],
        )
        .await
        .unwrap();
    let (instance, _) = find_run_instance(&authority.pubkey(), &run_id);
    let rent = chain.account(&instance).await.unwrap().lamports
        + chain.account(&run).await.unwrap().lamports;
    let before = chain.account(&authority.pubkey()).await.unwrap().lamports;
    let close = instruction::close_run(&authority.pubkey(), &run_id, &run, None);
    chain.send(&[close], &[&authority]).await.unwrap();
    assert!(chain.account(&run).await.is_none());
    assert!(chain.account(&instance).await.is_none());
    let after = chain.account(&authority.pubkey()).await.unwrap().lamports;
    assert_eq!(
        after - before,
        rent,
        "the payer paid the fees, the authority got the rent"
    );
}

/// Audit finding 2: the last member to report ready (or the sender of the closing tick) started
/// the round in its own transaction, with a seed from public slot hashes, so it could retry until
/// the seed gave it every witness seat. Now its input only arms the start: a tick in the same
/// transaction is refused, and the round is seeded by the hash of the arming slot, which did not
/// exist while that transaction ran, whoever sends the tick and whenever.
#[tokio::test]
async fn a_round_is_seeded_by_the_hash_of_the_slot_that_armed_it() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let run_account = Keypair::new();
    let run = run_account.pubkey();
    chain
        .create_run(&authority, &run_account, [8; 32], None, config())
        .await
        .unwrap();
    let clients: Vec<Keypair> = (0..3).map(|_| Keypair::new()).collect();
    for client in &clients {
        let join = instruction::join(&client.pubkey(), &run, endpoint());
        chain.send(&[join], &[client]).await.unwrap();
    }
    chain.advance(5);
    chain.tick(&run).await.unwrap();
    for client in &clients[..2] {
        let ready = instruction::warmup_witness(&client.pubkey(), &run);
        chain.send(&[ready], &[client]).await.unwrap();
    }

    // The last ready member tries to start the round in its own transaction.
    let last = &clients[2];
    let ready = instruction::warmup_witness(&last.pubkey(), &run);
    let grab = [ready.clone(), instruction::tick(&run)];
    assert_eq!(
        failed(chain.send(&grab, &[last]).await),
        TransactionError::InstructionError(
            1,
            InstructionError::Custom(CoordinatorError::NothingDue.code())
        )
    );
    chain.send(&[ready], &[last]).await.unwrap();
    let armed = chain.run(&run).await;
    assert_eq!(armed.coordinator.transition_armed, 1);
    assert_eq!(
        armed.armed_slot, chain.slot,
        "armed in the slot of the last ready member"
    );

    // Some slots later, anyone's tick starts the round, seeded by the arming slot's hash.
    chain.next_slot();
    chain.next_slot();
    chain.tick(&run).await.unwrap();
    let started = chain.run(&run).await.coordinator;
    assert_eq!(started.run_state(), RunState::RoundTrain);
    let slot_hashes: solana_sdk::slot_hashes::SlotHashes =
        chain.ctx.banks_client.get_sysvar().await.unwrap();
    let armed_hash = slot_hashes
        .get(&armed.armed_slot)
        .expect("the arming slot's hash");
    let expected = solana_program::hash::hashv(&[run.as_ref(), armed_hash.as_ref()]);
    assert_eq!(started.current_round().unwrap().seed, expected.to_bytes());
}

/// Audit finding 1: members that only said they were ready, with ticks moving the run through
/// rounds nobody witnessed, earned the full points of every epoch.
#[tokio::test]
async fn an_epoch_without_witness_evidence_pays_nobody() {
    let mut s = Started::new(Config {
        total_steps: 4,
        ..config()
    })
    .await;
    let run = s.run;
    for epoch in 0..2 {
        // No witness reports: the round closes on its time-outs, without a quorum.
        s.chain.advance(60);
        s.chain.tick(&run).await.unwrap();
        s.chain.advance(10);
        s.chain.tick(&run).await.unwrap();
        let state = s.chain.run(&run).await.coordinator;
        assert_eq!(state.run_state(), RunState::Cooldown, "epoch {epoch}");
        assert_eq!(state.epoch_quorum_rounds, 0);
        s.chain.advance(20);
        s.chain.tick(&run).await.unwrap();
        let state = s.chain.run(&run).await.coordinator;
        assert_eq!(state.epoch, epoch + 1);
        assert!(
            state.members.iter().all(|member| member.points == 0),
            "no points without evidence"
        );
        s.start_epoch().await;
    }
}

/// Audit finding 4: two colluding witnesses of three sent all-ones filters, which "contained"
/// every key and every commitment. A report is now an exact set of slots that committed.
#[tokio::test]
async fn a_saturated_witness_report_is_refused() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    let state = s.chain.run(&run).await;
    let round = *state.coordinator.current_round().unwrap();
    let saturated = WitnessReport { seen: [0xFF; 32] };
    let witness = s.client(&state.coordinator.members[round.elected(0).unwrap()].id);
    let witness = witness.insecure_clone();
    let ix = instruction::witness(&witness.pubkey(), &run, round.step, 0, saturated);
    assert_eq!(
        failed(s.chain.send(&[ix], &[&witness]).await),
        machine(CoordinatorError::ReportNamesUncommitted { slot: 0 })
    );
    let after = s.chain.run(&run).await.coordinator;
    assert_eq!(after.current_round().unwrap().report_count(), 0);
}

/// Audit finding 5: against a quorum of identical Bloom filters, a forged payload whose hash
/// "counted" was found in 49 tries. Now each participant commits its payload's SHA-256 on chain
/// once, before witnesses vouch for it, and a result counts only by that exact hash: after the
/// reports are public there is nothing to grind, and the commitment cannot be swapped.
#[tokio::test]
async fn a_result_counts_only_by_the_hash_its_participant_committed_once() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    let state = s.chain.run(&run).await.coordinator;
    let round = *state.current_round().unwrap();
    let cheat = s.clients[0].insecure_clone();
    let honest = commitment(&cheat.pubkey().to_bytes(), round.step);
    s.witness_round().await;
    // With every report public, the participant tries to swap in another payload's hash.
    s.chain.advance(1);
    let swap = instruction::commit(&cheat.pubkey(), &run, round.step, [0x66; 32]);
    assert_eq!(
        failed(s.chain.send(&[swap], &[&cheat]).await),
        machine(CoordinatorError::AlreadyCommitted)
    );
    // A key outside the round cannot commit for it either.
    let stranger = s.chain.funded().await;
    let ix = instruction::commit(&stranger.pubkey(), &run, round.step, [0x66; 32]);
    assert_eq!(
        failed(s.chain.send(&[ix], &[&stranger]).await),
        machine(CoordinatorError::NotAMember)
    );
    s.chain.advance(10);
    s.chain.tick(&run).await.unwrap();
    let state = s.chain.run(&run).await.coordinator;
    let slot = state.member_index(&cheat.pubkey().to_bytes()).unwrap();
    let closed = state.closed_round(round.step).unwrap();
    assert_eq!(closed.counted(slot), Some(&honest));
}

/// Issue 15: a verdict quorum of a round's verifiers ejects a member through real
/// transactions: its deposit is forfeit, it cannot rejoin, and what the coordinator can check
/// of a finding is checked on chain.
#[tokio::test]
async fn a_verdict_quorum_ejects_a_member_and_its_deposit_is_forfeit() {
    let mut s = Started::with_deposit(config(), DEPOSIT).await;
    let run = s.run;
    s.witness_round().await;
    s.chain.advance(10);
    s.chain.tick(&run).await.unwrap();
    let state = s.chain.run(&run).await;
    let round = *state.coordinator.closed_round(0).unwrap();
    let (cheater, verifiers): (Vec<usize>, Vec<usize>) = {
        let slots: Vec<usize> = (0..round.witness_count)
            .map(|position| round.elected(position).unwrap())
            .collect();
        (vec![slots[0]], slots[1..].to_vec())
    };
    let key = |slot: usize| Pubkey::new_from_array(state.coordinator.members[slot].id);
    let target = key(cheater[0]);
    let verdict = |signer: &Pubkey, position: u16, finding: Finding| {
        instruction::verdict(signer, &run, 0, position, &target, finding)
    };
    let position = |slot: usize| round.witness_position(slot).unwrap();

    let stranger = s.chain.funded().await;
    let sent = s
        .chain
        .send(
            &[verdict(&stranger.pubkey(), 1, Finding::Zero)],
            &[&stranger],
        )
        .await;
    assert_eq!(failed(sent), machine(CoordinatorError::NotAMember));
    let first = s.client(&key(verifiers[0]).to_bytes()).insecure_clone();
    let wrong_position = (position(verifiers[0]) + 1) % round.witness_count;
    let sent = s
        .chain
        .send(
            &[verdict(&first.pubkey(), wrong_position, Finding::Zero)],
            &[&first],
        )
        .await;
    assert_eq!(failed(sent), machine(CoordinatorError::NotAVerifier));
    let itself = Finding::Copy {
        of: cheater[0] as u16,
        overlap: 1000,
    };
    let sent = s
        .chain
        .send(
            &[verdict(&first.pubkey(), position(verifiers[0]), itself)],
            &[&first],
        )
        .await;
    assert!(matches!(
        failed(sent),
        TransactionError::InstructionError(0, InstructionError::Custom(27))
    ));
    // This run scores nothing (`score_one_in` 0) and recomputes nothing (`spot_check_one_in`
    // 0), so no score and no recompute condemns anyone in it.
    for unchecked in [
        Finding::LowScore { share: 0 },
        Finding::Recomputed { picked: 0 },
        Finding::Unserved,
        Finding::Unchained,
    ] {
        s.chain.advance(1);
        let sent = s
            .chain
            .send(
                &[verdict(&first.pubkey(), position(verifiers[0]), unchecked)],
                &[&first],
            )
            .await;
        assert!(
            matches!(
                failed(sent),
                TransactionError::InstructionError(0, InstructionError::Custom(27))
            ),
            "{unchecked:?}"
        );
    }

    for &slot in &verifiers {
        let verifier = s.client(&key(slot).to_bytes()).insecure_clone();
        s.chain.advance(1);
        let ix = verdict(&verifier.pubkey(), position(slot), Finding::Zero);
        s.chain.send(&[ix], &[&verifier]).await.unwrap();
    }
    let state = s.chain.run(&run).await;
    let ejected = state.coordinator.members[cheater[0]];
    assert_eq!(ejected.status(), MemberStatus::Ejected);
    assert_eq!(ejected.slashed, ejected.points);
    assert_eq!(state.deposits[cheater[0]], 0);
    assert_eq!(state.forfeited, DEPOSIT, "its deposit is forfeit");
    assert_eq!(state.deposits_held(), 2 * DEPOSIT);

    let cheater = s.client(&target.to_bytes()).insecure_clone();
    let sent = s
        .chain
        .send(
            &[instruction::withdraw(&cheater.pubkey(), &run)],
            &[&cheater],
        )
        .await;
    assert_eq!(failed(sent), machine(CoordinatorError::NotAMember));
    let rejoin = instruction::join(&cheater.pubkey(), &run, endpoint());
    assert_eq!(
        failed(s.chain.send(&[rejoin], &[&cheater]).await),
        machine(CoordinatorError::Ejected)
    );
}

/// Audit finding 6: a config the authority set (points or batch sizes up to u64::MAX) let a
/// tick overflow, and every later tick fail, locking the run and its rent.
#[tokio::test]
async fn configs_that_could_overflow_are_refused() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let run_account = Keypair::new();
    let run_id = *b"overflowing\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let overflowing = Config {
        points_per_epoch: u64::MAX,
        ..config()
    };
    assert_eq!(
        failed(
            chain
                .create_run(&authority, &run_account, run_id, None, overflowing)
                .await
        ),
        // The second instruction, after the run account's creation.
        TransactionError::InstructionError(
            1,
            InstructionError::Custom(
                CoordinatorError::ConfigRange {
                    field: "points_per_epoch",
                    value: u64::MAX,
                    range: "0..=1073741824",
                }
                .code()
            )
        )
    );
    chain
        .create_run(&authority, &run_account, run_id, None, config())
        .await
        .unwrap();
    let run = run_account.pubkey();
    let huge_batches = Config {
        global_batch_size_end: u64::MAX,
        ..config()
    };
    let update = instruction::update_config(&authority.pubkey(), &run, huge_batches);
    assert_eq!(
        failed(chain.send(&[update], &[&authority]).await),
        machine(CoordinatorError::ConfigRange {
            field: "global_batch_size_end",
            value: u64::MAX,
            range: "1..=16777216",
        })
    );
}

#[tokio::test]
async fn init_checks_its_accounts_and_happens_once() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let run_account = Keypair::new();
    let run_id = [7u8; 32];

    let bad = Config {
        witness_nodes: 0,
        ..config()
    };
    assert_eq!(
        failed(
            chain
                .create_run(&authority, &run_account, run_id, None, bad)
                .await
        ),
        TransactionError::InstructionError(
            1,
            InstructionError::Custom(CoordinatorError::ConfigZero { field: "" }.code())
        )
    );

    chain
        .create_run(&authority, &run_account, run_id, None, config())
        .await
        .unwrap();
    let state = chain.run(&run_account.pubkey()).await;
    assert_eq!(state.authority, authority.pubkey().to_bytes());
    assert_eq!(state.coordinator.run_id, run_id);
    assert!(!state.is_gated());
    let (instance, _) = find_run_instance(&authority.pubkey(), &run_id);
    let record = chain.account(&instance).await.unwrap();
    let record: &RunInstance = bytemuck::from_bytes(&record.data);
    assert_eq!(record.run_account, run_account.pubkey().to_bytes());

    // The same name again, with a fresh run account: the instance exists already.
    let second = Keypair::new();
    assert_eq!(
        failed(
            chain
                .create_run(&authority, &second, run_id, None, config())
                .await
        ),
        TransactionError::InstructionError(1, InstructionError::AccountAlreadyInitialized)
    );
    // The same run account again under a new name: it is initialized already.
    let init = instruction::init_run(
        &authority.pubkey(),
        &run_account.pubkey(),
        [8u8; 32],
        None,
        config(),
        0,
    );
    assert_eq!(
        failed(chain.send(&[init], &[&authority, &run_account]).await),
        TransactionError::InstructionError(0, InstructionError::AccountAlreadyInitialized)
    );
    // A run account that does not sign could be someone else's: refused.
    let mut unsigned = instruction::init_run(
        &authority.pubkey(),
        &second.pubkey(),
        [9u8; 32],
        None,
        config(),
        0,
    );
    unsigned.accounts[2].is_signer = false;
    assert_eq!(
        failed(chain.send(&[unsigned], &[&authority]).await),
        TransactionError::InstructionError(0, InstructionError::MissingRequiredSignature)
    );
}

/// Audit finding 11: anyone could take any run name first (or again after `CloseRun`), and
/// clients followed the name to whoever held it. A name is now the authority's: a squatter's run
/// of the same name is another run at another address, and the authority's own run is created
/// and found as if the squatter were not there.
#[tokio::test]
async fn a_run_name_belongs_to_its_authority_and_cannot_be_squatted() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let squatter = chain.funded().await;
    let run_id = *b"moby-150m-devnet\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let squatted = Keypair::new();
    chain
        .create_run(&squatter, &squatted, run_id, None, config())
        .await
        .unwrap();

    let run_account = Keypair::new();
    chain
        .create_run(&authority, &run_account, run_id, None, config())
        .await
        .unwrap();
    let (instance, _) = find_run_instance(&authority.pubkey(), &run_id);
    let (squatter_instance, _) = find_run_instance(&squatter.pubkey(), &run_id);
    assert_ne!(instance, squatter_instance);
    let record = chain.account(&instance).await.unwrap();
    let record: &RunInstance = bytemuck::from_bytes(&record.data);
    assert_eq!(record.run_account, run_account.pubkey().to_bytes());
    assert_eq!(record.authority, authority.pubkey().to_bytes());

    // An instance for the authority's name can only be made by the authority's signature: the
    // squatter passing the authority's instance address is refused.
    let forged_account = Keypair::new();
    let mut forged = instruction::init_run(
        &squatter.pubkey(),
        &forged_account.pubkey(),
        run_id,
        None,
        config(),
        0,
    );
    forged.accounts[1].pubkey = instance;
    let rent = chain.ctx.banks_client.get_rent().await.unwrap();
    let create = instruction::create_run_account(
        &squatter.pubkey(),
        &forged_account.pubkey(),
        rent.minimum_balance(RunAccount::LEN),
    );
    assert_eq!(
        failed(
            chain
                .send(&[create, forged], &[&squatter, &forged_account])
                .await
        ),
        TransactionError::InstructionError(1, InstructionError::InvalidSeeds)
    );
}

/// Each join of the deposit tests' runs pays this into the run account.
const DEPOSIT: u64 = 50_000_000;

/// A started chain with a run named `deposits` whose joins cost [`DEPOSIT`]: the chain, the
/// authority, the run account's address and the run's name.
async fn run_with_deposit() -> (Chain, Keypair, Pubkey, [u8; 32]) {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let run_account = Keypair::new();
    let run_id = *b"deposits\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    chain
        .create_run_with_deposit(&authority, &run_account, run_id, None, config(), DEPOSIT)
        .await
        .unwrap();
    (chain, authority, run_account.pubkey(), run_id)
}

/// Audit finding 3, second half: joining an open run cost only fees, so throwaway keys could
/// hold its slots at no cost. With a join deposit each join pays into the run account; a member
/// gets it back by withdrawing and loses it when dropped, and the run cannot be closed while
/// members' deposits are in it.
#[tokio::test]
async fn a_join_deposit_is_refunded_on_withdrawal_and_lost_when_dropped() {
    let (mut chain, _, run, _) = run_with_deposit().await;
    let rent = chain.balance(&run).await;
    let clients = [
        chain.funded().await,
        chain.funded().await,
        chain.funded().await,
    ];
    let join = |client: &Keypair| instruction::join(&client.pubkey(), &run, endpoint());

    // A join pays the deposit (the transaction's fee payer pays the fees); a withdrawal
    // returns it; joining again pays again.
    let before = chain.balance(&clients[0].pubkey()).await;
    chain
        .send(&[join(&clients[0])], &[&clients[0]])
        .await
        .unwrap();
    assert_eq!(chain.balance(&clients[0].pubkey()).await, before - DEPOSIT);
    assert_eq!(chain.balance(&run).await, rent + DEPOSIT);
    let withdraw = instruction::withdraw(&clients[0].pubkey(), &run);
    chain.send(&[withdraw], &[&clients[0]]).await.unwrap();
    assert_eq!(chain.balance(&clients[0].pubkey()).await, before);
    assert_eq!(chain.balance(&run).await, rent);
    chain
        .send(&[join(&clients[0])], &[&clients[0]])
        .await
        .unwrap();

    // A key without the deposit cannot join.
    let broke = Keypair::new();
    assert!(chain.send(&[join(&broke)], &[&broke]).await.is_err());
    let state = chain.run(&run).await;
    assert_eq!(
        state.coordinator.member_index(&broke.pubkey().to_bytes()),
        None
    );

    // The third client joins and never reports ready: the warmup's end drops it, and its
    // deposit is forfeit.
    for client in &clients[1..] {
        chain.advance(1);
        chain.send(&[join(client)], &[client]).await.unwrap();
    }
    chain.advance(5);
    chain.tick(&run).await.unwrap();
    for client in &clients[..2] {
        let ready = instruction::warmup_witness(&client.pubkey(), &run);
        chain.send(&[ready], &[client]).await.unwrap();
    }
    chain.advance(31);
    chain.tick(&run).await.unwrap();
    let state = chain.run(&run).await;
    let dropped = state
        .coordinator
        .member_index(&clients[2].pubkey().to_bytes())
        .unwrap();
    assert_eq!(
        state.coordinator.members[dropped].status(),
        MemberStatus::Dropped
    );
    assert_eq!(state.deposits[dropped], 0);
    assert_eq!(state.forfeited, DEPOSIT);
    assert_eq!(state.deposits_held(), 2 * DEPOSIT);
    assert_eq!(chain.balance(&run).await, rent + 3 * DEPOSIT);
    // Withdrawing now gets a dropped member nothing back.
    let late = instruction::withdraw(&clients[2].pubkey(), &run);
    assert!(chain.send(&[late], &[&clients[2]]).await.is_err());
}

/// The run account holds members' deposits: it closes only once they are back with them.
#[tokio::test]
async fn a_run_holding_deposits_does_not_close() {
    let (mut chain, authority, run, run_id) = run_with_deposit().await;
    let member = chain.funded().await;
    let join = instruction::join(&member.pubkey(), &run, endpoint());
    chain.send(&[join], &[&member]).await.unwrap();
    let pause = instruction::pause(&authority.pubkey(), &run);
    chain.send(&[pause], &[&authority]).await.unwrap();
    let close = || instruction::close_run(&authority.pubkey(), &run_id, &run, None);
    assert_eq!(
        failed(chain.send(&[close()], &[&authority]).await),
        access(AccessError::DepositsHeld)
    );
    let withdraw = instruction::withdraw(&member.pubkey(), &run);
    chain.send(&[withdraw], &[&member]).await.unwrap();
    chain.send(&[close()], &[&authority]).await.unwrap();
    assert!(chain.account(&run).await.is_none());
}

#[tokio::test]
async fn inputs_from_the_wrong_party_are_rejected() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    let stranger = s.chain.funded().await;

    // Pause by a stranger, then by the authority.
    let pause = instruction::pause(&stranger.pubkey(), &run);
    assert_eq!(
        failed(s.chain.send(&[pause], &[&stranger]).await),
        access(AccessError::NotRunAuthority)
    );

    // A join whose client does not sign (the fee payer signs instead).
    let mut unsigned = instruction::join(&stranger.pubkey(), &run, endpoint());
    unsigned.accounts[0].is_signer = false;
    assert_eq!(
        failed(s.chain.send(&[unsigned], &[]).await),
        TransactionError::InstructionError(0, InstructionError::MissingRequiredSignature)
    );

    // A double join.
    let member = s.clients[0].insecure_clone();
    assert_eq!(
        failed(
            s.chain
                .send(
                    &[instruction::join(&member.pubkey(), &run, endpoint())],
                    &[&member]
                )
                .await
        ),
        machine(CoordinatorError::AlreadyJoined)
    );

    // A witness report from a client that was not elected (or a wrong proof position).
    let state = s.chain.run(&run).await.coordinator;
    let round = *state.current_round().unwrap();
    let report = WitnessReport::default();
    let witness = s
        .client(&state.members[round.elected(0).unwrap()].id)
        .insecure_clone();
    let wrong_position = instruction::witness(&witness.pubkey(), &run, round.step, 1, report);
    assert_eq!(
        failed(s.chain.send(&[wrong_position], &[&witness]).await),
        machine(CoordinatorError::NotAWitness)
    );
    let outsider = instruction::witness(&stranger.pubkey(), &run, round.step, 0, report);
    assert_eq!(
        failed(s.chain.send(&[outsider], &[&stranger]).await),
        machine(CoordinatorError::NotAMember)
    );

    // An early tick: the round has 60 s to train.
    assert_eq!(
        failed(s.chain.tick(&run).await),
        machine(CoordinatorError::NothingDue)
    );
    // A tick with a fake SlotHashes account.
    for sysvar in [1, 2] {
        let mut fake_sysvar = instruction::tick(&run);
        fake_sysvar.accounts[sysvar].pubkey = stranger.pubkey();
        assert_eq!(
            failed(s.chain.send(&[fake_sysvar], &[]).await),
            access(AccessError::WrongSysvar)
        );
    }

    // Closing a run in the middle of an epoch would drop the epoch: refused.
    let authority = s.authority.insecure_clone();
    let close = instruction::close_run(&authority.pubkey(), &s.run_id, &run, None);
    assert_eq!(
        failed(
            s.chain
                .send(std::slice::from_ref(&close), &[&authority])
                .await
        ),
        access(AccessError::RunNotClosable)
    );
    // By a stranger, even when closable.
    let stranger_close = instruction::close_run(&stranger.pubkey(), &s.run_id, &run, None);
    assert_eq!(
        failed(s.chain.send(&[stranger_close], &[&stranger]).await),
        access(AccessError::NotRunAuthority)
    );

    // Instruction data that decodes to nothing.
    let garbage = Instruction {
        program_id: demeter_coordinator::ID,
        accounts: vec![],
        data: vec![200, 1, 2],
    };
    assert_eq!(
        failed(s.chain.send(&[garbage], &[]).await),
        TransactionError::InstructionError(0, InstructionError::InvalidInstructionData)
    );
    let mut trailing = CoordinatorInstruction::Input(Input::Tick).pack();
    trailing.push(0);
    let trailing = Instruction {
        data: trailing,
        ..instruction::tick(&run)
    };
    assert_eq!(
        failed(s.chain.send(&[trailing], &[]).await),
        TransactionError::InstructionError(0, InstructionError::InvalidInstructionData)
    );
}

#[tokio::test]
async fn look_alike_and_foreign_accounts_are_rejected() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    let member = s.clients[0].insecure_clone();
    let genuine = s.chain.account(&run).await.unwrap();

    // A byte-for-byte copy of the run account, owned by another program.
    let forged = Pubkey::new_unique();
    let mut copy =
        AccountSharedData::new(genuine.lamports, genuine.data.len(), &Pubkey::new_unique());
    copy.set_data_from_slice(&genuine.data);
    s.chain.ctx.set_account(&forged, &copy);
    let withdraw = instruction::withdraw(&member.pubkey(), &forged);
    assert_eq!(
        failed(s.chain.send(&[withdraw], &[&member]).await),
        TransactionError::InstructionError(0, InstructionError::IllegalOwner)
    );

    // The same copy owned by the system program (a foreign owner of another kind).
    copy.set_owner(solana_system_interface::program::ID);
    s.chain.ctx.set_account(&forged, &copy);
    let withdraw = instruction::withdraw(&member.pubkey(), &forged);
    assert_eq!(
        failed(s.chain.send(&[withdraw], &[&member]).await),
        TransactionError::InstructionError(0, InstructionError::IllegalOwner)
    );

    // One of the program's own accounts of another type: the run instance.
    let (instance, _) = find_run_instance(&s.authority.pubkey(), &s.run_id);
    let withdraw = instruction::withdraw(&member.pubkey(), &instance);
    assert_eq!(
        failed(s.chain.send(&[withdraw], &[&member]).await),
        TransactionError::InstructionError(0, InstructionError::InvalidAccountData)
    );

    // The run account passed read-only.
    let mut read_only = instruction::withdraw(&member.pubkey(), &run);
    read_only.accounts[1].is_writable = false;
    assert_eq!(
        failed(s.chain.send(&[read_only], &[&member]).await),
        TransactionError::InstructionError(0, InstructionError::Immutable)
    );

    // Closing with another run's instance.
    let authority = s.authority.insecure_clone();
    s.chain
        .send(
            &[instruction::pause(&authority.pubkey(), &run)],
            &[&authority],
        )
        .await
        .unwrap();
    let other_account = Keypair::new();
    s.chain
        .create_run(&authority, &other_account, [5u8; 32], None, config())
        .await
        .unwrap();
    let mut mixed = instruction::close_run(&authority.pubkey(), &[5u8; 32], &run, None);
    mixed.accounts[2].pubkey = run;
    assert_eq!(
        failed(s.chain.send(&[mixed], &[&authority]).await),
        access(AccessError::RunMismatch)
    );
    // Nothing above changed the run.
    let state = s.chain.run(&run).await.coordinator;
    let slot = state.member_index(&member.pubkey().to_bytes()).unwrap();
    assert_eq!(state.members[slot].status(), MemberStatus::Active);
}

#[tokio::test]
async fn gated_runs_admit_only_granted_clients() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let gatekeeper = chain.funded().await;
    let run_account = Keypair::new();
    chain
        .create_run(
            &authority,
            &run_account,
            [3u8; 32],
            Some(gatekeeper.pubkey()),
            config(),
        )
        .await
        .unwrap();
    let run = run_account.pubkey();
    let client = Keypair::new();
    let join = instruction::join(&client.pubkey(), &run, endpoint());

    assert_eq!(
        failed(chain.send(std::slice::from_ref(&join), &[&client]).await),
        access(AccessError::JoinNotGranted)
    );
    // Only the join authority grants.
    let by_authority = instruction::grant_join(&authority.pubkey(), &run, &client.pubkey());
    assert_eq!(
        failed(chain.send(&[by_authority], &[&authority]).await),
        access(AccessError::NotJoinAuthority)
    );
    let grant = instruction::grant_join(&gatekeeper.pubkey(), &run, &client.pubkey());
    chain
        .send(std::slice::from_ref(&grant), &[&gatekeeper])
        .await
        .unwrap();
    assert_eq!(
        failed(chain.send(&[grant], &[&gatekeeper]).await),
        TransactionError::InstructionError(0, InstructionError::AccountAlreadyInitialized)
    );
    // Another client cannot use this client's grant.
    let other = Keypair::new();
    let mut borrowed = instruction::join(&other.pubkey(), &run, endpoint());
    borrowed.accounts[3] = join.accounts[3].clone();
    assert_eq!(
        failed(chain.send(&[borrowed], &[&other]).await),
        access(AccessError::JoinNotGranted)
    );
    chain.send(&[join], &[&client]).await.unwrap();
    let state = chain.run(&run).await.coordinator;
    assert!(state.member_index(&client.pubkey().to_bytes()).is_some());

    // Revoked: the grant is closed, its rent back with the join authority, and a new join
    // (after leaving) is refused.
    let revoke = instruction::revoke_join(&gatekeeper.pubkey(), &run, &client.pubkey());
    chain.send(&[revoke], &[&gatekeeper]).await.unwrap();
    assert!(chain.account(&join_grant(&run, &client)).await.is_none());
    chain
        .send(&[instruction::withdraw(&client.pubkey(), &run)], &[&client])
        .await
        .unwrap();
    assert_eq!(
        failed(
            chain
                .send(
                    &[instruction::join(&client.pubkey(), &run, endpoint())],
                    &[&client]
                )
                .await
        ),
        access(AccessError::JoinNotGranted)
    );
}

/// Audit findings 8 and 9: after `CloseRun`, a grant's rent was locked forever (revoking needed
/// the run account), and a run re-created at the same address under a new join authority
/// admitted the old run's grantees.
#[tokio::test]
async fn grants_neither_outlive_their_run_nor_lock_their_rent() {
    let mut chain = Chain::start().await;
    let authority = chain.funded().await;
    let old_gatekeeper = chain.funded().await;
    let new_gatekeeper = chain.funded().await;
    let run_account = Keypair::new();
    let run = run_account.pubkey();
    let run_id = [6u8; 32];
    chain
        .create_run(
            &authority,
            &run_account,
            run_id,
            Some(old_gatekeeper.pubkey()),
            config(),
        )
        .await
        .unwrap();
    let client = Keypair::new();
    let grant = instruction::grant_join(&old_gatekeeper.pubkey(), &run, &client.pubkey());
    chain.send(&[grant], &[&old_gatekeeper]).await.unwrap();
    let pause = instruction::pause(&authority.pubkey(), &run);
    chain.send(&[pause], &[&authority]).await.unwrap();
    let close = instruction::close_run(&authority.pubkey(), &run_id, &run, None);
    chain.send(&[close], &[&authority]).await.unwrap();

    // Re-created at the same address under another join authority: the old grant admits nobody.
    chain
        .create_run(
            &authority,
            &run_account,
            run_id,
            Some(new_gatekeeper.pubkey()),
            config(),
        )
        .await
        .unwrap();
    let join = instruction::join(&client.pubkey(), &run, endpoint());
    assert_eq!(
        failed(chain.send(&[join], &[&client]).await),
        access(AccessError::JoinNotGranted)
    );

    // Closed again: the grant's maker, and only it, takes the grant's rent back.
    let pause = instruction::pause(&authority.pubkey(), &run);
    chain.send(&[pause], &[&authority]).await.unwrap();
    let close = instruction::close_run(&authority.pubkey(), &run_id, &run, None);
    chain.send(&[close], &[&authority]).await.unwrap();
    assert!(chain.account(&run).await.is_none());
    let by_stranger = instruction::revoke_join(&new_gatekeeper.pubkey(), &run, &client.pubkey());
    assert_eq!(
        failed(chain.send(&[by_stranger], &[&new_gatekeeper]).await),
        access(AccessError::NotJoinAuthority)
    );
    let grant_rent = chain
        .account(&join_grant(&run, &client))
        .await
        .unwrap()
        .lamports;
    let before = chain
        .account(&old_gatekeeper.pubkey())
        .await
        .unwrap()
        .lamports;
    let revoke = instruction::revoke_join(&old_gatekeeper.pubkey(), &run, &client.pubkey());
    chain.send(&[revoke], &[&old_gatekeeper]).await.unwrap();
    assert!(chain.account(&join_grant(&run, &client)).await.is_none());
    let after = chain
        .account(&old_gatekeeper.pubkey())
        .await
        .unwrap()
        .lamports;
    assert_eq!(after - before, grant_rent, "the payer paid the fees");
}

fn join_grant(run: &Pubkey, client: &Keypair) -> Pubkey {
    demeter_coordinator::account::find_join_grant(run, &client.pubkey()).0
}

#[tokio::test]
async fn the_authority_pauses_updates_and_resumes() {
    let mut s = Started::new(config()).await;
    let run = s.run;
    let authority = s.authority.insecure_clone();
    let longer = Config {
        total_steps: 50,
        ..config()
    };
    let update = instruction::update_config(&authority.pubkey(), &run, longer);
    assert_eq!(
        failed(
            s.chain
                .send(std::slice::from_ref(&update), &[&authority])
                .await
        ),
        machine(CoordinatorError::WrongState(RunState::RoundTrain))
    );
    s.chain
        .send(
            &[instruction::pause(&authority.pubkey(), &run)],
            &[&authority],
        )
        .await
        .unwrap();
    s.witness_round().await;
    s.chain.advance(10);
    s.chain.tick(&run).await.unwrap();
    s.chain.advance(20);
    s.chain.tick(&run).await.unwrap();
    assert_eq!(
        s.chain.run(&run).await.coordinator.run_state(),
        RunState::Paused
    );
    s.chain.send(&[update], &[&authority]).await.unwrap();
    s.chain
        .send(
            &[instruction::resume(&authority.pubkey(), &run)],
            &[&authority],
        )
        .await
        .unwrap();
    let state = s.chain.run(&run).await.coordinator;
    assert_eq!(state.run_state(), RunState::WaitingForMembers);
    assert_eq!((state.config.total_steps, state.step), (50, 1));
    assert_eq!(state.members[0].points, 100);
}

/// The sizes docs/coordinator.md states (the rent a run costs follows from them).
#[test]
fn account_sizes_are_as_documented() {
    use demeter_coordinator_core::accounts::JoinGrant;
    assert_eq!(
        (RunInstance::LEN, RunAccount::LEN, JoinGrant::LEN),
        (112, 64_616, 112)
    );
    let rent = solana_sdk::rent::Rent::default().minimum_balance(RunAccount::LEN);
    assert_eq!(rent, 450_618_240, "lamports to keep a run account");
}

#[test]
fn instructions_round_trip_and_witnesses_fit_one_transaction() {
    let report = WitnessReport { seen: [0xA5; 32] };
    let cases = [
        CoordinatorInstruction::InitRun {
            run_id: [1; 32],
            join_authority: Some(Pubkey::new_unique()),
            config: config(),
            join_deposit: 0,
        },
        CoordinatorInstruction::InitRun {
            run_id: [1; 32],
            join_authority: None,
            config: config(),
            join_deposit: 50_000_000,
        },
        CoordinatorInstruction::GrantJoin {
            client: Pubkey::new_unique(),
        },
        CoordinatorInstruction::RevokeJoin {
            client: Pubkey::new_unique(),
        },
        CoordinatorInstruction::Input(Input::UpdateConfig { config: config() }),
        CoordinatorInstruction::Input(Input::Witness {
            step: 7,
            position: 2,
            report,
        }),
        CoordinatorInstruction::Input(Input::Commit {
            step: 7,
            hash: [9; 32],
        }),
        CoordinatorInstruction::Input(Input::HealthCheck {
            step: 3,
            target: [5; 32],
        }),
        CoordinatorInstruction::Input(Input::Join {
            endpoint: endpoint(),
        }),
        CoordinatorInstruction::CloseRun,
    ];
    for case in cases {
        let data = case.pack();
        assert_eq!(CoordinatorInstruction::unpack(&data).unwrap(), case);
        assert!(CoordinatorInstruction::unpack(&data[..data.len() - 1]).is_err());
        assert!(CoordinatorInstruction::unpack(&[&data[..], &[0]].concat()).is_err());
    }
    // A witness transaction, signed by the witness as fee payer, within the 1232-byte limit.
    let witness = Keypair::new();
    let ix = instruction::witness(&witness.pubkey(), &Pubkey::new_unique(), 1, 0, report);
    let tx = Transaction::new_signed_with_payer(
        &[ix],
        Some(&witness.pubkey()),
        &[&witness],
        solana_sdk::hash::Hash::default(),
    );
    let size = bincode_size(&tx);
    assert!(size <= 1232, "{size} bytes");
}

fn bincode_size(tx: &Transaction) -> usize {
    // signatures (short-vec length + 64 each) + the serialized message
    1 + 64 * tx.signatures.len() + tx.message.serialize().len()
}
