//! The program's instructions, their wire encoding, and builders for off-chain callers.
//!
//! Encoding: one tag byte, then the fields in order, little-endian; a `Config` is its
//! fixed-size bytes; an optional key is 32 bytes with all zero for none. Trailing bytes are an
//! error, so every instruction has exactly one encoding.

use solana_program::instruction::{AccountMeta, Instruction};
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_sdk_ids::sysvar;

use crate::account::{RunAccount, Tagged, find_join_grant, find_run_instance};
use crate::config::Config;
use crate::state::{Endpoint, WitnessReport};

/// What a transaction asks of the coordinator program. Each variant lists its accounts in
/// order; `[s]` signer, `[w]` writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordinatorInstruction<'a> {
    /// Starts a run named `run_id` with `config`, steered by the authority; with a join
    /// authority, only clients it grants may join.
    ///
    /// 0. `[s, w]` authority: pays for the run instance and becomes the run authority.
    /// 1. `[w]` run instance: the PDA `["run", run_id]`, not yet created.
    /// 2. `[s, w]` run account: created by the system program earlier in this transaction
    ///    with `RunAccount::LEN` bytes, owned by this program, rent-exempt, all zero.
    /// 3. `[]` system program. 4. `[]` Clock sysvar. 5. `[]` Rent sysvar.
    InitRun {
        run_id: [u8; 32],
        join_authority: Option<Pubkey>,
        config: Config,
    },
    /// Replaces the config while the run waits for members or is paused.
    ///
    /// 0. `[s]` run authority. 1. `[w]` run account. 2. `[]` Clock sysvar.
    UpdateConfig { config: Config },
    /// Pauses the run: at once before an epoch's first round, otherwise after the round.
    ///
    /// 0. `[s]` run authority. 1. `[w]` run account. 2. `[]` Clock sysvar.
    Pause,
    /// Resumes a paused run, or cancels a pending pause.
    ///
    /// 0. `[s]` run authority. 1. `[w]` run account. 2. `[]` Clock sysvar.
    Resume,
    /// Lets `client` join a gated run.
    ///
    /// 0. `[s, w]` join authority: pays for the grant. 1. `[]` run account.
    /// 2. `[w]` join grant: the PDA `["join-grant", run account, client]`, not yet created.
    /// 3. `[]` system program. 4. `[]` Rent sysvar.
    GrantJoin { client: Pubkey },
    /// Withdraws a grant (a member that already joined stays until it leaves or is dropped).
    ///
    /// 0. `[s, w]` join authority: receives the grant's rent. 1. `[]` run account.
    /// 2. `[w]` join grant.
    RevokeJoin { client: Pubkey },
    /// The signer joins the run, serving its results to peers at `endpoint`.
    ///
    /// 0. `[s]` client. 1. `[w]` run account. 2. `[]` Clock sysvar.
    /// 3. `[]` its join grant: read only when the run is gated.
    Join { endpoint: Endpoint },
    /// The signer leaves the run.
    ///
    /// 0. `[s]` client. 1. `[w]` run account. 2. `[]` Clock sysvar.
    Withdraw,
    /// Advances the run on time-outs; anyone may send it. Fails with `NothingDue` when nothing
    /// is due, so a crank never pays for a no-op.
    ///
    /// 0. `[w]` run account. 1. `[]` Clock sysvar.
    /// 2. `[]` SlotHashes sysvar: seeds the next round.
    Tick,
    /// The signer has loaded the model during warmup.
    ///
    /// 0. `[s]` client. 1. `[w]` run account. 2. `[]` Clock sysvar. 3. `[]` SlotHashes sysvar.
    WarmupWitness,
    /// The signer, elected witness `position` of round `step`, reports what it saw.
    ///
    /// 0. `[s]` witness. 1. `[w]` run account. 2. `[]` Clock sysvar.
    Witness {
        step: u64,
        position: u16,
        report: &'a WitnessReport,
    },
    /// The signer shows that `target` trained in round `step` unseen by a witness quorum.
    ///
    /// 0. `[s]` member. 1. `[w]` run account. 2. `[]` Clock sysvar.
    HealthCheck { step: u64, target: Pubkey },
    /// Closes a paused or finished run and returns both accounts' rent to the authority.
    ///
    /// 0. `[s, w]` run authority. 1. `[w]` run instance. 2. `[w]` run account.
    CloseRun,
}

mod tag {
    pub const INIT_RUN: u8 = 0;
    pub const UPDATE_CONFIG: u8 = 1;
    pub const PAUSE: u8 = 2;
    pub const RESUME: u8 = 3;
    pub const GRANT_JOIN: u8 = 4;
    pub const REVOKE_JOIN: u8 = 5;
    pub const JOIN: u8 = 6;
    pub const WITHDRAW: u8 = 7;
    pub const TICK: u8 = 8;
    pub const WARMUP_WITNESS: u8 = 9;
    pub const WITNESS: u8 = 10;
    pub const HEALTH_CHECK: u8 = 11;
    pub const CLOSE_RUN: u8 = 12;
}

/// Reads fields front to back; any shortfall is `InvalidInstructionData`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProgramError> {
        if self.0.len() < n {
            return Err(ProgramError::InvalidInstructionData);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProgramError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, ProgramError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<u16, ProgramError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn key(&mut self) -> Result<Pubkey, ProgramError> {
        Ok(Pubkey::new_from_array(self.array()?))
    }

    fn config(&mut self) -> Result<Config, ProgramError> {
        Ok(bytemuck::pod_read_unaligned(
            self.take(size_of::<Config>())?,
        ))
    }

    fn finish(self) -> Result<(), ProgramError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProgramError::InvalidInstructionData)
        }
    }
}

impl<'a> CoordinatorInstruction<'a> {
    /// Decodes instruction data; the witness report is borrowed in place, not copied.
    pub fn unpack(data: &'a [u8]) -> Result<Self, ProgramError> {
        let (&tag, rest) = data
            .split_first()
            .ok_or(ProgramError::InvalidInstructionData)?;
        let mut r = Reader(rest);
        let instruction = match tag {
            tag::INIT_RUN => {
                let run_id = r.array()?;
                let join_authority = Some(r.key()?).filter(|key| key != &Pubkey::default());
                Self::InitRun {
                    run_id,
                    join_authority,
                    config: r.config()?,
                }
            }
            tag::UPDATE_CONFIG => Self::UpdateConfig {
                config: r.config()?,
            },
            tag::PAUSE => Self::Pause,
            tag::RESUME => Self::Resume,
            tag::GRANT_JOIN => Self::GrantJoin { client: r.key()? },
            tag::REVOKE_JOIN => Self::RevokeJoin { client: r.key()? },
            tag::JOIN => Self::Join {
                endpoint: Endpoint {
                    ip: r.array()?,
                    port: r.u16()?,
                },
            },
            tag::WITHDRAW => Self::Withdraw,
            tag::TICK => Self::Tick,
            tag::WARMUP_WITNESS => Self::WarmupWitness,
            tag::WITNESS => Self::Witness {
                step: r.u64()?,
                position: r.u16()?,
                report: bytemuck::try_from_bytes(r.take(size_of::<WitnessReport>())?)
                    .map_err(|_| ProgramError::InvalidInstructionData)?,
            },
            tag::HEALTH_CHECK => Self::HealthCheck {
                step: r.u64()?,
                target: r.key()?,
            },
            tag::CLOSE_RUN => Self::CloseRun,
            _ => return Err(ProgramError::InvalidInstructionData),
        };
        r.finish()?;
        Ok(instruction)
    }

    /// Encodes the instruction data.
    pub fn pack(&self) -> Vec<u8> {
        let mut data = Vec::new();
        match self {
            Self::InitRun {
                run_id,
                join_authority,
                config,
            } => {
                data.push(tag::INIT_RUN);
                data.extend_from_slice(run_id);
                data.extend_from_slice(join_authority.unwrap_or_default().as_ref());
                data.extend_from_slice(bytemuck::bytes_of(config));
            }
            Self::UpdateConfig { config } => {
                data.push(tag::UPDATE_CONFIG);
                data.extend_from_slice(bytemuck::bytes_of(config));
            }
            Self::Pause => data.push(tag::PAUSE),
            Self::Resume => data.push(tag::RESUME),
            Self::GrantJoin { client } => {
                data.push(tag::GRANT_JOIN);
                data.extend_from_slice(client.as_ref());
            }
            Self::RevokeJoin { client } => {
                data.push(tag::REVOKE_JOIN);
                data.extend_from_slice(client.as_ref());
            }
            Self::Join { endpoint } => {
                data.push(tag::JOIN);
                data.extend_from_slice(&endpoint.ip);
                data.extend_from_slice(&endpoint.port.to_le_bytes());
            }
            Self::Withdraw => data.push(tag::WITHDRAW),
            Self::Tick => data.push(tag::TICK),
            Self::WarmupWitness => data.push(tag::WARMUP_WITNESS),
            Self::Witness {
                step,
                position,
                report,
            } => {
                data.push(tag::WITNESS);
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(&position.to_le_bytes());
                data.extend_from_slice(bytemuck::bytes_of(*report));
            }
            Self::HealthCheck { step, target } => {
                data.push(tag::HEALTH_CHECK);
                data.extend_from_slice(&step.to_le_bytes());
                data.extend_from_slice(target.as_ref());
            }
            Self::CloseRun => data.push(tag::CLOSE_RUN),
        }
        data
    }
}

fn instruction(accounts: Vec<AccountMeta>, data: CoordinatorInstruction) -> Instruction {
    Instruction {
        program_id: crate::ID,
        accounts,
        data: data.pack(),
    }
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
) -> Instruction {
    let (instance, _) = find_run_instance(&run_id);
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
        },
    )
}

/// The common shape: a signer (the authority or a member), the run account and the clock.
fn signer_and_run(
    signer: &Pubkey,
    run_account: &Pubkey,
    data: CoordinatorInstruction,
) -> Instruction {
    instruction(
        vec![
            AccountMeta::new_readonly(*signer, true),
            AccountMeta::new(*run_account, false),
            AccountMeta::new_readonly(sysvar::clock::ID, false),
        ],
        data,
    )
}

pub fn update_config(authority: &Pubkey, run_account: &Pubkey, config: Config) -> Instruction {
    signer_and_run(
        authority,
        run_account,
        CoordinatorInstruction::UpdateConfig { config },
    )
}

pub fn pause(authority: &Pubkey, run_account: &Pubkey) -> Instruction {
    signer_and_run(authority, run_account, CoordinatorInstruction::Pause)
}

pub fn resume(authority: &Pubkey, run_account: &Pubkey) -> Instruction {
    signer_and_run(authority, run_account, CoordinatorInstruction::Resume)
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
    instruction(
        vec![
            AccountMeta::new_readonly(*client, true),
            AccountMeta::new(*run_account, false),
            AccountMeta::new_readonly(sysvar::clock::ID, false),
            AccountMeta::new_readonly(find_join_grant(run_account, client).0, false),
        ],
        CoordinatorInstruction::Join { endpoint },
    )
}

pub fn withdraw(client: &Pubkey, run_account: &Pubkey) -> Instruction {
    signer_and_run(client, run_account, CoordinatorInstruction::Withdraw)
}

pub fn tick(run_account: &Pubkey) -> Instruction {
    instruction(
        vec![
            AccountMeta::new(*run_account, false),
            AccountMeta::new_readonly(sysvar::clock::ID, false),
            AccountMeta::new_readonly(sysvar::slot_hashes::ID, false),
        ],
        CoordinatorInstruction::Tick,
    )
}

pub fn warmup_witness(client: &Pubkey, run_account: &Pubkey) -> Instruction {
    instruction(
        vec![
            AccountMeta::new_readonly(*client, true),
            AccountMeta::new(*run_account, false),
            AccountMeta::new_readonly(sysvar::clock::ID, false),
            AccountMeta::new_readonly(sysvar::slot_hashes::ID, false),
        ],
        CoordinatorInstruction::WarmupWitness,
    )
}

pub fn witness(
    client: &Pubkey,
    run_account: &Pubkey,
    step: u64,
    position: u16,
    report: &WitnessReport,
) -> Instruction {
    signer_and_run(
        client,
        run_account,
        CoordinatorInstruction::Witness {
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
    signer_and_run(
        client,
        run_account,
        CoordinatorInstruction::HealthCheck {
            step,
            target: *target,
        },
    )
}

pub fn close_run(authority: &Pubkey, run_id: &[u8; 32], run_account: &Pubkey) -> Instruction {
    instruction(
        vec![
            AccountMeta::new(*authority, true),
            AccountMeta::new(find_run_instance(run_id).0, false),
            AccountMeta::new(*run_account, false),
        ],
        CoordinatorInstruction::CloseRun,
    )
}
