//! `demeter rewards`: a run's reward pool on the treasurer program: create it (the run's
//! authority), fund it (anyone), claim from it (each member, for itself) and show it.

use anyhow::Context;
use demeter_coordinator::client::RunClient;
use demeter_treasurer::client::Rewards;
use solana_sdk::pubkey::Pubkey;

use super::cluster::{Cluster, ClusterArgs, Report, RunName, parse_key};
use super::run::show;

/// Thirty days: how long members have to claim after a run finishes, unless set.
const DEFAULT_CLAIM_GRACE: u64 = 30 * 24 * 3600;

#[derive(clap::Args, Debug)]
pub struct RewardsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(subcommand)]
    pub command: RewardsCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RewardsCommand {
    /// Create the run's reward pool, the --keypair the run's authority. The rate is fixed for
    /// the pool's life: members earn their points under it.
    Create {
        #[arg(long)]
        run_id: String,
        /// The SPL Token mint paid out (classic SPL Token).
        #[arg(long)]
        mint: String,
        /// Token units (the mint's smallest unit) per point; at least 1.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        tokens_per_point: u64,
        /// Seconds after the run finishes during which members may claim before the authority
        /// may close the pool with rewards unclaimed.
        #[arg(long, default_value_t = DEFAULT_CLAIM_GRACE)]
        claim_grace: u64,
    },
    /// Move token units from the --keypair's associated token account into the pool.
    Fund {
        #[command(flatten)]
        name: RunName,
        /// Token units to move.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        amount: u64,
    },
    /// Claim what the pool owes the --keypair, into its associated token account.
    Claim {
        #[command(flatten)]
        name: RunName,
    },
    /// Print the pool and what it paid and owes each member.
    Show {
        #[command(flatten)]
        name: RunName,
    },
}

/// Runs `demeter rewards`; prints and returns what it did.
pub fn rewards(args: &RewardsArgs) -> anyhow::Result<Report> {
    args.cluster.run(|cluster| async {
        let report = execute(&cluster, &args.command).await?;
        Ok((cluster, report))
    })
}

/// The run's pool's mint, or the error that says how to create the pool.
async fn pool_mint(client: &RunClient, name: &RunName) -> anyhow::Result<Pubkey> {
    let pool = Rewards::new(client).read().await?.with_context(|| {
        format!(
            "run {:?} has no reward pool yet: its authority creates one with `demeter rewards \
             create --run-id {} --mint MINT --tokens-per-point N`",
            name.run_id, name.run_id
        )
    })?;
    Ok(Pubkey::new_from_array(pool.pool.mint))
}

async fn execute(cluster: &Cluster, command: &RewardsCommand) -> anyhow::Result<Report> {
    let signer = cluster.signer()?;
    match command {
        RewardsCommand::Create {
            run_id,
            mint,
            tokens_per_point,
            claim_grace,
        } => {
            let mint = parse_key("--mint", mint)?;
            let name = RunName {
                run_id: run_id.clone(),
                run_authority: None,
            };
            let client = cluster.find_run(&name, Some(&signer)).await?;
            let signature = Rewards::new(&client)
                .create(&signer, &mint, *tokens_per_point, *claim_grace)
                .await?;
            let detail = format!(
                "pool {} pays {tokens_per_point} units of {mint} per point",
                Rewards::new(&client).address()
            );
            Ok(Report::sent("reward pool created", signature, Some(detail)))
        }
        RewardsCommand::Fund { name, amount } => {
            let client = cluster.find_run(name, Some(&signer)).await?;
            let mint = pool_mint(&client, name).await?;
            let signature = Rewards::new(&client).fund(&signer, &mint, *amount).await?;
            let detail = format!("{amount} units of {mint} moved into the pool");
            Ok(Report::sent("pool funded", signature, Some(detail)))
        }
        RewardsCommand::Claim { name } => {
            let client = cluster.find_run(name, Some(&signer)).await?;
            let mint = pool_mint(&client, name).await?;
            let (signature, paid) = Rewards::new(&client).claim(&signer, &mint).await?;
            let detail = format!("{paid} units of {mint} paid");
            Ok(Report::sent("claimed", signature, Some(detail)))
        }
        RewardsCommand::Show { name } => show(&cluster.find_run(name, Some(&signer)).await?).await,
    }
}
