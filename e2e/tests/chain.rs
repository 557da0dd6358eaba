//! The Solana backend against a real validator: the coordinator program runs on a localnet, and
//! three trainer clients find the run by name, join, train, witness and crank it through
//! JSON-RPC transactions, exchanging results over HTTP on loopback. Then the run is paid with
//! `demeter rewards` (the authority creates a reward pool on the treasurer and funds it with an
//! SPL token, each client claims its points' worth) and administered with `demeter run`.

use std::sync::Arc;
use std::time::Duration;

use demeter_coordinator::client::RunClient;
use demeter_coordinator_core::{Config, MemberStatus, RunState};
use demeter_e2e::{Localnet, LocalnetOptions};
use demeter_trainer::commands::{Report, RewardsArgs, RunArgs, manage_run, rewards};
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

    // Rewards, through `demeter rewards` and `demeter run` as their users type them: the
    // authority makes a token (as `spl-token` would), creates the pool and funds it with what
    // the points are worth at 3 units each, and every client claims with its own keypair file.
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
    let keys = tempfile::tempdir().unwrap();
    let key_file = |name: &str, identity: &Identity| {
        let path = keys.path().join(format!("{name}.json"));
        identity.write(&path).unwrap();
        path.display().to_string()
    };
    let authority_file = key_file("authority", &authority);
    // The Solana CLI's config file supplies the URL and the authority's keypair.
    let solana_config = keys.path().join("config.yml");
    std::fs::write(
        &solana_config,
        format!(
            "json_rpc_url: {}\nkeypair_path: {authority_file}\ncommitment: confirmed\n",
            localnet.rpc_url()
        ),
    )
    .unwrap();
    let config_flag = solana_config.display().to_string();
    let authority_key = authority.pubkey().to_string();
    // The cluster flags go after `run` or `rewards`, anywhere among the subcommand's.
    let cli = |args: &[&str]| demeter(&[&args[..1], &["-C", &config_flag], &args[1..]].concat());
    let run_id = "chain-e2e";
    // The ledger stays while members hold points that no pool has paid.
    let close = cli(&["run", "close", "--run-id", run_id]).unwrap_err();
    assert!(
        format!("{close:#}").contains("points not yet paid out"),
        "{close:#}"
    );
    let created = cli(&[
        "rewards",
        "create",
        "--run-id",
        run_id,
        "--mint",
        &mint.to_string(),
        "--tokens-per-point",
        "3",
        "--claim-grace",
        "3600",
    ])
    .unwrap();
    assert!(matches!(created, Report::Sent { .. }), "{created:?}");
    cli(&[
        "rewards",
        "fund",
        "--run-id",
        run_id,
        "--amount",
        &owed.to_string(),
    ])
    .unwrap();
    for (index, identity) in clients.iter().enumerate() {
        let keypair = key_file(&format!("client-{index}"), identity);
        let claim = [
            "rewards",
            "claim",
            "--run-id",
            run_id,
            "--run-authority",
            &authority_key,
            "-k",
            &keypair,
        ];
        let Report::Sent { detail, .. } = cli(&claim).unwrap() else {
            panic!("a claim sends a transaction");
        };
        let slot = state.member_index(&identity.public()).unwrap();
        let paid = state.members[slot].points * RATE;
        assert_eq!(
            detail.unwrap(),
            format!("{paid} units of {mint} paid"),
            "to the unit"
        );
        let wallet = associated_account(&identity.pubkey(), &mint);
        let rewards = Rewards::new(&run_client);
        assert_eq!(rewards.balance(&wallet).await.unwrap(), Some(paid));
        let again = cli(&claim).unwrap_err();
        assert!(
            format!("{again:#}").contains("the pool owes you 0"),
            "never twice, said in words: {again:#}"
        );
    }
    let Report::Run(view) = cli(&["run", "show", "--run-id", run_id, "--output", "json"]).unwrap()
    else {
        panic!("show reads the run");
    };
    assert_eq!(
        view.verification.to_string(),
        "screens",
        "the run checks no more than the screens"
    );
    let pool = view.pool.as_ref().expect("the pool exists");
    assert_eq!(
        (pool.total_paid, pool.owed, pool.escrow_balance),
        (owed, 0, 0)
    );
    assert!(
        view.members
            .iter()
            .all(|m| m.owed == Some(0) && m.paid > Some(0))
    );
    // Its pool paid everything: the run closes, its rent back to the authority.
    cli(&["run", "close", "--run-id", run_id]).unwrap();
    assert!(run_client.read().await.is_err(), "the run account is gone");

    // `demeter run` on a run of its own: created from a run file, paused, updated, resumed.
    let run_file = keys.path().join("second.toml");
    let second = demeter_trainer::run_file::RunFile {
        run_id: "chain-e2e-admin".into(),
        authority: None,
        clients: None,
        config: run_config(),
    };
    std::fs::write(&run_file, second.to_toml("the run admin test")).unwrap();
    let run_file = run_file.display().to_string();
    let Report::Run(created) = cli(&["run", "create", &run_file]).unwrap() else {
        panic!("create shows the run");
    };
    assert_eq!(
        (created.state.as_str(), created.run_id.as_str()),
        ("WaitingForMembers", "chain-e2e-admin")
    );
    for action in ["pause", "update", "resume"] {
        let mut args = vec!["run", action, "--run-id", "chain-e2e-admin"];
        if action == "update" {
            args.push(&run_file);
        }
        cli(&args).unwrap();
    }
    let twice = cli(&["run", "resume", "--run-id", "chain-e2e-admin"]).unwrap_err();
    assert!(
        format!("{twice:#}").contains("the run is not paused"),
        "{twice:#}"
    );
    cli(&["run", "pause", "--run-id", "chain-e2e-admin"]).unwrap();
    cli(&["run", "close", "--run-id", "chain-e2e-admin"]).unwrap();
    let gone = cli(&["run", "show", "--run-id", "chain-e2e-admin"]).unwrap_err();
    assert!(format!("{gone:#}").contains("no run named"), "{gone:#}");
}

/// `demeter ARGS`, run as the binary runs it, on a thread of its own (each command starts its
/// own async runtime, which cannot nest in the test's).
fn demeter(args: &[&str]) -> anyhow::Result<Report> {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    #[derive(clap::Subcommand)]
    enum Command {
        Run(RunArgs),
        Rewards(RewardsArgs),
    }
    let args: Vec<String> = ["demeter"]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect();
    std::thread::spawn(move || match Cli::try_parse_from(args)?.command {
        Command::Run(args) => manage_run(&args),
        Command::Rewards(args) => rewards(&args),
    })
    .join()
    .expect("the command does not panic")
}
