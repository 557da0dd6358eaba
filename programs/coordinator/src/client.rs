//! Off-chain access to a run through JSON-RPC (feature `client`): find a run by name, read and
//! decode its state with the cluster's clock, send instructions, create a run. The trainer's
//! on-chain backend, `demeter run` and `demeter rewards`, the operator's chain sync and the e2e tools
//! all go through this, so they read and write runs the same way.

use solana_client::client_error::{ClientError, ClientErrorKind};
use solana_client::nonblocking::rpc_client::RpcClient;
use solana_client::rpc_request::{RpcError, RpcResponseErrorData};
use solana_commitment_config::CommitmentConfig;
use solana_program::clock::Clock;
use solana_program::instruction::{Instruction, InstructionError};
use solana_program::pubkey::Pubkey;
use solana_sdk::signature::Signature;
use solana_sdk::signer::Signer;
use solana_sdk::transaction::{Transaction, TransactionError};

use demeter_coordinator_core::accounts::{RunAccount, RunInstance, Tagged};
use demeter_coordinator_core::{Config, Coordinator};

use crate::account::{find_join_grant, find_run_instance};
use crate::instruction as ix;

/// Why a run could not be read or an instruction did not land.
#[derive(Debug, thiserror::Error)]
pub enum ClientFailure {
    /// A program refused the instruction: its error code and its own log line.
    #[error("the program refused it (code {code}): {message}")]
    Refused { code: u32, message: String },
    /// The transaction cannot run as sent (no SOL for fees, say); retrying will not help.
    #[error("the cluster will not run the transaction: {0}")]
    Transaction(TransactionError),
    #[error(
        "no run named {run_id:?} under authority {authority}: its instance account {instance} does not exist"
    )]
    NoSuchRun {
        run_id: String,
        authority: Pubkey,
        instance: Pubkey,
    },
    #[error("account {address} is not a coordinator {what}")]
    NotA { what: &'static str, address: Pubkey },
    /// The RPC node could not be reached or answered an error; retrying later may work.
    #[error("{url}: {error}")]
    Rpc {
        url: String,
        error: Box<ClientError>,
    },
}

/// A run's state as read at one slot.
pub struct RunSnapshot {
    pub run: Box<RunAccount>,
    /// The cluster's unix time at that slot.
    pub cluster_time: i64,
    pub slot: u64,
}

/// One run of the coordinator program on one cluster.
pub struct RunClient {
    rpc: RpcClient,
    url: String,
    run_account: Pubkey,
}

impl RunClient {
    /// Finds the run that `authority` named `run_id`, through its instance PDA.
    pub async fn find(
        url: &str,
        authority: &Pubkey,
        run_id: &[u8; 32],
    ) -> Result<Self, ClientFailure> {
        let rpc = RpcClient::new_with_commitment(url.to_owned(), CommitmentConfig::confirmed());
        let (instance, _) = find_run_instance(authority, run_id);
        let account = rpc
            .get_account_with_commitment(&instance, CommitmentConfig::confirmed())
            .await
            .map_err(|error| rpc_failure(url, error))?
            .value
            .ok_or_else(|| ClientFailure::NoSuchRun {
                run_id: run_name(run_id),
                authority: *authority,
                instance,
            })?;
        // The address binds the authority already; a record that names another is not one
        // this program wrote.
        let record = decode_instance(&account.data)
            .filter(|record| record.authority == authority.to_bytes())
            .ok_or(ClientFailure::NotA {
                what: "run instance",
                address: instance,
            })?;
        Ok(Self {
            rpc,
            url: url.to_owned(),
            run_account: Pubkey::new_from_array(record.run_account),
        })
    }

    /// Creates a run named `run_id` under `authority` (its run authority, which pays); each
    /// join pays `join_deposit` lamports into the run account (see `RunAccount::join_deposit`).
    /// With `allowed_clients`, joins are gated: `authority` also becomes the join authority and
    /// grants each of them. A run of that name that exists already is left as it is and found.
    pub async fn create(
        url: &str,
        authority: &(dyn Signer + Sync),
        run_id: [u8; 32],
        config: Config,
        allowed_clients: Option<&[Pubkey]>,
        join_deposit: u64,
    ) -> Result<Self, ClientFailure> {
        match Self::find(url, &authority.pubkey(), &run_id).await {
            Err(ClientFailure::NoSuchRun { .. }) => {}
            found => return found,
        }
        let rpc = RpcClient::new_with_commitment(url.to_owned(), CommitmentConfig::confirmed());
        let rent = rpc
            .get_minimum_balance_for_rent_exemption(RunAccount::LEN)
            .await
            .map_err(|error| rpc_failure(url, error))?;
        let run_account = solana_sdk::signature::Keypair::new();
        let payer = authority.pubkey();
        let client = Self {
            rpc,
            url: url.to_owned(),
            run_account: run_account.pubkey(),
        };
        client
            .send(
                &[
                    ix::create_run_account(&payer, &run_account.pubkey(), rent),
                    ix::init_run(
                        &payer,
                        &run_account.pubkey(),
                        run_id,
                        allowed_clients.map(|_| payer),
                        config,
                        join_deposit,
                    ),
                ],
                &[authority, &run_account],
            )
            .await?;
        for member in allowed_clients.unwrap_or_default() {
            client
                .send(
                    &[ix::grant_join(&payer, &run_account.pubkey(), member)],
                    &[authority],
                )
                .await?;
        }
        Ok(client)
    }

    /// The same run, read and confirmed at `commitment` (`confirmed` unless set).
    pub fn with_commitment(self, commitment: CommitmentConfig) -> Self {
        Self {
            rpc: RpcClient::new_with_commitment(self.url.clone(), commitment),
            ..self
        }
    }

    pub fn run_account(&self) -> Pubkey {
        self.run_account
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Reads the run account and the clock in one request.
    pub async fn read(&self) -> Result<RunSnapshot, ClientFailure> {
        let response = self
            .rpc
            .get_multiple_accounts_with_commitment(
                &[self.run_account, solana_program::sysvar::clock::ID],
                self.rpc.commitment(),
            )
            .await
            .map_err(|error| rpc_failure(&self.url, error))?;
        let not_a_run = ClientFailure::NotA {
            what: "run account (it may have been closed)",
            address: self.run_account,
        };
        let [Some(run), Some(clock)] = &response.value[..] else {
            return Err(not_a_run);
        };
        let run = RunAccount::decode(&run.data).map_err(|_| not_a_run)?;
        let clock: Clock = decode_clock(&clock.data).ok_or(ClientFailure::NotA {
            what: "clock sysvar",
            address: solana_program::sysvar::clock::ID,
        })?;
        Ok(RunSnapshot {
            run,
            cluster_time: clock.unix_timestamp,
            slot: response.context.slot,
        })
    }

    /// The accounts at `addresses` (at most 100), `None` for those that do not exist.
    pub async fn accounts(
        &self,
        addresses: &[Pubkey],
    ) -> Result<Vec<Option<solana_sdk::account::Account>>, ClientFailure> {
        Ok(self
            .rpc
            .get_multiple_accounts_with_commitment(addresses, self.rpc.commitment())
            .await
            .map_err(|error| rpc_failure(&self.url, error))?
            .value)
    }

    /// Lamports that keep an account of `len` bytes rent-exempt.
    pub async fn rent_exempt(&self, len: usize) -> Result<u64, ClientFailure> {
        self.rpc
            .get_minimum_balance_for_rent_exemption(len)
            .await
            .map_err(|error| rpc_failure(&self.url, error))
    }

    /// The clients among `clients` that hold no join grant for this run.
    pub async fn missing_grants(&self, clients: &[Pubkey]) -> Result<Vec<Pubkey>, ClientFailure> {
        let grants: Vec<Pubkey> = clients
            .iter()
            .map(|client| find_join_grant(&self.run_account, client).0)
            .collect();
        let mut missing = Vec::new();
        // getMultipleAccounts takes at most 100 addresses.
        for (clients, grants) in clients.chunks(100).zip(grants.chunks(100)) {
            let accounts = self
                .rpc
                .get_multiple_accounts_with_commitment(grants, CommitmentConfig::confirmed())
                .await
                .map_err(|error| rpc_failure(&self.url, error))?
                .value;
            missing.extend(
                clients
                    .iter()
                    .zip(accounts)
                    .filter(|(_, account)| account.is_none())
                    .map(|(client, _)| *client),
            );
        }
        Ok(missing)
    }

    /// The newest slot the RPC node has processed: how far a read at `confirmed` trails it is
    /// the reader's slot lag.
    pub async fn processed_slot(&self) -> Result<u64, ClientFailure> {
        self.rpc
            .get_slot_with_commitment(CommitmentConfig::processed())
            .await
            .map_err(|error| rpc_failure(&self.url, error))
    }

    /// Sends `instructions` in one transaction paid by the first signer and waits until it is
    /// confirmed; returns its signature.
    ///
    /// A transaction that did not land is signed again under a newer blockhash and sent again,
    /// up to [`SEND_ATTEMPTS`] times: when its blockhash expired before it landed, when the node
    /// answered an error and the signature is unknown to it, or when the same transaction ran
    /// earlier (the same instructions and signers under one blockhash are one transaction, and
    /// the caller asked for it now: a pause, a resume, then a pause again). A transaction whose
    /// fate is known is never sent twice.
    pub async fn send(
        &self,
        instructions: &[Instruction],
        signers: &[&(dyn Signer + Sync)],
    ) -> Result<Signature, ClientFailure> {
        let payer = signers.first().map(|signer| signer.pubkey());
        let mut blockhash = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let latest = match blockhash {
                None => self.rpc.get_latest_blockhash().await,
                Some(previous) => self.rpc.get_new_latest_blockhash(&previous).await,
            }
            .map_err(|error| rpc_failure(&self.url, error))?;
            blockhash = Some(latest);
            let transaction =
                Transaction::new_signed_with_payer(instructions, payer.as_ref(), signers, latest);
            let signature = transaction.signatures[0];
            let error = match self.rpc.send_and_confirm_transaction(&transaction).await {
                Ok(signature) => return Ok(signature),
                Err(error) => error,
            };
            let retry = match error.get_transaction_error() {
                Some(TransactionError::AlreadyProcessed | TransactionError::BlockhashNotFound) => {
                    true
                }
                Some(_) => false,
                // The node's answer was lost or it gave up waiting: send again only if the
                // transaction did not land.
                None => match self.rpc.get_signature_status(&signature).await {
                    Ok(Some(Ok(()))) => return Ok(signature),
                    Ok(Some(Err(failed))) => return Err(ClientFailure::Transaction(failed)),
                    Ok(None) => true,
                    Err(_) => false,
                },
            };
            if !retry || attempt >= SEND_ATTEMPTS {
                return Err(classify(&self.url, error));
            }
        }
    }
}

/// How many times [`RunClient::send`] signs and sends one set of instructions at most.
pub const SEND_ATTEMPTS: u32 = 3;

/// Compute units a tick asks for: the most one transaction may use. The worst tick is estimated
/// at about 80 k units, under the 200 k an instruction gets by default, but the estimate is not
/// a measurement (docs/coordinator.md, "Compute units"), so ticks keep the headroom.
pub const TICK_COMPUTE_UNITS: u32 = 1_400_000;

/// A tick transaction's instructions: its compute budget, then the tick.
pub fn tick_instructions(run_account: &Pubkey) -> [Instruction; 2] {
    [
        solana_compute_budget_interface::ComputeBudgetInstruction::set_compute_unit_limit(
            TICK_COMPUTE_UNITS,
        ),
        ix::tick(run_account),
    ]
}

/// Whether the state machine would advance at `cluster_time`: worth sending a tick. The program
/// decides for real, from its own clock.
pub fn tick_due(state: &Coordinator, cluster_time: i64) -> bool {
    let mut copy = Coordinator::boxed_from_bytes(bytemuck::bytes_of(state))
        .expect("a state's own bytes are a state");
    copy.tick(cluster_time, &[0; 32]).is_ok()
}

fn decode_instance(data: &[u8]) -> Option<RunInstance> {
    if data.len() != RunInstance::LEN || data[..8] != RunInstance::TAG {
        return None;
    }
    bytemuck::try_pod_read_unaligned(data).ok()
}

/// The Clock sysvar's account data: five little-endian 64-bit fields.
fn decode_clock(data: &[u8]) -> Option<Clock> {
    let field =
        |index: usize| -> Option<[u8; 8]> { data.get(index * 8..index * 8 + 8)?.try_into().ok() };
    Some(Clock {
        slot: u64::from_le_bytes(field(0)?),
        epoch_start_timestamp: i64::from_le_bytes(field(1)?),
        epoch: u64::from_le_bytes(field(2)?),
        leader_schedule_epoch: u64::from_le_bytes(field(3)?),
        unix_timestamp: i64::from_le_bytes(field(4)?),
    })
}

fn run_name(run_id: &[u8; 32]) -> String {
    let end = run_id.iter().position(|&b| b == 0).unwrap_or(run_id.len());
    String::from_utf8_lossy(&run_id[..end]).into_owned()
}

fn rpc_failure(url: &str, error: ClientError) -> ClientFailure {
    ClientFailure::Rpc {
        url: url.to_owned(),
        error: Box::new(error),
    }
}

/// A program error becomes [`ClientFailure::Refused`] with the program's last log line; other
/// transaction errors are [`ClientFailure::Transaction`]; the rest is the RPC's.
fn classify(url: &str, error: ClientError) -> ClientFailure {
    match error.get_transaction_error() {
        Some(TransactionError::InstructionError(_, InstructionError::Custom(code))) => {
            ClientFailure::Refused {
                code,
                message: program_log(&error).unwrap_or_else(|| format!("program error {code}")),
            }
        }
        Some(transaction) => ClientFailure::Transaction(transaction),
        None => rpc_failure(url, error),
    }
}

/// The program's own words: the last `Program log:` line of the failed preflight simulation.
fn program_log(error: &ClientError) -> Option<String> {
    let ClientErrorKind::RpcError(RpcError::RpcResponseError {
        data: RpcResponseErrorData::SendTransactionPreflightFailure(simulation),
        ..
    }) = error.kind()
    else {
        return None;
    };
    simulation
        .logs
        .as_ref()?
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("Program log: "))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_clock_sysvar_layout() {
        let clock = Clock {
            slot: 7,
            epoch_start_timestamp: -3,
            epoch: 2,
            leader_schedule_epoch: 3,
            unix_timestamp: 1_700_000_000,
        };
        let mut data = Vec::new();
        for field in [7u64, (-3i64) as u64, 2, 3, 1_700_000_000] {
            data.extend_from_slice(&field.to_le_bytes());
        }
        assert_eq!(decode_clock(&data), Some(clock));
        assert_eq!(decode_clock(&data[..39]), None);
    }

    #[test]
    fn a_tick_asks_for_a_transactions_whole_compute_budget_first() {
        let run = Pubkey::new_unique();
        let [budget, tick] = tick_instructions(&run);
        assert_eq!(
            budget.program_id,
            solana_compute_budget_interface::id(),
            "the compute budget program"
        );
        // SetComputeUnitLimit (2) with 1,400,000 little-endian.
        assert_eq!(budget.data, [2, 0xC0, 0x5C, 0x15, 0x00]);
        assert_eq!(tick, ix::tick(&run));
    }
}
