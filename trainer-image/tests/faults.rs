//! Faults a run must survive, with real processes on loopback: a client killed with SIGKILL in
//! the middle of a round (and restarted), and the coordinator server killed and restarted.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use demeter_trainer::commands::read_gauge;
use demeter_trainer::coordinator::Identity;

const PATIENCE: Duration = Duration::from_secs(150);

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Kills what it started when the test ends, however it ends.
struct Run {
    dir: PathBuf,
    coordinator: SocketAddr,
    server: Option<Child>,
    clients: Vec<Client>,
}

struct Client {
    wallet: PathBuf,
    endpoint: SocketAddr,
    process: Option<Child>,
}

impl Drop for Run {
    fn drop(&mut self) {
        let children = self
            .clients
            .iter_mut()
            .filter_map(|c| c.process.as_mut())
            .chain(self.server.as_mut());
        for child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A run of three clients; `init_min_clients` below three lets two go on without the third.
fn run_file(total_steps: u64, epoch_time: u64, init_min_clients: u16) -> String {
    format!(
        r#"run_id = "faults"
[config]
warmup_time = 15
cooldown_time = 2
max_round_train_time = 4
round_witness_time = 1
epoch_time = {epoch_time}
join_window = 3
total_steps = {total_steps}
global_batch_size_start = 12
global_batch_size_end = 12
global_batch_size_ramp_steps = 0
points_per_epoch = 10
init_min_clients = {init_min_clients}
min_clients = 2
witness_nodes = 3
"#
    )
}

impl Run {
    fn start(dir: &Path, total_steps: u64, epoch_time: u64, init_min_clients: u16) -> Self {
        std::fs::write(
            dir.join("run.toml"),
            run_file(total_steps, epoch_time, init_min_clients),
        )
        .unwrap();
        let mut run = Self {
            dir: dir.to_owned(),
            coordinator: free_port(),
            server: None,
            clients: Vec::new(),
        };
        run.start_server();
        for index in 0..3 {
            let wallet = dir.join(format!("client-{index}.json"));
            Identity::generate().unwrap().write(&wallet).unwrap();
            run.clients.push(Client {
                wallet,
                endpoint: free_port(),
                process: None,
            });
            run.start_client(index);
        }
        run
    }

    fn log(&self, name: &str) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap()
            .into()
    }

    fn start_server(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_demeter"))
            .args(["coordinator", "serve", "--tick-ms=50", "--config"])
            .arg(self.dir.join("run.toml"))
            .arg(format!("--listen={}", self.coordinator))
            .arg("--state")
            .arg(self.dir.join("coordinator.state"))
            .stderr(self.log("coordinator"))
            .spawn()
            .unwrap();
        self.server = Some(child);
    }

    fn start_client(&mut self, index: usize) {
        let client = &self.clients[index];
        let child = Command::new(env!("CARGO_BIN_EXE_demeter"))
            .args(["--threads=1", "train", "--seq-len=64", "--warmup=1"])
            .arg(format!("--coordinator=tcp://{}", self.coordinator))
            .arg("--wallet")
            .arg(&client.wallet)
            .arg(format!("--listen={}", client.endpoint))
            .arg("--checkpoint-dir")
            .arg(self.dir.join(format!("checkpoints-{index}")))
            .arg("--summary")
            .arg(self.summary_path(index))
            .stderr(self.log(&format!("client-{index}")))
            .spawn()
            .unwrap();
        self.clients[index].process = Some(child);
    }

    fn kill(child: &mut Option<Child>) {
        let mut child = child.take().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }

    fn summary_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("client-{index}.summary.json"))
    }

    fn gauge(&self, index: usize, name: &str) -> Option<f64> {
        read_gauge(self.clients[index].endpoint, name)
    }

    /// Waits until `condition` holds, failing with the logs' tails if it never does.
    fn wait(&self, what: &str, condition: impl Fn(&Self) -> bool) {
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

    fn logs(&self) -> String {
        let mut text = String::new();
        for name in ["coordinator", "client-0", "client-1", "client-2"] {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            text += &format!(
                "--- {name}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        text
    }

    /// Every client's summary once all have finished: (steps, replica hash).
    fn finished(&self) -> Vec<(u64, String)> {
        self.wait("every client to finish", |run| {
            (0..3).all(|index| run.summary_path(index).exists())
        });
        (0..3)
            .map(|index| {
                let summary: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(self.summary_path(index)).unwrap(),
                )
                .unwrap();
                (
                    summary["steps"].as_u64().unwrap(),
                    summary["replica_hash"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

#[test]
fn a_client_killed_mid_round_is_dropped_and_catches_up_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Epochs of about 12 s, so that the restarted client has an epoch's end to catch up at.
    let mut run = Run::start(dir.path(), 30, 12, 2);
    run.wait("the first rounds", |run| {
        run.gauge(2, "demeter_applied_step").unwrap_or(0.0) >= 3.0
    });
    Run::kill(&mut run.clients[2].process);

    // The others go on: the round completes without it and a health check drops it.
    run.wait("the health check to drop the killed client", |run| {
        run.gauge(0, "demeter_members_active") == Some(2.0)
    });
    let step = run.gauge(0, "demeter_applied_step").unwrap();
    run.wait("rounds without it", |run| {
        run.gauge(0, "demeter_applied_step").unwrap_or(0.0) >= step + 2.0
    });

    // Restarted with the same key, it rejoins for the next epoch and catches up from peers.
    run.start_client(2);
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 30),
        "{finished:?}"
    );
    assert!(
        finished.iter().all(|(_, hash)| *hash == finished[0].1),
        "replicas differ: {finished:?}\n{}",
        run.logs()
    );
}

#[test]
fn clients_go_on_after_the_coordinator_is_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = Run::start(dir.path(), 12, 600, 3);
    run.wait("the first rounds", |run| {
        run.gauge(0, "demeter_applied_step").unwrap_or(0.0) >= 3.0
    });
    Run::kill(&mut run.server);
    std::thread::sleep(Duration::from_millis(500));
    run.start_server();
    let finished = run.finished();
    assert!(
        finished.iter().all(|(steps, _)| *steps == 12),
        "no step lost: {finished:?}"
    );
    assert!(
        finished.iter().all(|(_, hash)| *hash == finished[0].1),
        "replicas differ: {finished:?}"
    );
}
