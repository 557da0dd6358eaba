//! A run of real processes on loopback (a coordinator server and `demeter train` clients), for
//! the tests that watch whole runs.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use demeter_coordinator_core::Config;
use demeter_trainer::central::CoordinatorClient;
use demeter_trainer::commands::read_gauge;
use demeter_trainer::identity::Identity;
use demeter_trainer::local_run::{LocalRun, free_port};
use demeter_trainer::run_file::RunFile;

pub const PATIENCE: Duration = Duration::from_secs(150);

/// Kills what it started when the test ends, however it ends (`LocalRun` does).
pub struct Run {
    pub local: LocalRun,
    pub coordinator: SocketAddr,
}

/// A run of three clients; `init_min_clients` below three lets two go on without the third.
pub fn config(total_steps: u64, epoch_time: u64, init_min_clients: u16) -> Config {
    Config {
        warmup_time: 15,
        cooldown_time: 2,
        max_round_train_time: 4,
        round_witness_time: 1,
        epoch_time,
        join_window: 3,
        total_steps,
        points_per_epoch: 10,
        init_min_clients,
        ..Config::example()
    }
}

pub fn run_file(config: Config) -> String {
    RunFile {
        run_id: "faults".into(),
        authority: None,
        clients: None,
        config,
    }
    .to_toml("the fault tests")
}

impl Run {
    pub fn start(dir: &Path, total_steps: u64, epoch_time: u64, init_min_clients: u16) -> Self {
        Self::start_with(dir, config(total_steps, epoch_time, init_min_clients), 3)
    }

    /// A run of `config` whose first `processes` clients are `demeter train` processes.
    pub fn start_with(dir: &Path, config: Config, processes: usize) -> Self {
        std::fs::write(dir.join("run.toml"), run_file(config)).unwrap();
        let mut run = Self {
            local: LocalRun::new(Path::new(env!("CARGO_BIN_EXE_demeter")), dir),
            coordinator: free_port().unwrap(),
        };
        run.start_server();
        for _ in 0..processes {
            let index = run.local.add_client().unwrap();
            run.start_client(index);
        }
        run
    }

    pub fn start_server(&mut self) {
        let run_file = self.local.dir().join("run.toml");
        self.local
            .start_server(&run_file, self.coordinator)
            .unwrap();
    }

    /// Starts (or restarts, with the same key) client `index`, checkpointing every epoch.
    pub fn start_client(&mut self, index: usize) {
        self.start_client_with(index, &[]);
    }

    /// Starts client `index` as [`Self::start_client`] does, with `extra` arguments.
    pub fn start_client_with(&mut self, index: usize, extra: &[String]) {
        let mut args = vec![
            "--seq-len=64".to_owned(),
            "--warmup=1".to_owned(),
            format!("--coordinator=tcp://{}", self.coordinator),
            format!(
                "--checkpoint-dir={}",
                self.local
                    .dir()
                    .join(format!("checkpoints-{index}"))
                    .display()
            ),
        ];
        args.extend_from_slice(extra);
        self.local.start_client(index, &args).unwrap();
    }

    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.local.clients().iter().map(|c| c.endpoint).collect()
    }

    pub fn gauge(&self, index: usize, name: &str) -> Option<f64> {
        read_gauge(self.local.clients()[index].endpoint, name)
    }

    /// Waits until `condition` holds, failing with the logs' tails if it never does.
    pub fn wait(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn logs(&self) -> String {
        self.local.log_tails(12)
    }

    /// Every client's summary once all have finished: (steps, replica hash).
    pub fn finished(&self) -> Vec<(u64, String)> {
        let clients: Vec<usize> = (0..self.local.clients().len()).collect();
        self.finished_of(&clients)
            .into_iter()
            .map(|summary| {
                (
                    summary["steps"].as_u64().unwrap(),
                    summary["replica_hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The JSON summaries of `clients` once each has finished.
    pub fn finished_of(&self, clients: &[usize]) -> Vec<serde_json::Value> {
        self.wait("the clients to finish", |run| {
            clients
                .iter()
                .all(|&index| run.local.summary_path(index).exists())
        });
        clients
            .iter()
            .map(|&index| {
                serde_json::from_str(
                    &std::fs::read_to_string(self.local.summary_path(index)).unwrap(),
                )
                .unwrap()
            })
            .collect()
    }
}

/// A connection to the coordinator as `identity`, retried until the server is up.
pub async fn connect_when_up(coordinator: SocketAddr, identity: &Identity) -> CoordinatorClient {
    loop {
        match CoordinatorClient::connect(coordinator, identity).await {
            Ok(client) => return client,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
