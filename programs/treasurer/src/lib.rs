//! Demeter's treasurer program: turns the points a coordinator run recorded into an SPL token.
//!
//! A run's authority creates one reward pool for the run ([`instruction::TreasurerInstruction`]):
//! an SPL mint, an escrow token account owned by the pool, and a rate in tokens per point fixed
//! for the pool's life. Anyone funds the escrow; each member claims with its own key and is paid
//! `rate × (points − slashed)` less what it was paid already, read from the coordinator's run
//! account, as far as the escrow reaches. The pool keeps what each member slot was paid, so
//! nothing is paid twice, and the authority closes the pool only once nothing is owed or the
//! claim grace after the run finished is over.
//!
//! Layout as in SPL Token: [`instruction`] (the instructions, their accounts and builders),
//! [`processor`] (every account of every instruction checked), [`state`] (the pool account) and
//! [`error`] (stable codes). The `client` feature adds [`client`], the way off-chain code creates,
//! funds, claims from and reads pools.

#[cfg(feature = "client")]
pub mod client;
#[cfg(not(feature = "no-entrypoint"))]
mod entrypoint;
pub mod error;
pub mod instruction;
pub mod processor;
pub mod state;

/// The program's id, `7AD5m8LzfVJfCfi9tfMu6cwJcRjQY4iHd6oDUMwpYcT3`, from the bytes the
/// coordinator checks pools' owner against.
pub const ID: solana_program::pubkey::Pubkey = solana_program::pubkey::Pubkey::new_from_array(
    demeter_coordinator_core::accounts::TREASURER_PROGRAM_ID,
);

#[cfg(test)]
mod tests {
    #[test]
    fn the_id_is_the_documented_address() {
        assert_eq!(
            super::ID.to_string(),
            "7AD5m8LzfVJfCfi9tfMu6cwJcRjQY4iHd6oDUMwpYcT3"
        );
    }
}
