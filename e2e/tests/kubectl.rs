//! A real kubectl (1.35, pinned by scripts/bootstrap.sh, found through `DEMETER_KUBECTL`) against
//! the in-memory API server, as an admin meets Demeter: apply the CRD and the examples, see the
//! runs in `kubectl get tr` as the operator reconciles them, read `kubectl explain`, and have
//! bad runs refused with the field named.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use demeter_e2e::ApiServer;
use demeter_operator::controller::{self, Context};
use demeter_operator::metrics::Metrics;

/// A kubectl pointed at one server, with its own discovery cache.
struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

/// What one kubectl command printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(server: &ApiServer, dir: &Path) -> Kubectl {
        let binary = std::env::var_os("DEMETER_KUBECTL").map(PathBuf::from).expect(
            "DEMETER_KUBECTL names the pinned kubectl; run scripts/bootstrap.sh and source scripts/env.sh",
        );
        assert!(
            binary.is_file(),
            "DEMETER_KUBECTL={} is not a file; run scripts/bootstrap.sh",
            binary.display()
        );
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, server.kubeconfig("ml")).unwrap();
        Kubectl {
            binary,
            kubeconfig,
            cache: dir.join("cache"),
        }
    }

    /// A kubectl command with this server's kubeconfig and cache.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .arg(format!("--cache-dir={}", self.cache.display()))
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.parent().unwrap())
            .current_dir(repository());
        command
    }

    /// Runs kubectl off the test's runtime threads (the server answers on them).
    async fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command(args);
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap()
            .expect("kubectl runs");
        Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts kubectl in the background, its standard output going to `out`.
    fn spawn(&self, args: &[&str], out: &Path) -> std::process::Child {
        self.command(args)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("kubectl starts")
    }

    /// Runs kubectl and expects it to succeed; returns its standard output.
    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.success,
            "kubectl {args:?} failed:\n{}{}",
            output.stdout, output.stderr
        );
        output.stdout
    }

    /// Runs kubectl and expects it to fail; returns its standard error.
    async fn refused(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            !output.success,
            "kubectl {args:?} succeeded:\n{}",
            output.stdout
        );
        output.stderr
    }
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example run, edited by `edit` and written to `dir` as `name.yaml`.
fn edited_example(dir: &Path, name: &str, edit: impl Fn(&mut serde_yaml_ng::Value)) -> String {
    let text =
        std::fs::read_to_string(repository().join("deploy/examples/trainingrun.yaml")).unwrap();
    let mut run: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    run["metadata"]["name"] = name.into();
    edit(&mut run);
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml_ng::to_string(&run).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_applies_the_crd_and_runs_and_watches_them_with_kubectl() {
    let server = ApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl::new(&server, dir.path());

    // Before its CRD, the kind does not exist.
    let missing = kubectl.refused(&["get", "tr"]).await;
    assert!(
        missing.contains("the server doesn't have a resource type \"tr\""),
        "{missing}"
    );

    let crd = kubectl
        .ok(&["apply", "-f", "deploy/crds/trainingruns.demeter.dev.yaml"])
        .await;
    assert_eq!(
        crd.trim(),
        "customresourcedefinition.apiextensions.k8s.io/trainingruns.demeter.dev created"
    );
    let resources = kubectl
        .ok(&["api-resources", "--api-group=demeter.dev", "--no-headers"])
        .await;
    assert_eq!(
        resources.split_whitespace().collect::<Vec<_>>(),
        [
            "trainingruns",
            "tr",
            "demeter.dev/v1alpha1",
            "true",
            "TrainingRun"
        ]
    );

    let applied = kubectl
        .ok(&[
            "apply",
            "-f",
            "deploy/examples/trainingrun.yaml",
            "-f",
            "deploy/examples/trainingrun-solana.yaml",
        ])
        .await;
    assert_eq!(
        applied.lines().collect::<Vec<_>>(),
        [
            "trainingrun.demeter.dev/moby-150m created",
            "trainingrun.demeter.dev/moby-150m-devnet created"
        ]
    );
    // Applying again is a no-op (a JSON merge patch that changes nothing).
    let again = kubectl
        .ok(&["apply", "-f", "deploy/examples/trainingrun.yaml"])
        .await;
    assert_eq!(again.trim(), "trainingrun.demeter.dev/moby-150m unchanged");
    // The CRD's defaults were applied by the server.
    let port = kubectl
        .ok(&[
            "get",
            "tr",
            "moby-150m",
            "-o",
            "jsonpath={.spec.clients.port}",
        ])
        .await;
    assert_eq!(port, "7070");

    let table = kubectl.ok(&["get", "tr"]).await;
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "EPOCH", "STEP", "READY", "JOINED", "LOSS", "AGE"
        ]
    );
    assert_eq!(table.lines().count(), 3, "{table}");

    let explained = kubectl.ok(&["explain", "trainingrun.spec.optimizer"]).await;
    for expected in [
        "KIND:       TrainingRun",
        "FIELD: optimizer <Object>",
        "DeMo and the learning-rate schedule",
        "topk\t<integer>",
        "learningRate\t<Object>",
    ] {
        assert!(
            explained.contains(expected),
            "{expected:?} in:\n{explained}"
        );
    }

    // The operator reconciles the runs; its status shows in `kubectl get tr`.
    let client = server.client("ml").await.unwrap();
    let ctx = Arc::new(Context::new(client, Arc::new(Metrics::new()), "operator-0"));
    let operator = tokio::spawn(controller::run(ctx, None, Arc::new(AtomicBool::new(false))));
    let deadline = Instant::now() + Duration::from_secs(30);
    let row = loop {
        let table = kubectl
            .ok(&["get", "tr", "moby-150m", "--no-headers"])
            .await;
        let row: Vec<String> = table.split_whitespace().map(str::to_owned).collect();
        if row.get(1).is_some_and(|phase| phase == "Pending") && row.len() >= 4 {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "no status in `kubectl get tr`: {table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row[0], "moby-150m");
    assert!(row.contains(&"0/3".to_owned()), "{row:?}");
    // `describe` shows the conditions, and the operator's Events (written through
    // events.k8s.io/v1, read by kubectl as v1 Events, as on a real server).
    // The Events are written as the reconcile goes, so describe is read until they are all in.
    let expected = [
        "Phase:                   Pending",
        "ClientsNotReady",
        "demeter-operator  new -> Pending",
        // One Event per pod, though they are created at once (the recorder would fold Events
        // of one run with one reason into a series showing only the last pod).
        "Created pod moby-150m-client-0",
        "Created pod moby-150m-client-1",
        "Created pod moby-150m-client-2",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let described = kubectl.ok(&["describe", "tr", "moby-150m"]).await;
        let missing: Vec<_> = expected
            .iter()
            .filter(|text| !described.contains(*text))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing:?} not in:\n{described}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.abort();

    // Refused with the fields named: a bound, a CEL rule, an unknown field, an immutable one.
    let negative = edited_example(dir.path(), "negative", |run| {
        run["spec"]["optimizer"]["learningRate"]["peak"] = (-0.5).into();
        run["spec"]["clients"]["replicas"] = 1.into();
    });
    let refused = kubectl.refused(&["apply", "-f", &negative]).await;
    assert!(
        refused.contains("The TrainingRun \"negative\" is invalid"),
        "{refused}"
    );
    assert!(
        refused.contains(
            "spec.optimizer.learningRate.peak: Invalid value: -0.5: spec.optimizer.learningRate.peak in body should be greater than or equal to 0"
        ),
        "{refused}"
    );
    assert!(
        refused.contains(
            "spec.clients.replicas: Invalid value: \"object\": clients.replicas must be at least schedule.initMinClients"
        ),
        "{refused}"
    );
    let unknown = edited_example(dir.path(), "unknown", |run| {
        run["spec"]["replica"] = 3.into();
    });
    let refused = kubectl.refused(&["apply", "-f", &unknown]).await;
    assert!(
        refused.contains("strict decoding error: unknown field \"spec.replica\""),
        "{refused}"
    );
    let immutable = edited_example(dir.path(), "moby-150m", |run| {
        run["spec"]["optimizer"]["topk"] = 16.into();
    });
    let refused = kubectl.refused(&["apply", "-f", &immutable]).await;
    assert!(
        refused.contains("spec.optimizer: Invalid value: \"object\": optimizer is immutable"),
        "{refused}"
    );
    let names = kubectl
        .ok(&["get", "tr", "-o", "jsonpath={.items[*].metadata.name}"])
        .await;
    assert_eq!(names, "moby-150m moby-150m-devnet");

    // `kubectl get tr -w` lists, then prints a row for each change.
    let out = dir.path().join("watch.out");
    let mut watching = kubectl.spawn(&["get", "tr", "-w", "--output-watch-events"], &out);
    let printed = |what: &'static str| {
        let out = out.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                if text.contains(what) || Instant::now() > deadline {
                    return text;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let listed = printed("ADDED      moby-150m-devnet").await;
    assert!(listed.contains("EVENT      NAME"), "{listed}");
    kubectl
        .ok(&["label", "tr", "moby-150m", "team=research"])
        .await;
    let watched = printed("MODIFIED   moby-150m").await;
    let _ = watching.kill();
    let _ = watching.wait();
    assert!(watched.contains("MODIFIED   moby-150m "), "{watched}");
}
