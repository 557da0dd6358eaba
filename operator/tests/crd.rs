//! The CRD as generated is the one in deploy/crds/, and the examples are valid TrainingRuns.

use std::path::Path;

use demeter_operator::crd::{ModelPreset, TrainingRun};
use kube::CustomResourceExt;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_committed_crd_is_current() {
    let path = repo("deploy/crds/trainingruns.demeter.dev.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = demeter_operator::crd_yaml().unwrap();
    assert!(
        committed == generated,
        "{} is stale: run `cargo run -p demeter-operator -- crd > {}`",
        path.display(),
        path.display()
    );
}

#[test]
fn the_crd_has_the_names_columns_and_rules_admins_rely_on() {
    let crd = serde_json::to_value(TrainingRun::crd()).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "tr");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Phase", "Epoch", "Step", "Ready", "Joined", "Loss", "Age"]
    );
    let text = serde_json::to_string(&crd).unwrap();
    for rule in [
        "has(self.centralized) != has(self.solana)",
        "self.clients.replicas >= self.schedule.initMinClients",
    ] {
        assert!(text.contains(rule), "missing CEL rule {rule}");
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for immutable in ["model", "optimizer", "coordinator"] {
        let rules = spec[immutable]["x-kubernetes-validations"].to_string();
        assert!(rules.contains("self == oldSelf"), "{immutable}: {rules}");
    }
    // Every spec field explains itself to `kubectl explain`.
    for (name, field) in spec.as_object().unwrap() {
        assert!(
            field["description"].is_string(),
            "spec.{name} has no description"
        );
    }
}

#[test]
fn the_examples_are_valid_training_runs() {
    for example in [
        "deploy/examples/trainingrun.yaml",
        "deploy/examples/trainingrun-solana.yaml",
    ] {
        let text = std::fs::read_to_string(repo(example)).unwrap();
        let run: TrainingRun =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{example}: {error}"));
        assert_eq!(run.spec.model.preset, ModelPreset::M150, "{example}");
        let coordinator = &run.spec.coordinator;
        assert!(
            coordinator.centralized.is_some() != coordinator.solana.is_some(),
            "{example}"
        );
        assert!(run.spec.clients.replicas >= run.spec.schedule.init_min_clients);
    }
}
