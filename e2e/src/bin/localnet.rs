//! `demeter-localnet`: a local Solana chain with Demeter's programs built in, for development
//! and tests (agave's bank behind a JSON-RPC endpoint; see the library's `localnet` module). It
//! funds the wallets it is given, prints where everything is, and serves until interrupted.
//! Create a run on it with `demeter run create RUN.toml -u URL`, and pay it with `demeter rewards`. The chain lives in memory: a restart
//! starts from genesis.
//!
//! ```text
//! $ demeter-localnet --fund client-0.json --fund client-1.json
//! rpc_url: http://127.0.0.1:8899
//! program_id: fqHZ...
//! ready
//! ```

use anyhow::Context;
use clap::Parser;
use demeter_e2e::{Localnet, LocalnetOptions};
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signer::Signer;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A local Solana chain with Demeter's programs built in (in memory: a restart starts from genesis)"
)]
struct Args {
    /// The JSON-RPC port (default: a free one).
    #[arg(long)]
    rpc_port: Option<u16>,
    /// Give SOL at genesis to this wallet file or base58 address (repeatable).
    #[arg(long)]
    fund: Vec<String>,
    /// SOL for each funded account.
    #[arg(long, default_value_t = 1_000)]
    sol: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let fund = args
        .fund
        .iter()
        .map(|text| address_or_wallet(text).with_context(|| format!("--fund {text}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let localnet = Localnet::start(LocalnetOptions {
            rpc_port: args.rpc_port,
            fund,
            sol_each: args.sol,
        })
        .await?;
        println!("rpc_url: {}", localnet.rpc_url());
        println!("program_id: {}", demeter_coordinator::ID);
        println!("ready");
        shutdown_signal().await;
        tracing::info!("stopping the localnet");
        anyhow::Ok(())
    })
}

/// A base58 address, or the public key of a Solana CLI wallet file.
fn address_or_wallet(text: &str) -> anyhow::Result<Pubkey> {
    if let Ok(address) = text.parse::<Pubkey>() {
        return Ok(address);
    }
    let keypair = solana_sdk::signature::read_keypair_file(text)
        .map_err(|error| anyhow::anyhow!("neither an address nor a wallet file: {error}"))?;
    Ok(keypair.pubkey())
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}
