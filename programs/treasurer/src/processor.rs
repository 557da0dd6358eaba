//! The program: checks every account of every instruction, then moves tokens through SPL Token
//! with the pool's PDA as the escrow's signing owner.
//!
//! Checks, for each account that matters: signer and writable where the instruction needs them;
//! owner (the coordinator's run account, this program's pool, SPL Token's mint and escrow);
//! type (discriminator and size); PDA addresses against their canonical bumps; the mint and the
//! escrow the pool recorded; the token program's id; and a destination that is not the escrow
//! itself. Amounts are checked u64 arithmetic; a failed check is a program error, never a panic.

use solana_program::account_info::AccountInfo;
use solana_program::clock::Clock;
use solana_program::entrypoint::ProgramResult;
use solana_program::program::{invoke, invoke_signed};
use solana_program::program_error::ProgramError;
use solana_program::program_pack::Pack;
use solana_program::pubkey::Pubkey;
use solana_program::rent::Rent;

use demeter_coordinator::account::{load, load_mut, load_uninitialized};
use demeter_coordinator::checks::{
    close_account, create_pda, signer, system_program, sysvar, writable,
};
use demeter_coordinator_core::RunState;
use demeter_coordinator_core::accounts::{RunAccount, Tagged};
use spl_token_interface::instruction as token_instruction;
use spl_token_interface::state::{Account as TokenAccount, Mint};

use crate::error::TreasurerError;
use crate::instruction::TreasurerInstruction;
use crate::state::{ESCROW_SEED, POOL_SEED, Pool};

pub fn process_instruction(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    data: &[u8],
) -> ProgramResult {
    match TreasurerInstruction::unpack(data)? {
        TreasurerInstruction::CreatePool {
            tokens_per_point,
            claim_grace,
        } => create_pool(program_id, accounts, tokens_per_point, claim_grace),
        TreasurerInstruction::Fund { amount } => fund(program_id, accounts, amount),
        TreasurerInstruction::Claim => claim(program_id, accounts),
        TreasurerInstruction::ClosePool => close_pool(program_id, accounts),
    }
}

fn token_program(info: &AccountInfo) -> ProgramResult {
    if info.key == &spl_token_interface::ID {
        Ok(())
    } else {
        Err(ProgramError::IncorrectProgramId)
    }
}

/// The decimals of `mint`: a classic SPL Token mint, initialized.
fn mint_decimals(mint: &AccountInfo) -> Result<u8, ProgramError> {
    if mint.owner != &spl_token_interface::ID {
        return Err(ProgramError::IllegalOwner);
    }
    Ok(Mint::unpack(&mint.try_borrow_data()?)?.decimals)
}

/// The pool at `pool`, checked: this program's, of the pool type, at the PDA of the run it
/// names, with its escrow and mint among the accounts given.
fn checked_pool<'a>(
    program_id: &Pubkey,
    pool: &'a AccountInfo,
    escrow: &AccountInfo,
    mint: &AccountInfo,
) -> Result<core::cell::RefMut<'a, Pool>, ProgramError> {
    let record = load_mut::<Pool>(pool, program_id)?;
    let address = Pubkey::create_program_address(
        &[POOL_SEED, &record.run_account, &[record.bump]],
        program_id,
    )
    .map_err(|_| ProgramError::InvalidSeeds)?;
    if pool.key != &address {
        return Err(ProgramError::InvalidSeeds);
    }
    if escrow.key.to_bytes() != record.escrow {
        return Err(TreasurerError::EscrowMismatch.into());
    }
    if mint.key.to_bytes() != record.mint {
        return Err(TreasurerError::MintMismatch.into());
    }
    Ok(record)
}

/// The token units `escrow` holds.
fn balance(escrow: &AccountInfo) -> Result<u64, ProgramError> {
    if escrow.owner != &spl_token_interface::ID {
        return Err(ProgramError::IllegalOwner);
    }
    Ok(TokenAccount::unpack(&escrow.try_borrow_data()?)?.amount)
}

/// The accounts of a payout from the escrow (`Claim` and `ClosePool`), checked alike.
struct Payout<'a, 'b> {
    signer: &'a AccountInfo<'b>,
    run_account: &'a AccountInfo<'b>,
    pool: &'a AccountInfo<'b>,
    escrow: &'a AccountInfo<'b>,
    destination: &'a AccountInfo<'b>,
    mint: &'a AccountInfo<'b>,
    token: &'a AccountInfo<'b>,
}

impl<'a, 'b> Payout<'a, 'b> {
    /// The first seven of `accounts`, checked: a signer, the pool (of the run given) with its
    /// escrow and mint, SPL Token, and a writable destination that is not the escrow. Returns
    /// the rest of the accounts too.
    fn checked(
        program_id: &Pubkey,
        accounts: &'a [AccountInfo<'b>],
    ) -> Result<(Self, &'a [AccountInfo<'b>]), ProgramError> {
        let [
            signer_info,
            run_account,
            pool,
            escrow,
            destination,
            mint,
            token,
            rest @ ..,
        ] = accounts
        else {
            return Err(ProgramError::NotEnoughAccountKeys);
        };
        signer(signer_info)?;
        writable(pool)?;
        writable(escrow)?;
        writable(destination)?;
        token_program(token)?;
        if destination.key == escrow.key {
            return Err(TreasurerError::DestinationIsEscrow.into());
        }
        if checked_pool(program_id, pool, escrow, mint)?.run_account != run_account.key.to_bytes() {
            return Err(ProgramError::InvalidSeeds);
        }
        let payout = Self {
            signer: signer_info,
            run_account,
            pool,
            escrow,
            destination,
            mint,
            token,
        };
        Ok((payout, rest))
    }

    /// Pays `amount` from the escrow to the destination, signed by the pool's PDA.
    fn pay(&self, pool: &Pool, amount: u64) -> ProgramResult {
        invoke_signed(
            &token_instruction::transfer_checked(
                self.token.key,
                self.escrow.key,
                self.mint.key,
                self.destination.key,
                self.pool.key,
                &[],
                amount,
                pool.decimals,
            )?,
            &[
                self.escrow.clone(),
                self.mint.clone(),
                self.destination.clone(),
                self.pool.clone(),
                self.token.clone(),
            ],
            &[&[POOL_SEED, &pool.run_account, &[pool.bump]]],
        )
    }
}

fn create_pool(
    program_id: &Pubkey,
    accounts: &[AccountInfo],
    tokens_per_point: u64,
    claim_grace: u64,
) -> ProgramResult {
    let [
        authority,
        run_account,
        pool,
        mint,
        escrow,
        token,
        system,
        rent,
        ..,
    ] = accounts
    else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(authority)?;
    writable(authority)?;
    writable(pool)?;
    writable(escrow)?;
    token_program(token)?;
    system_program(system)?;
    if tokens_per_point == 0 {
        return Err(TreasurerError::ZeroRate.into());
    }
    let run = load::<RunAccount>(run_account, &demeter_coordinator::ID)?;
    if run.authority != authority.key.to_bytes() {
        return Err(TreasurerError::NotRunAuthority.into());
    }
    drop(run);
    let (pool_key, bump) =
        Pubkey::find_program_address(&[POOL_SEED, run_account.key.as_ref()], program_id);
    let (escrow_key, escrow_bump) =
        Pubkey::find_program_address(&[ESCROW_SEED, pool_key.as_ref()], program_id);
    if pool.key != &pool_key || escrow.key != &escrow_key {
        return Err(ProgramError::InvalidSeeds);
    }
    for account in [pool, escrow] {
        if account.owner != &solana_system_interface::program::ID || !account.data_is_empty() {
            return Err(ProgramError::AccountAlreadyInitialized);
        }
    }
    let decimals = mint_decimals(mint)?;
    let rent = sysvar::<Rent>(rent)?;
    create_pda(
        authority,
        pool,
        system,
        &rent,
        Pool::LEN,
        program_id,
        &[POOL_SEED, run_account.key.as_ref(), &[bump]],
    )?;
    create_pda(
        authority,
        escrow,
        system,
        &rent,
        TokenAccount::LEN,
        &spl_token_interface::ID,
        &[ESCROW_SEED, pool_key.as_ref(), &[escrow_bump]],
    )?;
    invoke(
        &token_instruction::initialize_account3(token.key, escrow.key, mint.key, pool.key)?,
        &[escrow.clone(), mint.clone(), token.clone()],
    )?;
    let mut record = load_uninitialized::<Pool>(pool, program_id)?;
    record.tag = Pool::TAG;
    record.run_account = run_account.key.to_bytes();
    record.authority = authority.key.to_bytes();
    record.mint = mint.key.to_bytes();
    record.escrow = escrow.key.to_bytes();
    record.tokens_per_point = tokens_per_point;
    record.claim_grace = claim_grace;
    record.bump = bump;
    record.decimals = decimals;
    Ok(())
}

fn fund(program_id: &Pubkey, accounts: &[AccountInfo], amount: u64) -> ProgramResult {
    let [funder, source, pool, escrow, mint, token, ..] = accounts else {
        return Err(ProgramError::NotEnoughAccountKeys);
    };
    signer(funder)?;
    writable(source)?;
    writable(escrow)?;
    token_program(token)?;
    let decimals = checked_pool(program_id, pool, escrow, mint)?.decimals;
    if source.key == escrow.key {
        return Err(TreasurerError::DestinationIsEscrow.into());
    }
    invoke(
        &token_instruction::transfer_checked(
            token.key,
            source.key,
            mint.key,
            escrow.key,
            funder.key,
            &[],
            amount,
            decimals,
        )?,
        &[
            source.clone(),
            mint.clone(),
            escrow.clone(),
            funder.clone(),
            token.clone(),
        ],
    )
}

fn claim(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let (payout, _) = Payout::checked(program_id, accounts)?;
    let mut record = load_mut::<Pool>(payout.pool, program_id)?;
    let run = load::<RunAccount>(payout.run_account, &demeter_coordinator::ID)?;
    let slot = run
        .coordinator
        .member_index(&payout.signer.key.to_bytes())
        .ok_or(TreasurerError::NotAMember)?;
    let owed = record
        .owed(&run.coordinator, slot)
        .map_err(TreasurerError::from)?;
    if owed == 0 {
        return Err(TreasurerError::NothingOwed {
            points: run.coordinator.members[slot].payable_points(),
            paid: record.paid[slot],
        }
        .into());
    }
    drop(run);
    let amount = owed.min(balance(payout.escrow)?);
    if amount == 0 {
        return Err(TreasurerError::EscrowEmpty { owed }.into());
    }
    // Recorded before the transfer; a failed transfer fails the whole instruction anyway.
    record.paid[slot] = record.paid[slot]
        .checked_add(amount)
        .ok_or(ProgramError::ArithmeticOverflow)?;
    record.total_paid = record
        .total_paid
        .checked_add(amount)
        .ok_or(ProgramError::ArithmeticOverflow)?;
    let pool = *record;
    drop(record);
    payout.pay(&pool, amount)
}

fn close_pool(program_id: &Pubkey, accounts: &[AccountInfo]) -> ProgramResult {
    let (payout, rest) = Payout::checked(program_id, accounts)?;
    let clock = rest.first().ok_or(ProgramError::NotEnoughAccountKeys)?;
    let authority = payout.signer;
    writable(authority)?;
    let pool = *load::<Pool>(payout.pool, program_id)?;
    if pool.authority != authority.key.to_bytes() {
        return Err(TreasurerError::NotRunAuthority.into());
    }
    // A closed run account owed nothing when it closed: the coordinator refuses to close a run
    // in which any member holds points.
    let run_account = payout.run_account;
    let run_closed = run_account.owner != &demeter_coordinator::ID && run_account.data_is_empty();
    if !run_closed {
        let run = load::<RunAccount>(run_account, &demeter_coordinator::ID)?;
        if run.coordinator.run_state() != RunState::Finished {
            return Err(TreasurerError::RunNotFinished.into());
        }
        let owed = pool
            .total_owed(&run.coordinator)
            .map_err(TreasurerError::from)?;
        let grace_ends = i64::try_from(
            i128::from(run.coordinator.state_started_at) + i128::from(pool.claim_grace),
        )
        .unwrap_or(i64::MAX);
        if owed > 0 && sysvar::<Clock>(clock)?.unix_timestamp < grace_ends {
            return Err(TreasurerError::RewardsOwed { owed, grace_ends }.into());
        }
    }
    let left = balance(payout.escrow)?;
    if left > 0 {
        payout.pay(&pool, left)?;
    }
    invoke_signed(
        &token_instruction::close_account(
            payout.token.key,
            payout.escrow.key,
            authority.key,
            payout.pool.key,
            &[],
        )?,
        &[
            payout.escrow.clone(),
            authority.clone(),
            payout.pool.clone(),
            payout.token.clone(),
        ],
        &[&[POOL_SEED, &pool.run_account, &[pool.bump]]],
    )?;
    close_account(payout.pool, authority)
}
