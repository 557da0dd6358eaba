//! What the Prometheus Operator makes of the chart: the chart rendered by the pinned Helm with
//! its monitors and rules on, and the scrape jobs the operator of Prometheus would generate
//! from its ServiceMonitor and PodMonitor, with the targets and `__meta_kubernetes_*` labels
//! Kubernetes service discovery would give.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{NAMESPACE, RELEASE_NAMESPACE, repository};

/// The chart rendered with its monitors and rules on, by the Helm the bootstrap pins.
pub struct Chart {
    service_monitor: Value,
    pod_monitor: Value,
    prometheus_rule: Value,
}

impl Chart {
    pub fn render() -> Self {
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
pub struct Targets {
    pub operator: SocketAddr,
    /// Each client pod and the address it serves on.
    pub clients: Vec<(Pod, String)>,
}

/// Prometheus' configuration: scraping every second, the jobs for `targets`, and the rendered
/// PrometheusRule's groups, written to `rules`.
pub fn prometheus_config(chart: &Chart, targets: &Targets, rules: &Path) -> Value {
    std::fs::write(
        rules,
        serde_json::to_string(&chart.prometheus_rule["spec"]).unwrap(),
    )
    .unwrap();
    json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [rules],
        "scrape_configs": [
            service_monitor_job(&chart.service_monitor, targets.operator),
            pod_monitor_job(&chart.pod_monitor, &targets.clients),
        ],
    })
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
