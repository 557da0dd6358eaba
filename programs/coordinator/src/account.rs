//! The program's accounts: where each one lives and the checks that load it. Their layouts are
//! the core's (`demeter_coordinator_core::accounts`), shared with everyone who reads them.
//!
//! | account      | address                                   |
//! |--------------|-------------------------------------------|
//! | run instance | PDA `["run", authority, run_id]`          |
//! | run account  | a keypair address, created by the caller  |
//! | join grant   | PDA `["join-grant", run account, client]` |
//!
//! A run's name is scoped by its authority: anyone may name a run anything, and a client finds
//! the run by the name *and* the authority's key, so a name taken first by someone else (or
//! taken again after a run is closed) never leads a client to a run it did not mean to join.
//!
//! The run account is about 57 KB, more than a program may allocate through a CPI (10 KB), so
//! the caller creates it with the system program in the same transaction as `InitRun`, and
//! `InitRun` checks it. Every account starts with an 8-byte discriminator naming its type.

use core::cell::{Ref, RefMut};

use demeter_coordinator_core::accounts::{LayoutError, Tagged, check_layout};
use solana_program::account_info::AccountInfo;
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;

pub const RUN_SEED: &[u8] = b"run";
pub const JOIN_GRANT_SEED: &[u8] = b"join-grant";

/// Finds a run by its authority and name: the address and bump of its run instance.
pub fn find_run_instance(authority: &Pubkey, run_id: &[u8; 32]) -> (Pubkey, u8) {
    Pubkey::find_program_address(&[RUN_SEED, authority.as_ref(), run_id], &crate::ID)
}

/// The address and bump of the grant that lets `client` join the run at `run_account`.
pub fn find_join_grant(run_account: &Pubkey, client: &Pubkey) -> (Pubkey, u8) {
    Pubkey::find_program_address(
        &[JOIN_GRANT_SEED, run_account.as_ref(), client.as_ref()],
        &crate::ID,
    )
}

/// The runtime's word for each layout error.
fn layout_error(error: LayoutError) -> ProgramError {
    match error {
        LayoutError::WrongSize { .. } | LayoutError::WrongType => ProgramError::InvalidAccountData,
        LayoutError::Uninitialized => ProgramError::UninitializedAccount,
    }
}

/// Whether `data`, `info`'s bytes, are a `T` of `program_id`: owned by it, of `T`'s size, and
/// carrying `T`'s discriminator. A look-alike owned by anyone else fails with `IllegalOwner`.
fn check_account<T: Tagged>(
    info: &AccountInfo,
    program_id: &Pubkey,
    data: &[u8],
) -> Result<(), ProgramError> {
    if info.owner != program_id {
        return Err(ProgramError::IllegalOwner);
    }
    check_layout::<T>(data).map_err(layout_error)
}

/// Reads `info` as a checked `T` of `program_id` (for an account an instruction only reads,
/// such as another program's run).
pub fn load<'a, T: Tagged>(
    info: &'a AccountInfo,
    program_id: &Pubkey,
) -> Result<Ref<'a, T>, ProgramError> {
    let data = info.try_borrow_data()?;
    check_account::<T>(info, program_id, &data)?;
    Ref::filter_map(data, |data| bytemuck::try_from_bytes::<T>(data).ok())
        .map_err(|_| ProgramError::InvalidAccountData)
}

/// Borrows `info` as a checked `T` of `program_id`, to write it.
pub fn load_mut<'a, T: Tagged>(
    info: &'a AccountInfo,
    program_id: &Pubkey,
) -> Result<RefMut<'a, T>, ProgramError> {
    let data = info.try_borrow_mut_data()?;
    check_account::<T>(info, program_id, &data)?;
    // Account data is 8-byte aligned on chain and in the test harness; anything else is refused.
    RefMut::filter_map(data, |data| bytemuck::try_from_bytes_mut::<T>(data).ok())
        .map_err(|_| ProgramError::InvalidAccountData)
}

/// Like [`load_mut`], for an account about to be initialized: owned by the program, of `T`'s
/// size, and still all zero.
pub fn load_uninitialized<'a, T: Tagged>(
    info: &'a AccountInfo,
    program_id: &Pubkey,
) -> Result<RefMut<'a, T>, ProgramError> {
    if info.owner != program_id {
        return Err(ProgramError::IllegalOwner);
    }
    let data = info.try_borrow_mut_data()?;
    if data.len() != T::LEN {
        return Err(ProgramError::InvalidAccountData);
    }
    if data[..8] != [0; 8] {
        return Err(ProgramError::AccountAlreadyInitialized);
    }
    RefMut::filter_map(data, |data| bytemuck::try_from_bytes_mut::<T>(data).ok())
        .map_err(|_| ProgramError::InvalidAccountData)
}
