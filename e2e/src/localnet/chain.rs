//! The chain behind the localnet: agave's bank, one per slot, from a genesis that funds the given
//! wallets and carries Demeter's programs (the coordinator and the treasurer) as native builtins,
//! beside the SPL programs a validator's genesis has (SPL Token, associated token accounts; the
//! builds solana-program-test ships).
//!
//! This is the runtime a validator runs (the same transaction processing, fees, sysvars, status
//! cache and blockhash queue), without the validator around it: no gossip, no ledger on disk, no
//! votes. Every processed slot is rooted at once, so `processed`, `confirmed` and `finalized`
//! are one slot. Slots end when [`Chain::advance`] is called (the localnet calls it every 400 ms,
//! a real slot's length), and each new slot's Clock is set from wall time, so the program sees
//! the time a client sees.

use std::sync::{Arc, RwLock};

use solana_account::AccountSharedData;
use solana_accounts_db::accounts_db::ACCOUNTS_DB_CONFIG_FOR_TESTING;
use solana_program_runtime::invoke_context::BuiltinFunctionRegisterer;
use solana_program_runtime::program_cache_entry::ProgramCacheEntry;
use solana_runtime::bank::Bank;
use solana_runtime::bank_forks::BankForks;
use solana_runtime::genesis_utils::create_genesis_config_with_leader_ex;
use solana_runtime::runtime_config::RuntimeConfig;
use solana_runtime_transaction::runtime_transaction::RuntimeTransaction;
use solana_sdk::clock::{Clock, Slot};
use solana_sdk::hash::Hash;
use solana_sdk::native_token::LAMPORTS_PER_SOL;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::rent::Rent;
use solana_sdk::signature::{Keypair, Signature};
use solana_sdk::signer::Signer;
use solana_transaction::Transaction;
use solana_transaction::sanitized::MessageHash;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_error::TransactionError;

/// Demeter's programs: their names among the bank's builtins, ids and entrypoints.
fn programs() -> [(&'static str, Pubkey, BuiltinFunctionRegisterer); 2] {
    let builtin =
        |function: Option<BuiltinFunctionRegisterer>| function.expect("the processor converts");
    [
        (
            "demeter_coordinator",
            demeter_coordinator::ID,
            builtin(solana_program_test::processor!(
                demeter_coordinator::processor::process_instruction
            )),
        ),
        (
            "demeter_treasurer",
            demeter_treasurer::ID,
            builtin(solana_program_test::processor!(
                demeter_treasurer::processor::process_instruction
            )),
        ),
    ]
}
/// The genesis supply, held by the mint keypair, which pays airdrops.
const MINT_LAMPORTS: u64 = 500_000_000 * LAMPORTS_PER_SOL;
/// The one validator's stake: genesis needs a leader with stake.
const VALIDATOR_STAKE_LAMPORTS: u64 = 1_000_000 * LAMPORTS_PER_SOL;
/// Mainnet's fee per signature.
const LAMPORTS_PER_SIGNATURE: u64 = 5_000;

/// Why a transaction was not processed: what a validator's preflight check answers.
#[derive(Debug)]
pub struct Refusal {
    pub error: TransactionError,
    /// The simulated run's log, programs' own lines included (empty when it never ran).
    pub logs: Vec<String>,
    pub units_consumed: u64,
}

/// The banks of one chain, advanced by hand.
pub struct Chain {
    forks: Arc<RwLock<BankForks>>,
    mint: Keypair,
}

impl Chain {
    /// A chain at slot 1 whose genesis gives `lamports_each` to every address of `fund`.
    pub fn new(fund: &[Pubkey], lamports_each: u64, unix_timestamp: i64) -> Self {
        let mint = Keypair::new();
        let accounts = fund
            .iter()
            .map(|address| {
                let wallet =
                    AccountSharedData::new(lamports_each, 0, &solana_sdk_ids::system_program::ID);
                (*address, wallet)
            })
            .chain(solana_program_binaries::spl_programs(&Rent::default()))
            .collect();
        let mut genesis = create_genesis_config_with_leader_ex(
            MINT_LAMPORTS,
            &mint.pubkey(),
            &Pubkey::new_unique(),
            &Pubkey::new_unique(),
            &Pubkey::new_unique(),
            None,
            VALIDATOR_STAKE_LAMPORTS,
            LAMPORTS_PER_SOL,
            solana_fee_calculator::FeeRateGovernor {
                lamports_per_signature: LAMPORTS_PER_SIGNATURE,
                ..Default::default()
            },
            Rent::default(),
            solana_cluster_type::ClusterType::Development,
            &agave_feature_set::FeatureSet::all_enabled(),
            accounts,
        );
        genesis.creation_time = unix_timestamp;
        let bank = Bank::new_from_genesis(
            &genesis,
            Arc::new(RuntimeConfig::default()),
            Vec::new(),
            None,
            ACCOUNTS_DB_CONFIG_FOR_TESTING,
            None,
            None,
            Arc::default(),
            None,
            None,
        );
        for (name, id, builtin) in programs() {
            bank.add_builtin(
                id,
                name,
                ProgramCacheEntry::new_builtin(0, name.len(), builtin),
            );
        }
        let chain = Self {
            forks: BankForks::new_rw_arc(bank),
            mint,
        };
        chain.advance(unix_timestamp);
        chain
    }

    /// Ends the current slot and starts the next, whose Clock reads `unix_timestamp` (or the
    /// last slot's time, if that is later: a chain's clock never goes back).
    pub fn advance(&self, unix_timestamp: i64) {
        let parent = self.bank();
        // The slot's last tick registers its blockhash: one new blockhash per slot, as on a
        // real cluster, so a blockhash stays valid for 150 slots (one minute).
        parent.fill_bank_with_ticks_for_tests();
        parent.freeze();
        let slot = parent.slot();
        self.forks
            .write()
            .expect("bank forks lock")
            .set_root(slot, None, Some(slot));
        // Not under the forks' lock: a new bank reads the fork graph through it.
        let child = Bank::new_from_parent(parent.clone(), *parent.leader(), slot + 1);
        let child = self
            .forks
            .write()
            .expect("bank forks lock")
            .insert(child)
            .clone_without_scheduler();
        let clock = child.clock();
        child.set_sysvar_for_tests(&Clock {
            unix_timestamp: unix_timestamp.max(clock.unix_timestamp),
            ..clock
        });
    }

    fn bank(&self) -> Arc<Bank> {
        self.forks.read().expect("bank forks lock").working_bank()
    }

    pub fn slot(&self) -> Slot {
        self.bank().slot()
    }

    pub fn account(&self, address: &Pubkey) -> Option<AccountSharedData> {
        self.bank().get_account(address)
    }

    /// The newest blockhash and the last block height at which it is still valid.
    pub fn latest_blockhash(&self) -> (Hash, u64) {
        let bank = self.bank();
        let blockhash = bank.last_blockhash();
        let last_valid = bank
            .get_blockhash_last_valid_block_height(&blockhash)
            .expect("the newest blockhash is in the queue");
        (blockhash, last_valid)
    }

    pub fn blockhash_is_valid(&self, blockhash: &Hash) -> bool {
        self.bank().is_blockhash_valid(blockhash)
    }

    pub fn minimum_balance_for_rent_exemption(&self, data_len: usize) -> u64 {
        self.bank().get_minimum_balance_for_rent_exemption(data_len)
    }

    /// The slot a transaction was processed in and its result, if it was.
    pub fn status(&self, signature: &Signature) -> Option<(Slot, Result<(), TransactionError>)> {
        self.bank().get_signature_status_slot(signature)
    }

    /// Checks the signatures, simulates the transaction and, if the simulation succeeds,
    /// processes it in the current slot: a validator's preflight check followed by its
    /// processing, so a transaction that would fail costs nothing and changes nothing. Callers
    /// serialize their calls (the localnet holds a lock), so two transactions never contend
    /// for an account lock and a slot never ends halfway through one.
    pub fn send(&self, transaction: VersionedTransaction) -> Result<Signature, Refusal> {
        let refused = |error| Refusal {
            error,
            logs: Vec::new(),
            units_consumed: 0,
        };
        let message_hash = transaction.verify_and_hash_message().map_err(refused)?;
        let signature = transaction.signatures[0];
        let bank = self.bank();
        let sanitized = RuntimeTransaction::try_create(
            transaction.clone(),
            MessageHash::Precomputed(message_hash),
            Some(false),
            bank.as_ref(),
            bank.get_reserved_account_keys(),
            bank.feature_set.snapshot().limit_instruction_accounts,
        )
        .map_err(refused)?;
        let simulation = bank.simulate_transaction_unchecked(&sanitized, false);
        if let Err(error) = simulation.result {
            return Err(Refusal {
                error,
                logs: simulation.logs,
                units_consumed: simulation.units_consumed,
            });
        }
        bank.process_transaction_with_metadata(transaction)
            .map(|_| signature)
            .map_err(refused)
    }

    /// Sends `lamports` from the genesis supply to `to`.
    pub fn airdrop(&self, to: &Pubkey, lamports: u64) -> Result<Signature, Refusal> {
        let (blockhash, _) = self.latest_blockhash();
        let transfer =
            solana_system_interface::instruction::transfer(&self.mint.pubkey(), to, lamports);
        let transaction = Transaction::new_signed_with_payer(
            &[transfer],
            Some(&self.mint.pubkey()),
            &[&self.mint],
            blockhash,
        );
        self.send(transaction.into())
    }
}
