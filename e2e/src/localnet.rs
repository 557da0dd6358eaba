//! A Solana validator in this process with Demeter's programs built in, for development and
//! tests: a real JSON-RPC endpoint, real transactions, real slots and clock, and the programs
//! compiled for the host (no SBF toolchain needed).
//!
//! The programs run as native builtins, the way solana-program-test runs them: an executable
//! account owned by the native loader sits at each program id in genesis, and every bank of the
//! validator gets the program's `process_instruction` as a builtin. This leans on agave
//! internals, which is why it lives here and not in the `demeter` binary.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use anyhow::Context;
use solana_account::{AccountSharedData, WritableAccount};
use solana_program_runtime::program_cache_entry::ProgramCacheEntry;
use solana_sdk::native_token::LAMPORTS_PER_SOL;
use solana_sdk::pubkey::Pubkey;
use solana_test_validator::{TestValidator, TestValidatorGenesis};

/// The coordinator program's name among the validator's builtins.
const COORDINATOR_NAME: &str = "demeter_coordinator";

/// How to start a localnet.
#[derive(Clone, Debug, Default)]
pub struct LocalnetOptions {
    /// Keep the ledger here (a restart resumes it); default: a temporary directory.
    pub ledger: Option<PathBuf>,
    /// The JSON-RPC port; default: a free one.
    pub rpc_port: Option<u16>,
    /// Accounts given SOL at genesis, e.g. the clients' wallets.
    pub fund: Vec<Pubkey>,
    /// SOL for each funded account.
    pub sol_each: u64,
}

/// A running localnet; dropping it stops the validator.
pub struct Localnet {
    validator: TestValidator,
}

impl Localnet {
    pub async fn start(options: LocalnetOptions) -> anyhow::Result<Self> {
        install_native_program_stubs().await;
        let mut genesis = TestValidatorGenesis::default();
        genesis
            .bind_ip_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .add_account(
                demeter_coordinator::ID,
                native_program_account(COORDINATOR_NAME),
            );
        if let Some(ledger) = &options.ledger {
            genesis.ledger_path(ledger);
        }
        if let Some(port) = options.rpc_port {
            genesis.rpc_port(port);
        }
        let lamports = options
            .sol_each
            .checked_mul(LAMPORTS_PER_SOL)
            .context("--sol is too large")?;
        for address in &options.fund {
            genesis.add_account(
                *address,
                AccountSharedData::new(lamports, 0, &solana_sdk_ids::system_program::ID),
            );
        }
        // The mint keypair holds the genesis supply; nothing here spends it.
        let (validator, _mint) = genesis.start_async().await;
        register_builtins(&validator);
        Ok(Self { validator })
    }

    pub fn rpc_url(&self) -> String {
        self.validator.rpc_url()
    }
}

/// The account a builtin program needs at its id: executable, owned by the native loader, its
/// data the program's name.
fn native_program_account(name: &str) -> AccountSharedData {
    let mut account =
        AccountSharedData::new_data(1, &name.as_bytes().to_vec(), &solana_sdk::native_loader::ID)
            .expect("a name serializes");
    account.set_executable(true);
    account
}

/// Gives every bank the validator has so far the coordinator as a builtin; banks made later
/// inherit it from their parents.
fn register_builtins(validator: &TestValidator) {
    let builtin =
        solana_program_test::processor!(demeter_coordinator::processor::process_instruction)
            .expect("the processor converts");
    let forks = validator.bank_forks();
    let forks = forks.read().expect("bank forks lock");
    for bank in forks.banks().values() {
        let entry = ProgramCacheEntry::new_builtin(0, COORDINATOR_NAME.len(), builtin);
        bank.add_builtin(demeter_coordinator::ID, COORDINATOR_NAME, entry);
    }
}

/// A program compiled for the host reaches the runtime (logs, sysvars, cross-program
/// invocations) through syscall stubs. solana-program-test installs the ones that route into
/// the invoking transaction when it first sets up a bank, and offers no other way to install
/// them, so one throwaway in-memory bank is set up here, once. Setting it up also turns the
/// validator's logs up to debug, so they are turned back down to warnings.
async fn install_native_program_stubs() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            let _ = solana_program_test::ProgramTest::default().start().await;
            agave_logger::setup_with("warn");
        })
        .await;
}
