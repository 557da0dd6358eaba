//! What the server does beyond storing: the `fieldValidation` of a custom resource's unknown
//! fields, and the checks and status of a CRD (the part of the real server's CRD controller
//! that a client can see).

use serde_json::{Value, json};

use super::error::{FieldValidation, StoreError, invalid};
use super::registry::{CRDS, Registry, ResourceType};
use super::schema::FieldError;
use super::store::now;

/// Unknown fields of a custom resource, pruned already: refused under Strict, warned of
/// under Warn.
pub fn unknown_fields(
    kind: &ResourceType,
    unknown: Vec<String>,
    validation: FieldValidation,
) -> Result<Vec<String>, StoreError> {
    let named: Vec<String> = unknown
        .iter()
        .map(|field| format!("unknown field {field:?}"))
        .collect();
    match validation {
        FieldValidation::Strict if !named.is_empty() => Err(StoreError::BadRequest(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            named.join(", "),
            kind = kind.kind,
            version = kind.version,
        ))),
        FieldValidation::Warn => Ok(named),
        _ => Ok(Vec::new()),
    }
}

/// Checks a CRD as the API server does before storing it, and sets the status its
/// controller would (names accepted, established). Returns the kind it defines, served
/// once the CRD is stored.
pub fn admit_crd(
    registry: &Registry,
    crd: &mut Value,
    current: Option<&Value>,
) -> Result<ResourceType, StoreError> {
    let name = crd["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kind = Registry::parse_crd(crd).map_err(|errors| {
        let causes = errors
            .into_iter()
            .map(|(field, body)| FieldError::new(field, "FieldValueInvalid", body))
            .collect();
        invalid(&registry[CRDS], &name, causes)
    })?;
    if let Some(current) = current
        && current["spec"]["group"] != crd["spec"]["group"]
    {
        return Err(invalid(
            &registry[CRDS],
            &name,
            vec![FieldError::new(
                "spec.group",
                "FieldValueInvalid",
                "Invalid value: field is immutable",
            )],
        ));
    }
    if let Some(other) = registry.name_conflict(&kind) {
        return Err(invalid(
            &registry[CRDS],
            &name,
            vec![FieldError::new(
                "spec.names",
                "FieldValueInvalid",
                format!("Invalid value: its plural or kind is already served by {other}"),
            )],
        ));
    }
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": crd["metadata"]["creationTimestamp"].as_str().map_or_else(now, str::to_owned),
        })
    };
    let conditions = json!([
        condition("NamesAccepted", "NoConflicts", "no conflicts found"),
        condition(
            "Established",
            "InitialNamesAccepted",
            "the initial names have been accepted"
        ),
    ]);
    crd["status"] = json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": conditions,
        "storedVersions": [kind.version],
    });
    Ok(kind)
}
