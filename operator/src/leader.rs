//! Leader election on a `coordination.k8s.io` Lease, so that of several operator replicas
//! exactly one reconciles (kube-runtime has none). An operator that signs transactions must
//! never act twice, so the leader gives up acting as soon as it cannot prove it still holds the
//! lease: it stops before the lease could expire and another replica take over.
//!
//! Writes go through `replace` with the lease's resourceVersion: of two replicas racing for an
//! expired lease, the API server lets exactly one write win.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// How long a lease lasts without renewal, how often the leader renews it, and how often a
/// standby tries to take it.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_every: Duration,
    pub retry_every: Duration,
}

impl Default for Timing {
    /// client-go's defaults.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the leader lease {lease}: not renewed for {held_for:?} (the lease lasts {lease_duration:?}); stopping so that no two operators act"
    )]
    Lost {
        lease: String,
        held_for: Duration,
        lease_duration: Duration,
    },
}

pub struct LeaderElection {
    leases: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

impl LeaderElection {
    /// Competes for lease `name` as `identity` (a pod name: unique among replicas).
    pub fn new(leases: Api<Lease>, name: &str, identity: &str, timing: Timing) -> Self {
        Self {
            leases,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
        }
    }

    /// Takes or renews the lease if it is free, expired or already ours. Ok(false): another
    /// replica holds it, or won a race for it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return lost_race(self.leases.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours {
            let held = spec
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty());
            let duration = spec.lease_duration_seconds.unwrap_or(seconds);
            let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
                renewed.0 + Duration::from_secs(u64::try_from(duration).unwrap_or(0)) < now
            });
            if held && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(MicroTime(now));
        lost_race(
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Hands the lease back, so a standby takes over at once instead of after it expires.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lost_race(
            self.leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }

    /// Waits until this replica leads, then runs `work` while renewing the lease. Returns
    /// when `work` ends, or with [`LeaderError::Lost`] (dropping `work`) when the lease could
    /// not be renewed in time.
    pub async fn run<W: Future<Output = ()>>(&self, work: W) -> Result<(), LeaderError> {
        loop {
            match self.try_acquire().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "cannot read the leader lease")
                }
            }
            tokio::time::sleep(self.timing.retry_every).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "leading");
        let renewals = async {
            // Give up with a margin: the lease must still be valid while we stop.
            let deadline = self
                .timing
                .lease_duration
                .saturating_sub(self.timing.renew_every);
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(self.timing.renew_every).await;
                match self.try_acquire().await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => {
                        return LeaderError::Lost {
                            lease: self.name.clone(),
                            held_for: renewed.elapsed(),
                            lease_duration: self.timing.lease_duration,
                        };
                    }
                    Err(error) => {
                        tracing::warn!(%error, lease = %self.name, "cannot renew the leader lease");
                        if renewed.elapsed() >= deadline {
                            return LeaderError::Lost {
                                lease: self.name.clone(),
                                held_for: renewed.elapsed(),
                                lease_duration: self.timing.lease_duration,
                            };
                        }
                    }
                }
            }
        };
        tokio::select! {
            () = work => Ok(()),
            lost = renewals => Err(lost),
        }
    }
}

/// A write refused for a stale resourceVersion, or a create that found the lease made, means
/// another replica got there first.
fn lost_race(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}
