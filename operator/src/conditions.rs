//! Status conditions as KEP-1623 defines them: one per type, `lastTransitionTime` moving only
//! when the status flips, each stamped with the generation it describes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// All desired clients are running and ready.
pub const READY: &str = "Ready";
/// The run is moving toward its desired state or training.
pub const PROGRESSING: &str = "Progressing";
/// Something needs an admin: a client that keeps failing, an image that cannot be pulled.
pub const DEGRADED: &str = "Degraded";
/// The status mirrors the on-chain run (solana mode).
pub const CHAIN_SYNCED: &str = "ChainSynced";

/// Sets condition `type_`, keeping its transition time when its status does not change.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let t1 = Timestamp::from_second(1_800_000_060).unwrap();
        let mut conditions = Vec::new();
        set(&mut conditions, READY, false, "Starting", "0/3", 1, t0);
        set(&mut conditions, READY, false, "Starting", "1/3", 2, t1);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time.0, t0);
        assert_eq!(conditions[0].observed_generation, Some(2));
        set(
            &mut conditions,
            READY,
            true,
            "AllClientsReady",
            "3/3",
            2,
            t1,
        );
        assert_eq!(conditions[0].last_transition_time.0, t1);
        assert!(is_true(&conditions, READY));
    }
}
