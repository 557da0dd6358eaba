//! A real Prometheus (Debian's `prometheus`, installed by scripts/prerequisites.sh) scrapes a
//! run the way an admin's cluster would: the operator through what the Prometheus Operator
//! makes of the chart's ServiceMonitor, and the run's two training clients through the chart's
//! PodMonitor, with the rules of the chart's PrometheusRule loaded. The operator runs against
//! the in-memory API server; the clients are real trainers, each on a loopback address of its
//! own (127.0.0.2 and 127.0.0.3, as two pods' IPs). Two runs: one on the coordinator program on
//! a localnet, with a funded reward pool; one with the centralized coordinator, started from
//! the run file the operator wrote, its clients holding the identities the operator made.
//!
//! While the run trains, every query of the dashboard that its mode feeds, as an admin sets
//! its variables to the run's namespace and name, returns series; the variables offer the run;
//! every rule evaluates without error over series that exist; and no alert is pending or firing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use demeter_e2e::{ApiServer, Localnet, LocalnetOptions, eventually_within};
use demeter_operator::controller::{self, Context};
use demeter_operator::crd::{SolanaCoordinator, TrainingRun};
use demeter_operator::leader::{LeaderElection, Timing};
use demeter_operator::metrics::Metrics;
use demeter_trainer::central::server::{Server, ServerSettings};
use demeter_trainer::data::Dataset;
use demeter_trainer::identity::Identity;
use demeter_trainer::run_file::RunFile;
use demeter_trainer::run_file::run_id_bytes;
use demeter_trainer::train::backend::{Centralized, CoordinatorBackend};
use demeter_trainer::train::on_chain::{ChainRun, OnChain};
use demeter_trainer::train::{TrainSettings, TrainSummary, Trainer};
use demeter_treasurer::client::{Rewards, create_mint, mint_to};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, SecretKeySelector};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use serde_json::json;
use solana_sdk::signer::Signer;

mod dashboard;
mod scrape_config;
mod server;

use dashboard::dashboard_queries;
use scrape_config::{Chart, Targets, prometheus_config};
use server::Prometheus;

const NAMESPACE: &str = "ml";
const RELEASE_NAMESPACE: &str = "demeter-system";
const RUN: &str = "scraped";
/// The pods' IPs: each client listens on its own loopback address, on the run's one port.
const POD_IPS: [&str; 2] = ["127.0.0.2", "127.0.0.3"];
/// Localnet start, run creation, warmup and the first rounds; then every query has had time
/// to see a few scrapes.
const LIMIT: Duration = Duration::from_secs(180);

/// Which rows of the dashboard and which groups of rules a run feeds: a centralized run has no
/// chain and no reward pool.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Centralized,
    Solana,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_every_panel_and_rule_while_a_run_trains_on_chain() {
    tch::set_num_threads(1);
    let authority = Identity::generate().unwrap();
    let clients: Vec<Arc<Identity>> = (0..2)
        .map(|_| Arc::new(Identity::generate().unwrap()))
        .collect();
    let mut fund: Vec<_> = clients.iter().map(|client| client.pubkey()).collect();
    fund.push(authority.pubkey());
    let localnet = Localnet::start(LocalnetOptions {
        fund,
        sol_each: 10,
        ..LocalnetOptions::default()
    })
    .await
    .unwrap();
    let cluster = Cluster::start().await;

    // The authority's wallet and the clients' identities, as Secrets the operator uses.
    cluster
        .wallet_secret("run-authority", &cluster.wallet("authority", &authority))
        .await;
    for (index, client) in clients.iter().enumerate() {
        cluster
            .wallet_secret(
                &format!("{RUN}-client-{index}-identity"),
                &cluster.wallet(&format!("client-{index}"), client),
            )
            .await;
    }
    let port = free_port(POD_IPS[0]);
    let mut run = small_run("trainingrun-solana.yaml", port);
    run.spec.coordinator.solana = Some(SolanaCoordinator {
        rpc_url: localnet.rpc_url(),
        ws_url: None,
        program_id: demeter_coordinator::ID.to_string(),
        run_id: RUN.into(),
        authority: authority.pubkey().to_string(),
        authority_secret_ref: Some(SecretKeySelector {
            name: "run-authority".into(),
            key: "keypair.json".into(),
            ..SecretKeySelector::default()
        }),
        crank: true,
        join_deposit_lamports: 0,
    });
    let pods = cluster.run_pods(&run).await;

    // The clients train the run the operator created on chain, once it is there.
    let run_id = run_id_bytes(RUN).unwrap();
    let chain_run = ChainRun {
        rpc_url: localnet.rpc_url(),
        program_id: demeter_coordinator::ID,
        authority: authority.pubkey(),
        run_id,
    };
    let run_client = eventually("the run created on chain", || async {
        demeter_coordinator::client::RunClient::find(
            &localnet.rpc_url(),
            &authority.pubkey(),
            &run_id,
        )
        .await
        .ok()
    })
    .await;
    let mut trainers = Vec::new();
    for (identity, ip) in clients.iter().zip(POD_IPS) {
        let backend = OnChain::open(&chain_run, identity.clone()).await.unwrap();
        trainers.push(train(identity.clone(), backend, ip, port).await);
    }

    // A funded reward pool, so the rewards row has something to show.
    let mint = create_mint(&run_client, &authority, 6).await.unwrap();
    mint_to(&run_client, &authority, &mint, &authority.pubkey(), 1_000)
        .await
        .unwrap();
    let pool = Rewards::new(&run_client);
    pool.create(&authority, &mint, 3, 3_600).await.unwrap();
    pool.fund(&authority, &mint, 1_000).await.unwrap();

    cluster
        .check_while_training(&pods, port, Mode::Solana)
        .await;
    for trainer in trainers {
        trainer.abort();
        let _ = trainer.await;
    }
    drop(localnet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prometheus_sees_every_panel_and_rule_of_a_centralized_run() {
    tch::set_num_threads(1);
    let cluster = Cluster::start().await;
    let port = free_port(POD_IPS[0]);
    let run = small_run("trainingrun.yaml", port);
    let pods = cluster.run_pods(&run).await;

    // The coordinator pod's part: the server, from the run file the operator wrote.
    let config_maps = Api::<ConfigMap>::namespaced(cluster.kube.clone(), NAMESPACE);
    let run_file = config_maps.get(&format!("{RUN}-config")).await.unwrap();
    let run_file_path = cluster.files.path().join("run.toml");
    std::fs::write(&run_file_path, &run_file.data.unwrap()["run.toml"]).unwrap();
    let settings = ServerSettings::from_run_file(
        &RunFile::read(&run_file_path).unwrap(),
        cluster.files.path().join("run.state"),
        Duration::from_millis(100),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator = listener.local_addr().unwrap();
    let server = Server::open(settings).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async move {
        let _ = stopped.await;
    }));

    // The client pods' part, with the identities the operator generated for them.
    let secrets = Api::<Secret>::namespaced(cluster.kube.clone(), NAMESPACE);
    let mut trainers = Vec::new();
    for (index, ip) in POD_IPS.iter().enumerate() {
        let secret = secrets
            .get(&format!("{RUN}-client-{index}-identity"))
            .await
            .unwrap();
        let path = cluster.files.path().join(format!("client-{index}.json"));
        std::fs::write(&path, &secret.data.unwrap()["keypair.json"].0).unwrap();
        let identity = Arc::new(Identity::read(&path).unwrap());
        let backend = Centralized::connect(coordinator, identity.clone(), Duration::from_secs(10))
            .await
            .unwrap();
        trainers.push(train(identity, backend, ip, port).await);
    }

    cluster
        .check_while_training(&pods, port, Mode::Centralized)
        .await;
    for trainer in trainers {
        trainer.abort();
        let _ = trainer.await;
    }
    let _ = stop.send(());
    let _ = serving.await;
}

/// The example `file`, small: two clients serving on `port`, a quick warmup, short rounds, and
/// more steps than the test will wait for.
fn small_run(file: &str, port: u16) -> TrainingRun {
    let path = repository().join("deploy/examples").join(file);
    let mut run: TrainingRun =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    run.metadata.name = Some(RUN.into());
    run.metadata.namespace = Some(NAMESPACE.into());
    run.spec.clients.replicas = 2;
    run.spec.clients.port = port;
    let schedule = &mut run.spec.schedule;
    schedule.total_steps = 1_000;
    schedule.global_batch.start = 8;
    schedule.global_batch.end = 8;
    schedule.init_min_clients = 2;
    schedule.min_clients = 1;
    schedule.witness_nodes = 2;
    schedule.warmup_seconds = 15;
    schedule.round_witness_seconds = 2;
    schedule.cooldown_seconds = 1;
    run
}

/// A trainer on `ip:port` (its pod's address), training until aborted.
async fn train<B>(
    identity: Arc<Identity>,
    backend: B,
    ip: &str,
    port: u16,
) -> tokio::task::JoinHandle<anyhow::Result<TrainSummary>>
where
    B: CoordinatorBackend + Send + 'static,
{
    let address: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let trainer = Trainer::new(
        identity,
        backend,
        TrainSettings::example(),
        Dataset::embedded(0.02),
        address,
        Some(address),
    )
    .await
    .unwrap();
    tokio::spawn(trainer.run())
}

/// The in-memory API server with the operator's CRD, one operator replica leading and serving
/// its `/metrics`, and the chart rendered with its monitors and rules on.
struct Cluster {
    _server: ApiServer,
    kube: kube::Client,
    operator: SocketAddr,
    chart: Chart,
    /// Wallet files, run files and Prometheus' own files.
    files: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let chart = Chart::render();
        let server = ApiServer::start().await.unwrap();
        server
            .install_crd(serde_json::to_value(TrainingRun::crd()).unwrap())
            .unwrap();
        let kube = server.client(NAMESPACE).await.unwrap();
        let operator = start_operator(&server).await;
        Self {
            _server: server,
            kube,
            operator,
            chart,
            files: tempfile::tempdir().unwrap(),
        }
    }

    /// `identity` as a wallet file's text (`name`.json).
    fn wallet(&self, name: &str, identity: &Identity) -> String {
        let path = self.files.path().join(format!("{name}.json"));
        identity.write(&path).unwrap();
        std::fs::read_to_string(path).unwrap()
    }

    async fn wallet_secret(&self, name: &str, wallet: &str) {
        let secret = json!({
            "metadata": {"name": name, "namespace": NAMESPACE},
            "stringData": {"keypair.json": wallet},
        });
        Api::<Secret>::namespaced(self.kube.clone(), NAMESPACE)
            .create(
                &PostParams::default(),
                &serde_json::from_value(secret).unwrap(),
            )
            .await
            .unwrap();
    }

    /// Creates `run`; then, as the kubelet, runs its two client pods, each at its own IP.
    async fn run_pods(&self, run: &TrainingRun) -> Vec<Pod> {
        Api::<TrainingRun>::namespaced(self.kube.clone(), NAMESPACE)
            .create(&PostParams::default(), run)
            .await
            .unwrap();
        let pods = Api::<Pod>::namespaced(self.kube.clone(), NAMESPACE);
        let client_pods = eventually("the two client pods", || async {
            let selector = demeter_operator::children::client_selector_query(RUN);
            let mut items = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items;
            items.sort_by_key(|pod| pod.name_any());
            (items.len() == 2).then_some(items)
        })
        .await;
        for (pod, ip) in client_pods.iter().zip(POD_IPS) {
            let status = json!({"status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True"}],
            }});
            pods.patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .unwrap();
        }
        client_pods
    }

    /// Starts Prometheus on the operator and the client pods (listening on `port`), waits for
    /// the run to train, and checks every panel and rule `mode` feeds.
    async fn check_while_training(&self, pods: &[Pod], port: u16, mode: Mode) {
        let targets = Targets {
            operator: self.operator,
            clients: pods
                .iter()
                .zip(POD_IPS)
                .map(|(pod, ip)| (pod.clone(), format!("{ip}:{port}")))
                .collect(),
        };
        let dir = self.files.path().join("prometheus");
        std::fs::create_dir_all(&dir).unwrap();
        let config = prometheus_config(&self.chart, &targets, &dir.join("rules.yaml"));
        let prometheus = Prometheus::start(&dir, &config);
        prometheus.wait_for_training_past(3).await;
        let panels = dashboard_queries(mode);
        prometheus.every_panel_answers(&panels).await;
        prometheus.variables_offer_the_run().await;
        let rules = prometheus.rules_are_quiet(mode).await;
        eprintln!(
            "prometheus test: {} panel queries and {rules} rules answered while the run trained",
            panels.len(),
        );
    }
}

/// One operator replica leading, its controller running, and its HTTP port.
async fn start_operator(server: &ApiServer) -> SocketAddr {
    let client = server.client(NAMESPACE).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), "operator-0"));
    let leading = Arc::new(AtomicBool::new(false));
    let election = LeaderElection::new(
        Api::namespaced(client, RELEASE_NAMESPACE),
        "demeter-operator",
        "operator-0",
        Timing {
            lease_duration: Duration::from_secs(3),
            renew_every: Duration::from_millis(500),
            retry_every: Duration::from_millis(200),
        },
    );
    let endpoints = demeter_operator::http::Endpoints {
        metrics,
        leading: leading.clone(),
    };
    tokio::spawn(async move {
        let _ = election.run(controller::run(ctx, None, leading)).await;
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        async move { axum::serve(listener, demeter_operator::http::router(endpoints)).await },
    );
    address
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A port free on `ip` now (the listener is closed before the port is used).
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(LIMIT, what, check).await
}
