//! The program's instructions, their wire encoding, and builders for off-chain callers.
//!
//! Most instructions carry one of the run's [`Input`]s, encoded as the core encodes it (its tag
//! byte, then its fields); the program adds four of its own that manage accounts (creating a
//! run, granting and revoking joins, closing a run), with tags no input uses. Encoding: one tag
//! byte, then the fields in order, little-endian; a `Config` is its fixed-size bytes; an optional
//! key is 32 bytes with all zero for none. Trailing bytes are an error, so every instruction has
//! exactly one encoding.

use demeter_coordinator_core::input::MalformedInput;
use demeter_coordinator_core::{Config, Endpoint, Finding, Input, WitnessReport};
use solana_program::instruction::{AccountMeta, Instruction};
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_sdk_ids::sysvar;

use crate::account::{find_join_grant, find_run_instance};
use demeter_coordinator_core::accounts::{RunAccount, Tagged};

/// What a transaction asks of the coordinator program. Each variant lists its accounts in
/// order; `[s]` signer, `[w]` writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorInstruction {
    /// Starts a run named `run_id` with `config`, steered by the authority; with a join
    /// authority, only clients it grants may join. The name is the authority's: another
    /// authority's run of the same name is another run. Each join pays `join_deposit` lamports
    /// into the run account (0 for none), refunded on withdrawal, lost if the member is dropped.
    ///
    /// 0. `[s, w]` authority: pays for the run instance and becomes the run authority.
    /// 1. `[w]` run instance: the PDA `["run", authority, run_id]`, not yet created.
    /// 2. `[s, w]` run account: created by the system program earlier in this transaction
    ///    with `RunAccount::LEN` bytes, owned by this program, rent-exempt, all zero.
    /// 3. `[]` system program. 4. `[]` Clock sysvar. 5. `[]` Rent sysvar.
    InitRun {
        run_id: [u8; 32],
        join_authority: Option<Pubkey>,
        config: Config,
        join_deposit: u64,
    },
    /// Lets `client` join a gated run.
    ///
    /// 0. `[s, w]` join authority: pays for the grant. 1. `[]` run account.
    /// 2. `[w]` join grant: the PDA `["join-grant", run account, client]`, not yet created.
    /// 3. `[]` system program. 4. `[]` Rent sysvar.
    GrantJoin { client: Pubkey },
    /// Withdraws a grant (a member that already joined stays until it leaves or is dropped).
    /// After the run is closed, the join authority that made the grant may still revoke it, for
    /// its rent.
    ///
    /// 0. `[s, w]` join authority: receives the grant's rent.
    /// 1. `[]` run account, live or closed. 2. `[w]` join grant.
    RevokeJoin { client: Pubkey },
    /// Closes a paused or finished run in which no member holds points, or whose reward pool
    /// has paid its members everything they earned (the account is the ledger of what they are
    /// owed), and returns both accounts' rent to the authority.
    ///
    /// 0. `[s, w]` run authority. 1. `[w]` run instance. 2. `[w]` run account.
    /// 3. `[]` the run's reward pool (the treasurer's), when members hold points.
    CloseRun,
    /// One of the run's inputs, applied by the state machine. Its accounts:
    ///
    /// - `UpdateConfig`, `Pause`, `Resume` (the run authority signs), `WarmupWitness`,
    ///   `Commit`, `Witness`, `HealthCheck`, `Verdict`, `Attest` (a member signs): 0. `[s]`
    ///   signer.
    ///   1. `[w]` run account. 2. `[]` Clock sysvar.
    /// - `Withdraw`: the same, with 0. `[s, w]`: the member, which gets its deposit back.
    /// - `Join`: 0. `[s, w]` the client, which pays the deposit. 1. `[w]` run account.
    ///   2. `[]` Clock sysvar. 3. `[]` system program. 4. `[]` the client's join grant, read
    ///   only when the run is gated.
    /// - `Tick` (anyone; fails with `NothingDue` when nothing is due, so a crank never pays for
    ///   a no-op): 0. `[w]` run account. 1. `[]` Clock sysvar. 2. `[]` SlotHashes sysvar: the
    ///   hash of the slot that armed a round's start seeds it.
    Input(Input),
}

/// The program's own tags; every other tag is an input's (`demeter_coordinator_core::input::tag`).
mod tag {
    pub const INIT_RUN: u8 = 0;
    pub const GRANT_JOIN: u8 = 4;
    pub const REVOKE_JOIN: u8 = 5;
    pub const CLOSE_RUN: u8 = 12;
}

impl CoordinatorInstruction {
    /// Decodes instruction data; a witness report is borrowed in place, not copied.
    pub fn unpack(data: &[u8]) -> Result<Self, ProgramError> {
        let invalid = ProgramError::InvalidInstructionData;
        let (&tag, rest) = data.split_first().ok_or(invalid.clone())?;
        let key = |bytes: &[u8]| -> Result<Pubkey, ProgramError> {
            let bytes: [u8; 32] = bytes.try_into().map_err(|_| invalid.clone())?;
            Ok(Pubkey::new_from_array(bytes))
        };
        Ok(match tag {
            tag::INIT_RUN => {
                if rest.len() != 32 + 32 + size_of::<Config>() + 8 {
                    return Err(invalid);
                }
                let (run_id, rest) = rest.split_at(32);
                let (join_authority, rest) = rest.split_at(32);
                let (config, join_deposit) = rest.split_at(size_of::<Config>());
                Self::InitRun {
                    run_id: run_id.try_into().expect("32"),
                    join_authority: Some(key(join_authority)?)
                        .filter(|key| key != &Pubkey::default()),
                    config: bytemuck::pod_read_unaligned(config),
                    join_deposit: u64::from_le_bytes(join_deposit.try_into().expect("8")),
                }
            }
            tag::GRANT_JOIN => Self::GrantJoin { client: key(rest)? },
            tag::REVOKE_JOIN => Self::RevokeJoin { client: key(rest)? },
            tag::CLOSE_RUN if rest.is_empty() => Self::CloseRun,
            tag::CLOSE_RUN => return Err(invalid),
            _ => Self::Input(Input::unpack(data).map_err(|_: MalformedInput| invalid)?),
        })
    }

    /// Encodes the instruction data.
    pub fn pack(&self) -> Vec<u8> {
        match self {
            Self::InitRun {
                run_id,
                join_authority,
                config,
                join_deposit,
            } => {
                let mut data = vec![tag::INIT_RUN];
                data.extend_from_slice(run_id);
                data.extend_from_slice(join_authority.unwrap_or_default().as_ref());
                data.extend_from_slice(bytemuck::bytes_of(config));
                data.extend_from_slice(&join_deposit.to_le_bytes());
                data
            }
            Self::GrantJoin { client } => [&[tag::GRANT_JOIN], client.as_ref()].concat(),
            Self::RevokeJoin { client } => [&[tag::REVOKE_JOIN], client.as_ref()].concat(),
            Self::CloseRun => vec![tag::CLOSE_RUN],
            Self::Input(input) => input.pack(),
        }
    }
}

fn instruction(accounts: Vec<AccountMeta>, data: CoordinatorInstruction) -> Instruction {
    Instruction {
        program_id: crate::ID,
        accounts,
        data: data.pack(),
    }
}

/// The instruction that carries `input` from `signer` (for `Tick`, which anyone sends unsigned,
/// `signer` is not among the accounts) to the run at `run_account`, with the accounts the
/// input needs.
pub fn input(signer: &Pubkey, run_account: &Pubkey, input: Input) -> Instruction {
    let run = AccountMeta::new(*run_account, false);
    let clock = AccountMeta::new_readonly(sysvar::clock::ID, false);
    let slot_hashes = AccountMeta::new_readonly(sysvar::slot_hashes::ID, false);
    // A joining client pays its deposit and a withdrawing one gets it back: their lamports move.
    let paying = AccountMeta::new(*signer, true);
    let signer = AccountMeta::new_readonly(*signer, true);
    let accounts = match input {
        Input::Tick => vec![run, clock, slot_hashes],
        Input::Join { .. } => {
            let grant = find_join_grant(run_account, &signer.pubkey).0;
            vec![
                paying,
                run,
                clock,
                AccountMeta::new_readonly(solana_system_interface::program::ID, false),
                AccountMeta::new_readonly(grant, false),
            ]
        }
        Input::Withdraw => vec![paying, run, clock],
        Input::UpdateConfig { .. }
        | Input::Pause
        | Input::Resume
        | Input::WarmupWitness
        | Input::Commit { .. }
        | Input::Witness { .. }
        | Input::HealthCheck { .. }
        | Input::Verdict { .. }
        | Input::Attest { .. } => vec![signer, run, clock],
    };
    instruction(accounts, CoordinatorInstruction::Input(input))
}

/// Creates the run account (system program); put it right before [`init_run`] in the same
/// transaction. `lamports` must make `RunAccount::LEN` bytes rent-exempt.
pub fn create_run_account(payer: &Pubkey, run_account: &Pubkey, lamports: u64) -> Instruction {
    solana_system_interface::instruction::create_account(
        payer,
        run_account,
        lamports,
        RunAccount::LEN as u64,
        &crate::ID,
    )
}

pub fn init_run(
    authority: &Pubkey,
    run_account: &Pubkey,
    run_id: [u8; 32],
    join_authority: Option<Pubkey>,
    config: Config,
    join_deposit: u64,
) -> Instruction {
    let (instance, _) = find_run_instance(authority, &run_id);
    instruction(
        vec![
            AccountMeta::new(*authority, true),
            AccountMeta::new(instance, false),
            AccountMeta::new(*run_account, true),
            AccountMeta::new_readonly(solana_system_interface::program::ID, false),
            AccountMeta::new_readonly(sysvar::clock::ID, false),
            AccountMeta::new_readonly(sysvar::rent::ID, false),
        ],
        CoordinatorInstruction::InitRun {
            run_id,
            join_authority,
            config,
            join_deposit,
        },
    )
}

pub fn update_config(authority: &Pubkey, run_account: &Pubkey, config: Config) -> Instruction {
    input(authority, run_account, Input::UpdateConfig { config })
}

pub fn pause(authority: &Pubkey, run_account: &Pubkey) -> Instruction {
    input(authority, run_account, Input::Pause)
}

pub fn resume(authority: &Pubkey, run_account: &Pubkey) -> Instruction {
    input(authority, run_account, Input::Resume)
}

pub fn grant_join(join_authority: &Pubkey, run_account: &Pubkey, client: &Pubkey) -> Instruction {
    instruction(
        vec![
            AccountMeta::new(*join_authority, true),
            AccountMeta::new_readonly(*run_account, false),
            AccountMeta::new(find_join_grant(run_account, client).0, false),
            AccountMeta::new_readonly(solana_system_interface::program::ID, false),
            AccountMeta::new_readonly(sysvar::rent::ID, false),
        ],
        CoordinatorInstruction::GrantJoin { client: *client },
    )
}

pub fn revoke_join(join_authority: &Pubkey, run_account: &Pubkey, client: &Pubkey) -> Instruction {
    instruction(
        vec![
            AccountMeta::new(*join_authority, true),
            AccountMeta::new_readonly(*run_account, false),
            AccountMeta::new(find_join_grant(run_account, client).0, false),
        ],
        CoordinatorInstruction::RevokeJoin { client: *client },
    )
}

/// Joins `client`, serving at `endpoint`; its grant's address is always passed, and read only
/// for gated runs.
pub fn join(client: &Pubkey, run_account: &Pubkey, endpoint: Endpoint) -> Instruction {
    input(client, run_account, Input::Join { endpoint })
}

pub fn withdraw(client: &Pubkey, run_account: &Pubkey) -> Instruction {
    input(client, run_account, Input::Withdraw)
}

pub fn tick(run_account: &Pubkey) -> Instruction {
    input(&Pubkey::default(), run_account, Input::Tick)
}

pub fn warmup_witness(client: &Pubkey, run_account: &Pubkey) -> Instruction {
    input(client, run_account, Input::WarmupWitness)
}

pub fn commit(client: &Pubkey, run_account: &Pubkey, step: u64, hash: [u8; 32]) -> Instruction {
    input(client, run_account, Input::Commit { step, hash })
}

pub fn witness(
    client: &Pubkey,
    run_account: &Pubkey,
    step: u64,
    position: u16,
    report: WitnessReport,
) -> Instruction {
    input(
        client,
        run_account,
        Input::Witness {
            step,
            position,
            report,
        },
    )
}

pub fn health_check(
    client: &Pubkey,
    run_account: &Pubkey,
    step: u64,
    target: &Pubkey,
) -> Instruction {
    input(
        client,
        run_account,
        Input::HealthCheck {
            step,
            target: target.to_bytes(),
        },
    )
}

/// Verifier `position` of closed round `step` judges `target`'s result faked, by `finding`.
pub fn verdict(
    client: &Pubkey,
    run_account: &Pubkey,
    step: u64,
    position: u16,
    target: &Pubkey,
    finding: Finding,
) -> Instruction {
    input(
        client,
        run_account,
        Input::Verdict {
            step,
            position,
            target: target.to_bytes(),
            finding,
        },
    )
}

/// Witness `position` of round `step - 1` attests that the model after `step` rounds has
/// weights hash `hash`.
pub fn attest(
    client: &Pubkey,
    run_account: &Pubkey,
    step: u64,
    position: u16,
    hash: [u8; 32],
) -> Instruction {
    input(
        client,
        run_account,
        Input::Attest {
            step,
            position,
            hash,
        },
    )
}

/// Closes the run; `pool` is its reward pool when members hold points (the treasurer's PDA
/// `["pool", run account]`).
pub fn close_run(
    authority: &Pubkey,
    run_id: &[u8; 32],
    run_account: &Pubkey,
    pool: Option<&Pubkey>,
) -> Instruction {
    let mut accounts = vec![
        AccountMeta::new(*authority, true),
        AccountMeta::new(find_run_instance(authority, run_id).0, false),
        AccountMeta::new(*run_account, false),
    ];
    accounts.extend(pool.map(|pool| AccountMeta::new_readonly(*pool, false)));
    instruction(accounts, CoordinatorInstruction::CloseRun)
}
