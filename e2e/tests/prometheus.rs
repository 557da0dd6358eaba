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

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
use serde::Deserialize;
use serde_json::{Value, json};
use solana_sdk::signer::Signer;

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
            let selector = format!("demeter.dev/run={RUN},app.kubernetes.io/component=client");
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
        let prometheus = Prometheus::start(&prometheus_binary(), &dir, &self.chart, &targets);
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

/// The chart rendered with its monitors and rules on, by the Helm the bootstrap pins.
struct Chart {
    service_monitor: Value,
    pod_monitor: Value,
    prometheus_rule: Value,
}

impl Chart {
    fn render() -> Self {
        let helm = std::env::var("DEMETER_HELM").expect(
            "DEMETER_HELM names the pinned Helm; run this test through `make test` or after \
             `. scripts/env.sh`",
        );
        let output = Command::new(helm)
            .current_dir(repository())
            .args(["template", "demeter", "charts/demeter-operator"])
            .args(["--namespace", RELEASE_NAMESPACE])
            .args([
                "--set",
                "monitoring.serviceMonitor.enabled=true,monitoring.podMonitor.enabled=true,\
                 monitoring.prometheusRule.enabled=true",
            ])
            .output()
            .expect("helm runs");
        assert!(
            output.status.success(),
            "helm template: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
            .filter_map(|document| Value::deserialize(document).ok())
            .filter(|document| !document.is_null())
            .collect();
        let kind = |kind: &str| {
            documents
                .iter()
                .find(|document| document["kind"] == kind)
                .unwrap_or_else(|| panic!("the chart renders no {kind}"))
                .clone()
        };
        Self {
            service_monitor: kind("ServiceMonitor"),
            pod_monitor: kind("PodMonitor"),
            prometheus_rule: kind("PrometheusRule"),
        }
    }
}

/// Where Prometheus finds each target: the operator's Service endpoint and the client pods.
struct Targets {
    operator: SocketAddr,
    clients: Vec<(Pod, String)>,
}

/// A Prometheus server on a free loopback port, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    fn start(binary: &Path, dir: &Path, chart: &Chart, targets: &Targets) -> Self {
        let rules = dir.join("rules.yaml");
        std::fs::write(
            &rules,
            serde_json::to_string(&chart.prometheus_rule["spec"]).unwrap(),
        )
        .unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules],
            "scrape_configs": [
                service_monitor_job(&chart.service_monitor, targets.operator),
                pod_monitor_job(&chart.pod_monitor, &targets.clients),
            ],
        });
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        Self {
            child,
            url: format!("http://{address}"),
            http: reqwest::Client::new(),
        }
    }

    /// The instant vector `query` returns now; empty while Prometheus is not yet up.
    async fn query(&self, query: &str) -> Vec<Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await;
        // Not up yet: no answer, or 503 while it loads.
        let Some(response) = response.ok().filter(|r| r.status().is_success()) else {
            return Vec::new();
        };
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "success", "{query}: {body}");
        match &body["data"]["result"] {
            Value::Array(series) => series.clone(),
            // A scalar (e.g. `time()`) is one answer.
            scalar => vec![json!({"value": scalar})],
        }
    }

    /// Each target's scrape URL, health and last error, for a failure's message.
    async fn target_health(&self) -> String {
        let Ok(response) = self
            .http
            .get(format!("{}/api/v1/targets", self.url))
            .send()
            .await
        else {
            return "(prometheus not up)".into();
        };
        let body: Value = response.json().await.unwrap();
        body["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|target| {
                format!(
                    "{} {} {}",
                    target["scrapeUrl"], target["health"], target["lastError"]
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The run's step, as the operator's series report it, once Prometheus has it.
    async fn step(&self) -> Option<u64> {
        let series = self
            .query(&format!("demeter_operator_run_step{{name=\"{RUN}\"}}"))
            .await;
        let step = series.first()?["value"][1].as_str()?.parse::<f64>().ok()?;
        Some(step as u64)
    }

    /// Waits until the run has stepped while Prometheus watched, to at least `step`: its
    /// series have moved in every range the rules look back over.
    async fn wait_for_training_past(&self, step: u64) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        let mut first = None;
        loop {
            let now = self.step().await;
            first = first.or(now);
            if let (Some(first), Some(now)) = (first, now)
                && now > first
                && now >= step
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the run did not step past {step} (first seen at {first:?}, now {now:?}); \
                 targets: {}",
                self.target_health().await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Every query returns series (some only after a round or two: each gets until `LIMIT`).
    async fn every_panel_answers(&self, panels: &[String]) {
        let deadline = tokio::time::Instant::now() + LIMIT;
        let mut empty = panels.to_vec();
        while !empty.is_empty() {
            let mut still = Vec::new();
            for query in empty {
                if self.query(&query).await.is_empty() {
                    still.push(query);
                }
            }
            empty = still;
            assert!(
                tokio::time::Instant::now() < deadline,
                "panels still empty while the run trains: {empty:#?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The dashboard's variables offer this run: the operator's series keep the run's
    /// namespace, not the operator's.
    async fn variables_offer_the_run(&self) {
        for (selector, label, expected) in variable_queries() {
            let values: BTreeSet<String> = self
                .query(&selector)
                .await
                .iter()
                .filter_map(|series| Some(series["metric"][&label].as_str()?.to_owned()))
                .collect();
            assert!(
                values.contains(expected),
                "label_values({selector}, {label}) offers {values:?}, not {expected}"
            );
        }
    }

    /// Every rule evaluated cleanly and none is pending or firing; each rule `mode` feeds reads
    /// only series that exist. Returns how many rules were loaded.
    async fn rules_are_quiet(&self, mode: Mode) -> usize {
        // Rules are evaluated every second: let one evaluation see the run's latest step.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let body: Value = self
            .http
            .get(format!("{}/api/v1/rules", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let metric_name = regex::Regex::new(r"\bdemeter_[a-z_]+\b").unwrap();
        let mut count = 0;
        for group in body["data"]["groups"].as_array().unwrap() {
            let fed = mode == Mode::Solana || group["name"] != "demeter-chain";
            for rule in group["rules"].as_array().unwrap() {
                count += 1;
                let name = rule["name"].as_str().unwrap();
                assert_eq!(rule["health"], "ok", "{name}: {}", rule["lastError"]);
                assert_eq!(rule["state"], "inactive", "{name} is not quiet: {rule}");
                let query = rule["query"].as_str().unwrap();
                for series in metric_name.find_iter(query).filter(|_| fed) {
                    assert!(
                        !self.query(series.as_str()).await.is_empty(),
                        "{name} reads {}, which nothing exports",
                        series.as_str()
                    );
                }
            }
        }
        assert!(count >= 9, "{count} rules loaded");
        count
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The scrape job the Prometheus Operator generates for the ServiceMonitor's endpoint, with
/// the target Kubernetes service discovery would find (the operator's metrics Service, whose
/// endpoint is the leader pod). Target labels are the operator's own: namespace, service,
/// pod, container, endpoint, job; `honorLabels` decides whether a scraped `namespace` (the
/// run's) survives them.
fn service_monitor_job(monitor: &Value, address: SocketAddr) -> Value {
    let endpoint = &monitor["spec"]["endpoints"][0];
    let service = monitor["metadata"]["name"].as_str().unwrap();
    let mut relabel = vec![
        replace("__meta_kubernetes_namespace", "namespace"),
        replace("__meta_kubernetes_service_name", "service"),
        replace("__meta_kubernetes_pod_name", "pod"),
        replace("__meta_kubernetes_pod_container_name", "container"),
        replace("__meta_kubernetes_service_name", "job"),
        json!({"target_label": "endpoint", "replacement": endpoint["port"]}),
    ];
    relabel.extend(relabelings(endpoint));
    json!({
        "job_name": format!("serviceMonitor/{RELEASE_NAMESPACE}/{service}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "metrics_path": endpoint["path"],
        "static_configs": [{
            "targets": [address.to_string()],
            "labels": {
                "__meta_kubernetes_namespace": RELEASE_NAMESPACE,
                "__meta_kubernetes_service_name": service,
                "__meta_kubernetes_pod_name": format!("{service}-0"),
                "__meta_kubernetes_pod_container_name": "operator",
            },
        }],
        "relabel_configs": relabel,
    })
}

/// The scrape job the Prometheus Operator generates for the PodMonitor's endpoint, with each
/// client pod as discovery would find it (its namespace, name and labels).
fn pod_monitor_job(monitor: &Value, pods: &[(Pod, String)]) -> Value {
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let name = monitor["metadata"]["name"].as_str().unwrap();
    let static_configs: Vec<Value> = pods
        .iter()
        .map(|(pod, address)| {
            let mut labels = serde_json::Map::new();
            labels.insert("__meta_kubernetes_namespace".into(), json!(NAMESPACE));
            labels.insert("__meta_kubernetes_pod_name".into(), json!(pod.name_any()));
            labels.insert(
                "__meta_kubernetes_pod_container_name".into(),
                json!("trainer"),
            );
            for (key, value) in pod.labels() {
                let key = key.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
                labels.insert(format!("__meta_kubernetes_pod_label_{key}"), json!(value));
            }
            json!({"targets": [address], "labels": labels})
        })
        .collect();
    let mut relabel = vec![
        replace("__meta_kubernetes_namespace", "namespace"),
        replace("__meta_kubernetes_pod_container_name", "container"),
        replace("__meta_kubernetes_pod_name", "pod"),
        json!({"target_label": "job", "replacement": format!("{RELEASE_NAMESPACE}/{name}")}),
        json!({"target_label": "endpoint", "replacement": endpoint["port"]}),
    ];
    relabel.extend(relabelings(endpoint));
    json!({
        "job_name": format!("podMonitor/{RELEASE_NAMESPACE}/{name}/0"),
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "metrics_path": endpoint["path"],
        "static_configs": static_configs,
        "relabel_configs": relabel,
    })
}

fn replace(source: &str, target: &str) -> Value {
    json!({"source_labels": [source], "target_label": target})
}

/// A monitor endpoint's own `relabelings`, in Prometheus' spelling.
fn relabelings(endpoint: &Value) -> Vec<Value> {
    let spelling = [
        ("sourceLabels", "source_labels"),
        ("targetLabel", "target_label"),
        ("regex", "regex"),
        ("replacement", "replacement"),
        ("separator", "separator"),
        ("action", "action"),
        ("modulus", "modulus"),
    ];
    endpoint["relabelings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|rule| {
            let mut converted = serde_json::Map::new();
            for (key, value) in rule.as_object().unwrap() {
                let (_, spelled) = spelling
                    .iter()
                    .find(|(camel, _)| camel == key)
                    .unwrap_or_else(|| panic!("relabeling field {key} not translated"));
                let value = if *spelled == "action" {
                    json!(value.as_str().unwrap().to_lowercase())
                } else {
                    value.clone()
                };
                converted.insert((*spelled).into(), value);
            }
            Value::Object(converted)
        })
        .collect()
}

/// Every panel's query that `mode` feeds (a centralized run has nothing for the rows marked
/// "(solana mode)"), with the variables as an admin sets them to this run.
fn dashboard_queries(mode: Mode) -> Vec<String> {
    let dashboard: Value = serde_json::from_str(include_str!(
        "../../deploy/dashboards/demeter-operator.json"
    ))
    .unwrap();
    let mut queries = Vec::new();
    let mut fed = true;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            let title = panel["title"].as_str().unwrap_or_default();
            fed = mode == Mode::Solana || !title.contains("(solana mode)");
        } else if fed {
            collect_exprs(panel, &mut queries);
        }
    }
    assert!(queries.len() >= 15, "{} panel queries", queries.len());
    queries
        .into_iter()
        .map(|query| {
            query
                .replace("$namespace", NAMESPACE)
                .replace("$run", RUN)
                .replace("$__rate_interval", "1m")
        })
        .collect()
}

fn collect_exprs(node: &Value, into: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                into.push(expr.clone());
            }
            map.values().for_each(|value| collect_exprs(value, into));
        }
        Value::Array(values) => values.iter().for_each(|value| collect_exprs(value, into)),
        _ => {}
    }
}

/// The dashboard's `label_values(SELECTOR, LABEL)` variables, each with the value this run
/// must offer.
fn variable_queries() -> Vec<(String, String, &'static str)> {
    let dashboard: Value = serde_json::from_str(include_str!(
        "../../deploy/dashboards/demeter-operator.json"
    ))
    .unwrap();
    let label_values = regex::Regex::new(r"^label_values\((.+),\s*(\w+)\)$").unwrap();
    dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|variable| {
            let query = variable["query"]["query"]
                .as_str()
                .or(variable["query"].as_str())?;
            let captures = label_values.captures(query)?;
            let expected = match variable["name"].as_str()? {
                "namespace" => NAMESPACE,
                "run" => RUN,
                other => panic!("no expected value for the variable {other}"),
            };
            Some((
                captures[1].replace("$namespace", NAMESPACE),
                captures[2].to_owned(),
                expected,
            ))
        })
        .collect()
}

fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("prometheus"))
        .find(|candidate| candidate.is_file());
    found.expect(
        "no `prometheus` on PATH: install Debian's prometheus package (scripts/prerequisites.sh \
         does)",
    )
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
