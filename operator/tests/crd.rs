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

/// Why `value` breaks `schema`, for the parts of OpenAPI v3 structural schemas the CRD uses
/// (type, bounds, enum, lengths, required, properties, items); `None` when it conforms.
fn violation(value: &serde_json::Value, schema: &serde_json::Value, path: &str) -> Option<String> {
    use serde_json::Value;
    let fail = |why: String| Some(format!("{path}: {why} (value {value})"));
    let type_ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        _ => true,
    };
    let null_allowed = value.is_null() && schema["nullable"] == true;
    if !(type_ok || null_allowed) {
        return fail(format!("not of type {}", schema["type"]));
    }
    if let (Some(number), Some(minimum)) = (value.as_f64(), schema["minimum"].as_f64())
        && number < minimum
    {
        return fail(format!("below the minimum {minimum}"));
    }
    if let (Some(number), Some(maximum)) = (value.as_f64(), schema["maximum"].as_f64())
        && number > maximum
    {
        return fail(format!("above the maximum {maximum}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return fail(format!("not one of {}", schema["enum"]));
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|min| len < min)
            || schema["maxLength"].as_u64().is_some_and(|max| len > max)
        {
            return fail("length out of bounds".into());
        }
    }
    if let Value::Object(fields) = value {
        for required in schema["required"].as_array().into_iter().flatten() {
            if !fields.contains_key(required.as_str().unwrap()) {
                return fail(format!("lacks required {required}"));
            }
        }
        for (name, field) in fields {
            let sub = &schema["properties"][name];
            if let Some(why) = violation(field, sub, &format!("{path}.{name}")) {
                return Some(why);
            }
        }
    }
    if let Value::Array(items) = value {
        for (index, item) in items.iter().enumerate() {
            if let Some(why) = violation(item, &schema["items"], &format!("{path}[{index}]")) {
                return Some(why);
            }
        }
    }
    None
}

/// Every `default` in `schema`, with the schema it must satisfy and its path.
fn defaults<'a>(
    schema: &'a serde_json::Value,
    path: String,
    found: &mut Vec<(String, &'a serde_json::Value, &'a serde_json::Value)>,
) {
    if schema.get("default").is_some() {
        found.push((path.clone(), &schema["default"], schema));
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, sub) in properties {
            defaults(sub, format!("{path}.{name}"), found);
        }
    }
    if schema.get("items").is_some() {
        defaults(&schema["items"], format!("{path}[]"), found);
    }
}

#[test]
fn every_default_of_the_crd_satisfies_its_own_schema() {
    // A real API server checks defaults against the schema and may refuse a CRD that breaks
    // them; the operator would also act on the default (`--seq-len=0` in every client pod).
    let crd = serde_json::to_value(TrainingRun::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut found = Vec::new();
    defaults(schema, String::new(), &mut found);
    assert!(found.len() >= 10, "only {} defaults found", found.len());
    for (path, default, schema) in found {
        assert_eq!(violation(default, schema, &path), None);
    }
}

#[test]
fn a_minimal_run_defaults_to_a_spec_its_schema_accepts() {
    let crd = serde_json::to_value(TrainingRun::crd()).unwrap();
    let spec_schema =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for example in [
        "deploy/examples/trainingrun.yaml",
        "deploy/examples/trainingrun-solana.yaml",
    ] {
        let text = std::fs::read_to_string(repo(example)).unwrap();
        let run: TrainingRun = serde_yaml_ng::from_str(&text).unwrap();
        let spec = serde_json::to_value(&run.spec).unwrap();
        assert_eq!(violation(&spec, spec_schema, "spec"), None, "{example}");
    }
    // The example without any of its optional sections: everything else is defaulted.
    let text = std::fs::read_to_string(repo("deploy/examples/trainingrun.yaml")).unwrap();
    let example: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut minimal = example["spec"].clone();
    let fields = minimal.as_object_mut().unwrap();
    for optional in [
        "data",
        "optimizer",
        "checkpoint",
        "suspend",
        "failurePolicy",
        "identityPolicy",
    ] {
        fields.remove(optional);
    }
    let spec: demeter_operator::crd::TrainingRunSpec = serde_json::from_value(minimal).unwrap();
    assert_eq!(spec.data.sequence_length, 128);
    let spec = serde_json::to_value(&spec).unwrap();
    assert_eq!(violation(&spec, spec_schema, "spec"), None);
}
