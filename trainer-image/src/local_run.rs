//! The processes of a run on one machine: the coordinator (the centralized server, or any
//! other process the run needs, such as a local chain) and `demeter train` clients, each client
//! with its own wallet, port and summary, every process with a log file in the run's directory,
//! and all of them killed when the run is dropped, however it ends. `demeter local` runs one;
//! the fault tests kill and restart its processes.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

use crate::identity::Identity;

/// A free loopback port (bound and released; the child binds it a moment later).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One `demeter train` process of the run.
pub struct LocalClient {
    /// Its keypair file (made if it did not exist).
    pub wallet: PathBuf,
    /// Where it serves results and `/metrics`.
    pub endpoint: SocketAddr,
    process: Option<Child>,
}

/// The run's processes, in `dir`.
pub struct LocalRun {
    exe: PathBuf,
    dir: PathBuf,
    /// Processes other than the clients, by name: the coordinator, a local chain.
    services: Vec<(String, Option<Child>)>,
    clients: Vec<LocalClient>,
}

impl LocalRun {
    /// A run of the `demeter` binary at `exe`, with its files in `dir`.
    pub fn new(exe: &Path, dir: &Path) -> Self {
        Self {
            exe: exe.to_owned(),
            dir: dir.to_owned(),
            services: Vec::new(),
            clients: Vec::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file `NAME.log` in the run's directory, appended to (a restarted process
    /// continues its log).
    pub fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        let path = self.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(file.into())
    }

    /// Keeps `child` as the service `name`, killed with the run.
    pub fn adopt(&mut self, name: &str, child: Child) {
        match self.services.iter_mut().find(|(n, _)| n == name) {
            Some((_, slot)) => *slot = Some(child),
            None => self.services.push((name.to_owned(), Some(child))),
        }
    }

    /// Starts (or restarts) the centralized coordinator for the run file `run_file` on
    /// `listen`, its state in `coordinator.state` and its log in `coordinator.log`.
    pub fn start_server(&mut self, run_file: &Path, listen: SocketAddr) -> anyhow::Result<()> {
        let child = Command::new(&self.exe)
            .args(["coordinator", "serve", "--tick-ms=50", "--config"])
            .arg(run_file)
            .arg(format!("--listen={listen}"))
            .arg("--state")
            .arg(self.dir.join("coordinator.state"))
            .stdout(Stdio::null())
            .stderr(self.log("coordinator")?)
            .spawn()
            .context("starting the coordinator")?;
        self.adopt("coordinator", child);
        Ok(())
    }

    /// Adds client `N` (the next index): its wallet `client-N.json` (made if absent) and a free
    /// port; returns its index. Not started.
    pub fn add_client(&mut self) -> anyhow::Result<usize> {
        let index = self.clients.len();
        let wallet = self.dir.join(format!("client-{index}.json"));
        if !wallet.exists() {
            Identity::generate()?.write(&wallet)?;
        }
        self.clients.push(LocalClient {
            wallet,
            endpoint: free_port()?,
            process: None,
        });
        Ok(index)
    }

    /// Starts (or restarts) client `index`: `demeter --threads=1 train` with `args` (the
    /// coordinator, the model settings) and its wallet, port and summary, logging to
    /// `client-N.log` and writing `client-N.summary.json` when its run finishes.
    pub fn start_client(&mut self, index: usize, args: &[String]) -> anyhow::Result<()> {
        let client = &self.clients[index];
        let child = Command::new(&self.exe)
            .args(["--threads=1", "train"])
            .args(args)
            .arg("--wallet")
            .arg(&client.wallet)
            .arg(format!("--listen={}", client.endpoint))
            .arg("--summary")
            .arg(self.summary_path(index))
            .stdout(Stdio::null())
            .stderr(self.log(&format!("client-{index}"))?)
            .spawn()
            .with_context(|| format!("starting client {index}"))?;
        self.clients[index].process = Some(child);
        Ok(())
    }

    pub fn clients(&self) -> &[LocalClient] {
        &self.clients
    }

    /// Where client `index` writes its summary when its run finishes.
    pub fn summary_path(&self, index: usize) -> PathBuf {
        self.dir.join(format!("client-{index}.summary.json"))
    }

    /// Where client `index` writes its checkpoints, when it is given a checkpoint directory.
    pub fn checkpoint_dir(&self, index: usize) -> PathBuf {
        self.dir.join(format!("client-{index}.checkpoints"))
    }

    /// Kills client `index` with SIGKILL, as a crash would.
    pub fn kill_client(&mut self, index: usize) {
        kill(&mut self.clients[index].process);
    }

    /// Kills the service `name` with SIGKILL, as a crash would.
    pub fn kill_service(&mut self, name: &str) {
        if let Some((_, child)) = self.services.iter_mut().find(|(n, _)| n == name) {
            kill(child);
        }
    }

    /// The first process that has ended when it should not have: any service, or a client
    /// that failed (a client that finished its run exits 0). Names it and its log.
    pub fn check_exits(&mut self) -> anyhow::Result<()> {
        let clients = self
            .clients
            .iter_mut()
            .enumerate()
            .map(|(index, c)| (format!("client {index}"), &mut c.process, true));
        let services = self
            .services
            .iter_mut()
            .map(|(name, child)| (name.clone(), child, false));
        for (name, child, may_finish) in services.chain(clients) {
            if let Some(child) = child
                && let Some(status) = child.try_wait()?
                && !(may_finish && status.success())
            {
                anyhow::bail!(
                    "{name} exited ({status}); see its log in {}",
                    self.dir.display()
                );
            }
        }
        Ok(())
    }

    /// The last lines of every log, for a failure message.
    pub fn log_tails(&self, lines: usize) -> String {
        let names = self
            .services
            .iter()
            .map(|(name, _)| name.replace(' ', "-"))
            .chain((0..self.clients.len()).map(|index| format!("client-{index}")));
        let mut text = String::new();
        for name in names {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            text += &format!(
                "--- {name}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        text
    }
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        for client in &mut self.clients {
            kill(&mut client.process);
        }
        for (_, child) in &mut self.services {
            kill(child);
        }
    }
}
