//! The errors the API server answers with, in the `Status` shape and wording of the real one,
//! and the `fieldValidation` choice that decides whether unknown fields are one.

use super::registry::ResourceType;
use super::schema::FieldError;

/// A refused request, with the HTTP status and `reason` the Kubernetes API gives it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error(
        "Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict { resource: String, name: String },
    /// 422 with the causes, as a field's validation fails.
    #[error("{kind} {name:?} is invalid: {}", list(causes))]
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<FieldError>,
    },
    /// 422 for a write that cannot be made into an object (a JSON patch that fails).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("too old resource version: {asked} ({oldest})")]
    Expired { asked: u64, oldest: u64 },
}

impl StoreError {
    pub fn code_and_reason(&self) -> (u16, &'static str) {
        match self {
            StoreError::NotFound { .. } => (404, "NotFound"),
            StoreError::AlreadyExists { .. } => (409, "AlreadyExists"),
            StoreError::Conflict { .. } => (409, "Conflict"),
            StoreError::Invalid { .. } | StoreError::Unprocessable(_) => (422, "Invalid"),
            StoreError::BadRequest(_) => (400, "BadRequest"),
            StoreError::Expired { .. } => (410, "Expired"),
        }
    }
}

/// 422 Invalid for `name` of `kind`, with the fields that failed.
pub fn invalid(kind: &ResourceType, name: &str, causes: Vec<FieldError>) -> StoreError {
    StoreError::Invalid {
        kind: kind.qualified_kind(),
        group: kind.group.clone(),
        name: name.to_owned(),
        causes,
    }
}

/// The causes of an Invalid error as the API server joins them: one bare, several in brackets.
fn list(causes: &[FieldError]) -> String {
    let shown: Vec<String> = causes.iter().map(FieldError::to_string).collect();
    match shown.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", shown.join(", ")),
    }
}

/// What the server does with fields a custom resource's schema does not declare
/// (`?fieldValidation=`): drop them silently, drop them with a warning (the default), or refuse
/// the write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(value: Option<&str>) -> Result<Self, StoreError> {
        match value {
            None | Some("" | "Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(StoreError::BadRequest(format!(
                "fieldValidation: invalid value {other:?}: must be one of Ignore, Warn or Strict"
            ))),
        }
    }
}
