//! The localnet as `solana-client`'s `RpcClient` meets it: slots and blockhashes that move with
//! time, a Clock that reads wall time, transactions that land or are refused the way a real
//! node's preflight refuses them, and JSON-RPC errors that name what was wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use demeter_e2e::{Localnet, LocalnetOptions, localnet::SLOT_DURATION};
use serde_json::json;
use solana_client::client_error::ClientErrorKind;
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_request::{RpcError, RpcRequest, RpcResponseErrorData};
use solana_commitment_config::CommitmentConfig;
use solana_sdk::clock::Clock;
use solana_sdk::native_token::LAMPORTS_PER_SOL;
use solana_sdk::signature::Keypair;
use solana_sdk::signer::Signer;
use solana_sdk::transaction::{Transaction, TransactionError};

async fn localnet_with(wallet: &Keypair) -> (Localnet, RpcClient) {
    let localnet = Localnet::start(LocalnetOptions {
        fund: vec![wallet.pubkey()],
        sol_each: 2,
        ..LocalnetOptions::default()
    })
    .await
    .unwrap();
    let rpc = RpcClient::new_with_commitment(localnet.rpc_url(), CommitmentConfig::confirmed());
    (localnet, rpc)
}

fn transfer(from: &Keypair, lamports: u64, blockhash: solana_sdk::hash::Hash) -> Transaction {
    let to = solana_sdk::pubkey::Pubkey::new_unique();
    Transaction::new_signed_with_payer(
        &[solana_system_interface::instruction::transfer(
            &from.pubkey(),
            &to,
            lamports,
        )],
        Some(&from.pubkey()),
        &[from],
        blockhash,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_blockhashes_and_the_clock_move_with_time() {
    let wallet = Keypair::new();
    let (_localnet, rpc) = localnet_with(&wallet).await;
    let slot = rpc.get_slot().await.unwrap();
    let blockhash = rpc.get_latest_blockhash().await.unwrap();
    tokio::time::sleep(SLOT_DURATION * 3).await;
    let later_slot = rpc.get_slot().await.unwrap();
    assert!(
        later_slot >= slot + 2,
        "three slot lengths later: slot {slot} -> {later_slot}"
    );
    assert_ne!(rpc.get_latest_blockhash().await.unwrap(), blockhash);
    assert!(
        rpc.is_blockhash_valid(&blockhash, CommitmentConfig::processed())
            .await
            .unwrap(),
        "a blockhash a few slots old is still valid"
    );

    let clock = rpc
        .get_account(&solana_sdk::sysvar::clock::ID)
        .await
        .unwrap();
    let clock: Clock = bincode::deserialize(&clock.data).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - clock.unix_timestamp).abs() <= 2,
        "the Clock reads wall time: {} against {now}",
        clock.unix_timestamp
    );
    assert!(clock.slot >= later_slot, "the Clock is the newest slot's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_land_once_and_failures_cost_nothing() {
    let wallet = Keypair::new();
    let (_localnet, rpc) = localnet_with(&wallet).await;
    assert_eq!(
        rpc.get_balance(&wallet.pubkey()).await.unwrap(),
        2 * LAMPORTS_PER_SOL
    );

    let blockhash = rpc.get_latest_blockhash().await.unwrap();
    let paid = transfer(&wallet, LAMPORTS_PER_SOL / 2, blockhash);
    rpc.send_and_confirm_transaction(&paid).await.unwrap();
    let balance = rpc.get_balance(&wallet.pubkey()).await.unwrap();
    assert_eq!(balance, 2 * LAMPORTS_PER_SOL - LAMPORTS_PER_SOL / 2 - 5_000);

    // The same transaction again is a replay.
    let replay = rpc.send_transaction(&paid).await.unwrap_err();
    assert_eq!(
        replay.get_transaction_error(),
        Some(TransactionError::AlreadyProcessed)
    );

    // More than the wallet holds: refused in preflight, with the system program's log, and
    // neither the transfer nor the fee is taken.
    let overdraft = transfer(&wallet, 10 * LAMPORTS_PER_SOL, blockhash);
    let refused = rpc
        .send_and_confirm_transaction(&overdraft)
        .await
        .unwrap_err();
    let ClientErrorKind::RpcError(RpcError::RpcResponseError {
        code,
        data: RpcResponseErrorData::SendTransactionPreflightFailure(simulation),
        ..
    }) = refused.kind()
    else {
        panic!("a preflight failure, got {refused:?}");
    };
    assert_eq!(*code, -32002);
    assert!(matches!(
        refused.get_transaction_error(),
        Some(TransactionError::InstructionError(0, _))
    ));
    let logs = simulation.logs.as_ref().unwrap();
    assert!(
        logs.iter()
            .any(|line| line.contains("insufficient lamports")),
        "the program's own log line: {logs:?}"
    );
    assert_eq!(rpc.get_balance(&wallet.pubkey()).await.unwrap(), balance);
    assert_eq!(
        rpc.get_signature_status(&overdraft.signatures[0])
            .await
            .unwrap(),
        None
    );

    // A tampered signature is refused before anything runs.
    let mut forged = transfer(&wallet, 1, blockhash);
    forged.signatures[0] = solana_sdk::signature::Signature::from([7; 64]);
    let refused = rpc.send_transaction(&forged).await.unwrap_err();
    assert!(
        matches!(
            refused.kind(),
            ClientErrorKind::RpcError(RpcError::RpcResponseError { code: -32003, .. })
        ),
        "{refused:?}"
    );

    // Airdrops come from the genesis supply.
    let stranger = Keypair::new();
    let signature = rpc
        .request_airdrop(&stranger.pubkey(), LAMPORTS_PER_SOL)
        .await
        .unwrap();
    assert!(rpc.confirm_transaction(&signature).await.unwrap());
    assert_eq!(
        rpc.get_balance(&stranger.pubkey()).await.unwrap(),
        LAMPORTS_PER_SOL
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_what_was_wrong() {
    let wallet = Keypair::new();
    let (_localnet, rpc) = localnet_with(&wallet).await;
    let error = |result: Result<serde_json::Value, _>| match result {
        Err(solana_client::client_error::ClientError { kind, .. }) => match *kind {
            ClientErrorKind::RpcError(RpcError::RpcResponseError { code, message, .. }) => {
                (code, message)
            }
            other => panic!("a JSON-RPC error, got {other:?}"),
        },
        Ok(value) => panic!("an error, got {value}"),
    };

    let (code, message) = error(
        rpc.send(RpcRequest::GetAccountInfo, json!(["not-an-address"]))
            .await,
    );
    assert_eq!(code, -32602);
    assert!(
        message.contains("\"not-an-address\" is not a base58 address"),
        "{message}"
    );

    let (code, message) = error(
        rpc.send(
            RpcRequest::GetMultipleAccounts,
            json!([vec![wallet.pubkey().to_string(); 101]]),
        )
        .await,
    );
    assert_eq!(code, -32602);
    assert!(message.contains("at most 100"), "{message}");

    let (code, message) = error(
        rpc.send(RpcRequest::GetMinimumBalanceForRentExemption, json!([]))
            .await,
    );
    assert_eq!(code, -32602);
    assert!(message.contains("data length (parameter 0)"), "{message}");

    let (code, message) = error(rpc.send(RpcRequest::GetBlockProduction, json!([])).await);
    assert_eq!(code, -32601);
    assert!(message.contains("getBlockProduction"), "{message}");

    let (code, message) = error(
        rpc.send(
            RpcRequest::RequestAirdrop,
            json!([wallet.pubkey().to_string(), 1_000_000 * LAMPORTS_PER_SOL]),
        )
        .await,
    );
    assert_eq!(code, -32602);
    assert!(message.contains("more than one airdrop gives"), "{message}");
}
