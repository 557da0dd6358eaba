//! The pool account: a run's rewards, at the PDA `["pool", run account]`, and what it paid.

use bytemuck::{Pod, Zeroable};
use demeter_coordinator_core::accounts::Tagged;
use demeter_coordinator_core::state::MAX_CLIENTS;
use demeter_coordinator_core::{Coordinator, Member};

use crate::error::TreasurerError;

pub const POOL_SEED: &[u8] = b"pool";
pub const ESCROW_SEED: &[u8] = b"escrow";

/// One run's reward pool.
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

impl Tagged for Pool {
    const TAG: [u8; 8] = *b"dmtr:pol";
}

impl Pool {
    /// Token units `member` has earned: its points less those slashed, at the pool's rate.
    pub fn entitled(&self, member: &Member) -> Result<u64, TreasurerError> {
        let points = member.payable_points();
        points
            .checked_mul(self.tokens_per_point)
            .ok_or(TreasurerError::Overflow {
                points,
                rate: self.tokens_per_point,
            })
    }

    /// Token units the pool owes member slot `slot`: what it earned less what it was paid (never
    /// below zero: points slashed after a payment are not taken back).
    pub fn owed(&self, run: &Coordinator, slot: usize) -> Result<u64, TreasurerError> {
        Ok(self
            .entitled(&run.members[slot])?
            .saturating_sub(self.paid[slot]))
    }

    /// Token units the pool owes all members of `run`.
    pub fn total_owed(&self, run: &Coordinator) -> Result<u64, TreasurerError> {
        (0..MAX_CLIENTS).try_fold(0u64, |sum, slot| {
            let owed = self.owed(run, slot)?;
            sum.checked_add(owed).ok_or(TreasurerError::Overflow {
                points: run.members[slot].payable_points(),
                rate: self.tokens_per_point,
            })
        })
    }
}
