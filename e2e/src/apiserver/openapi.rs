//! OpenAPI v3, as kubectl reads it: `/openapi/v3` lists one document per group version, and
//! each document has the paths of its kinds (with `x-kubernetes-group-version-kind`, the
//! `fieldValidation` parameter that makes `kubectl apply` validate on the server, and the patch
//! types each kind accepts) and their schemas. A custom kind's schema is its CRD's, which is
//! what `kubectl explain` prints; a built-in kind's schema here is an open object (the real
//! server publishes every field), so `explain` shows nothing for pods.

use std::hash::{Hash, Hasher};

use serde_json::{Map, Value, json};

use super::registry::{Registry, ResourceType};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// `/openapi/v3`: where each group version's document is, with a hash that changes when the
/// document does (clients cache by it).
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for (_, kind) in registry.served() {
        let key = (kind.group.clone(), kind.version.clone());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let path = group_version_path(&kind.group, &kind.version);
        let document = document(registry, &kind.group, &kind.version).expect("a served kind");
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash(&document))}),
        );
    }
    json!({"paths": paths})
}

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn hash(document: &Value) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    document.to_string().hash(&mut hasher);
    format!("{:016X}", hasher.finish())
}

/// The component name of a kind's schema (`dev.demeter.v1alpha1.TrainingRun`), as the real
/// server names it: the group reversed, or `io.k8s.api.{group}` for built-in kinds.
fn schema_name(kind: &ResourceType, suffix: &str) -> String {
    let package = if kind.custom.is_some() {
        kind.group.split('.').rev().collect::<Vec<_>>().join(".")
    } else {
        let group = kind.group.split('.').next().unwrap_or_default();
        format!(
            "io.k8s.api.{}",
            if group.is_empty() { "core" } else { group }
        )
    };
    format!("{package}.{}.{}{suffix}", kind.version, kind.kind)
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&ResourceType> = registry
        .served()
        .map(|(_, k)| k)
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    schemas.insert(OBJECT_META.into(), object_meta());
    for kind in kinds {
        add_paths(kind, &mut paths);
        let gvk = json!([{"group": kind.group, "version": kind.version, "kind": kind.kind}]);
        let mut schema = match &kind.custom {
            Some(custom) => custom.schema.clone(),
            None => json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        };
        if !schema["properties"].is_object() {
            schema["properties"] = json!({});
        }
        let properties = &mut schema["properties"];
        properties["apiVersion"] = json!({
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation of an object.",
        });
        properties["kind"] = json!({
            "type": "string",
            "description": "Kind is a string value representing the REST resource this object represents.",
        });
        properties["metadata"] = json!({
            "allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}],
            "description": "Standard object's metadata.",
        });
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        schemas.insert(schema_name(kind, ""), schema);
        let mut list_gvk = gvk;
        list_gvk[0]["kind"] = format!("{}List", kind.kind).into();
        schemas.insert(
            schema_name(kind, "List"),
            json!({
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", schema_name(kind, ""))}},
                    "metadata": {"type": "object"},
                },
                "x-kubernetes-group-version-kind": list_gvk,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

fn add_paths(kind: &ResourceType, paths: &mut Map<String, Value>) {
    let root = format!("/{}", group_version_path(&kind.group, &kind.version));
    let collection = if kind.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{root}/{}", kind.plural)
    };
    let object_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(kind, ""))});
    let list_ref = json!({"$ref": format!("#/components/schemas/{}", schema_name(kind, "List"))});
    let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    let namespace =
        json!({"name": "namespace", "in": "path", "required": true, "schema": {"type": "string"}});
    let name =
        json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}});
    let query = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
            .collect()
    };
    let write_params = ["dryRun", "fieldManager", "fieldValidation"];
    let operation = |action: &str,
                     params: Vec<Value>,
                     body: Option<Vec<&str>>,
                     response: &Value| {
        let mut op = json!({
            "operationId": format!("{action}{}", kind.kind),
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": gvk,
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": response}}}},
        });
        if let Some(types) = body {
            let content: Map<String, Value> = types
                .into_iter()
                .map(|t| (t.to_owned(), json!({"schema": object_ref})))
                .collect();
            op["requestBody"] = json!({"content": content, "required": true});
        }
        op
    };
    let path_params = |with_name: bool| -> Vec<Value> {
        let mut params = Vec::new();
        if with_name {
            params.push(name.clone());
        }
        if kind.namespaced {
            params.push(namespace.clone());
        }
        params
    };
    // Custom kinds take no strategic merge patch, which tells kubectl apply to send a JSON
    // merge patch; built-in kinds take it (treated here as a merge patch).
    let mut patch_types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if kind.custom.is_none() {
        patch_types.push("application/strategic-merge-patch+json");
    }
    let mut list_params = query(&[
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "watch",
    ]);
    list_params.extend(path_params(false));
    let mut create_params = query(&write_params);
    create_params.extend(path_params(false));
    paths.insert(
        collection.clone(),
        json!({
            "get": operation("list", list_params.clone(), None, &list_ref),
            "post": operation("post", create_params, Some(vec!["application/json", "application/yaml"]), &object_ref),
            "delete": operation("deletecollection", list_params, None, &json!({"type": "object"})),
        }),
    );
    let item = format!("{collection}/{{name}}");
    let mut item_params = query(&write_params);
    item_params.extend(path_params(true));
    let item_paths = |path: String, paths: &mut Map<String, Value>| {
        paths.insert(
            path,
            json!({
                "get": operation("get", path_params(true), None, &object_ref),
                "put": operation("put", item_params.clone(), Some(vec!["application/json", "application/yaml"]), &object_ref),
                "patch": operation("patch", item_params.clone(), Some(patch_types.clone()), &object_ref),
                "delete": operation("delete", path_params(true), None, &json!({"type": "object"})),
            }),
        );
    };
    item_paths(item.clone(), paths);
    if kind.status_subresource {
        item_paths(format!("{item}/status"), paths);
        if let Some(status) = paths.get_mut(&format!("{item}/status")) {
            status.as_object_mut().map(|s| s.remove("delete"));
        }
    }
}

/// The part of ObjectMeta that `kubectl explain` shows here.
fn object_meta() -> Value {
    let field = |kind: &str, description: &str| json!({"type": kind, "description": description});
    json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": field("string", "Name must be unique within a namespace."),
            "generateName": field("string", "An optional prefix the server uses to generate a unique name."),
            "namespace": field("string", "The namespace the object is in."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values to organize and categorize objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Unstructured key value map set by external tools."},
            "uid": field("string", "The unique in time and space value for this object."),
            "resourceVersion": field("string", "The version of this object, for optimistic concurrency."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "When this object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When this object will be deleted."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Objects depended by this object."},
        },
    })
}
