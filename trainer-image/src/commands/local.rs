//! `demeter local`: the main job. A centralized coordinator and N trainer clients as separate
//! processes on loopback, on the shipped corpus: no cluster, no chain. With `--chain`, the
//! coordinator is the Solana program on a local chain instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::table::Table;
use super::train::{ClientSummary, RunModelArgs};
use crate::central::store::StateStore;
use crate::identity::{Identity, to_base58};
use crate::local_run::{LocalRun, free_port};
use crate::run_file::RunFile;
use crate::simulate::ring_all_reduce_bytes;
use demeter_coordinator_core::state::MAX_CLIENTS;
use demeter_coordinator_core::{Config, Coordinator};

#[derive(clap::Args, Debug, Clone)]
pub struct LocalArgs {
    /// Trainer clients, each its own process with its own replica.
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Optimizer steps of the run.
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Samples per step, over all clients.
    #[arg(long, default_value_t = 24)]
    pub global_batch: u64,
    /// Where the run's files go (run.toml, wallets, logs, state, summaries); default: a fresh
    /// temporary directory, removed at the end.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the coordinator program on a local Solana chain (`demeter-localnet`, built from
    /// the e2e crate) instead of the centralized server.
    #[arg(long)]
    pub chain: bool,
    /// Every client scores a seeded one in N of each round's results against data, as a
    /// permissionless run does (the run's `score_one_in`; 0 scores nothing).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
    pub score_one_in: u16,
    /// The round's verifiers recompute each result with a chance of one in N, from the
    /// momentum its sender commits to (the run's `spot_check_one_in`; 0 recomputes nothing).
    #[arg(long, default_value_t = 0)]
    pub spot_check_one_in: u16,
    /// How far, per mille, a recompute may stray from the result it checks (the run's
    /// `spot_check_tolerance`; 0 asks for the same bytes, right for clients on one kind of
    /// device).
    #[arg(long, default_value_t = 0)]
    pub spot_check_tolerance: u16,
    #[command(flatten)]
    pub model: RunModelArgs,
}

/// The run's name in the run file, and on chain with --chain.
const RUN_ID: &str = "demeter-local";

fn run_file(args: &LocalArgs) -> String {
    // Checked against MAX_CLIENTS when the arguments were read.
    let clients = args.clients.clamp(1, MAX_CLIENTS) as u16;
    RunFile {
        run_id: RUN_ID.into(),
        authority: None,
        clients: None,
        config: Config {
            warmup_time: 30,
            cooldown_time: 1,
            max_round_train_time: 30,
            round_witness_time: 1,
            epoch_time: 3600,
            join_window: 0,
            total_steps: args.steps,
            global_batch_size_start: args.global_batch,
            global_batch_size_end: args.global_batch,
            global_batch_size_ramp_steps: 0,
            points_per_epoch: 100,
            init_min_clients: clients,
            min_clients: clients.div_ceil(2),
            witness_nodes: clients.min(3),
            score_one_in: args.score_one_in,
            spot_check_one_in: args.spot_check_one_in,
            spot_check_tolerance: args.spot_check_tolerance,
            _padding: [0; 4],
        },
    }
    .to_toml("`demeter local`")
}

/// `demeter-localnet` is development tooling, kept out of this binary: look beside it (one
/// cargo target directory), then on PATH.
fn localnet_binary(exe: &Path) -> anyhow::Result<PathBuf> {
    let beside = exe.with_file_name("demeter-localnet");
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("demeter-localnet"))
        .find(|candidate| candidate.is_file())
        .context(
            "--chain needs the demeter-localnet binary (development tooling, not part of \
             demeter): build it with `cargo build --release -p demeter-e2e`, or run `make run-chain`",
        )
}

/// Waits for the localnet's `ready` line and returns the RPC URL it printed before it.
fn read_localnet_url(stdout: std::process::ChildStdout) -> anyhow::Result<String> {
    use std::io::BufRead;
    let mut rpc_url = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(url) = line.strip_prefix("rpc_url: ") {
            rpc_url = Some(url.to_owned());
        }
        if line == "ready" {
            return rpc_url.context("the localnet printed no rpc_url");
        }
    }
    anyhow::bail!("the localnet exited before it was ready")
}

/// Reads one gauge from a client's `/metrics` (a tiny blocking HTTP/1.0 GET: no runtime needed).
pub fn read_gauge(address: SocketAddr, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Client processes per core `demeter local` starts at most: each is a whole trainer with its
/// own replica and libtorch threads, and the machine, not the coordinator, is then the limit.
const CLIENTS_PER_CORE: usize = 4;

/// The most clients this machine may run: the coordinator's member limit, and
/// [`CLIENTS_PER_CORE`] per core.
fn max_clients() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    MAX_CLIENTS.min(CLIENTS_PER_CORE * cores)
}

pub fn local(args: &LocalArgs) -> anyhow::Result<()> {
    let max = max_clients();
    anyhow::ensure!(
        (1..=max).contains(&args.clients),
        "--clients {}: must be in 1..={max} here (each client is a process with its own replica: \
         {CLIENTS_PER_CORE} per core on this machine, and the coordinator takes at most \
         {MAX_CLIENTS} members)",
        args.clients
    );
    if let Some(dir) = &args.dir {
        std::fs::create_dir_all(dir).with_context(|| format!("--dir {}", dir.display()))?;
        return run(args, dir, "");
    }
    // A fresh directory, removed after a run that succeeds and kept after one that fails: its
    // logs are what the error message points at.
    let temporary = tempfile::Builder::new()
        .prefix("demeter-local-")
        .tempdir()?;
    let result = run(
        args,
        temporary.path(),
        " (removed at the end unless the run fails; --dir keeps them)",
    );
    if result.is_err() {
        let kept = temporary.keep();
        return result.with_context(|| format!("the run's logs are kept in {}", kept.display()));
    }
    result
}

/// The run in `dir`; `dir_note` says what becomes of it.
fn run(args: &LocalArgs, dir: &Path, dir_note: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the demeter binary")?;
    let run_toml = dir.join("run.toml");
    std::fs::write(&run_toml, run_file(args))?;
    let mut local = LocalRun::new(&exe, dir);
    for _ in 0..args.clients {
        local.add_client()?;
    }
    // With --chain: the chain's run and its authority's wallet, to pay rewards at the end.
    let mut chain = None;
    let coordinator_args = if args.chain {
        let localnet = localnet_binary(&exe)?;
        let authority = dir.join("authority.json");
        if !authority.exists() {
            Identity::generate()?.write(&authority)?;
        }
        let mut command = Command::new(&localnet);
        let wallets = local.clients().iter().map(|client| &client.wallet);
        for wallet in wallets.chain([&authority]) {
            command.arg("--fund").arg(wallet);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(local.log("localnet")?)
            .spawn()
            .with_context(|| format!("starting {}", localnet.display()))?;
        let stdout = child.stdout.take().expect("piped");
        local.adopt("localnet", child);
        let rpc_url = read_localnet_url(stdout)
            .with_context(|| format!("the localnet did not start; see {}", dir.display()))?;
        let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
        let run_client = runtime.block_on(super::run::create_on_chain(
            &run_toml, &rpc_url, &authority, 0,
        ))?;
        let run_account = run_client.run_account();
        println!("coordinator program on a local chain at {rpc_url}, run account {run_account}");
        chain = Some((runtime, run_client, authority.clone()));
        vec![
            "--coordinator=solana".to_owned(),
            format!("--rpc={rpc_url}"),
            format!(
                "--run-authority={}",
                to_base58(&Identity::read(&authority)?.public())
            ),
            format!("--run-id={RUN_ID}"),
        ]
    } else {
        let coordinator = free_port()?;
        local.start_server(&run_toml, coordinator)?;
        println!("coordinator at tcp://{coordinator}");
        vec![format!("--coordinator=tcp://{coordinator}")]
    };
    let mut client_args = coordinator_args;
    client_args.extend(args.model.to_args());
    for index in 0..args.clients {
        // Every client keeps its checkpoints: the run's end leaves the trained model there.
        let checkpoints = format!("--checkpoint-dir={}", local.checkpoint_dir(index).display());
        let own_args = [client_args.clone(), vec![checkpoints]].concat();
        local.start_client(index, &own_args)?;
    }
    let endpoints: Vec<SocketAddr> = local.clients().iter().map(|c| c.endpoint).collect();
    println!("logs and state in {}{dir_note}", dir.display());
    for (index, endpoint) in endpoints.iter().enumerate() {
        println!("client {index}: metrics at http://{endpoint}/metrics");
    }

    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>9} {bar:30} {pos}/{len} steps  {msg}")
        .expect("valid template");
    let client_bars: Vec<ProgressBar> = (0..args.clients)
        .map(|index| {
            let bar = bars.add(ProgressBar::new(args.steps));
            bar.set_style(style.clone());
            bar.set_prefix(format!("client {index}"));
            bar
        })
        .collect();
    let started = Instant::now();
    loop {
        local.check_exits()?;
        let mut done = true;
        for (index, endpoint) in endpoints.iter().enumerate() {
            if local.summary_path(index).exists() {
                client_bars[index].set_position(args.steps);
                client_bars[index].set_message("done");
                continue;
            }
            done = false;
            let step = read_gauge(*endpoint, "demeter_applied_step").unwrap_or(0.0);
            client_bars[index].set_position(step as u64);
            // The loss gauge reads 0 until the client has trained a batch.
            match read_gauge(*endpoint, "demeter_loss").filter(|&loss| loss > 0.0) {
                Some(loss) => client_bars[index].set_message(format!("loss {loss:.3}")),
                None => client_bars[index].set_message("waiting for the first round"),
            }
        }
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for bar in &client_bars {
        bar.finish();
    }
    let seconds = started.elapsed().as_secs_f64();

    let summaries: Vec<ClientSummary> = (0..args.clients)
        .map(|index| {
            let path = local.summary_path(index);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(serde_json::from_str(&text)?)
        })
        .collect::<anyhow::Result<_>>()?;
    let identical = summaries
        .iter()
        .all(|s| s.replica_hash == summaries[0].replica_hash);
    let all_reduce = ring_all_reduce_bytes(summaries[0].parameters, args.clients.max(2));
    let mut table = Table::new(&[
        "client",
        "loss first -> last",
        "tokens",
        "bytes/step (payload)",
        "vs bf16 all-reduce",
    ]);
    for (index, s) in summaries.iter().enumerate() {
        table.row(vec![
            index.to_string(),
            format!(
                "{:.3} -> {:.3}",
                s.first_loss.unwrap_or(f64::NAN),
                s.last_loss.unwrap_or(f64::NAN)
            ),
            s.tokens.to_string(),
            s.payload_bytes.to_string(),
            format!("{:.2}%", 100.0 * s.payload_bytes as f64 / all_reduce as f64),
        ]);
    }
    print!("{table}");
    print!("{}", phase_table(&summaries));
    println!(
        "{} clients, {} steps in {seconds:.0} s; replicas bitwise identical: {}",
        args.clients,
        summaries[0].steps,
        if identical { "yes" } else { "NO" }
    );
    anyhow::ensure!(identical, "the replicas diverged");
    let state = match &chain {
        Some((runtime, run_client, _)) => {
            runtime.block_on(run_client.read())?.run.coordinator_boxed()
        }
        None => StateStore::new(dir.join("coordinator.state"))
            .load()?
            .context("the coordinator left no state file")?,
    };
    let model = local
        .checkpoint_dir(0)
        .join(format!("step-{}", summaries[0].steps));
    println!("{}{dir_note}", attested_model(&state, &model)?);
    if let Some((runtime, run_client, authority)) = chain {
        let wallets: Vec<PathBuf> = local.clients().iter().map(|c| c.wallet.clone()).collect();
        let paid = runtime.block_on(pay_rewards(&run_client, &authority, &wallets))?;
        print!("{paid}");
    }
    Ok(())
}

/// The trained model, the final checkpoint at `model`, checked against the model the run's
/// witnesses attested at its end (in `state`): what the run leaves its user, and proof it is
/// the model the run trained.
fn attested_model(state: &Coordinator, model: &Path) -> anyhow::Result<String> {
    let hash = crate::checkpoint::weights_hash(model)?;
    let (step, attested) = state
        .checkpoint
        .attested()
        .context("the run finished with no attested model: its last witnesses did not agree")?;
    anyhow::ensure!(
        step == state.step && *attested == hash,
        "{}: weights hash {} is not the model the witnesses attested (step {step}, weights hash \
         {})",
        model.display(),
        hex::encode(hash),
        hex::encode(attested)
    );
    Ok(format!(
        "the trained model: {}, weights hash {}, attested by the run's witnesses at step {step}",
        model.display(),
        hex::encode(hash)
    ))
}

/// Token units per point the local chain's reward pool pays.
const LOCAL_TOKENS_PER_POINT: u64 = 1_000;

/// Pays the finished run's points through the treasurer, as a run owner and its clients would:
/// the authority makes a token (6 decimals), creates the run's pool, funds it with what the
/// points are worth, and every client claims with its own wallet. Returns the table of points
/// and tokens claimed.
async fn pay_rewards(
    run: &demeter_coordinator::client::RunClient,
    authority: &Path,
    wallets: &[PathBuf],
) -> anyhow::Result<Table> {
    use demeter_treasurer::client::{Rewards, create_mint, mint_to};
    use solana_sdk::signer::Signer;

    let authority = Identity::read(authority)?;
    let state = run.read().await?.run.coordinator_boxed();
    let clients: Vec<Identity> = wallets
        .iter()
        .map(|wallet| Identity::read(wallet))
        .collect::<anyhow::Result<_>>()?;
    let points = |client: &Identity| {
        state
            .member_index(&client.public())
            .map_or(0, |slot| state.members[slot].payable_points())
    };
    let owed: u64 = clients
        .iter()
        .map(|client| points(client) * LOCAL_TOKENS_PER_POINT)
        .sum();
    let mint = create_mint(run, &authority, 6).await?;
    let rewards = Rewards::new(run);
    rewards
        .create(&authority, &mint, LOCAL_TOKENS_PER_POINT, 3_600)
        .await?;
    if owed > 0 {
        mint_to(run, &authority, &mint, &authority.pubkey(), owed).await?;
        rewards.fund(&authority, &mint, owed).await?;
    }
    let mut table = Table::new(&["client", "points", "tokens claimed (units)", "signature"]);
    for (index, client) in clients.iter().enumerate() {
        let (signature, paid) = if points(client) > 0 {
            let (signature, paid) = rewards.claim(client, &mint).await?;
            (signature.to_string(), paid)
        } else {
            ("nothing owed".to_owned(), 0)
        };
        table.row(vec![
            index.to_string(),
            points(client).to_string(),
            paid.to_string(),
            signature,
        ]);
    }
    println!(
        "rewards: mint {mint}, {LOCAL_TOKENS_PER_POINT} units per point, pool {}",
        rewards.address()
    );
    Ok(table)
}

/// Milliseconds per step in each phase, as the mean over clients.
pub fn phase_table(summaries: &[ClientSummary]) -> Table {
    let phases: Vec<&str> = summaries[0]
        .phase_seconds
        .iter()
        .map(|(phase, _)| phase.as_str())
        .collect();
    let mut header = vec!["ms per step"];
    header.extend(&phases);
    let mut table = Table::new(&header);
    let mut row = vec!["mean over clients".to_owned()];
    for (index, _) in phases.iter().enumerate() {
        let ms: f64 = summaries
            .iter()
            .map(|s| 1000.0 * s.phase_seconds[index].1 / s.steps.max(1) as f64)
            .sum::<f64>()
            / summaries.len() as f64;
        row.push(format!("{ms:.1}"));
    }
    table.row(row);
    table
}
