//! The on-chain entrypoint. Off-chain users build with `no-entrypoint`, so linking the crate
//! never defines a second `entrypoint` symbol.

use crate::processor::process_instruction;

solana_program::entrypoint!(process_instruction);
