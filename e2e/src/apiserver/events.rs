//! The two Event APIs are one set of objects, as on a real server: an Event written through
//! `events.k8s.io/v1` (as the operator's recorder writes them) is also a `v1` Event (as `kubectl
//! describe` reads them), and the other way round, with the fields renamed as the real server
//! converts them.

use serde_json::{Map, Value, json};

/// `(events.k8s.io/v1 field, v1 field)`, for the fields that only change name.
const RENAMED: [(&str, &str); 8] = [
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("reason", "reason"),
    ("note", "message"),
    ("type", "type"),
    ("action", "action"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
];

/// The same for the rest: `deprecated*` fields of the new API are the old one's own.
const DEPRECATED: [(&str, &str); 4] = [
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// An `events.k8s.io/v1` Event as a `v1` Event.
pub fn to_core(event: &Value) -> Value {
    let mut core = convert(event, |(new, old)| (new, old));
    if core.get("source").is_none()
        && let Some(controller) = event.get("reportingController")
    {
        // The old API names the reporter in `source.component`, which kubectl prints as From.
        core["source"] = json!({"component": controller});
    }
    core["apiVersion"] = "v1".into();
    core
}

/// A `v1` Event as an `events.k8s.io/v1` Event.
pub fn to_events_v1(core: &Value) -> Value {
    let mut event = convert(core, |(new, old)| (old, new));
    event["apiVersion"] = "events.k8s.io/v1".into();
    event
}

/// Copies `from`'s metadata, kind, event time and series, and each field of the tables under
/// the name `pick` gives it, as (source name, target name).
fn convert(
    from: &Value,
    pick: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Value {
    let mut to = Map::new();
    for field in ["metadata", "kind", "eventTime", "series"] {
        if let Some(value) = from.get(field) {
            to.insert(field.into(), value.clone());
        }
    }
    for pair in RENAMED.into_iter().chain(DEPRECATED) {
        let (source, target) = pick(pair);
        if let Some(value) = from.get(source) {
            to.insert(target.into(), value.clone());
        }
    }
    Value::Object(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_the_same_through_both_apis() {
        let event = json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "run.1", "namespace": "ml"},
            "eventTime": "2026-12-03T10:00:00.000000Z",
            "regarding": {"kind": "TrainingRun", "name": "run", "namespace": "ml"},
            "reason": "Pending",
            "note": "new -> Pending",
            "type": "Normal",
            "action": "Reconcile",
            "reportingController": "demeter-operator",
            "reportingInstance": "operator-0",
        });
        let core = to_core(&event);
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "run");
        assert_eq!(core["message"], "new -> Pending");
        assert_eq!(core["source"]["component"], "demeter-operator");
        let back = to_events_v1(&core);
        for field in ["regarding", "reason", "note", "type", "action", "eventTime"] {
            assert_eq!(back[field], event[field], "{field}");
        }
    }
}
