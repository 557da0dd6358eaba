//! A local Solana chain in this process with Demeter's programs built in, for development and
//! tests: a JSON-RPC endpoint real clients use, real transactions through agave's bank, a slot
//! every 400 ms and a Clock that reads wall time, and the programs compiled for the host (no SBF
//! toolchain needed).
//!
//! It is not `solana-test-validator`: that brings the whole validator (gossip, turbine, the
//! ledger and rocksdb, 144 crates, a third of the workspace's build time) for what the tests use
//! of it, which is the bank behind eight RPC methods. What a validator adds and this lacks (votes
//! and forks, so commitment levels that differ; websockets; the ledger on disk) is met first on
//! devnet; docs/development.md says so.
//!
//! The programs run as native builtins, the way solana-program-test runs them; this leans on
//! agave internals, which is why it lives here and not in the `demeter` binary.

mod chain;
mod rpc;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use solana_sdk::native_token::LAMPORTS_PER_SOL;
use solana_sdk::pubkey::Pubkey;
use tokio::task::JoinHandle;

use chain::Chain;

/// A real slot's length: the chain ends one slot and starts the next this often.
pub const SLOT_DURATION: Duration = Duration::from_millis(400);

/// How to start a localnet.
#[derive(Clone, Debug, Default)]
pub struct LocalnetOptions {
    /// The JSON-RPC port; default: a free one.
    pub rpc_port: Option<u16>,
    /// Accounts given SOL at genesis, e.g. the clients' wallets.
    pub fund: Vec<Pubkey>,
    /// SOL for each funded account.
    pub sol_each: u64,
}

/// A running localnet; dropping it stops the slot clock and the RPC endpoint.
pub struct Localnet {
    rpc_url: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Localnet {
    pub async fn start(options: LocalnetOptions) -> anyhow::Result<Self> {
        install_native_program_stubs().await;
        let lamports = options
            .sol_each
            .checked_mul(LAMPORTS_PER_SOL)
            .context("--sol is too large")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.rpc_port.unwrap_or(0)))
            .await
            .with_context(|| match options.rpc_port {
                Some(port) => format!("binding the RPC port 127.0.0.1:{port} (--rpc-port)"),
                None => "binding a free RPC port on 127.0.0.1".to_owned(),
            })?;
        let rpc_url = format!("http://{}", listener.local_addr()?);
        let chain: rpc::SharedChain =
            Arc::new(Mutex::new(Chain::new(&options.fund, lamports, unix_now())));

        let clock = tokio::spawn({
            let chain = chain.clone();
            async move {
                let mut slots = tokio::time::interval(SLOT_DURATION);
                slots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                slots.tick().await;
                loop {
                    slots.tick().await;
                    chain.lock().expect("chain lock").advance(unix_now());
                }
            }
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, rpc::router(chain)).await {
                tracing::error!(%error, "the localnet's RPC endpoint stopped");
            }
        });
        Ok(Self {
            rpc_url,
            tasks: vec![clock, server],
        })
    }

    pub fn rpc_url(&self) -> String {
        self.rpc_url.clone()
    }
}

impl Drop for Localnet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds since 1970 fit an i64")
}

/// A program compiled for the host reaches the runtime (logs, sysvars, cross-program
/// invocations) through syscall stubs. solana-program-test installs the ones that route into
/// the invoking transaction when it first sets up a bank, and offers no other way to install
/// them, so one throwaway in-memory bank is set up here, once, and dropped (which stops its
/// blockhash ticker). Setting it up also turns agave's logs up to debug, so they are turned back
/// down to warnings (and errors for tarpc, whose throwaway banks server complains when dropped).
async fn install_native_program_stubs() {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    INSTALLED
        .get_or_init(|| async {
            drop(
                solana_program_test::ProgramTest::default()
                    .start_with_context()
                    .await,
            );
            agave_logger::setup_with("warn,tarpc=error");
        })
        .await;
}
