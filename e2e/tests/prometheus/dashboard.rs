//! The dashboard's queries and variables, as an admin sets them to the run under test.

use serde_json::Value;

use crate::{Mode, NAMESPACE, RUN};

/// The dashboard as shipped (the chart's copy is checked identical to it).
fn dashboard() -> Value {
    serde_json::from_str(include_str!(
        "../../../deploy/dashboards/demeter-operator.json"
    ))
    .unwrap()
}

/// Every panel's query that `mode` feeds (a centralized run has nothing for the rows marked
/// "(solana mode)"), with the variables as an admin sets them to this run.
pub fn dashboard_queries(mode: Mode) -> Vec<String> {
    let dashboard = dashboard();
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
pub fn variable_queries() -> Vec<(String, String, &'static str)> {
    let dashboard = dashboard();
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
