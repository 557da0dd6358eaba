//! The kinds the server serves: a fixed set of built-in kinds (the ones the operator and its
//! tests use, and `CustomResourceDefinition`), and the custom kinds the stored CRDs define,
//! which appear when a CRD is written and disappear when it is deleted.

use std::sync::Arc;

use serde_json::Value;

use super::cel::Rules;
use super::schema::{is_object_meta, unsupported_keywords};
use super::table::Column;

/// A kind the server serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// Empty for the core group (`/api/v1`).
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Writes to the object leave `status` alone, and writes to `/status` touch only it.
    pub status_subresource: bool,
    /// Present for kinds a CRD defines: their schema, rules and printer columns.
    pub custom: Option<Arc<CustomKind>>,
    /// False once the CRD that defined the kind is gone; its index is never reused for
    /// another kind, so watches and keys of the old kind cannot see a new one.
    pub served: bool,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `TrainingRun.demeter.dev`, as the API server names a kind in its errors.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `trainingruns.demeter.dev`, as the API server names a resource in its errors.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// What a CRD's served version says about its objects.
#[derive(Debug)]
pub struct CustomKind {
    /// The CRD's name (`trainingruns.demeter.dev`).
    pub crd: String,
    /// `openAPIV3Schema` without `apiVersion`, `kind` and `metadata`, which every object has
    /// and every kind checks alike: what admission prunes, defaults and validates (and, with
    /// those three put back, what OpenAPI publishes).
    pub schema: Value,
    /// The schema's `x-kubernetes-validations`, compiled.
    pub rules: Rules,
    /// `additionalPrinterColumns`, or the API server's default (Age) when there are none.
    pub columns: Vec<Column>,
}

/// The built-in kinds: (group, version, plural, singular, kind, short names, namespaced,
/// status subresource).
type BuiltIn = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    bool,
    bool,
);

const BUILT_IN: &[BuiltIn] = &[
    ("", "v1", "pods", "pod", "Pod", &["po"], true, true),
    (
        "",
        "v1",
        "services",
        "service",
        "Service",
        &["svc"],
        true,
        true,
    ),
    (
        "",
        "v1",
        "configmaps",
        "configmap",
        "ConfigMap",
        &["cm"],
        true,
        false,
    ),
    ("", "v1", "secrets", "secret", "Secret", &[], true, false),
    ("", "v1", "events", "event", "Event", &["ev"], true, false),
    (
        "",
        "v1",
        "namespaces",
        "namespace",
        "Namespace",
        &["ns"],
        false,
        true,
    ),
    (
        "apps",
        "v1",
        "deployments",
        "deployment",
        "Deployment",
        &["deploy"],
        true,
        true,
    ),
    (
        "events.k8s.io",
        "v1",
        "events",
        "event",
        "Event",
        &["ev"],
        true,
        false,
    ),
    (
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        &[],
        true,
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        &["crd", "crds"],
        false,
        true,
    ),
];

/// The index of `CustomResourceDefinition` among the kinds.
pub const CRDS: usize = 9;

#[derive(Debug, Clone)]
pub struct Registry {
    kinds: Vec<ResourceType>,
}

impl Default for Registry {
    fn default() -> Self {
        let kinds = BUILT_IN
            .iter()
            .map(
                |&(group, version, plural, singular, kind, short, namespaced, status)| {
                    ResourceType {
                        group: group.into(),
                        version: version.into(),
                        plural: plural.into(),
                        singular: singular.into(),
                        kind: kind.into(),
                        short_names: short.iter().map(|s| s.to_string()).collect(),
                        categories: Vec::new(),
                        namespaced,
                        status_subresource: status,
                        custom: None,
                        served: true,
                    }
                },
            )
            .collect::<Vec<_>>();
        debug_assert_eq!(kinds[CRDS].plural, "customresourcedefinitions");
        Self { kinds }
    }
}

impl std::ops::Index<usize> for Registry {
    type Output = ResourceType;
    fn index(&self, index: usize) -> &ResourceType {
        &self.kinds[index]
    }
}

impl Registry {
    /// Finds a served kind by its URL segments.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.kinds.iter().position(|r| {
            r.served && r.group == group && r.version == version && r.plural == plural
        })
    }

    /// The served kinds, with their indices.
    pub fn served(&self) -> impl Iterator<Item = (usize, &ResourceType)> {
        self.kinds.iter().enumerate().filter(|(_, r)| r.served)
    }

    /// The kind a CRD defines, checked as the API server checks a CRD before it stores it.
    pub fn parse_crd(crd: &Value) -> Result<ResourceType, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut text = |path: &str, required: bool| -> String {
            match crd.pointer(&format!("/{}", path.replace('.', "/"))) {
                Some(Value::String(s)) if !s.is_empty() => s.clone(),
                _ if !required => String::new(),
                _ => {
                    errors.push((path.to_owned(), "Required value".to_owned()));
                    String::new()
                }
            }
        };
        let group = text("spec.group", true);
        let plural = text("spec.names.plural", true);
        let kind = text("spec.names.kind", true);
        let singular = text("spec.names.singular", false);
        let scope = text("spec.scope", true);
        let name = text("metadata.name", true);
        let strings = |path: &str| -> Vec<String> {
            crd.pointer(path)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
            errors.push((
                "metadata.name".into(),
                format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            ));
        }
        if !matches!(scope.as_str(), "Namespaced" | "Cluster" | "") {
            errors.push((
                "spec.scope".into(),
                format!(
                    "Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""
                ),
            ));
        }
        let served: Vec<(usize, &Value)> = crd["spec"]["versions"]
            .as_array()
            .map(|v| {
                v.iter()
                    .enumerate()
                    .filter(|(_, v)| v["served"] == true)
                    .collect()
            })
            .unwrap_or_default();
        let (position, version) = match served.as_slice() {
            [version] => *version,
            [] => {
                errors.push((
                    "spec.versions".into(),
                    "Invalid value: must have exactly one version marked as storage version".into(),
                ));
                (0, &Value::Null)
            }
            _ => {
                errors.push((
                    "spec.versions".into(),
                    "Forbidden: this in-memory API server serves one version per CRD (it has no conversion)"
                        .into(),
                ));
                (0, &Value::Null)
            }
        };
        let mut schema = version["schema"]["openAPIV3Schema"].clone();
        let base = format!("spec.versions[{position}].schema.openAPIV3Schema");
        if version.is_object() && !schema.is_object() {
            errors.push((base.clone(), "Required value: schemas are required".into()));
        }
        errors.extend(unsupported_keywords(&schema, &base));
        let rules = match Rules::compile(&schema, &base) {
            Ok(rules) => rules,
            Err(mut compile) => {
                errors.append(&mut compile);
                Rules::default()
            }
        };
        let columns = match version["additionalPrinterColumns"].as_array() {
            Some(columns) => columns
                .iter()
                .enumerate()
                .filter_map(|(i, column)| {
                    let path = format!("spec.versions[{position}].additionalPrinterColumns[{i}]");
                    match Column::parse(column) {
                        Ok(column) => Some(column),
                        Err(message) => {
                            errors.push((path, message));
                            None
                        }
                    }
                })
                .collect(),
            None => vec![Column::age()],
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(properties) = schema["properties"].as_object_mut() {
            properties.retain(|name, _| !is_object_meta(name));
        }
        Ok(ResourceType {
            singular: if singular.is_empty() {
                kind.to_lowercase()
            } else {
                singular
            },
            short_names: strings("/spec/names/shortNames"),
            categories: strings("/spec/names/categories"),
            namespaced: scope == "Namespaced",
            status_subresource: version["subresources"]["status"].is_object(),
            version: version["name"].as_str().unwrap_or_default().to_owned(),
            custom: Some(Arc::new(CustomKind {
                crd: name,
                schema,
                rules,
                columns,
            })),
            served: true,
            group,
            plural,
            kind,
        })
    }

    /// Serves the kind a CRD defines (replacing the kind an earlier version of the same CRD
    /// defined). Returns its index.
    pub fn serve(&mut self, kind: ResourceType) -> usize {
        let crd = kind.custom.as_ref().map(|c| c.crd.clone());
        if let Some(index) = self
            .kinds
            .iter()
            .position(|r| r.served && r.custom.as_ref().map(|c| &c.crd) == crd.as_ref())
        {
            // The same group, version and plural keep the index, so the objects stay.
            let same = {
                let old = &self.kinds[index];
                old.group == kind.group && old.version == kind.version && old.plural == kind.plural
            };
            if same {
                self.kinds[index] = kind;
                return index;
            }
            self.kinds[index].served = false;
        }
        self.kinds.push(kind);
        self.kinds.len() - 1
    }

    /// Stops serving the kind a CRD defined; returns its index.
    pub fn withdraw(&mut self, crd: &str) -> Option<usize> {
        let index = self
            .kinds
            .iter()
            .position(|r| r.served && r.custom.as_ref().is_some_and(|c| c.crd == crd))?;
        self.kinds[index].served = false;
        Some(index)
    }

    /// Another served kind that already uses one of `kind`'s names in its group.
    pub fn name_conflict(&self, kind: &ResourceType) -> Option<String> {
        let own_crd = kind.custom.as_ref().map(|c| c.crd.as_str());
        self.served()
            .filter(|(_, r)| r.custom.as_ref().map(|c| c.crd.as_str()) != own_crd)
            .find_map(|(_, r)| {
                (r.group == kind.group && (r.plural == kind.plural || r.kind == kind.kind))
                    .then(|| r.qualified_resource())
            })
    }
}
