//! The reconciler's side of chain sync: reads the authority's wallet from its Secret, syncs
//! the run on chain (`chain`), and reports the outcome as metrics, Events and a backoff of its
//! own; before a TrainingRun goes away, asks its run to pause.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use solana_sdk::pubkey::Pubkey;

use crate::chain::{self, ChainError, Synced, Transaction};
use crate::conditions::CHAIN_SYNCED;
use crate::controller::{Context, Error};
use crate::crd::{SolanaCoordinator, TrainingRun, TrainingRunStatus};
use crate::spec;

/// Reads and steers the run on chain (see [`chain`]).
pub async fn sync_chain(
    run: &TrainingRun,
    solana: &SolanaCoordinator,
    owner: Pubkey,
    run_id: [u8; 32],
    client_keys: &[String],
    ctx: &Context,
) -> Result<Synced, ChainError> {
    let secrets =
        Api::<Secret>::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let authority = match &solana.authority_secret_ref {
        Some(key) => Some(chain::authority(&secrets, key).await?),
        None => None,
    };
    let desired = chain::Desired {
        config: spec::coordinator_config(&run.spec),
        clients: client_keys
            .iter()
            .map(|key| {
                key.parse()
                    .expect("identity::ensure returns base58 public keys")
            })
            .collect(),
        suspend: run.spec.suspend,
        crank: solana.crank,
        join_deposit: solana.join_deposit_lamports,
    };
    chain::sync(solana, owner, run_id, authority.as_ref(), &desired).await
}

/// Metrics and Events for one chain sync; returns when to sync again: soon with a crank, and
/// after failures with a backoff of their own.
pub async fn report_chain(
    run: &TrainingRun,
    previous: &TrainingRunStatus,
    chain: &Result<Synced, ChainError>,
    ctx: &Context,
) -> Duration {
    let (namespace, name) = (run.namespace().unwrap_or_default(), run.name_any());
    let key = (namespace.clone(), name.clone());
    let reference = run.object_ref(&());
    let failure = match chain {
        Ok(synced) => {
            ctx.metrics.chain_synced(&namespace, &name, &synced.view);
            for transaction in &synced.sent {
                ctx.metrics
                    .chain_sent(&namespace, &name, transaction.name());
                let (reason, note) = match transaction {
                    // Routine: counted, not announced.
                    Transaction::Tick => continue,
                    Transaction::Create => (
                        "CreatedOnChain",
                        format!(
                            "Created the run; its account is {}",
                            synced.view.run_account
                        ),
                    ),
                    Transaction::Grant(member) => {
                        ("GrantedJoin", format!("Granted client {member} a join"))
                    }
                    Transaction::UpdateConfig => (
                        "UpdatedOnChain",
                        "Wrote the schedule to the run's config".to_owned(),
                    ),
                    Transaction::Pause => ("PausedOnChain", "Asked the run to pause".to_owned()),
                    Transaction::Resume => ("ResumedOnChain", "Resumed the run".to_owned()),
                };
                ctx.publish(&reference, EventType::Normal, reason, note)
                    .await;
            }
            synced.failed.as_ref()
        }
        Err(error) => Some(error),
    };
    let Some(error) = failure else {
        ctx.chain_failures.forget(&key);
        let crank = run
            .spec
            .coordinator
            .solana
            .as_ref()
            .is_some_and(|s| s.crank);
        return if crank {
            chain::CRANK_RESYNC
        } else {
            chain::RESYNC
        };
    };
    ctx.metrics.chain_failed(&namespace, &name, error.reason());
    let (failures, wait) = ctx.chain_failures.failed(key);
    tracing::warn!(%namespace, run = %name, %error, failures, "chain sync failed");
    let message = error.to_string();
    let reported = previous
        .conditions
        .iter()
        .any(|c| c.type_ == CHAIN_SYNCED && c.status == "False" && c.message == message);
    if !reported {
        ctx.publish(&reference, EventType::Warning, error.reason(), message)
            .await;
    }
    wait
}

/// Asks the on-chain run to pause before its TrainingRun goes away, so that no epoch starts
/// without an owner; the run account and its points stay. RPC failures are retried (the
/// finalizer holds the object); a missing or wrong authority cannot get better, so the object
/// goes with a Warning that the run was left as it is.
pub async fn pause_before_deletion(
    run: &TrainingRun,
    solana: &SolanaCoordinator,
    key: &k8s_openapi::api::core::v1::SecretKeySelector,
    ctx: &Context,
) -> Result<(), Error> {
    let reference = run.object_ref(&());
    let secrets =
        Api::<Secret>::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let paused = match chain::authority(&secrets, key).await {
        Ok(authority) => {
            let run_id = spec::solana_run_id(solana)?;
            let owner = spec::solana_authority(solana)?;
            chain::pause_for_deletion(solana, owner, run_id, &authority).await
        }
        Err(error) => Err(error),
    };
    match paused {
        Ok(true) => {
            let note = format!(
                "Asked run {:?} to pause before deletion; its account and points stay on chain",
                solana.run_id
            );
            ctx.publish(&reference, EventType::Normal, "PausedOnChain", note)
                .await;
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(
            error @ (ChainError::Authority(_)
            | ChainError::NotTheAuthority { .. }
            | ChainError::WalletMismatch { .. }),
        ) => {
            let note = format!(
                "Run {:?} was left as it is on chain: {error}",
                solana.run_id
            );
            ctx.publish(&reference, EventType::Warning, "RunLeftOnChain", note)
                .await;
            Ok(())
        }
        Err(error) => Err(error.into()),
    }
}
