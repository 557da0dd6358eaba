//! The layouts of the coordinator program's accounts: plain old data behind an 8-byte
//! discriminator, so the program, its RPC client and anyone reading a run account off chain
//! agree on every byte. Where each account lives (its address) and the checks that load it are
//! the program's (`demeter-coordinator`'s `account` module).
//!
//! | account      | holds                                                              |
//! |--------------|--------------------------------------------------------------------|
//! | run instance | the run's name, authority and the address of its run account        |
//! | run account  | the authorities and the whole [`Coordinator`] state                 |
//! | join grant   | the join authority's permission for one client                      |
//! | pool         | the treasurer's reward pool of a run: its rate and what it paid     |
//!
//! The pool is the treasurer program's account; its layout lives here so that the coordinator
//! can tell, when a run is closed, that its pool has paid everything its members earned.

use bytemuck::{Pod, Zeroable};

use crate::state::{Coordinator, MAX_CLIENTS, Member};

/// Discriminators: the first eight bytes of each account type.
pub const RUN_ACCOUNT_TAG: [u8; 8] = *b"dmtr:run";
pub const RUN_INSTANCE_TAG: [u8; 8] = *b"dmtr:ins";
pub const JOIN_GRANT_TAG: [u8; 8] = *b"dmtr:grt";
pub const POOL_TAG: [u8; 8] = *b"dmtr:pol";

/// The treasurer program's id (`7AD5m8LzfVJfCfi9tfMu6cwJcRjQY4iHd6oDUMwpYcT3`): the owner of
/// every pool. The treasurer crate's `ID` is built from these bytes.
pub const TREASURER_PROGRAM_ID: [u8; 32] = [
    91, 130, 2, 149, 139, 220, 159, 3, 231, 5, 133, 45, 81, 248, 245, 220, 172, 27, 86, 126, 21,
    72, 50, 146, 22, 73, 236, 176, 60, 8, 86, 218,
];

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
    /// The slot in which the state machine's pending transition was armed: the next tick takes
    /// it, seeded by this slot's hash, which did not exist while the arming transaction ran.
    pub armed_slot: u64,
    /// Lamports a client pays into this account when it joins, set at `InitRun` (0 for none).
    /// A member gets its deposit back when it withdraws, and loses it when it is dropped (not
    /// ready by the end of a warmup, or unseen by a witness quorum): joining with throwaway keys
    /// that never train costs a deposit per key.
    pub join_deposit: u64,
    /// Deposits lost by dropped members, in this account's lamports; they go to the authority
    /// when the run is closed.
    pub forfeited: u64,
    /// The deposit each member slot holds now, in this account's lamports.
    pub deposits: [u64; MAX_CLIENTS],
    pub coordinator: Coordinator,
}

/// Permission for one client to join one gated run; revoking closes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct JoinGrant {
    pub tag: [u8; 8],
    pub run_account: [u8; 32],
    pub client: [u8; 32],
    /// The join authority that granted it: a run re-created at the same address under another
    /// join authority does not admit this grant, and this key may revoke the grant (for its
    /// rent) after the run is closed.
    pub join_authority: [u8; 32],
    /// The canonical bump of this PDA.
    pub bump: u8,
    pub _padding: [u8; 7],
}

/// One run's reward pool, owned by the treasurer program at the PDA `["pool", run account]`.
///
/// The rate is fixed when the pool is created: members earned their points under it, and a rate
/// that could change afterwards would change what they are owed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct Pool {
    pub tag: [u8; 8],
    /// The coordinator's run account whose points this pool pays.
    pub run_account: [u8; 32],
    /// The run's authority when the pool was created: it alone may close the pool.
    pub authority: [u8; 32],
    /// The SPL mint paid out.
    pub mint: [u8; 32],
    /// The token account holding the rewards, at the PDA `["escrow", pool]`, owned by the pool.
    pub escrow: [u8; 32],
    /// Token units (the mint's smallest unit) per point.
    pub tokens_per_point: u64,
    /// Seconds after the run finishes during which members may claim before the authority may
    /// close the pool with rewards still owed (and take back what is left).
    pub claim_grace: u64,
    /// Token units paid out so far, over all members.
    pub total_paid: u64,
    /// The pool PDA's canonical bump (it signs for the escrow).
    pub bump: u8,
    /// The mint's decimals, for checked transfers.
    pub decimals: u8,
    pub _padding: [u8; 6],
    /// Token units paid to each member slot of the run. A slot that holds points never changes
    /// hands (the coordinator reuses only slots without points), so this is what each member was
    /// paid, and the pool can tell exactly what it still owes.
    pub paid: [u64; MAX_CLIENTS],
}

/// Points at a pool's rate that do not fit a token amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{points} points at {rate} tokens per point do not fit a token amount")]
pub struct PoolOverflow {
    pub points: u64,
    pub rate: u64,
}

impl Pool {
    /// Token units `member` has earned: its points less those slashed, at the pool's rate.
    pub fn entitled(&self, member: &Member) -> Result<u64, PoolOverflow> {
        let points = member.payable_points();
        points
            .checked_mul(self.tokens_per_point)
            .ok_or(PoolOverflow {
                points,
                rate: self.tokens_per_point,
            })
    }

    /// Token units the pool owes member slot `slot`: what it earned less what it was paid (never
    /// below zero: points slashed after a payment are not taken back).
    pub fn owed(&self, run: &Coordinator, slot: usize) -> Result<u64, PoolOverflow> {
        Ok(self
            .entitled(&run.members[slot])?
            .saturating_sub(self.paid[slot]))
    }

    /// Token units the pool owes all members of `run`.
    pub fn total_owed(&self, run: &Coordinator) -> Result<u64, PoolOverflow> {
        (0..MAX_CLIENTS).try_fold(0u64, |sum, slot| {
            sum.checked_add(self.owed(run, slot)?).ok_or(PoolOverflow {
                points: run.members[slot].payable_points(),
                rate: self.tokens_per_point,
            })
        })
    }
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

impl Tagged for Pool {
    const TAG: [u8; 8] = POOL_TAG;
}

impl RunAccount {
    /// Whether joins need a grant.
    pub fn is_gated(&self) -> bool {
        self.join_authority != [0; 32]
    }

    /// Lamports this account holds for members: what they get back when they withdraw.
    pub fn deposits_held(&self) -> u64 {
        // Each is lamports this account really holds, so the sum fits; saturating all the same.
        self.deposits
            .iter()
            .fold(0, |sum, &d| sum.saturating_add(d))
    }

    /// A heap copy of the run's state (too big for a stack).
    pub fn coordinator_boxed(&self) -> Box<Coordinator> {
        Coordinator::boxed_from_bytes(bytemuck::bytes_of(&self.coordinator))
            .expect("a state's own bytes are a state")
    }

    /// Decodes a run account's data as fetched over RPC (any alignment), checking its size and
    /// type. Off-chain callers (the operator, the trainer) read the run with this.
    pub fn decode(data: &[u8]) -> Result<Box<RunAccount>, LayoutError> {
        check_layout::<RunAccount>(data)?;
        let mut run: Box<RunAccount> = bytemuck::zeroed_box();
        bytemuck::bytes_of_mut(&mut *run).copy_from_slice(data);
        Ok(run)
    }
}

/// Why bytes are not an account of the expected type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{len} bytes where the account type has {expected}")]
    WrongSize { len: usize, expected: usize },
    #[error("the account is not initialized (its discriminator is zero)")]
    Uninitialized,
    #[error("the account is of another type (its discriminator differs)")]
    WrongType,
}

/// Checks that `data` has `T`'s size and discriminator.
pub fn check_layout<T: Tagged>(data: &[u8]) -> Result<(), LayoutError> {
    if data.len() != T::LEN {
        return Err(LayoutError::WrongSize {
            len: data.len(),
            expected: T::LEN,
        });
    }
    match &data[..8] {
        tag if tag == T::TAG => Ok(()),
        [0, 0, 0, 0, 0, 0, 0, 0] => Err(LayoutError::Uninitialized),
        _ => Err(LayoutError::WrongType),
    }
}
