//! What the API server does to a custom resource before it stores it, from the CRD's
//! structural schema: prune the fields the schema does not declare, apply defaults, and
//! validate (types, bounds, enums, lengths, patterns, required fields, list-map keys, then the
//! CEL rules). Errors carry the real server's field paths and wording, so a client sees here
//! what it would see there.
//!
//! An update is validated with ratcheting: a value unchanged from the stored object is not
//! checked again (by the schema or by its rules).
//!
//! Unknown fields are pruned first ([`prune_unknown`], decoding); then defaults are applied and
//! the object validated ([`default_and_validate`]).
//!
//! Not emulated: `anyOf`, `allOf`, `oneOf` and `not` (a CRD using them is refused when written,
//! rather than half-checked), the `metadata` of custom resources beyond what every kind checks,
//! and string formats other than `date-time`.

use serde_json::{Map, Value};

use super::cel::{Rules, escape, type_name};
use super::registry::CustomKind;

/// One invalid field, as a `Status` cause: `field`, `reason` (`FieldValueInvalid`...) and the
/// text after the field in the message.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub reason: &'static str,
    pub body: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: &'static str, body: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason,
            body: body.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body)
    }
}

/// Schema keywords a CRD may use that this server does not evaluate: a CRD with one is
/// refused, so no object is ever half-validated.
const UNSUPPORTED: &[&str] = &["anyOf", "allOf", "oneOf", "not"];

/// The unsupported keywords in `schema`, by path under `base`.
pub fn unsupported_keywords(schema: &Value, base: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut stack = vec![(schema, base.to_owned())];
    while let Some((node, path)) = stack.pop() {
        for keyword in UNSUPPORTED {
            if node.get(keyword).is_some() {
                found.push((
                    format!("{path}.{keyword}"),
                    "Forbidden: this in-memory API server does not evaluate it (a real one does)"
                        .into(),
                ));
            }
        }
        if let Some(properties) = node["properties"].as_object() {
            stack.extend(
                properties
                    .iter()
                    .map(|(name, p)| (p, format!("{path}.properties[{name}]"))),
            );
        }
        for child in ["items", "additionalProperties"] {
            if node[child].is_object() {
                stack.push((&node[child], format!("{path}.{child}")));
            }
        }
    }
    found
}

/// Removes from `object` (a custom resource) the fields its kind's schema does not declare,
/// and the nulls it does not allow; returns the unknown fields, by path. This is decoding, so
/// it comes before defaulting and validation (a Strict request fails here first).
pub fn prune_unknown(kind: &CustomKind, object: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    let schema = &kind.schema;
    if let Some(fields) = object.as_object_mut() {
        for (name, field) in fields.iter_mut() {
            if !is_object_meta(name) {
                match schema["properties"].get(name) {
                    Some(child) => prune(child, field, name, &mut unknown),
                    None if preserves_unknown(schema) => {}
                    None => unknown.push(name.clone()),
                }
            }
        }
        fields.retain(|name, value| {
            is_object_meta(name)
                || match schema["properties"].get(name) {
                    Some(child) => !(value.is_null() && child["nullable"] != true),
                    None => preserves_unknown(schema),
                }
        });
    }
    unknown
}

/// Applies the schema's defaults to `object` (pruned already), then validates it: the schema's
/// checks, then its CEL rules (`old` is the stored object on an update). As the real server
/// does, the rules are not run on an object with type errors or missing required fields.
pub fn default_and_validate(
    kind: &CustomKind,
    object: &mut Value,
    old: Option<&Value>,
) -> Result<(), Vec<FieldError>> {
    let schema = &kind.schema;
    default(schema, object);
    let checker = Checker { rules: &kind.rules };
    let mut errors = Vec::new();
    checker.walk(Pass::Schema, schema, object, old, "", "", &mut errors);
    let blocking = errors
        .iter()
        .any(|e| matches!(e.reason, "FieldValueTypeInvalid" | "FieldValueRequired"));
    if blocking {
        errors.push(FieldError::new(
            "<nil>",
            "FieldValueInvalid",
            "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
        ));
    } else {
        checker.walk(Pass::Rules, schema, object, old, "", "", &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// `apiVersion`, `kind` and `metadata` belong to every object; a CRD's schema covers the rest.
pub fn is_object_meta(name: &str) -> bool {
    matches!(name, "apiVersion" | "kind" | "metadata")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == true
}

/// Removes what the schema does not declare, and nulls the schema does not allow.
fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            let properties = schema["properties"].as_object();
            let additional = schema["additionalProperties"].is_object();
            fields.retain(|name, field| {
                let declared = properties.and_then(|p| p.get(name));
                let child = declared.or(additional.then(|| &schema["additionalProperties"]));
                match child {
                    Some(child) => !(field.is_null() && child["nullable"] != true),
                    None if preserves_unknown(schema) => true,
                    None => {
                        unknown.push(join(path, name));
                        false
                    }
                }
            });
            for (name, field) in fields.iter_mut() {
                let child = properties
                    .and_then(|p| p.get(name))
                    .or(additional.then(|| &schema["additionalProperties"]));
                if let Some(child) = child {
                    prune(child, field, &join(path, name), unknown);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(&schema["items"], item, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

/// Fills in the declared defaults of missing fields, outside in.
fn default(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(fields) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (name, property) in properties {
                    if !fields.contains_key(name)
                        && let Some(default) = property.get("default")
                    {
                        fields.insert(name.clone(), default.clone());
                    }
                }
                for (name, field) in fields.iter_mut() {
                    if let Some(property) = properties.get(name) {
                        default(property, field);
                    }
                }
            } else if schema["additionalProperties"].is_object() {
                for field in fields.values_mut() {
                    default(&schema["additionalProperties"], field);
                }
            }
        }
        Value::Array(items) if schema["items"].is_object() => {
            for item in items {
                default(&schema["items"], item);
            }
        }
        _ => {}
    }
}

struct Checker<'a> {
    rules: &'a Rules,
}

/// The two walks of validation: the schema's checks, then (if they leave the object well
/// typed) the CEL rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Schema,
    Rules,
}

impl Checker<'_> {
    /// Checks `value` (at `path`) against `schema` (at `pointer` in the CRD's schema), skipping
    /// the metadata every object has.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        pass: Pass,
        schema: &Value,
        value: &Value,
        old: Option<&Value>,
        path: &str,
        pointer: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let shown = if path.is_empty() { "<root>" } else { path };
        // Ratcheting (GA in 1.33): an update may keep a value that is unchanged from the
        // stored object even if it no longer validates, so a stricter CRD does not freeze the
        // objects stored under an older one.
        if old == Some(value) {
            return;
        }
        if value.is_null() {
            if pass == Pass::Schema && schema["nullable"] != true {
                errors.push(FieldError::new(
                    shown,
                    "FieldValueTypeInvalid",
                    format!(
                        "Invalid value: \"null\": {shown} in body must be of type {}: \"null\"",
                        schema["type"].as_str().unwrap_or("object")
                    ),
                ));
            }
            return;
        }
        if pass == Pass::Rules {
            self.rules.check(pointer, value, old, shown, errors);
        }
        if !self.type_matches(schema, value) {
            if pass == Pass::Rules {
                return;
            }
            let wanted = schema["type"].as_str().unwrap_or_default();
            errors.push(FieldError::new(
                shown,
                "FieldValueTypeInvalid",
                format!(
                    "Invalid value: \"{got}\": {shown} in body must be of type {wanted}: \"{got}\"",
                    got = type_name(value)
                ),
            ));
            return;
        }
        if pass == Pass::Schema {
            self.check_bounds(schema, value, shown, errors);
        }
        match value {
            Value::Object(fields) => {
                let required = schema["required"]
                    .as_array()
                    .filter(|_| pass == Pass::Schema);
                for required in required.into_iter().flatten() {
                    if let Some(name) = required.as_str()
                        && !fields.contains_key(name)
                    {
                        errors.push(FieldError::new(
                            join(path, name),
                            "FieldValueRequired",
                            "Required value",
                        ));
                    }
                }
                let properties = schema["properties"].as_object();
                for (name, field) in fields {
                    if path.is_empty() && is_object_meta(name) {
                        continue;
                    }
                    let old_field = old.and_then(|o| o.get(name));
                    if let Some(property) = properties.and_then(|p| p.get(name)) {
                        self.walk(
                            pass,
                            property,
                            field,
                            old_field,
                            &join(path, name),
                            &format!("{pointer}/properties/{}", escape(name)),
                            errors,
                        );
                    } else if schema["additionalProperties"].is_object() {
                        self.walk(
                            pass,
                            &schema["additionalProperties"],
                            field,
                            old_field,
                            &format!("{path}[{name}]"),
                            &format!("{pointer}/additionalProperties"),
                            errors,
                        );
                    }
                }
            }
            Value::Array(items) if schema["items"].is_object() => {
                let keys = map_keys(schema);
                if let Some(keys) = keys.as_ref().filter(|_| pass == Pass::Schema) {
                    check_unique_keys(items, keys, path, errors);
                }
                for (i, item) in items.iter().enumerate() {
                    // Items are matched with old items by their map keys; other lists'
                    // items have no old value (so their transition rules do not run).
                    let old_item = keys.as_ref().and_then(|keys| {
                        old?.as_array()?
                            .iter()
                            .find(|o| keys.iter().all(|k| o.get(k) == item.get(k)))
                    });
                    self.walk(
                        pass,
                        &schema["items"],
                        item,
                        old_item,
                        &format!("{path}[{i}]"),
                        &format!("{pointer}/items"),
                        errors,
                    );
                }
            }
            _ => {}
        }
    }

    fn type_matches(&self, schema: &Value, value: &Value) -> bool {
        if schema["x-kubernetes-int-or-string"] == true {
            return value.is_string() || value.is_i64() || value.is_u64();
        }
        match schema["type"].as_str() {
            Some("object") => value.is_object(),
            Some("array") => value.is_array(),
            Some("string") => value.is_string(),
            Some("boolean") => value.is_boolean(),
            Some("integer") => {
                value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            Some("number") => value.is_number(),
            // A schema without a type admits anything (x-kubernetes-preserve-unknown-fields).
            _ => true,
        }
    }

    fn check_bounds(
        &self,
        schema: &Value,
        value: &Value,
        shown: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let invalid = |errors: &mut Vec<FieldError>, detail: String| {
            errors.push(FieldError::new(
                shown,
                "FieldValueInvalid",
                format!("Invalid value: {value}: {shown} in body {detail}"),
            ))
        };
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            errors.push(FieldError::new(
                shown,
                "FieldValueNotSupported",
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                ),
            ));
        }
        if let Some(number) = value.as_f64().filter(|_| value.is_number()) {
            let exclusive = |name: &str| schema[name] == true;
            if let Some(minimum) = schema["minimum"].as_f64() {
                if exclusive("exclusiveMinimum") && number <= minimum {
                    invalid(
                        errors,
                        format!("should be greater than {}", schema["minimum"]),
                    );
                } else if number < minimum {
                    invalid(
                        errors,
                        format!("should be greater than or equal to {}", schema["minimum"]),
                    );
                }
            }
            if let Some(maximum) = schema["maximum"].as_f64() {
                if exclusive("exclusiveMaximum") && number >= maximum {
                    invalid(errors, format!("should be less than {}", schema["maximum"]));
                } else if number > maximum {
                    invalid(
                        errors,
                        format!("should be less than or equal to {}", schema["maximum"]),
                    );
                }
            }
            if let Some(factor) = schema["multipleOf"].as_f64()
                && factor > 0.0
                && (number / factor).fract() != 0.0
            {
                invalid(
                    errors,
                    format!("should be a multiple of {}", schema["multipleOf"]),
                );
            }
        }
        if let Value::String(text) = value {
            let length = text.chars().count() as u64;
            if let Some(max) = schema["maxLength"].as_u64()
                && length > max
            {
                errors.push(FieldError::new(
                    shown,
                    "FieldValueTooLong",
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema["minLength"].as_u64()
                && length < min
            {
                invalid(errors, format!("should be at least {min} chars long"));
            }
            if let Some(pattern) = schema["pattern"].as_str() {
                match regex::Regex::new(pattern) {
                    Ok(re) if re.is_match(text) => {}
                    _ => invalid(errors, format!("should match '{pattern}'")),
                }
            }
            if schema["format"] == "date-time"
                && text.parse::<k8s_openapi::jiff::Timestamp>().is_err()
            {
                invalid(errors, "must be of type date-time".into());
            }
        }
        if let Value::Array(items) = value {
            let count = items.len() as u64;
            if let Some(max) = schema["maxItems"].as_u64()
                && count > max
            {
                errors.push(FieldError::new(
                    shown,
                    "FieldValueTooMany",
                    format!("Too many: {count}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minItems"].as_u64()
                && count < min
            {
                invalid(errors, format!("should have at least {min} items"));
            }
        }
        if let Value::Object(fields) = value {
            let count = fields.len() as u64;
            if let Some(max) = schema["maxProperties"].as_u64()
                && count > max
            {
                errors.push(FieldError::new(
                    shown,
                    "FieldValueTooMany",
                    format!("Too many: {count}: must have at most {max} items"),
                ));
            }
            if let Some(min) = schema["minProperties"].as_u64()
                && count < min
            {
                invalid(errors, format!("should have at least {min} properties"));
            }
        }
    }
}

/// `x-kubernetes-list-map-keys` of a `x-kubernetes-list-type: map` list.
fn map_keys(schema: &Value) -> Option<Vec<String>> {
    (schema["x-kubernetes-list-type"] == "map").then(|| {
        schema["x-kubernetes-list-map-keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    })
}

fn check_unique_keys(items: &[Value], keys: &[String], path: &str, errors: &mut Vec<FieldError>) {
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key: Map<String, Value> = keys
            .iter()
            .map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null)))
            .collect();
        let key = Value::Object(key);
        if seen.contains(&key) {
            errors.push(FieldError::new(
                format!("{path}[{i}]"),
                "FieldValueDuplicate",
                format!("Duplicate value: {key}"),
            ));
        } else {
            seen.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry::Registry;
    use serde_json::json;

    fn kind() -> std::sync::Arc<CustomKind> {
        let crd = json!({
            "metadata": {"name": "things.example.dev"},
            "spec": {
                "group": "example.dev",
                "names": {"plural": "things", "kind": "Thing"},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                    "lr": {"type": "number", "minimum": 0, "default": 0.01},
                                    "mode": {"type": "string", "enum": ["a", "b"]},
                                    "name": {"type": "string", "maxLength": 4},
                                    "note": {"type": "string", "nullable": true},
                                    "ports": {
                                        "type": "array",
                                        "x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": ["name"],
                                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                                    },
                                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                                },
                                "x-kubernetes-validations": [
                                    {"rule": "self.size == oldSelf.size", "message": "size is immutable"},
                                ],
                            },
                            "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                        },
                    }},
                }],
            },
        });
        Registry::parse_crd(&crd).unwrap().custom.unwrap()
    }

    fn admit_spec(spec: Value) -> Result<(Value, Vec<String>), Vec<String>> {
        let mut object = json!({"apiVersion": "example.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": spec});
        let kind = kind();
        let unknown = prune_unknown(&kind, &mut object);
        default_and_validate(&kind, &mut object, None)
            .map(|()| (object, unknown))
            .map_err(|errors| errors.iter().map(FieldError::to_string).collect())
    }

    #[test]
    fn unknown_fields_are_pruned_and_named_and_defaults_filled() {
        let (object, unknown) =
            admit_spec(json!({"size": 2, "extra": 1, "free": {"anything": [1]}, "note": null}))
                .unwrap();
        assert_eq!(unknown, ["spec.extra"]);
        assert_eq!(object["spec"]["lr"], 0.01);
        assert_eq!(object["spec"]["free"]["anything"], json!([1]));
        assert_eq!(object["spec"]["note"], Value::Null);
        assert_eq!(object["metadata"]["name"], "t");
    }

    #[test]
    fn every_violation_is_reported_with_its_field_path() {
        let errors = admit_spec(json!({
            "lr": -0.5, "mode": "c", "name": "toolong", "ports": [{"name": "x"}, {"name": "x"}],
        }))
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "spec.size: Required value",
                "spec.lr: Invalid value: -0.5: spec.lr in body should be greater than or equal to 0",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.name: Too long: may not be more than 4 bytes",
                "spec.ports[1]: Duplicate value: {\"name\":\"x\"}",
                "<nil>: Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ]
        );
        let errors = admit_spec(json!({"size": "three"})).unwrap_err();
        assert_eq!(
            errors[0],
            "spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\""
        );
        assert!(
            errors[1].contains("some validation rules were not checked"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_update_may_keep_a_value_that_no_longer_validates() {
        let stored = json!({"metadata": {"name": "t"}, "spec": {"size": 20}, "status": {}});
        let mut status = stored.clone();
        status["status"]["phase"] = "Invalid".into();
        default_and_validate(&kind(), &mut status, Some(&stored)).unwrap();
        let mut changed = stored.clone();
        changed["spec"]["size"] = 30.into();
        let errors = default_and_validate(&kind(), &mut changed, Some(&stored)).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("spec.size: Invalid value: 30"),
            "{errors:?}"
        );
    }

    #[test]
    fn updates_run_transition_rules_against_the_stored_object() {
        let stored = json!({"metadata": {"name": "t"}, "spec": {"size": 2}});
        let mut update = json!({"metadata": {"name": "t"}, "spec": {"size": 3}});
        let errors = default_and_validate(&kind(), &mut update, Some(&stored)).unwrap_err();
        assert_eq!(
            errors[0].to_string(),
            "spec: Invalid value: \"object\": size is immutable"
        );
    }
}
