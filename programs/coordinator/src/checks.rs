//! Checks and moves on accounts that every Demeter program makes: signer, writable, the system
//! program, sysvars read from their accounts, creating a PDA (even one someone funded first),
//! moving lamports and closing an account. The coordinator and the treasurer call these, so each
//! check is written once.

use solana_program::account_info::AccountInfo;
use solana_program::entrypoint::ProgramResult;
use solana_program::program::{invoke, invoke_signed};
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;
use solana_program::rent::Rent;
use solana_sysvar::SysvarSerialize;

use demeter_coordinator_core::AccessError;

use crate::error::denied;

/// Moves `amount` lamports out of a program-owned account into `receiver`.
pub fn move_lamports(from: &AccountInfo, receiver: &AccountInfo, amount: u64) -> ProgramResult {
    let left = from
        .lamports()
        .checked_sub(amount)
        .ok_or(ProgramError::InsufficientFunds)?;
    let received = receiver
        .lamports()
        .checked_add(amount)
        .ok_or(ProgramError::ArithmeticOverflow)?;
    **from.try_borrow_mut_lamports()? = left;
    **receiver.try_borrow_mut_lamports()? = received;
    Ok(())
}

pub fn signer(info: &AccountInfo) -> ProgramResult {
    if info.is_signer {
        Ok(())
    } else {
        Err(ProgramError::MissingRequiredSignature)
    }
}

pub fn writable(info: &AccountInfo) -> ProgramResult {
    if info.is_writable {
        Ok(())
    } else {
        Err(ProgramError::Immutable)
    }
}

pub fn system_program(info: &AccountInfo) -> ProgramResult {
    if info.key == &solana_system_interface::program::ID {
        Ok(())
    } else {
        Err(ProgramError::IncorrectProgramId)
    }
}

/// Reads a sysvar from its account. Sysvars come as accounts rather than through `get()`
/// syscalls because the native test harness serves only the former.
pub fn sysvar<T: SysvarSerialize>(info: &AccountInfo) -> Result<T, ProgramError> {
    T::from_account_info(info).map_err(|_| denied(AccessError::WrongSysvar))
}

/// Creates `account`, a PDA of the calling program's `seeds`, with `space` bytes owned by `owner`
/// (the calling program, or the token program for a token account it will own), paid by
/// `payer`. An address someone has already sent lamports to cannot be created with
/// `create_account`, so it is topped up, allocated and assigned instead: nobody can block a
/// run name, a grant or a pool by funding its address first.
pub fn create_pda<'a>(
    payer: &AccountInfo<'a>,
    account: &AccountInfo<'a>,
    system: &AccountInfo<'a>,
    rent: &Rent,
    space: usize,
    owner: &Pubkey,
    seeds: &[&[u8]],
) -> ProgramResult {
    use solana_system_interface::instruction as system_instruction;
    let required = rent.minimum_balance(space);
    let infos = [payer.clone(), account.clone(), system.clone()];
    if account.lamports() == 0 {
        return invoke_signed(
            &system_instruction::create_account(
                payer.key,
                account.key,
                required,
                space as u64,
                owner,
            ),
            &infos,
            &[seeds],
        );
    }
    let top_up = required.saturating_sub(account.lamports());
    if top_up > 0 {
        invoke(
            &system_instruction::transfer(payer.key, account.key, top_up),
            &infos,
        )?;
    }
    invoke_signed(
        &system_instruction::allocate(account.key, space as u64),
        &infos,
        &[seeds],
    )?;
    invoke_signed(
        &system_instruction::assign(account.key, owner),
        &infos,
        &[seeds],
    )
}

/// Moves all of `account`'s lamports to `receiver` and hands the emptied account back to the
/// system program.
pub fn close_account(account: &AccountInfo, receiver: &AccountInfo) -> ProgramResult {
    let total = receiver
        .lamports()
        .checked_add(account.lamports())
        .ok_or(ProgramError::ArithmeticOverflow)?;
    **receiver.try_borrow_mut_lamports()? = total;
    **account.try_borrow_mut_lamports()? = 0;
    account.resize(0)?;
    account.assign(&solana_system_interface::program::ID);
    Ok(())
}
