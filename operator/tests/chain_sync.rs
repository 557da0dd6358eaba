//! Chain sync against the coordinator program on a localnet (`demeter-localnet`'s
//! `Localnet`): the operator creates the run from the spec with the authority's wallet, mirrors
//! the run account into status and metrics, cranks it, pauses and resumes it with `suspend`,
//! writes a longer schedule while it waits, shows the run's reward pool, and pauses it when the
//! TrainingRun is deleted, keeping the account and its members. Runs it cannot read are reported, not fatal.

use std::time::Duration;

use demeter_coordinator::client::RunClient;
use demeter_coordinator::instruction as ix;
use demeter_coordinator_core::{Endpoint, MemberStatus, RunState};
use demeter_e2e::{Localnet, LocalnetOptions};
use demeter_operator::crd::{Phase, SolanaCoordinator, TrainingRun, TrainingRunStatus};
use demeter_treasurer::client::{Rewards, create_mint, mint_to};
use k8s_openapi::api::core::v1::{Secret, SecretKeySelector};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use solana_sdk::pubkey::Pubkey;
use solana_sdk::signature::Keypair;
use solana_sdk::signer::Signer;

mod support;
use support::{NAMESPACE, events, eventually_within, run_status, start};

const RUN_ID: &str = "operator-chain-sync";
/// Transactions confirm in a few slots; the operator reads the chain every 2 s with a crank.
const CHAIN: Duration = Duration::from_secs(60);

fn wallet_secret(name: &str, keypair: &Keypair) -> Secret {
    let wallet = serde_json::to_string(&keypair.to_bytes().to_vec()).unwrap();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NAMESPACE},
        "stringData": {"keypair.json": wallet},
    }))
    .unwrap()
}

/// The solana example with two clients on the localnet: both needed to start, one second of
/// warmup, cranked by the operator with the authority's wallet.
fn chain_run(
    name: &str,
    rpc_url: &str,
    run_id: &str,
    authority: &Pubkey,
    wallet: Option<&str>,
) -> TrainingRun {
    let mut run: TrainingRun = serde_yaml_ng::from_str(include_str!(
        "../../deploy/examples/trainingrun-solana.yaml"
    ))
    .unwrap();
    run.metadata.name = Some(name.into());
    run.metadata.namespace = Some(NAMESPACE.into());
    run.spec.clients.replicas = 2;
    run.spec.schedule.init_min_clients = 2;
    run.spec.schedule.min_clients = 1;
    run.spec.schedule.warmup_seconds = 1;
    run.spec.schedule.total_steps = 10;
    run.spec.coordinator.solana = Some(SolanaCoordinator {
        rpc_url: rpc_url.into(),
        ws_url: None,
        program_id: demeter_coordinator::ID.to_string(),
        run_id: run_id.into(),
        authority: authority.to_string(),
        authority_secret_ref: wallet.map(|name| SecretKeySelector {
            name: name.into(),
            key: "keypair.json".into(),
            ..SecretKeySelector::default()
        }),
        crank: wallet.is_some(),
        join_deposit_lamports: 0,
    });
    run
}

async fn status_where(
    client: &Client,
    name: &str,
    what: &str,
    check: impl Fn(&TrainingRunStatus) -> bool,
) -> TrainingRunStatus {
    eventually_within(CHAIN, what, || async {
        run_status(client, name)
            .await
            .filter(|status| check(status))
    })
    .await
}

fn chain_synced(status: &TrainingRunStatus) -> Option<(&str, &str, &str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "ChainSynced")
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

fn chain_state(status: &TrainingRunStatus) -> Option<&str> {
    status.chain.as_ref()?.state.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_creates_cranks_pauses_and_mirrors_a_run_on_a_localnet() {
    let authority = Keypair::new();
    let members = [Keypair::new(), Keypair::new()];
    let mut fund = vec![authority.pubkey()];
    fund.extend(members.iter().map(Keypair::pubkey));
    let localnet = Localnet::start(LocalnetOptions {
        fund,
        sol_each: 10,
        ..LocalnetOptions::default()
    })
    .await
    .unwrap();
    let url = localnet.rpc_url();
    let (_server, client, operator, runs) = start().await;

    // The authority's wallet, and the clients' identities made ahead (the operator keeps
    // identities it finds), so the test can sign their joins.
    let secrets = Api::<Secret>::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();
    secrets
        .create(&post, &wallet_secret("run-authority", &authority))
        .await
        .unwrap();
    for (index, member) in members.iter().enumerate() {
        let name = format!("chain-client-{index}-identity");
        secrets
            .create(&post, &wallet_secret(&name, member))
            .await
            .unwrap();
    }
    runs.create(
        &post,
        &chain_run(
            "chain",
            &url,
            RUN_ID,
            &authority.pubkey(),
            Some("run-authority"),
        ),
    )
    .await
    .unwrap();
    // Beside it, runs the operator cannot read: one that does not exist and that it may not
    // create, one on a cluster that does not answer.
    runs.create(
        &post,
        &chain_run("unknown", &url, "no-such-run", &authority.pubkey(), None),
    )
    .await
    .unwrap();
    // The run's own name under another authority is another run (audit finding 11): the
    // operator does not follow the authority's run for it.
    runs.create(
        &post,
        &chain_run(
            "other-authority",
            &url,
            RUN_ID,
            &Keypair::new().pubkey(),
            None,
        ),
    )
    .await
    .unwrap();
    runs.create(
        &post,
        &chain_run(
            "unreachable",
            "http://127.0.0.1:1",
            RUN_ID,
            &authority.pubkey(),
            None,
        ),
    )
    .await
    .unwrap();

    let status = status_where(&client, "chain", "the run created on chain", |s| {
        chain_state(s) == Some("WaitingForMembers")
    })
    .await;
    assert_eq!(chain_synced(&status).unwrap().0, "True");
    let run_id = demeter_coordinator_core::accounts::run_id_from_name(RUN_ID).unwrap();
    let on_chain = RunClient::find(&url, &authority.pubkey(), &run_id)
        .await
        .unwrap();
    assert_eq!(
        status.chain.as_ref().unwrap().run_account,
        Some(on_chain.run_account().to_string())
    );
    let snapshot = on_chain.read().await.unwrap();
    assert_eq!(snapshot.run.authority, authority.pubkey().to_bytes());
    // Joins are gated to this TrainingRun's clients, and both hold grants.
    assert_eq!(snapshot.run.join_authority, authority.pubkey().to_bytes());
    let keys: Vec<_> = members.iter().map(Keypair::pubkey).collect();
    assert!(on_chain.missing_grants(&keys).await.unwrap().is_empty());
    assert_eq!(events(&client, "CreatedOnChain").await.len(), 1);

    // Both clients join. Nobody but the operator ticks: it starts the warmup, and when the
    // warmup passes with neither ready, drops both.
    for member in &members {
        on_chain
            .send(
                &[ix::join(
                    &member.pubkey(),
                    &on_chain.run_account(),
                    Endpoint::default(),
                )],
                &[member],
            )
            .await
            .unwrap();
    }
    let status = status_where(&client, "chain", "both members dropped by the crank", |s| {
        s.clients.dropped == 2 && chain_state(s) == Some("WaitingForMembers")
    })
    .await;
    assert_eq!(status.clients.joined, 0);
    assert!(status.chain.as_ref().unwrap().slot > 0);
    let metrics = operator.ctx.metrics.render();
    let ticks = metrics
        .lines()
        .find(|line| {
            line.starts_with("demeter_operator_run_chain_transactions_total")
                && line.contains("instruction=\"tick\"")
                && line.contains("name=\"chain\"")
        })
        .expect("ticks are counted");
    let ticks: u64 = ticks.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(ticks >= 2, "{ticks} ticks");
    assert!(metrics.contains("demeter_operator_run_chain_slot_lag{name=\"chain\""));
    assert!(metrics.contains(
        "demeter_operator_run_clients{name=\"chain\",namespace=\"ml\",state=\"dropped\"} 2"
    ));

    // Suspend pauses the run on chain; resuming resumes it.
    let patch = PatchParams::default();
    runs.patch(
        "chain",
        &patch,
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let status = status_where(&client, "chain", "the run paused on chain", |s| {
        chain_state(s) == Some("Paused")
    })
    .await;
    assert_eq!(status.phase, Some(Phase::Suspended));
    assert_eq!(
        on_chain.read().await.unwrap().run.coordinator.run_state(),
        RunState::Paused
    );
    runs.patch(
        "chain",
        &patch,
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .unwrap();
    status_where(&client, "chain", "the run resumed on chain", |s| {
        chain_state(s) == Some("WaitingForMembers")
    })
    .await;

    // The authority opens a reward pool and funds it: the status and the metrics show the
    // pool, its rate and what it holds.
    let mint = create_mint(&on_chain, &authority, 6).await.unwrap();
    mint_to(&on_chain, &authority, &mint, &authority.pubkey(), 500)
        .await
        .unwrap();
    let pool = Rewards::new(&on_chain);
    pool.create(&authority, &mint, 25, 3_600).await.unwrap();
    pool.fund(&authority, &mint, 500).await.unwrap();
    let status = status_where(&client, "chain", "the funded pool in the status", |s| {
        s.chain
            .as_ref()
            .and_then(|chain| chain.rewards.as_ref())
            .is_some_and(|rewards| rewards.escrow == 500)
    })
    .await;
    let rewards = status.chain.unwrap().rewards.unwrap();
    assert_eq!(
        (
            rewards.mint,
            rewards.tokens_per_point,
            rewards.paid,
            rewards.owed
        ),
        (mint.to_string(), 25, 0, 0)
    );
    assert_eq!(rewards.pool, pool.address().to_string());
    assert!(operator.ctx.metrics.render().contains(
        "demeter_operator_run_rewards_escrow_units{name=\"chain\",namespace=\"ml\"} 500"
    ));

    // A longer schedule is written while the run waits for members.
    runs.patch(
        "chain",
        &patch,
        &Patch::Merge(json!({"spec": {"schedule": {"totalSteps": 20}}})),
    )
    .await
    .unwrap();
    eventually_within(CHAIN, "the new total steps on chain", || async {
        let state = on_chain.read().await.unwrap().run.coordinator;
        (state.config.total_steps == 20).then_some(())
    })
    .await;

    // The runs the operator cannot read are reported on their objects, with one Event each.
    let unknown = status_where(&client, "unknown", "RunNotFound", |s| {
        chain_synced(s).is_some_and(|c| c.0 == "False" && c.1 == "RunNotFound")
    })
    .await;
    assert!(
        chain_synced(&unknown)
            .unwrap()
            .2
            .contains("authoritySecretRef")
    );
    status_where(&client, "other-authority", "RunNotFound", |s| {
        chain_synced(s).is_some_and(|c| c.0 == "False" && c.1 == "RunNotFound")
    })
    .await;
    status_where(&client, "unreachable", "RpcError", |s| {
        chain_synced(s).is_some_and(|c| c.0 == "False" && c.1 == "RpcError")
    })
    .await;
    // One Event each for the two runs not found.
    assert_eq!(events(&client, "RunNotFound").await.len(), 2);

    // Deleted, the TrainingRun pauses the run first; the account and its members stay.
    runs.delete("chain", &DeleteParams::default())
        .await
        .unwrap();
    eventually_within(CHAIN, "the TrainingRun gone", || async {
        runs.get_opt("chain").await.unwrap().is_none().then_some(())
    })
    .await;
    let state = on_chain.read().await.unwrap().run.coordinator;
    assert_eq!(state.run_state(), RunState::Paused);
    for member in &members {
        let slot = state.member_index(&member.pubkey().to_bytes()).unwrap();
        assert_eq!(state.members[slot].status(), MemberStatus::Dropped);
    }
    assert!(
        !operator.ctx.metrics.render().contains("name=\"chain\""),
        "a deleted run's series are removed"
    );
    drop(localnet);
}
