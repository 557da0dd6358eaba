//! Off-chain access to a run's reward pool over JSON-RPC (feature `client`). It goes through the
//! coordinator's `RunClient` (one connection, one way to send and confirm, one error type) and
//! adds the token side: mints, associated token accounts and balances.

use demeter_coordinator::client::{ClientFailure, RunClient};
use demeter_coordinator_core::accounts::check_layout;
use solana_program::program_pack::Pack;
use solana_program::pubkey::Pubkey;
use solana_sdk::signature::{Keypair, Signature};
use solana_sdk::signer::Signer;
use spl_associated_token_account_interface::address::get_associated_token_address;
use spl_associated_token_account_interface::instruction::create_associated_token_account_idempotent;
use spl_token_interface::instruction as token;
use spl_token_interface::state::{Account as TokenAccount, Mint};

use crate::instruction::{self as ix, find_escrow, find_pool};
use crate::state::Pool;

/// A pool as read at one slot.
pub struct PoolSnapshot {
    pub address: Pubkey,
    pub pool: Pool,
    /// Token units the escrow holds.
    pub escrow_balance: u64,
}

/// The reward pool of one run.
pub struct Rewards<'a> {
    run: &'a RunClient,
}

/// The associated token account of `wallet` for `mint` (classic SPL Token): where claims pay by
/// default.
pub fn associated_account(wallet: &Pubkey, mint: &Pubkey) -> Pubkey {
    get_associated_token_address(wallet, mint)
}

impl<'a> Rewards<'a> {
    pub fn new(run: &'a RunClient) -> Self {
        Self { run }
    }

    /// Where the run's pool lives (whether or not it exists).
    pub fn address(&self) -> Pubkey {
        find_pool(&self.run.run_account()).0
    }

    /// The run's pool and its escrow's balance; `None` when the run has no pool.
    pub async fn read(&self) -> Result<Option<PoolSnapshot>, ClientFailure> {
        let address = self.address();
        let escrow = find_escrow(&address).0;
        let accounts = self.run.accounts(&[address, escrow]).await?;
        let [pool, escrow_account] = &accounts[..] else {
            return Ok(None);
        };
        let Some(pool) = pool else {
            return Ok(None);
        };
        let not_a_pool = ClientFailure::NotA {
            what: "reward pool",
            address,
        };
        if pool.owner != crate::ID || check_layout::<Pool>(&pool.data).is_err() {
            return Err(not_a_pool);
        }
        let pool: Pool = bytemuck::try_pod_read_unaligned(&pool.data).map_err(|_| not_a_pool)?;
        let escrow_balance = match escrow_account {
            Some(account) => token_amount(&account.data, escrow)?,
            None => 0,
        };
        Ok(Some(PoolSnapshot {
            address,
            pool,
            escrow_balance,
        }))
    }

    /// Creates the run's pool paying `mint` at `tokens_per_point`; `authority` is the run's.
    pub async fn create(
        &self,
        authority: &(dyn Signer + Sync),
        mint: &Pubkey,
        tokens_per_point: u64,
        claim_grace: u64,
    ) -> Result<Signature, ClientFailure> {
        let create = ix::create_pool(
            &authority.pubkey(),
            &self.run.run_account(),
            mint,
            tokens_per_point,
            claim_grace,
        );
        self.run.send(&[create], &[authority]).await
    }

    /// Moves `amount` units from `funder`'s associated token account into the escrow.
    pub async fn fund(
        &self,
        funder: &(dyn Signer + Sync),
        mint: &Pubkey,
        amount: u64,
    ) -> Result<Signature, ClientFailure> {
        let source = associated_account(&funder.pubkey(), mint);
        let fund = ix::fund(
            &funder.pubkey(),
            &source,
            &self.run.run_account(),
            mint,
            amount,
        );
        self.run.send(&[fund], &[funder]).await
    }

    /// Claims what the pool owes `member` into its associated token account (created first if
    /// it does not exist, at the member's cost); returns the transaction and the units paid.
    pub async fn claim(
        &self,
        member: &(dyn Signer + Sync),
        mint: &Pubkey,
    ) -> Result<(Signature, u64), ClientFailure> {
        let wallet = member.pubkey();
        let destination = associated_account(&wallet, mint);
        let before = self.balance(&destination).await?.unwrap_or(0);
        let instructions = [
            create_associated_token_account_idempotent(
                &wallet,
                &wallet,
                mint,
                &spl_token_interface::ID,
            ),
            ix::claim(&wallet, &self.run.run_account(), &destination, mint),
        ];
        let signature = self.run.send(&instructions, &[member]).await?;
        let after = self.balance(&destination).await?.unwrap_or(0);
        Ok((signature, after.saturating_sub(before)))
    }

    /// The units a token account holds; `None` when it does not exist.
    pub async fn balance(&self, account: &Pubkey) -> Result<Option<u64>, ClientFailure> {
        match &self.run.accounts(&[*account]).await?[..] {
            [Some(found)] => token_amount(&found.data, *account).map(Some),
            _ => Ok(None),
        }
    }
}

fn token_amount(data: &[u8], address: Pubkey) -> Result<u64, ClientFailure> {
    TokenAccount::unpack(data)
        .map(|account| account.amount)
        .map_err(|_| ClientFailure::NotA {
            what: "token account",
            address,
        })
}

/// Creates a classic SPL Token mint with `decimals`, `authority` minting (and paying); returns
/// its address. For local runs and tests: a real run pays an existing token.
pub async fn create_mint(
    run: &RunClient,
    authority: &(dyn Signer + Sync),
    decimals: u8,
) -> Result<Pubkey, ClientFailure> {
    let mint = Keypair::new();
    let rent = run.rent_exempt(Mint::LEN).await?;
    let instructions = [
        solana_system_interface::instruction::create_account(
            &authority.pubkey(),
            &mint.pubkey(),
            rent,
            Mint::LEN as u64,
            &spl_token_interface::ID,
        ),
        token::initialize_mint2(
            &spl_token_interface::ID,
            &mint.pubkey(),
            &authority.pubkey(),
            None,
            decimals,
        )
        .expect("the token program's id"),
    ];
    run.send(&instructions, &[authority, &mint]).await?;
    Ok(mint.pubkey())
}

/// Mints `amount` units of `mint` to `wallet`'s associated token account (created first if
/// missing), signed and paid by the mint's `authority`.
pub async fn mint_to(
    run: &RunClient,
    authority: &(dyn Signer + Sync),
    mint: &Pubkey,
    wallet: &Pubkey,
    amount: u64,
) -> Result<Signature, ClientFailure> {
    let destination = associated_account(wallet, mint);
    let instructions = [
        create_associated_token_account_idempotent(
            &authority.pubkey(),
            wallet,
            mint,
            &spl_token_interface::ID,
        ),
        token::mint_to(
            &spl_token_interface::ID,
            mint,
            &destination,
            &authority.pubkey(),
            &[],
            amount,
        )
        .expect("the token program's id"),
    ];
    run.send(&instructions, &[authority]).await
}
