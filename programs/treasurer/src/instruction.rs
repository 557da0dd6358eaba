//! The treasurer's instructions, their wire encoding, and builders for off-chain callers.
//!
//! Encoding: one tag byte, then the fields in order, little-endian. Trailing bytes are an error,
//! so every instruction has exactly one encoding. Only classic SPL Token is paid out (not
//! Token-2022): every instruction that moves tokens names it and it is checked.

use solana_program::instruction::{AccountMeta, Instruction};
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_sdk_ids::sysvar;

use crate::state::{ESCROW_SEED, POOL_SEED};

/// What a transaction asks of the treasurer. Each variant lists its accounts in order; `[s]`
/// signer, `[w]` writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreasurerInstruction {
    /// Creates the run's reward pool paying `mint` at `tokens_per_point` token units per point,
    /// with its escrow token account. Once per run.
    ///
    /// 0. `[s, w]` the run's authority: pays both accounts' rent.
    /// 1. `[]` the run account (owned by the coordinator program).
    /// 2. `[w]` the pool: the PDA `["pool", run account]`, not yet created.
    /// 3. `[]` the mint (classic SPL Token). 4. `[w]` the escrow: the PDA `["escrow", pool]`,
    ///    not yet created. 5. `[]` the SPL Token program. 6. `[]` the system program.
    /// 7. `[]` the Rent sysvar.
    CreatePool {
        tokens_per_point: u64,
        claim_grace: u64,
    },
    /// Moves `amount` token units from the funder's token account into the pool's escrow.
    /// Anyone may fund a pool.
    ///
    /// 0. `[s]` the funder: the source account's owner (or delegate).
    /// 1. `[w]` the source token account. 2. `[]` the pool. 3. `[w]` the escrow.
    /// 4. `[]` the mint. 5. `[]` the SPL Token program.
    Fund { amount: u64 },
    /// Pays the signing member what the pool owes it, as far as the escrow reaches (the rest
    /// stays owed).
    ///
    /// 0. `[s]` the member. 1. `[]` the run account. 2. `[w]` the pool. 3. `[w]` the escrow.
    /// 4. `[w]` the token account to pay into (the member's choice; not the escrow).
    /// 5. `[]` the mint. 6. `[]` the SPL Token program.
    Claim,
    /// Closes the pool once its run has finished and nothing is owed, or the claim grace is
    /// over (or the run account is closed, which the coordinator allows only when no member
    /// holds points). What the escrow holds goes to the destination; both accounts' rent to the
    /// authority.
    ///
    /// 0. `[s, w]` the pool's authority. 1. `[]` the run account, live or closed.
    /// 2. `[w]` the pool. 3. `[w]` the escrow.
    /// 4. `[w]` the token account to receive what is left (not the escrow).
    /// 5. `[]` the mint. 6. `[]` the SPL Token program. 7. `[]` the Clock sysvar.
    ClosePool,
}

mod tag {
    pub const CREATE_POOL: u8 = 0;
    pub const FUND: u8 = 1;
    pub const CLAIM: u8 = 2;
    pub const CLOSE_POOL: u8 = 3;
}

impl TreasurerInstruction {
    pub fn unpack(data: &[u8]) -> Result<Self, ProgramError> {
        let (&tag, rest) = data
            .split_first()
            .ok_or(ProgramError::InvalidInstructionData)?;
        let u64_at = |at: usize| -> Result<u64, ProgramError> {
            rest.get(at..at + 8)
                .map(|bytes| u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
                .ok_or(ProgramError::InvalidInstructionData)
        };
        let (instruction, len) = match tag {
            tag::CREATE_POOL => (
                Self::CreatePool {
                    tokens_per_point: u64_at(0)?,
                    claim_grace: u64_at(8)?,
                },
                16,
            ),
            tag::FUND => (Self::Fund { amount: u64_at(0)? }, 8),
            tag::CLAIM => (Self::Claim, 0),
            tag::CLOSE_POOL => (Self::ClosePool, 0),
            _ => return Err(ProgramError::InvalidInstructionData),
        };
        if rest.len() != len {
            return Err(ProgramError::InvalidInstructionData);
        }
        Ok(instruction)
    }

    pub fn pack(&self) -> Vec<u8> {
        match *self {
            Self::CreatePool {
                tokens_per_point,
                claim_grace,
            } => [
                &[tag::CREATE_POOL][..],
                &tokens_per_point.to_le_bytes(),
                &claim_grace.to_le_bytes(),
            ]
            .concat(),
            Self::Fund { amount } => [&[tag::FUND][..], &amount.to_le_bytes()].concat(),
            Self::Claim => vec![tag::CLAIM],
            Self::ClosePool => vec![tag::CLOSE_POOL],
        }
    }
}

/// The pool of the run at `run_account`, and its bump.
pub fn find_pool(run_account: &Pubkey) -> (Pubkey, u8) {
    Pubkey::find_program_address(&[POOL_SEED, run_account.as_ref()], &crate::ID)
}

/// The escrow token account of `pool`, and its bump.
pub fn find_escrow(pool: &Pubkey) -> (Pubkey, u8) {
    Pubkey::find_program_address(&[ESCROW_SEED, pool.as_ref()], &crate::ID)
}

fn instruction(accounts: Vec<AccountMeta>, data: TreasurerInstruction) -> Instruction {
    Instruction {
        program_id: crate::ID,
        accounts,
        data: data.pack(),
    }
}

pub fn create_pool(
    authority: &Pubkey,
    run_account: &Pubkey,
    mint: &Pubkey,
    tokens_per_point: u64,
    claim_grace: u64,
) -> Instruction {
    let pool = find_pool(run_account).0;
    instruction(
        vec![
            AccountMeta::new(*authority, true),
            AccountMeta::new_readonly(*run_account, false),
            AccountMeta::new(pool, false),
            AccountMeta::new_readonly(*mint, false),
            AccountMeta::new(find_escrow(&pool).0, false),
            AccountMeta::new_readonly(spl_token_interface::ID, false),
            AccountMeta::new_readonly(solana_system_interface::program::ID, false),
            AccountMeta::new_readonly(sysvar::rent::ID, false),
        ],
        TreasurerInstruction::CreatePool {
            tokens_per_point,
            claim_grace,
        },
    )
}

pub fn fund(
    funder: &Pubkey,
    source: &Pubkey,
    run_account: &Pubkey,
    mint: &Pubkey,
    amount: u64,
) -> Instruction {
    let pool = find_pool(run_account).0;
    instruction(
        vec![
            AccountMeta::new_readonly(*funder, true),
            AccountMeta::new(*source, false),
            AccountMeta::new_readonly(pool, false),
            AccountMeta::new(find_escrow(&pool).0, false),
            AccountMeta::new_readonly(*mint, false),
            AccountMeta::new_readonly(spl_token_interface::ID, false),
        ],
        TreasurerInstruction::Fund { amount },
    )
}

/// The accounts of a payout from the escrow (`Claim` and `ClosePool`), after the signer.
fn payout_accounts(
    signer: AccountMeta,
    run_account: &Pubkey,
    destination: &Pubkey,
    mint: &Pubkey,
) -> Vec<AccountMeta> {
    let pool = find_pool(run_account).0;
    vec![
        signer,
        AccountMeta::new_readonly(*run_account, false),
        AccountMeta::new(pool, false),
        AccountMeta::new(find_escrow(&pool).0, false),
        AccountMeta::new(*destination, false),
        AccountMeta::new_readonly(*mint, false),
        AccountMeta::new_readonly(spl_token_interface::ID, false),
    ]
}

pub fn claim(
    member: &Pubkey,
    run_account: &Pubkey,
    destination: &Pubkey,
    mint: &Pubkey,
) -> Instruction {
    let member = AccountMeta::new_readonly(*member, true);
    instruction(
        payout_accounts(member, run_account, destination, mint),
        TreasurerInstruction::Claim,
    )
}

pub fn close_pool(
    authority: &Pubkey,
    run_account: &Pubkey,
    destination: &Pubkey,
    mint: &Pubkey,
) -> Instruction {
    let authority = AccountMeta::new(*authority, true);
    let mut accounts = payout_accounts(authority, run_account, destination, mint);
    accounts.push(AccountMeta::new_readonly(sysvar::clock::ID, false));
    instruction(accounts, TreasurerInstruction::ClosePool)
}
