//! `meta.k8s.io/v1` Table responses, which `kubectl get` asks for: a CRD's printer columns
//! (the Name column first, then `additionalPrinterColumns`, dates as ages), or Name and Age for
//! the built-in kinds (the real server prints richer columns for pods and deployments).

use serde_json::{Value, json};

use super::registry::ResourceType;

/// One printer column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub kind: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub path: JsonPath,
}

impl Column {
    /// The column a kind without printer columns gets after Name: its age.
    pub fn age() -> Column {
        Column {
            name: "Age".into(),
            kind: "date".into(),
            format: String::new(),
            description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
            priority: 0,
            path: JsonPath::parse(".metadata.creationTimestamp").expect("a valid path"),
        }
    }

    /// A CRD's `additionalPrinterColumns` entry, checked as the API server checks it.
    pub fn parse(column: &Value) -> Result<Column, String> {
        let name = column["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            return Err("name: Required value".into());
        }
        let kind = column["type"].as_str().unwrap_or_default();
        if !matches!(kind, "string" | "integer" | "number" | "boolean" | "date") {
            return Err(format!(
                "type: Unsupported value: {kind:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""
            ));
        }
        let path = column["jsonPath"].as_str().unwrap_or_default();
        Ok(Column {
            name: name.to_owned(),
            kind: kind.to_owned(),
            format: column["format"].as_str().unwrap_or_default().to_owned(),
            description: column["description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            priority: column["priority"].as_i64().unwrap_or(0),
            path: JsonPath::parse(path)
                .map_err(|e| format!("jsonPath: Invalid value: {path:?}: {e}"))?,
        })
    }

    fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }

    fn cell(&self, object: &Value, now: i64) -> Value {
        let Some(value) = self.path.get(object) else {
            return Value::Null;
        };
        match (self.kind.as_str(), value) {
            ("date", Value::String(text)) => match text.parse::<k8s_openapi::jiff::Timestamp>() {
                Ok(time) => human_duration(now - time.as_second()).into(),
                Err(_) => "<invalid>".into(),
            },
            ("integer", value) if value.is_i64() || value.is_u64() => value.clone(),
            ("number", value) if value.is_number() => value.clone(),
            ("boolean", Value::Bool(b)) => (*b).into(),
            ("string", Value::String(s)) => s.clone().into(),
            // A value of another type prints as JSON, as the real server's convertor does.
            (_, value) => value.to_string().into(),
        }
    }
}

/// The subset of Kubernetes JSONPath that printer columns use here: dotted fields and list
/// indices (`.status.conditions[0].type`). A CRD naming anything else is refused when written,
/// so a column never prints wrongly.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<Step>);

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
}

impl JsonPath {
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        let unsupported = || {
            "this in-memory API server evaluates only dotted fields and list indices (like .status.conditions[0].type)".to_owned()
        };
        let rest = path
            .strip_prefix('.')
            .ok_or_else(|| "must start with a '.'".to_owned())?;
        let mut steps = Vec::new();
        for segment in rest.split('.') {
            let (field, mut indices) = match segment.split_once('[') {
                Some((field, indices)) => (field, Some(indices)),
                None => (segment, None),
            };
            if field.is_empty()
                || !field
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(unsupported());
            }
            steps.push(Step::Field(field.to_owned()));
            while let Some(text) = indices {
                let (index, after) = text.split_once(']').ok_or_else(unsupported)?;
                steps.push(Step::Index(index.parse().map_err(|_| unsupported())?));
                indices = match after {
                    "" => None,
                    more => Some(more.strip_prefix('[').ok_or_else(unsupported)?),
                };
            }
        }
        Ok(JsonPath(steps))
    }

    pub fn get<'a>(&self, object: &'a Value) -> Option<&'a Value> {
        self.0.iter().try_fold(object, |value, step| match step {
            Step::Field(field) => value.get(field),
            Step::Index(index) => value.get(index),
        })
    }
}

/// The Table for `objects` of `kind`: `include` is the request's `includeObject` (`None`,
/// `Object`, or the default `Metadata`).
pub fn table(kind: &ResourceType, objects: &[Value], revision: u64, include: &str) -> Value {
    let default_columns = [Column::age()];
    let columns = kind
        .custom
        .as_ref()
        .map_or(&default_columns[..], |c| &c.columns[..]);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let mut definitions = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace.",
        "priority": 0,
    })];
    definitions.extend(columns.iter().map(Column::definition));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| c.cell(object, now)));
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = object.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": object["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": revision.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// An age as kubectl prints it (`k8s.io/apimachinery/pkg/util/duration.HumanDuration`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return match seconds % 60 {
            0 => format!("{minutes}m"),
            s => format!("{minutes}m{s}s"),
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return match minutes % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return match hours % 24 {
            0 => format!("{}d", hours / 24),
            h => format!("{}d{h}h", hours / 24),
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return match (hours / 24) % 365 {
            0 => format!("{}y", hours / 24 / 365),
            d => format!("{}y{d}d", hours / 24 / 365),
        };
    }
    format!("{}y", hours / 24 / 365)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (3600, "60m"),
            (3 * 3600 + 60, "3h1m"),
            (9 * 3600, "9h"),
            (2 * 86400 + 3600, "2d1h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400 + 86400, "3y1d"),
            (-5, "<invalid>"),
        ];
        for (seconds, printed) in cases {
            assert_eq!(human_duration(seconds), printed, "{seconds} s");
        }
    }

    #[test]
    fn paths_read_fields_and_indices_and_refuse_filters() {
        let object = json!({"status": {"conditions": [{"type": "Ready"}], "phase": "Running"}});
        let path = JsonPath::parse(".status.conditions[0].type").unwrap();
        assert_eq!(path.get(&object), Some(&json!("Ready")));
        assert_eq!(JsonPath::parse(".status.step").unwrap().get(&object), None);
        assert!(JsonPath::parse(".status.conditions[?(@.type==\"Ready\")].status").is_err());
        assert!(JsonPath::parse("status").is_err());
    }
}
