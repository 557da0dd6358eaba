//! Why the treasurer refused an instruction. The program logs the error's text (what a client
//! shows, with the figures) and returns `Custom(code)`; codes start at 3000 so they never meet
//! the coordinator's (0 to 2001).

use solana_program::program_error::ProgramError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreasurerError {
    #[error("the signer is not the run's authority: only it may create or close the run's pool")]
    NotRunAuthority,
    #[error("tokens_per_point = 0: a pool pays at least one token unit per point")]
    ZeroRate,
    #[error("the escrow is not this pool's escrow")]
    EscrowMismatch,
    #[error("the mint is not this pool's mint")]
    MintMismatch,
    #[error("the signer is not a member of the run: it has no points to claim")]
    NotAMember,
    #[error("the pool owes you 0: all {points} payable points are paid ({paid} tokens)")]
    NothingOwed { points: u64, paid: u64 },
    #[error("the pool's escrow is empty and owes you {owed} tokens: claim again once it is funded")]
    EscrowEmpty { owed: u64 },
    #[error("{points} points at {rate} tokens per point do not fit a token amount")]
    Overflow { points: u64, rate: u64 },
    #[error("the run is not finished: its members may still earn points, so its pool stays open")]
    RunNotFinished,
    #[error(
        "the pool still owes members {owed} tokens: it closes once they are paid, or after its \
         claim grace ends at unix time {grace_ends}"
    )]
    RewardsOwed { owed: u64, grace_ends: i64 },
    #[error("the destination is the pool's own escrow")]
    DestinationIsEscrow,
}

impl TreasurerError {
    /// The error's stable number. Never renumber; only append.
    pub fn code(&self) -> u32 {
        3000 + match self {
            Self::NotRunAuthority => 0,
            Self::ZeroRate => 1,
            Self::EscrowMismatch => 2,
            Self::MintMismatch => 3,
            Self::NotAMember => 4,
            Self::NothingOwed { .. } => 5,
            Self::EscrowEmpty { .. } => 6,
            Self::Overflow { .. } => 7,
            Self::RunNotFinished => 8,
            Self::RewardsOwed { .. } => 9,
            Self::DestinationIsEscrow => 10,
        }
    }
}

impl From<demeter_coordinator_core::accounts::PoolOverflow> for TreasurerError {
    fn from(overflow: demeter_coordinator_core::accounts::PoolOverflow) -> Self {
        Self::Overflow {
            points: overflow.points,
            rate: overflow.rate,
        }
    }
}

impl From<TreasurerError> for ProgramError {
    fn from(error: TreasurerError) -> Self {
        demeter_coordinator::error::log(&error.to_string());
        ProgramError::Custom(error.code())
    }
}
