//! The localnet's JSON-RPC endpoint: the part of Solana's JSON-RPC API that reads accounts and
//! sends transactions, which is all `solana-client`'s `RpcClient` needs for Demeter's run client,
//! the operator's chain sync and the Solana CLI's `balance`/`airdrop`. Requests and responses use
//! `solana-rpc-client-types`' own types, so their shapes are the ones real clients parse.
//!
//! Every commitment level reads the same slot (the chain roots each slot as it ends), and
//! `sendTransaction` runs the preflight simulation whatever `skipPreflight` says: a transaction
//! that fails is refused with its logs and changes nothing, as preflight does on a real node.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use solana_account::{AccountSharedData, ReadableAccount};
use solana_account_decoder_client_types::{UiAccount, UiAccountData, UiAccountEncoding};
use solana_rpc_client_types::config::RpcSendTransactionConfig;
use solana_rpc_client_types::response::{
    Response, RpcBlockhash, RpcResponseContext, RpcSimulateTransactionResult, RpcVersionInfo,
};
use solana_sdk::hash::Hash;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Signature;
use solana_transaction::versioned::VersionedTransaction;
use solana_transaction_error::TransactionError;
use solana_transaction_status_client_types::{
    TransactionConfirmationStatus, TransactionStatus, UiTransactionEncoding,
};

use super::chain::{Chain, Refusal};

/// The most addresses `getMultipleAccounts` takes, as on a real node.
const MAX_MULTIPLE_ACCOUNTS: usize = 100;
/// The most signatures `getSignatureStatuses` takes, as on a real node.
const MAX_SIGNATURE_STATUSES: usize = 256;
/// The most lamports one airdrop gives: enough to pay for runs, not a faucet to drain.
const MAX_AIRDROP_LAMPORTS: u64 = 1_000 * solana_sdk::native_token::LAMPORTS_PER_SOL;

/// The chain the endpoint serves, shared with the slot clock.
pub type SharedChain = Arc<Mutex<Chain>>;

/// `POST /` takes one JSON-RPC request or a batch of them.
pub fn router(chain: SharedChain) -> Router {
    Router::new().route("/", post(serve)).with_state(chain)
}

async fn serve(State(chain): State<SharedChain>, body: Bytes) -> impl IntoResponse {
    let response = match serde_json::from_slice::<Value>(&body) {
        Err(_) => failure(Value::Null, RpcFailure::new(-32700, "Parse error")),
        Ok(Value::Array(batch)) => {
            let chain = chain.lock().expect("chain lock");
            batch
                .into_iter()
                .map(|request| answer(&chain, request))
                .collect()
        }
        Ok(request) => answer(&chain.lock().expect("chain lock"), request),
    };
    ([(CONTENT_TYPE, "application/json")], response.to_string())
}

/// A JSON-RPC error: its code, message and optional data.
#[derive(Debug)]
struct RpcFailure {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl RpcFailure {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(-32602, format!("Invalid params: {}", message.into()))
    }
}

fn failure(id: Value, failure: RpcFailure) -> Value {
    let mut error = json!({"code": failure.code, "message": failure.message});
    if let Some(data) = failure.data {
        error["data"] = data;
    }
    json!({"jsonrpc": "2.0", "error": error, "id": id})
}

fn answer(chain: &Chain, request: Value) -> Value {
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    let Some(method) = request.get("method").and_then(Value::as_str) else {
        return failure(id, RpcFailure::new(-32600, "Invalid request: no method"));
    };
    let params = match request.get("params").cloned().unwrap_or(Value::Null) {
        Value::Null => Vec::new(),
        Value::Array(params) => params,
        _ => {
            return failure(id, RpcFailure::invalid_params("`params` must be an array"));
        }
    };
    match dispatch(chain, method, &Params(params)) {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err(error) => failure(id, error),
    }
}

fn dispatch(chain: &Chain, method: &str, params: &Params) -> Result<Value, RpcFailure> {
    let slot = chain.slot();
    let in_context = |value: Value| {
        json!(Response {
            context: RpcResponseContext {
                slot,
                api_version: None,
            },
            value,
        })
    };
    Ok(match method {
        "getAccountInfo" => {
            let address = params.pubkey(0, "address")?;
            in_context(json!(chain.account(&address).as_ref().map(ui_account)))
        }
        "getMultipleAccounts" => {
            let addresses: Vec<String> = params.get(0, "addresses")?;
            at_most("addresses", addresses.len(), MAX_MULTIPLE_ACCOUNTS)?;
            let accounts = addresses
                .iter()
                .map(|text| Ok(chain.account(&parse_pubkey(text)?).as_ref().map(ui_account)))
                .collect::<Result<Vec<_>, RpcFailure>>()?;
            in_context(json!(accounts))
        }
        "getBalance" => {
            let address = params.pubkey(0, "address")?;
            let lamports = chain.account(&address).map_or(0, |a| a.lamports());
            in_context(json!(lamports))
        }
        "getMinimumBalanceForRentExemption" => {
            let data_len: usize = params.get(0, "data length")?;
            json!(chain.minimum_balance_for_rent_exemption(data_len))
        }
        "getSlot" | "getBlockHeight" => json!(slot),
        "getLatestBlockhash" => {
            let (blockhash, last_valid_block_height) = chain.latest_blockhash();
            in_context(json!(RpcBlockhash {
                blockhash: blockhash.to_string(),
                last_valid_block_height,
            }))
        }
        "isBlockhashValid" => {
            let text: String = params.get(0, "blockhash")?;
            let blockhash: Hash = text
                .parse()
                .map_err(|_| RpcFailure::invalid_params(format!("{text:?} is not a blockhash")))?;
            in_context(json!(chain.blockhash_is_valid(&blockhash)))
        }
        "sendTransaction" => {
            let transaction = decode_transaction(params)?;
            let signature = chain.send(transaction).map_err(preflight_failure)?;
            json!(signature.to_string())
        }
        "getSignatureStatuses" => {
            let signatures: Vec<String> = params.get(0, "signatures")?;
            at_most("signatures", signatures.len(), MAX_SIGNATURE_STATUSES)?;
            let statuses = signatures
                .iter()
                .map(|text| {
                    let signature: Signature = text.parse().map_err(|_| {
                        RpcFailure::invalid_params(format!("{text:?} is not a signature"))
                    })?;
                    Ok(chain.status(&signature).map(transaction_status))
                })
                .collect::<Result<Vec<_>, RpcFailure>>()?;
            in_context(json!(statuses))
        }
        "requestAirdrop" => {
            let address = params.pubkey(0, "address")?;
            let lamports: u64 = params.get(1, "lamports")?;
            if lamports > MAX_AIRDROP_LAMPORTS {
                return Err(RpcFailure::invalid_params(format!(
                    "{lamports} lamports is more than one airdrop gives ({MAX_AIRDROP_LAMPORTS})"
                )));
            }
            let signature = chain
                .airdrop(&address, lamports)
                .map_err(preflight_failure)?;
            json!(signature.to_string())
        }
        "getHealth" => json!("ok"),
        "getVersion" => json!(RpcVersionInfo {
            solana_core: format!("{} (demeter-localnet)", env!("CARGO_PKG_VERSION")),
            feature_set: None,
        }),
        _ => {
            return Err(RpcFailure::new(
                -32601,
                format!("Method not found: {method}"),
            ));
        }
    })
}

/// Positional parameters, read by index and named in errors.
struct Params(Vec<Value>);

impl Params {
    fn get<T: DeserializeOwned>(&self, index: usize, name: &str) -> Result<T, RpcFailure> {
        let value = self.0.get(index).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|error| {
            RpcFailure::invalid_params(format!("{name} (parameter {index}): {error}"))
        })
    }

    fn pubkey(&self, index: usize, name: &str) -> Result<Pubkey, RpcFailure> {
        parse_pubkey(&self.get::<String>(index, name)?)
    }
}

/// A list parameter's length bound, as a real node enforces it.
fn at_most(what: &str, len: usize, max: usize) -> Result<(), RpcFailure> {
    if len > max {
        return Err(RpcFailure::invalid_params(format!(
            "too many {what} ({len}); at most {max}"
        )));
    }
    Ok(())
}

fn parse_pubkey(text: &str) -> Result<Pubkey, RpcFailure> {
    text.parse()
        .map_err(|_| RpcFailure::invalid_params(format!("{text:?} is not a base58 address")))
}

/// The account in base64, whatever encoding was asked for: clients decode any binary encoding.
fn ui_account(account: &AccountSharedData) -> UiAccount {
    UiAccount {
        lamports: account.lamports(),
        data: UiAccountData::Binary(BASE64.encode(account.data()), UiAccountEncoding::Base64),
        owner: account.owner().to_string(),
        executable: account.executable(),
        rent_epoch: account.rent_epoch(),
        space: Some(account.data().len() as u64),
    }
}

/// A processed transaction is final at once: its slot is rooted when it ends.
fn transaction_status((slot, result): (u64, Result<(), TransactionError>)) -> TransactionStatus {
    TransactionStatus {
        slot,
        confirmations: None,
        err: result.clone().err(),
        status: result,
        confirmation_status: Some(TransactionConfirmationStatus::Finalized),
    }
}

/// `sendTransaction`'s parameters: the wire transaction, in base64 or (by default) base58.
fn decode_transaction(params: &Params) -> Result<VersionedTransaction, RpcFailure> {
    let encoded: String = params.get(0, "transaction")?;
    let config: Option<RpcSendTransactionConfig> = params.get(1, "config")?;
    let encoding = config
        .and_then(|config| config.encoding)
        .unwrap_or(UiTransactionEncoding::Base58);
    let bytes = match encoding {
        UiTransactionEncoding::Base58 => bs58::decode(&encoded).into_vec().ok(),
        UiTransactionEncoding::Base64 => BASE64.decode(&encoded).ok(),
        other => {
            return Err(RpcFailure::invalid_params(format!(
                "encoding {other:?} is not supported; use base64 or base58"
            )));
        }
    }
    .ok_or_else(|| {
        RpcFailure::invalid_params(format!("the transaction is not valid {encoding:?}"))
    })?;
    bincode::deserialize(&bytes).map_err(|error| {
        RpcFailure::invalid_params(format!("the transaction does not deserialize: {error}"))
    })
}

/// A refused transaction as a real node's preflight refuses it: a bad signature is -32003, any
/// other error -32002 with the simulation (its error and log) as data.
fn preflight_failure(refusal: Refusal) -> RpcFailure {
    if refusal.error == TransactionError::SignatureFailure {
        return RpcFailure::new(-32003, "Transaction signature verification failure");
    }
    let simulation = RpcSimulateTransactionResult {
        err: Some(refusal.error.clone().into()),
        logs: Some(refusal.logs),
        accounts: None,
        units_consumed: Some(refusal.units_consumed),
        loaded_accounts_data_size: None,
        return_data: None,
        inner_instructions: None,
        replacement_blockhash: None,
        fee: None,
        pre_balances: None,
        post_balances: None,
        pre_token_balances: None,
        post_token_balances: None,
        loaded_addresses: None,
    };
    RpcFailure {
        code: -32002,
        message: format!("Transaction simulation failed: {}", refusal.error),
        data: Some(json!(simulation)),
    }
}
