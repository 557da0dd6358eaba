//! The treasurer through real transactions: solana-program-test runs the coordinator and the
//! treasurer natively as builtins, beside the real SPL Token program (program-test loads its
//! BPF build into every bank). Each Sealevel attack class has its own test.
//!
//! Run accounts come from the real state machine: `finished_run` plays an epoch through
//! `Coordinator`'s transitions and the test writes the resulting bytes into a coordinator-owned
//! account, as the coordinator program would have (its own tests cover that path).

use bytemuck::Zeroable;
use demeter_coordinator::account::find_run_instance;
use demeter_coordinator_core::AccessError;
use demeter_coordinator_core::accounts::{RunAccount, RunInstance, Tagged};
use demeter_coordinator_core::{Config, Coordinator, Endpoint, RunState, WitnessReport};
use demeter_treasurer::error::TreasurerError;
use demeter_treasurer::instruction::{self as treasurer, find_escrow, find_pool};
use demeter_treasurer::state::Pool;
use solana_program_test::{BanksClientError, ProgramTest, ProgramTestContext, processor};
use solana_sdk::account::Account;
use solana_sdk::clock::Clock;
use solana_sdk::instruction::{Instruction, InstructionError};
use solana_sdk::program_pack::Pack;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signer};
use solana_sdk::transaction::{Transaction, TransactionError};
use spl_token_interface::instruction as token;
use spl_token_interface::state::Account as TokenAccount;

const DECIMALS: u8 = 2;
/// Token units per point in most tests.
const RATE: u64 = 7;

/// A run that played one epoch to its end through the state machine: every one of `clients`
/// was seen in every round and earned `points_per_epoch` (100). Times start at `now`.
fn finished_run(clients: &[Pubkey], now: i64) -> Box<Coordinator> {
    let ids: Vec<[u8; 32]> = clients.iter().map(Pubkey::to_bytes).collect();
    let config = Config {
        total_steps: 1,
        init_min_clients: ids.len() as u16,
        min_clients: 1,
        ..Config::example()
    };
    let mut run: Box<Coordinator> = bytemuck::zeroed_box();
    let mut now = now;
    run.init(*b"treasurer-test-run-.............", config, now)
        .unwrap();
    for id in &ids {
        run.join(*id, Endpoint::default(), now).unwrap();
    }
    for _ in 0..200 {
        match run.run_state() {
            RunState::Finished => return run,
            RunState::Warmup => ids.iter().for_each(|id| {
                let _ = run.warmup_witness(*id, now);
            }),
            RunState::RoundTrain => {
                let round = *run.current_round().unwrap();
                let mut report = WitnessReport::default();
                for id in &ids {
                    let slot = run.member_index(id).unwrap();
                    let _ = run.commit(*id, round.step, [slot as u8 + 1; 32], now);
                    report.insert(slot);
                }
                for position in 0..round.witness_count {
                    let witness = run.members[round.elected(position).unwrap()].id;
                    let _ = run.witness(witness, round.step, position, &report, now);
                }
            }
            _ => {}
        }
        now += 11;
        let _ = run.tick(now, &[now as u8; 32]);
    }
    panic!("the run did not finish: {:?}", run.run_state());
}

fn run_account(authority: &Pubkey, coordinator: &Coordinator) -> Account {
    let mut run: Box<RunAccount> = bytemuck::zeroed_box();
    run.tag = RunAccount::TAG;
    run.authority = authority.to_bytes();
    run.instance = find_run_instance(authority, &coordinator.run_id)
        .0
        .to_bytes();
    run.coordinator = *coordinator;
    owned_by(demeter_coordinator::ID, bytemuck::bytes_of(&*run).to_vec())
}

fn owned_by(owner: Pubkey, data: Vec<u8>) -> Account {
    Account {
        lamports: 1_000_000_000,
        data,
        owner,
        executable: false,
        rent_epoch: 0,
    }
}

struct Bank {
    ctx: ProgramTestContext,
    authority: Keypair,
    clients: Vec<Keypair>,
    run: Pubkey,
    mint: Pubkey,
    mint_authority: Keypair,
    /// The authority's token account, funded with 1,000,000 units.
    treasury: Pubkey,
    now: i64,
}

type Sent = Result<(), BanksClientError>;

impl Bank {
    /// A bank with three clients that finished an epoch of 100 points each, and a mint.
    async fn start() -> Self {
        let mut test = ProgramTest::default();
        test.prefer_bpf(false);
        test.add_program(
            "demeter_coordinator",
            demeter_coordinator::ID,
            processor!(demeter_coordinator::processor::process_instruction),
        );
        test.add_program(
            "demeter_treasurer",
            demeter_treasurer::ID,
            processor!(demeter_treasurer::processor::process_instruction),
        );
        let ctx = test.start_with_context().await;
        let clock: Clock = ctx.banks_client.get_sysvar().await.unwrap();
        let authority = Keypair::new();
        let clients: Vec<Keypair> = (0..3).map(|_| Keypair::new()).collect();
        let keys: Vec<Pubkey> = clients.iter().map(Keypair::pubkey).collect();
        let mut bank = Self {
            ctx,
            authority,
            clients,
            run: Pubkey::new_unique(),
            mint: Pubkey::default(),
            mint_authority: Keypair::new(),
            treasury: Pubkey::default(),
            now: clock.unix_timestamp,
        };
        let run = finished_run(&keys, bank.now - 10_000);
        bank.set_run(bank.run, &run);
        bank.fund_lamports(&bank.authority.pubkey()).await;
        bank.mint = bank.create_mint().await;
        bank.treasury = bank.token_account(&bank.authority.pubkey()).await;
        let mint_to = token::mint_to(
            &spl_token_interface::ID,
            &bank.mint,
            &bank.treasury,
            &bank.mint_authority.pubkey(),
            &[],
            1_000_000,
        )
        .unwrap();
        let mint_authority = bank.mint_authority.insecure_clone();
        bank.send(&[mint_to], &[&mint_authority]).await.unwrap();
        bank
    }

    /// Writes `coordinator` as the state of a run account of this bank's authority at `key`,
    /// with the run instance that names it (as `InitRun` would have).
    fn set_run(&mut self, key: Pubkey, coordinator: &Coordinator) {
        let authority = self.authority.pubkey();
        let account = run_account(&authority, coordinator);
        self.ctx.set_account(&key, &account.into());
        let (instance, bump) = find_run_instance(&authority, &coordinator.run_id);
        let record = RunInstance {
            tag: RunInstance::TAG,
            run_id: coordinator.run_id,
            authority: authority.to_bytes(),
            run_account: key.to_bytes(),
            bump,
            _padding: [0; 7],
        };
        let account = owned_by(
            demeter_coordinator::ID,
            bytemuck::bytes_of(&record).to_vec(),
        );
        self.ctx.set_account(&instance, &account.into());
    }

    async fn run_state(&mut self) -> Box<RunAccount> {
        let account = self.account(&self.run.clone()).await.unwrap();
        RunAccount::decode(&account.data).unwrap()
    }

    async fn fund_lamports(&mut self, key: &Pubkey) {
        let transfer = solana_system_interface::instruction::transfer(
            &self.ctx.payer.pubkey(),
            key,
            10_000_000_000,
        );
        self.send(&[transfer], &[]).await.unwrap();
    }

    /// Sets the chain clock to `self.now` in a new slot, so repeated instructions are new
    /// transactions.
    async fn next_slot(&mut self) {
        let slot = self.ctx.banks_client.get_root_slot().await.unwrap() + 1;
        self.ctx.warp_to_slot(slot).unwrap();
        let clock = Clock {
            slot,
            unix_timestamp: self.now,
            epoch_start_timestamp: self.now,
            ..Clock::default()
        };
        self.ctx.set_sysvar(&clock);
    }

    async fn send(&mut self, instructions: &[Instruction], signers: &[&Keypair]) -> Sent {
        self.next_slot().await;
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

    async fn create_mint(&mut self) -> Pubkey {
        let mint = Keypair::new();
        let rent = self.ctx.banks_client.get_rent().await.unwrap();
        let create = solana_system_interface::instruction::create_account(
            &self.ctx.payer.pubkey(),
            &mint.pubkey(),
            rent.minimum_balance(spl_token_interface::state::Mint::LEN),
            spl_token_interface::state::Mint::LEN as u64,
            &spl_token_interface::ID,
        );
        let init = token::initialize_mint2(
            &spl_token_interface::ID,
            &mint.pubkey(),
            &self.mint_authority.pubkey(),
            None,
            DECIMALS,
        )
        .unwrap();
        self.send(&[create, init], &[&mint]).await.unwrap();
        mint.pubkey()
    }

    /// A new token account of this bank's mint owned by `owner`.
    async fn token_account(&mut self, owner: &Pubkey) -> Pubkey {
        let mint = self.mint;
        self.token_account_of(&mint, owner).await
    }

    async fn token_account_of(&mut self, mint: &Pubkey, owner: &Pubkey) -> Pubkey {
        let account = Keypair::new();
        let rent = self.ctx.banks_client.get_rent().await.unwrap();
        let create = solana_system_interface::instruction::create_account(
            &self.ctx.payer.pubkey(),
            &account.pubkey(),
            rent.minimum_balance(TokenAccount::LEN),
            TokenAccount::LEN as u64,
            &spl_token_interface::ID,
        );
        let init =
            token::initialize_account3(&spl_token_interface::ID, &account.pubkey(), mint, owner)
                .unwrap();
        self.send(&[create, init], &[&account]).await.unwrap();
        account.pubkey()
    }

    async fn tokens(&mut self, account: &Pubkey) -> u64 {
        let account = self.account(account).await.unwrap();
        TokenAccount::unpack(&account.data).unwrap().amount
    }

    async fn pool(&mut self) -> Pool {
        let account = self.account(&find_pool(&self.run).0).await.unwrap();
        assert_eq!(account.owner, demeter_treasurer::ID);
        *bytemuck::from_bytes::<Pool>(&account.data)
    }

    async fn create_pool(&mut self, tokens_per_point: u64, claim_grace: u64) -> Sent {
        let create = treasurer::create_pool(
            &self.authority.pubkey(),
            &self.run,
            &self.mint,
            tokens_per_point,
            claim_grace,
        );
        let authority = self.authority.insecure_clone();
        self.send(&[create], &[&authority]).await
    }

    async fn fund(&mut self, amount: u64) -> Sent {
        let fund = treasurer::fund(
            &self.authority.pubkey(),
            &self.treasury,
            &self.run,
            &self.mint,
            amount,
        );
        let authority = self.authority.insecure_clone();
        self.send(&[fund], &[&authority]).await
    }

    /// A token account of the mint for each client.
    async fn client_wallets(&mut self) -> Vec<Pubkey> {
        let mut wallets = Vec::new();
        for index in 0..self.clients.len() {
            let owner = self.clients[index].pubkey();
            wallets.push(self.token_account(&owner).await);
        }
        wallets
    }

    /// Client `index` claims into `destination`.
    async fn claim(&mut self, index: usize, destination: &Pubkey) -> Sent {
        let client = self.clients[index].insecure_clone();
        let claim = treasurer::claim(&client.pubkey(), &self.run, destination, &self.mint);
        self.send(&[claim], &[&client]).await
    }
}

/// The instruction error a failed transaction carries.
fn failed(result: Sent) -> InstructionError {
    match result {
        Err(BanksClientError::TransactionError(TransactionError::InstructionError(_, error))) => {
            error
        }
        other => panic!("expected an instruction error, got {other:?}"),
    }
}

fn refused(error: TreasurerError) -> InstructionError {
    InstructionError::Custom(error.code())
}

#[tokio::test]
async fn a_finished_epoch_is_paid_to_the_unit_partially_when_short_and_never_twice() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 86_400).await.unwrap();
    let escrow = find_escrow(&find_pool(&bank.run).0).0;
    // 300 points at 7 units: 2,100 owed; the escrow gets 2,000 first.
    bank.fund(2_000).await.unwrap();
    assert_eq!(bank.tokens(&escrow).await, 2_000);
    assert_eq!(bank.tokens(&bank.treasury.clone()).await, 998_000);

    let wallets = bank.client_wallets().await;
    bank.claim(0, &wallets[0]).await.unwrap();
    bank.claim(1, &wallets[1]).await.unwrap();
    assert_eq!(bank.tokens(&wallets[0]).await, 700);
    assert_eq!(bank.tokens(&wallets[1]).await, 700);
    assert_eq!(
        failed(bank.claim(0, &wallets[0]).await),
        refused(TreasurerError::NothingOwed {
            points: 100,
            paid: 700
        }),
        "never twice"
    );
    // The escrow holds 600 of the third client's 700: it gets those, and is owed the rest.
    bank.claim(2, &wallets[2]).await.unwrap();
    assert_eq!(bank.tokens(&wallets[2]).await, 600);
    assert_eq!(
        failed(bank.claim(2, &wallets[2]).await),
        refused(TreasurerError::EscrowEmpty { owed: 100 })
    );
    bank.fund(150).await.unwrap();
    bank.claim(2, &wallets[2]).await.unwrap();
    assert_eq!(bank.tokens(&wallets[2]).await, 700);
    assert_eq!(bank.tokens(&escrow).await, 50);
    let pool = bank.pool().await;
    assert_eq!(pool.total_paid, 2_100);
    assert_eq!(&pool.paid[..3], &[700, 700, 700]);

    // Nothing is owed: the authority closes the pool, the 50 left and both rents come back.
    let lamports_before = bank
        .account(&bank.authority.pubkey())
        .await
        .unwrap()
        .lamports;
    let close = treasurer::close_pool(
        &bank.authority.pubkey(),
        &bank.run,
        &bank.treasury,
        &bank.mint,
    );
    let authority = bank.authority.insecure_clone();
    bank.send(&[close], &[&authority]).await.unwrap();
    assert_eq!(bank.tokens(&bank.treasury.clone()).await, 1_000_000 - 2_100);
    assert!(bank.account(&find_pool(&bank.run).0).await.is_none());
    assert!(bank.account(&escrow).await.is_none());
    let lamports_after = bank
        .account(&bank.authority.pubkey())
        .await
        .unwrap()
        .lamports;
    assert!(lamports_after > lamports_before, "rent returned");
}

#[tokio::test]
async fn slashed_points_are_never_paid_and_a_later_slash_takes_nothing_back() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 0).await.unwrap();
    bank.fund(10_000).await.unwrap();
    let mut run = bank.run_state().await.coordinator;
    let slot = run
        .member_index(&bank.clients[0].pubkey().to_bytes())
        .unwrap();
    run.members[slot].slashed = 40;
    bank.set_run(bank.run, &run);
    let owner = bank.clients[0].pubkey();
    let wallet = bank.token_account(&owner).await;
    bank.claim(0, &wallet).await.unwrap();
    assert_eq!(bank.tokens(&wallet).await, 60 * RATE);
    run.members[slot].slashed = 90;
    bank.set_run(bank.run, &run);
    assert_eq!(
        failed(bank.claim(0, &wallet).await),
        refused(TreasurerError::NothingOwed {
            points: 10,
            paid: 60 * RATE
        })
    );
}

#[tokio::test]
async fn only_the_runs_authority_creates_a_pool_once_at_a_positive_rate() {
    let mut bank = Bank::start().await;
    let stranger = Keypair::new();
    bank.fund_lamports(&stranger.pubkey()).await;
    let create = treasurer::create_pool(&stranger.pubkey(), &bank.run, &bank.mint, RATE, 0);
    assert_eq!(
        failed(bank.send(&[create], &[&stranger]).await),
        refused(TreasurerError::NotRunAuthority)
    );
    assert_eq!(
        failed(bank.create_pool(0, 0).await),
        refused(TreasurerError::ZeroRate)
    );
    bank.create_pool(RATE, 0).await.unwrap();
    // Re-initialization: a second pool for the run, even at another rate, is refused.
    assert_eq!(
        failed(bank.create_pool(RATE + 1, 0).await),
        InstructionError::AccountAlreadyInitialized
    );
    assert_eq!(bank.pool().await.tokens_per_point, RATE);
}

#[tokio::test]
async fn a_claim_without_the_members_signature_is_refused() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 0).await.unwrap();
    bank.fund(10_000).await.unwrap();
    let victim = bank.clients[0].pubkey();
    let thief_wallet = bank.token_account(&Pubkey::new_unique()).await;
    let mut claim = treasurer::claim(&victim, &bank.run, &thief_wallet, &bank.mint);
    claim.accounts[0].is_signer = false;
    assert_eq!(
        failed(bank.send(&[claim], &[]).await),
        InstructionError::MissingRequiredSignature
    );
    // Signed by someone who is not a member: it has no points of its own to claim.
    let stranger = Keypair::new();
    let claim = treasurer::claim(&stranger.pubkey(), &bank.run, &thief_wallet, &bank.mint);
    assert_eq!(
        failed(bank.send(&[claim], &[&stranger]).await),
        refused(TreasurerError::NotAMember)
    );
    assert_eq!(bank.tokens(&thief_wallet).await, 0);
}

#[tokio::test]
async fn look_alike_accounts_of_other_owners_or_types_are_refused() {
    let mut bank = Bank::start().await;
    let run = bank.run_state().await;
    // A run-shaped account owned by another program, byte for byte the real run.
    let fake_run = Pubkey::new_unique();
    let bytes = bytemuck::bytes_of(&*run).to_vec();
    bank.ctx
        .set_account(&fake_run, &owned_by(Pubkey::new_unique(), bytes).into());
    let create = treasurer::create_pool(&bank.authority.pubkey(), &fake_run, &bank.mint, RATE, 0);
    let authority = bank.authority.insecure_clone();
    assert_eq!(
        failed(bank.send(&[create], &[&authority]).await),
        InstructionError::IllegalOwner
    );
    // The coordinator's own account of another type (a run instance) in the run's place.
    let mut instance = RunInstance::zeroed();
    instance.tag = RunInstance::TAG;
    let instance_key = Pubkey::new_unique();
    let account = owned_by(
        demeter_coordinator::ID,
        bytemuck::bytes_of(&instance).to_vec(),
    );
    bank.ctx.set_account(&instance_key, &account.into());
    let create =
        treasurer::create_pool(&bank.authority.pubkey(), &instance_key, &bank.mint, RATE, 0);
    assert_eq!(
        failed(bank.send(&[create], &[&authority]).await),
        InstructionError::InvalidAccountData
    );

    // A pool-shaped account owned by another program, at the pool's place in a claim.
    bank.create_pool(RATE, 0).await.unwrap();
    bank.fund(10_000).await.unwrap();
    let pool_key = find_pool(&bank.run).0;
    let mut pool = bank.account(&pool_key).await.unwrap();
    pool.owner = demeter_coordinator::ID;
    let fake_pool = Pubkey::new_unique();
    bank.ctx.set_account(&fake_pool, &pool.clone().into());
    let owner = bank.clients[0].pubkey();
    let wallet = bank.token_account(&owner).await;
    let mut claim = treasurer::claim(&owner, &bank.run, &wallet, &bank.mint);
    claim.accounts[2].pubkey = fake_pool;
    let client = bank.clients[0].insecure_clone();
    assert_eq!(
        failed(bank.send(&[claim.clone()], &[&client]).await),
        InstructionError::IllegalOwner
    );
    // The same bytes owned by the treasurer, but not at the pool's address.
    pool.owner = demeter_treasurer::ID;
    bank.ctx.set_account(&fake_pool, &pool.into());
    assert_eq!(
        failed(bank.send(&[claim], &[&client]).await),
        InstructionError::InvalidSeeds
    );
}

#[tokio::test]
async fn a_pool_pays_only_for_its_own_run() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 0).await.unwrap();
    bank.fund(10_000).await.unwrap();
    // Another run of the same authority where only an outsider earned points.
    let outsider = Keypair::new();
    let other_run = Pubkey::new_unique();
    let other = finished_run(&[outsider.pubkey(), Pubkey::new_unique()], bank.now - 5_000);
    bank.set_run(other_run, &other);
    let wallet = bank.token_account(&outsider.pubkey()).await;
    // This run's pool named with the other run: the pool is not that run's.
    let mut claim = treasurer::claim(&outsider.pubkey(), &other_run, &wallet, &bank.mint);
    claim.accounts[2].pubkey = find_pool(&bank.run).0;
    claim.accounts[3].pubkey = find_escrow(&find_pool(&bank.run).0).0;
    assert_eq!(
        failed(bank.send(&[claim], &[&outsider]).await),
        InstructionError::InvalidSeeds
    );
    // And with its own run, the outsider is no member of it.
    let claim = treasurer::claim(&outsider.pubkey(), &bank.run, &wallet, &bank.mint);
    assert_eq!(
        failed(bank.send(&[claim], &[&outsider]).await),
        refused(TreasurerError::NotAMember)
    );
}

#[tokio::test]
async fn forged_mints_escrows_token_programs_and_the_escrow_as_destination_are_refused() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 0).await.unwrap();
    bank.fund(10_000).await.unwrap();
    let client = bank.clients[0].insecure_clone();
    let wallet = bank.token_account(&client.pubkey()).await;
    let pool = find_pool(&bank.run).0;
    let escrow = find_escrow(&pool).0;
    let claim = |bank: &Bank| treasurer::claim(&client.pubkey(), &bank.run, &wallet, &bank.mint);

    let forged_mint = bank.create_mint().await;
    let mut forged = claim(&bank);
    forged.accounts[5].pubkey = forged_mint;
    assert_eq!(
        failed(bank.send(&[forged], &[&client]).await),
        refused(TreasurerError::MintMismatch)
    );
    // An escrow of the same mint that the attacker owns (and would refill from).
    let attacker_escrow = bank.token_account(&pool).await;
    let mut forged = claim(&bank);
    forged.accounts[3].pubkey = attacker_escrow;
    assert_eq!(
        failed(bank.send(&[forged], &[&client]).await),
        refused(TreasurerError::EscrowMismatch)
    );
    let mut forged = claim(&bank);
    forged.accounts[6].pubkey = Pubkey::new_unique();
    assert_eq!(
        failed(bank.send(&[forged], &[&client]).await),
        InstructionError::IncorrectProgramId
    );
    // Duplicate mutable accounts: the escrow as its own destination.
    let mut forged = claim(&bank);
    forged.accounts[4].pubkey = escrow;
    assert_eq!(
        failed(bank.send(&[forged], &[&client]).await),
        refused(TreasurerError::DestinationIsEscrow)
    );
    assert_eq!(bank.tokens(&escrow).await, 10_000, "nothing moved");
    bank.claim(0, &wallet).await.unwrap();
    assert_eq!(bank.tokens(&wallet).await, 100 * RATE);
}

#[tokio::test]
async fn a_rate_that_overflows_a_token_amount_is_an_error_not_a_wrap() {
    let mut bank = Bank::start().await;
    bank.create_pool(u64::MAX / 50, 0).await.unwrap();
    bank.fund(10).await.unwrap();
    let owner = bank.clients[0].pubkey();
    let wallet = bank.token_account(&owner).await;
    assert_eq!(
        failed(bank.claim(0, &wallet).await),
        refused(TreasurerError::Overflow {
            points: 100,
            rate: u64::MAX / 50
        })
    );
}

#[tokio::test]
async fn a_pool_closes_only_after_its_run_finished_and_its_claims_or_grace() {
    let mut bank = Bank::start().await;
    let grace = 3_600;
    bank.create_pool(RATE, grace).await.unwrap();
    bank.fund(5_000).await.unwrap();
    let close = |bank: &Bank| {
        treasurer::close_pool(
            &bank.authority.pubkey(),
            &bank.run,
            &bank.treasury,
            &bank.mint,
        )
    };
    let authority = bank.authority.insecure_clone();
    // A run still under way: its members may earn more.
    let mut run = bank.run_state().await.coordinator;
    let finished_at = run.state_started_at;
    run.run_state = RunState::Paused as u8;
    bank.set_run(bank.run, &run);
    assert_eq!(
        failed(bank.send(&[close(&bank)], &[&authority]).await),
        refused(TreasurerError::RunNotFinished)
    );
    run.run_state = RunState::Finished as u8;
    run.state_started_at = bank.now;
    bank.set_run(bank.run, &run);
    assert_eq!(
        failed(bank.send(&[close(&bank)], &[&authority]).await),
        refused(TreasurerError::RewardsOwed {
            owed: 2_100,
            grace_ends: bank.now + grace as i64
        })
    );
    // Someone else cannot close it at all.
    let stranger = Keypair::new();
    bank.fund_lamports(&stranger.pubkey()).await;
    let mut foreign = close(&bank);
    foreign.accounts[0].pubkey = stranger.pubkey();
    assert_eq!(
        failed(bank.send(&[foreign], &[&stranger]).await),
        refused(TreasurerError::NotRunAuthority)
    );
    // The grace ends: what is left goes back, unclaimed rewards with it.
    assert!(finished_at < bank.now);
    bank.now += grace as i64;
    bank.send(&[close(&bank)], &[&authority]).await.unwrap();
    assert_eq!(bank.tokens(&bank.treasury.clone()).await, 1_000_000);
    assert!(bank.account(&find_pool(&bank.run).0).await.is_none());
}

/// The coordinator keeps a run's ledger while its members hold points no pool has paid, and
/// lets it go once the run's pool has paid them everything: then the pool closes too.
#[tokio::test]
async fn a_run_closes_once_its_pool_paid_everything_its_members_earned() {
    let mut bank = Bank::start().await;
    bank.create_pool(RATE, 86_400).await.unwrap();
    bank.fund(3 * 100 * RATE).await.unwrap();
    let run_id = bank.run_state().await.coordinator.run_id;
    let pool = find_pool(&bank.run).0;
    let authority = bank.authority.insecure_clone();
    let close = |bank: &Bank, pool: Option<&Pubkey>| {
        demeter_coordinator::instruction::close_run(
            &bank.authority.pubkey(),
            &run_id,
            &bank.run,
            pool,
        )
    };
    let points_owed = InstructionError::Custom(AccessError::PointsOwed.code());
    assert_eq!(
        failed(bank.send(&[close(&bank, None)], &[&authority]).await),
        points_owed,
        "no pool named"
    );
    let wallets = bank.client_wallets().await;
    bank.claim(0, &wallets[0]).await.unwrap();
    bank.claim(1, &wallets[1]).await.unwrap();
    assert_eq!(
        failed(bank.send(&[close(&bank, Some(&pool))], &[&authority]).await),
        points_owed,
        "the third member is still owed"
    );
    // A look-alike pool that "paid everything", owned by another program, and the pool of
    // another run, are not this run's pool.
    let mut fake = bank.account(&pool).await.unwrap();
    let mut record = *bytemuck::from_bytes::<Pool>(&fake.data);
    record.paid = [u64::MAX; 256];
    fake.data = bytemuck::bytes_of(&record).to_vec();
    fake.owner = Pubkey::new_unique();
    let fake_key = Pubkey::new_unique();
    bank.ctx.set_account(&fake_key, &fake.clone().into());
    assert_eq!(
        failed(
            bank.send(&[close(&bank, Some(&fake_key))], &[&authority])
                .await
        ),
        InstructionError::IllegalOwner
    );
    record.run_account = Pubkey::new_unique().to_bytes();
    fake.data = bytemuck::bytes_of(&record).to_vec();
    fake.owner = demeter_treasurer::ID;
    bank.ctx.set_account(&fake_key, &fake.into());
    assert_eq!(
        failed(
            bank.send(&[close(&bank, Some(&fake_key))], &[&authority])
                .await
        ),
        InstructionError::Custom(AccessError::RunMismatch.code())
    );
    bank.claim(2, &wallets[2]).await.unwrap();
    bank.send(&[close(&bank, Some(&pool))], &[&authority])
        .await
        .unwrap();
    assert!(
        bank.account(&bank.run.clone()).await.is_none(),
        "the run is closed"
    );
    // With the run closed, its pool closes at once (nothing can be owed), rent and all.
    let close_pool = treasurer::close_pool(
        &bank.authority.pubkey(),
        &bank.run,
        &bank.treasury,
        &bank.mint,
    );
    bank.send(&[close_pool], &[&authority]).await.unwrap();
    assert!(bank.account(&pool).await.is_none());
}
