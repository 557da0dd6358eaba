//! A real Prometheus on a free loopback port, and what the test asks of it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::dashboard::variable_queries;
use crate::{LIMIT, Mode, RUN, free_port};

/// A Prometheus server on a free loopback port, stopped when dropped.
pub struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config`, its files under `dir`.
    pub fn start(dir: &Path, config: &Value) -> Self {
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
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
    pub async fn wait_for_training_past(&self, step: u64) {
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
    pub async fn every_panel_answers(&self, panels: &[String]) {
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
    pub async fn variables_offer_the_run(&self) {
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
    pub async fn rules_are_quiet(&self, mode: Mode) -> usize {
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
