//! Training progress from the clients themselves: each running client pod serves Prometheus
//! text on `/metrics` (the port it exchanges results on). The loss is known only there, in
//! both modes; in centralized mode the step, epoch, tokens and members come from there too,
//! since the centralized coordinator's state is not readable from outside its clients. In
//! solana mode the chain is the source of those (see [`crate::chain`]).

use std::time::Duration;

use demeter_coordinator_core::client_metrics as names;
use k8s_openapi::api::core::v1::Pod;

/// A scrape that takes longer than this is skipped: a slow client must not slow the run's
/// reconcile.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one client reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientReport {
    pub step: u64,
    pub epoch: u64,
    pub loss: Option<f64>,
    pub tokens: u64,
    pub members_active: u64,
    pub results_applied: u64,
    pub members_ejected: u64,
    pub attested_step: u64,
    pub round_seconds: Option<f64>,
}

/// Reads the trainer's own series out of a `/metrics` page; unknown lines are ignored.
pub fn parse(text: &str) -> ClientReport {
    let mut report = ClientReport::default();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        // Counters and gauges of whole things are exact in an f64 well past any run's size.
        let whole = value.max(0.0) as u64;
        match name {
            names::STEP => report.step = whole,
            names::EPOCH => report.epoch = whole,
            names::LOSS if value.is_finite() => report.loss = Some(value),
            names::TOKENS_TOTAL => report.tokens = whole,
            names::MEMBERS_ACTIVE => report.members_active = whole,
            names::RESULTS_APPLIED => report.results_applied = whole,
            names::MEMBERS_EJECTED => report.members_ejected = whole,
            names::ATTESTED_STEP => report.attested_step = whole,
            names::ROUND_SECONDS if value.is_finite() => report.round_seconds = Some(value),
            _ => {}
        }
    }
    report
}

/// The run's progress over its clients' reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub step: u64,
    pub epoch: u64,
    /// The mean loss of the clients at the newest step.
    pub loss: Option<f64>,
    /// Tokens trained, over all clients that answered.
    pub tokens: u64,
    pub joined: u16,
    pub witnessed: u16,
    /// Members a verdict quorum ejected (the most any client saw).
    pub ejected: u16,
    /// The step of the model the run's witnesses attested last (the newest any client saw).
    pub attested_step: u64,
    /// How long the last round took, as the clients at the newest step saw it.
    pub round_seconds: Option<f64>,
}

/// Combines reports; `None` when no client answered.
pub fn combine(reports: &[ClientReport]) -> Option<Progress> {
    let newest = reports.iter().map(|r| r.step).max()?;
    let at_newest: Vec<&ClientReport> = reports.iter().filter(|r| r.step == newest).collect();
    let losses: Vec<f64> = at_newest.iter().filter_map(|r| r.loss).collect();
    let clamp = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
    Some(Progress {
        step: newest,
        epoch: reports.iter().map(|r| r.epoch).max().unwrap_or(0),
        loss: (!losses.is_empty()).then(|| losses.iter().sum::<f64>() / losses.len() as f64),
        tokens: reports
            .iter()
            .map(|r| r.tokens)
            .fold(0, u64::saturating_add),
        joined: clamp(
            at_newest
                .iter()
                .map(|r| r.members_active)
                .max()
                .unwrap_or(0),
        ),
        witnessed: clamp(
            at_newest
                .iter()
                .map(|r| r.results_applied)
                .max()
                .unwrap_or(0),
        ),
        ejected: clamp(reports.iter().map(|r| r.members_ejected).max().unwrap_or(0)),
        attested_step: reports.iter().map(|r| r.attested_step).max().unwrap_or(0),
        round_seconds: at_newest
            .iter()
            .filter_map(|r| r.round_seconds)
            .reduce(f64::max),
    })
}

/// Scrapes every running client pod at once; pods that do not answer in time are left out.
pub async fn scrape(http: &reqwest::Client, pods: &[Pod], port: u16) -> Vec<ClientReport> {
    let running = pods.iter().filter_map(|pod| {
        let status = pod.status.as_ref()?;
        (status.phase.as_deref() == Some("Running")).then_some(())?;
        status.pod_ip.clone()
    });
    let scrapes = running.map(|ip| async move {
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip
        };
        let response = http
            .get(format!("http://{host}:{port}/metrics"))
            .timeout(SCRAPE_TIMEOUT)
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?;
        Some(parse(&response.text().await.ok()?))
    });
    futures_util::future::join_all(scrapes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP demeter_loss Training loss of the last step
# TYPE demeter_loss gauge
demeter_loss 3.25
demeter_step 41
demeter_epoch 2
demeter_tokens_total 52480
demeter_members_active 3
demeter_results_applied 3
demeter_members_ejected 1
demeter_attested_step 32
demeter_round_seconds 4
demeter_phase_seconds_total{phase=\"train\"} 12.5
";

    #[test]
    fn a_clients_page_is_read_for_its_own_series() {
        assert_eq!(
            parse(PAGE),
            ClientReport {
                step: 41,
                epoch: 2,
                loss: Some(3.25),
                tokens: 52480,
                members_active: 3,
                results_applied: 3,
                members_ejected: 1,
                attested_step: 32,
                round_seconds: Some(4.0),
            }
        );
        assert_eq!(parse("garbage\ndemeter_step x\n"), ClientReport::default());
    }

    #[test]
    fn progress_is_the_newest_step_and_its_mean_loss() {
        let report = |step, loss, tokens| ClientReport {
            step,
            epoch: 1,
            loss: Some(loss),
            tokens,
            members_active: 3,
            results_applied: 2,
            members_ejected: u64::from(step == 7),
            attested_step: step / 4 * 4,
            round_seconds: Some(step as f64),
        };
        // A client still catching up does not pull the loss back to an older step.
        let progress = combine(&[
            report(10, 3.0, 100),
            report(10, 2.0, 100),
            report(7, 9.0, 70),
        ])
        .unwrap();
        assert_eq!(progress.step, 10);
        assert_eq!(progress.loss, Some(2.5));
        assert_eq!(progress.tokens, 270);
        assert_eq!((progress.joined, progress.witnessed), (3, 2));
        assert_eq!(progress.ejected, 1, "an ejection any client saw");
        assert_eq!(progress.attested_step, 8);
        assert_eq!(
            progress.round_seconds,
            Some(10.0),
            "as seen at the newest step"
        );
        assert_eq!(combine(&[]), None);
    }
}
