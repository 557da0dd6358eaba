//! The program's accounts: where each one lives, its layout, and the checks that load it.
//!
//! | account      | address                                   | holds                          |
//! |--------------|-------------------------------------------|--------------------------------|
//! | run instance | PDA `["run", run_id]`                     | the run's name, authority and the address of its run account |
//! | run account  | a keypair address, created by the caller  | the authorities and the whole [`Coordinator`] state |
//! | join grant   | PDA `["join-grant", run account, client]` | the join authority's permission for one client |
//!
//! The run account is about 83 KB, more than a program may allocate through a CPI (10 KB), so
//! the caller creates it with the system program in the same transaction as `InitRun`, and
//! `InitRun` checks it. Every account starts with an 8-byte discriminator naming its type.

use core::cell::RefMut;

use bytemuck::{Pod, Zeroable};
use solana_program::account_info::AccountInfo;
use solana_program::program_error::ProgramError;
use solana_program::pubkey::Pubkey;

use crate::state::Coordinator;

pub const RUN_SEED: &[u8] = b"run";
pub const JOIN_GRANT_SEED: &[u8] = b"join-grant";

/// Discriminators: the first eight bytes of each account type.
pub const RUN_ACCOUNT_TAG: [u8; 8] = *b"dmtr:run";
pub const RUN_INSTANCE_TAG: [u8; 8] = *b"dmtr:ins";
pub const JOIN_GRANT_TAG: [u8; 8] = *b"dmtr:grt";

/// A run's name as the program stores it: its UTF-8 bytes, zero-padded to 32. `None` when the
/// name is empty or longer than 32 bytes.
pub fn run_id_from_name(name: &str) -> Option<[u8; 32]> {
    if name.is_empty() || name.len() > 32 {
        return None;
    }
    let mut id = [0u8; 32];
    id[..name.len()].copy_from_slice(name.as_bytes());
    Some(id)
}

/// Finds a run by name: the address and bump of its run instance.
pub fn find_run_instance(run_id: &[u8; 32]) -> (Pubkey, u8) {
    Pubkey::find_program_address(&[RUN_SEED, run_id], &crate::ID)
}

/// The address and bump of the grant that lets `client` join the run at `run_account`.
pub fn find_join_grant(run_account: &Pubkey, client: &Pubkey) -> (Pubkey, u8) {
    Pubkey::find_program_address(
        &[JOIN_GRANT_SEED, run_account.as_ref(), client.as_ref()],
        &crate::ID,
    )
}

/// A run's name record, at a PDA of its id, so anyone can find the run account from the name.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RunInstance {
    pub tag: [u8; 8],
    pub run_id: [u8; 32],
    pub authority: [u8; 32],
    pub run_account: [u8; 32],
    /// The canonical bump of this PDA.
    pub bump: u8,
    pub _padding: [u8; 7],
}

/// The run account: who may steer the run, and the run's state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RunAccount {
    pub tag: [u8; 8],
    /// May update the config, pause, resume and close the run.
    pub authority: [u8; 32],
    /// Must grant each join; all zero for a permissionless run (the zero key signs nothing).
    pub join_authority: [u8; 32],
    /// The run instance that names this run.
    pub instance: [u8; 32],
    pub coordinator: Coordinator,
}

/// Permission for one client to join one gated run; revoking closes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct JoinGrant {
    pub tag: [u8; 8],
    pub run_account: [u8; 32],
    pub client: [u8; 32],
    /// The canonical bump of this PDA.
    pub bump: u8,
    pub _padding: [u8; 7],
}

/// Accounts with a fixed layout behind a discriminator.
pub trait Tagged: Pod {
    const TAG: [u8; 8];
    const LEN: usize = core::mem::size_of::<Self>();
}

impl Tagged for RunInstance {
    const TAG: [u8; 8] = RUN_INSTANCE_TAG;
}

impl Tagged for RunAccount {
    const TAG: [u8; 8] = RUN_ACCOUNT_TAG;
}

impl Tagged for JoinGrant {
    const TAG: [u8; 8] = JOIN_GRANT_TAG;
}

impl RunAccount {
    /// Whether joins need a grant.
    pub fn is_gated(&self) -> bool {
        self.join_authority != [0; 32]
    }

    /// A heap copy of the run's state (too big for a stack).
    pub fn coordinator_boxed(&self) -> Box<Coordinator> {
        Coordinator::boxed_from_bytes(bytemuck::bytes_of(&self.coordinator))
            .expect("a state's own bytes are a state")
    }

    /// Decodes a run account's data as fetched over RPC (any alignment), checking its size and
    /// type. Off-chain callers (the operator, the trainer) read the run with this.
    pub fn decode(data: &[u8]) -> Result<Box<RunAccount>, ProgramError> {
        check_layout::<RunAccount>(data)?;
        let mut run: Box<RunAccount> = bytemuck::zeroed_box();
        bytemuck::bytes_of_mut(&mut *run).copy_from_slice(data);
        Ok(run)
    }
}

fn check_layout<T: Tagged>(data: &[u8]) -> Result<(), ProgramError> {
    if data.len() != T::LEN {
        return Err(ProgramError::InvalidAccountData);
    }
    match &data[..8] {
        tag if tag == T::TAG => Ok(()),
        [0, 0, 0, 0, 0, 0, 0, 0] => Err(ProgramError::UninitializedAccount),
        _ => Err(ProgramError::InvalidAccountData),
    }
}

/// Borrows `info` as a `T` of this program: owned by the program, of `T`'s size, and carrying
/// `T`'s discriminator. A look-alike owned by anyone else fails with `IllegalOwner`.
pub fn load_mut<'a, T: Tagged>(
    info: &'a AccountInfo,
    program_id: &Pubkey,
) -> Result<RefMut<'a, T>, ProgramError> {
    if info.owner != program_id {
        return Err(ProgramError::IllegalOwner);
    }
    let data = info.try_borrow_mut_data()?;
    check_layout::<T>(&data)?;
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
