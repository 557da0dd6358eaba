//! The program's answer for the core's errors. The core knows no Solana types, so its errors
//! become program errors here: the error's own line in the transaction's log (what a client
//! shows), then `Custom(code)` with its stable code.

use demeter_coordinator_core::{AccessError, CoordinatorError};
use solana_program::program_error::ProgramError;

/// Writes `message` to the transaction's log, where clients read a refusal's words. On chain
/// this is `msg!`; on a native host (the localnet, program tests) `msg!` would print to the
/// host's stdout, so the message goes through the runtime's syscall stubs into the log instead.
pub fn log(message: &str) {
    #[cfg(target_os = "solana")]
    solana_program::log::sol_log(message);
    #[cfg(not(target_os = "solana"))]
    solana_sysvar::program_stubs::sol_log(message);
}

/// The state machine refused the input.
pub fn refused(error: CoordinatorError) -> ProgramError {
    log(&error.to_string());
    ProgramError::Custom(error.code())
}

/// The signer or an account is not who or what the instruction needs.
pub fn denied(error: AccessError) -> ProgramError {
    log(&error.to_string());
    ProgramError::Custom(error.code())
}
