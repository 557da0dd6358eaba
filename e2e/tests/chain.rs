//! The Solana backend against a real validator: the coordinator program runs on a localnet, and
//! three trainer clients find the run by name, join, train, witness and crank it through
//! JSON-RPC transactions, exchanging results over HTTP on loopback. Then the run is paid: the
//! authority creates a reward pool with the treasurer, funds it with an SPL token, and each
//! client claims its points' worth.

use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator::client::RunClient;
use demeter_coordinator_core::{Config, MemberStatus, RunState};
use demeter_e2e::{Localnet, LocalnetOptions};
use demeter_trainer::data::Dataset;
use demeter_trainer::identity::Identity;
use demeter_trainer::run_file::run_id_bytes;
use demeter_trainer::train::on_chain::{ChainRun, OnChain};
use demeter_trainer::train::{TrainSettings, Trainer};
use demeter_treasurer::client::{Rewards, associated_account, create_mint, mint_to};
use solana_sdk::signer::Signer;

const STEPS: u64 = 4;

fn run_config() -> Config {
    Config {
        warmup_time: 15,
        cooldown_time: 1,
        max_round_train_time: 30,
        round_witness_time: 2,
        epoch_time: 600,
        join_window: 0,
        total_steps: STEPS,
        points_per_epoch: 10,
        ..Config::example()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_clients_train_through_the_coordinator_program() {
    tch::set_num_threads(1);
    let clients: Vec<Arc<Identity>> = (0..3)
        .map(|_| Arc::new(Identity::generate().unwrap()))
        .collect();
    let authority = Identity::generate().unwrap();
    let mut fund: Vec<_> = clients.iter().map(|client| client.pubkey()).collect();
    fund.push(authority.pubkey());
    let localnet = Localnet::start(LocalnetOptions {
        fund,
        sol_each: 10,
        ..LocalnetOptions::default()
    })
    .await
    .unwrap();
    let run_id = run_id_bytes("chain-e2e").unwrap();
    // Each join pays 0.01 SOL into the run account.
    const JOIN_DEPOSIT: u64 = 10_000_000;
    let run_client = RunClient::create(
        &localnet.rpc_url(),
        &authority,
        run_id,
        run_config(),
        None,
        JOIN_DEPOSIT,
    )
    .await
    .unwrap();
    let run_account = run_client.run_account();

    let run = ChainRun {
        rpc_url: localnet.rpc_url(),
        program_id: demeter_coordinator::ID,
        authority: authority.pubkey(),
        run_id,
    };
    let mut tasks = Vec::new();
    for identity in &clients {
        let backend = OnChain::open(&run, identity.clone()).await.unwrap();
        assert_eq!(
            backend.run_account(),
            run_account,
            "found by authority and name"
        );
        let trainer = Trainer::new(
            identity.clone(),
            backend,
            TrainSettings::example(),
            Dataset::embedded(0.02),
            "127.0.0.1:0".parse().unwrap(),
            None,
        )
        .await
        .unwrap();
        tasks.push(tokio::spawn(trainer.run()));
    }
    let mut summaries = Vec::new();
    for task in tasks {
        let summary = tokio::time::timeout(Duration::from_secs(240), task)
            .await
            .expect("the run finishes")
            .unwrap()
            .unwrap();
        summaries.push(summary);
    }
    for summary in &summaries {
        assert_eq!(summary.steps, STEPS);
        assert_eq!(
            summary.replica_hash, summaries[0].replica_hash,
            "replicas identical"
        );
        let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
        assert!(last < first, "loss falls: {first} -> {last}");
    }

    // The chain agrees: finished at the last step, every client a member with points, and
    // every join deposit back with its client (each withdrew once the run finished).
    let run = run_client.read().await.unwrap().run;
    let state = run.coordinator_boxed();
    assert_eq!(state.run_state(), RunState::Finished);
    assert_eq!(state.step, STEPS);
    for identity in &clients {
        let slot = state.member_index(&identity.public()).expect("a member");
        let member = &state.members[slot];
        assert_eq!(member.status(), MemberStatus::Withdrawn);
        assert!(member.points > 0, "points earned on chain");
        assert_eq!(run.deposits[slot], 0, "deposit refunded");
    }
    assert_eq!(run.forfeited, 0);

    // Rewards: 3 units per point, from a pool the authority funds with exactly what is owed.
    const RATE: u64 = 3;
    let owed: u64 = clients
        .iter()
        .map(|identity| {
            let slot = state.member_index(&identity.public()).unwrap();
            state.members[slot].payable_points() * RATE
        })
        .sum();
    let mint = create_mint(&run_client, &authority, 6).await.unwrap();
    mint_to(&run_client, &authority, &mint, &authority.pubkey(), owed)
        .await
        .unwrap();
    let rewards = Rewards::new(&run_client);
    rewards
        .create(&authority, &mint, RATE, 3_600)
        .await
        .unwrap();
    rewards.fund(&authority, &mint, owed).await.unwrap();
    for identity in &clients {
        let slot = state.member_index(&identity.public()).unwrap();
        let paid = rewards.claim(identity.as_ref(), &mint).await.unwrap();
        assert_eq!(paid, state.members[slot].points * RATE, "paid to the unit");
        let wallet = associated_account(&identity.pubkey(), &mint);
        assert_eq!(rewards.balance(&wallet).await.unwrap(), Some(paid));
        let again = rewards.claim(identity.as_ref(), &mint).await.unwrap_err();
        assert!(
            again.to_string().contains("the pool owes you 0"),
            "never twice: {again}"
        );
    }
    let pool = rewards.read().await.unwrap().expect("the pool exists");
    assert_eq!((pool.pool.total_paid, pool.escrow_balance), (owed, 0));
}
