//! The program's answer for the core's errors. The core knows no Solana types, so its errors
//! become program errors here: the error's own line in the transaction's log (what a client
//! shows), then `Custom(code)` with its stable code.

use demeter_coordinator_core::{AccessError, CoordinatorError};
use solana_program::program_error::ProgramError;

/// The state machine refused the input.
pub fn refused(error: CoordinatorError) -> ProgramError {
    solana_program::msg!("{}", error);
    ProgramError::Custom(error.code())
}

/// The signer or an account is not who or what the instruction needs.
pub fn denied(error: AccessError) -> ProgramError {
    solana_program::msg!("{}", error);
    ProgramError::Custom(error.code())
}
