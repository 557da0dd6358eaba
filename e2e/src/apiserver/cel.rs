//! A CRD's CEL validation rules (`x-kubernetes-validations`), compiled when the CRD is written
//! and evaluated on every write of its objects, with the `cel` crate.
//!
//! What is evaluated: `rule` with `self`, and transition rules (those naming `oldSelf`) on
//! updates where the old value exists, with `message` and `fieldPath`. What is not: Kubernetes'
//! CEL libraries (`isSorted`, `url()`, `quantity()`, `format.named`, `authorizer` and the other
//! extensions fail as unknown functions when a rule calls them), `messageExpression` (the
//! `message` is reported), `optionalOldSelf`, `reason`, and the cost budget.

use std::collections::HashMap;

use serde_json::Value;

use super::schema::FieldError;

/// One compiled rule.
struct Rule {
    program: cel::Program,
    source: String,
    message: String,
    field_path: String,
    /// Names `oldSelf`: checked only on updates, against the old value.
    transition: bool,
}

impl std::fmt::Debug for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("source", &self.source)
            .finish()
    }
}

/// Every rule of a schema, by the JSON pointer of the schema node that carries it
/// (`/properties/spec/properties/coordinator`).
#[derive(Debug, Default)]
pub struct Rules(HashMap<String, Vec<Rule>>);

impl Rules {
    /// Compiles every rule in `schema`; errors name the rule's path under `base`.
    pub fn compile(schema: &Value, base: &str) -> Result<Rules, Vec<(String, String)>> {
        let mut rules = Rules::default();
        let mut errors = Vec::new();
        rules.compile_node(schema, String::new(), base.to_owned(), &mut errors);
        if errors.is_empty() {
            Ok(rules)
        } else {
            Err(errors)
        }
    }

    fn compile_node(
        &mut self,
        schema: &Value,
        pointer: String,
        path: String,
        errors: &mut Vec<(String, String)>,
    ) {
        if let Some(list) = schema["x-kubernetes-validations"].as_array() {
            for (i, rule) in list.iter().enumerate() {
                let at = format!("{path}.x-kubernetes-validations[{i}]");
                let source = rule["rule"].as_str().unwrap_or_default();
                match cel::Program::compile(source) {
                    Ok(program) => {
                        let transition = program.references().has_variable("oldSelf");
                        self.0.entry(pointer.clone()).or_default().push(Rule {
                            program,
                            source: source.to_owned(),
                            message: rule["message"]
                                .as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| format!("failed rule: {source}")),
                            field_path: rule["fieldPath"].as_str().unwrap_or_default().to_owned(),
                            transition,
                        });
                    }
                    Err(error) => errors.push((
                        format!("{at}.rule"),
                        format!("Invalid value: {source:?}: compilation failed: {error}"),
                    )),
                }
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                self.compile_node(
                    property,
                    format!("{pointer}/properties/{}", escape(name)),
                    format!("{path}.properties[{name}]"),
                    errors,
                );
            }
        }
        for child in ["items", "additionalProperties"] {
            if schema[child].is_object() {
                self.compile_node(
                    &schema[child],
                    format!("{pointer}/{child}"),
                    format!("{path}.{child}"),
                    errors,
                );
            }
        }
    }

    /// Checks the rules of the schema node at `pointer` against `value` (at `field`), with
    /// `old` the same field's value before an update.
    pub fn check(
        &self,
        pointer: &str,
        value: &Value,
        old: Option<&Value>,
        field: &str,
        errors: &mut Vec<FieldError>,
    ) {
        let Some(rules) = self.0.get(pointer) else {
            return;
        };
        for rule in rules {
            if rule.transition && old.is_none() {
                continue;
            }
            let mut context = cel::Context::default();
            let bind = |context: &mut cel::Context, name: &str, value: &Value| {
                cel::to_value(value)
                    .map(|value| context.add_variable_from_value(name, value))
                    .map_err(|e| e.to_string())
            };
            let bound = bind(&mut context, "self", value)
                .and_then(|()| old.map_or(Ok(()), |old| bind(&mut context, "oldSelf", old)));
            let at = format!("{field}{}", rule.field_path);
            let body = |detail: &str| format!("Invalid value: \"{}\": {detail}", type_name(value));
            match bound.and_then(|()| rule.program.execute(&context).map_err(|e| e.to_string())) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => errors.push(FieldError::new(
                    at,
                    "FieldValueInvalid",
                    body(&rule.message),
                )),
                Ok(other) => errors.push(FieldError::new(
                    at,
                    "FieldValueInvalid",
                    body(&format!(
                        "rule {:?} gave {other:?}, not a bool",
                        rule.source
                    )),
                )),
                Err(error) => errors.push(FieldError::new(
                    at,
                    "FieldValueInvalid",
                    body(&format!("rule {:?} failed: {error}", rule.source)),
                )),
            }
        }
    }
}

/// A JSON pointer segment (RFC 6901).
pub fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The OpenAPI type of a value, as Kubernetes names it in CEL errors.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "has(self.a) != has(self.b)", "message": "set exactly one of a and b"},
                        {"rule": "self.min <= self.max", "message": "min above max", "fieldPath": ".min"},
                        {"rule": "self.min == oldSelf.min", "message": "min is immutable"},
                    ],
                }
            }
        })
    }

    fn errors(value: Value, old: Option<Value>) -> Vec<String> {
        let rules = Rules::compile(&schema(), "openAPIV3Schema").unwrap();
        let mut errors = Vec::new();
        rules.check(
            "/properties/spec",
            &value,
            old.as_ref(),
            "spec",
            &mut errors,
        );
        errors.iter().map(FieldError::to_string).collect()
    }

    #[test]
    fn rules_report_their_message_at_their_field_path() {
        assert!(errors(json!({"a": 1, "min": 1, "max": 2}), None).is_empty());
        assert_eq!(
            errors(json!({"a": 1, "b": 2, "min": 3, "max": 2}), None),
            [
                "spec: Invalid value: \"object\": set exactly one of a and b",
                "spec.min: Invalid value: \"object\": min above max",
            ]
        );
    }

    #[test]
    fn transition_rules_run_only_on_updates() {
        let new = json!({"a": 1, "min": 2, "max": 3});
        assert!(errors(new.clone(), None).is_empty());
        assert_eq!(
            errors(new, Some(json!({"a": 1, "min": 1, "max": 3}))),
            ["spec: Invalid value: \"object\": min is immutable"]
        );
    }

    #[test]
    fn a_rule_that_does_not_compile_is_refused_with_its_path() {
        let schema = json!({"x-kubernetes-validations": [{"rule": "self.a >"}]});
        let errors = Rules::compile(&schema, "openAPIV3Schema").unwrap_err();
        assert_eq!(
            errors[0].0,
            "openAPIV3Schema.x-kubernetes-validations[0].rule"
        );
        assert!(
            errors[0].1.contains("compilation failed"),
            "{}",
            errors[0].1
        );
    }
}
