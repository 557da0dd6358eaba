//! The API server's objects and their history: one revision counter for every write (the
//! `resourceVersion`), a bounded log of changes for watches, and the write rules the operator
//! relies on (optimistic concurrency, status subresources, generations, finalizers, owner
//! cascade, server-side apply by field manager), and what it does to custom resources and CRDs
//! (admission from the schema; a CRD's kind served once the CRD is stored).

use std::collections::{BTreeMap, HashMap, VecDeque};

use json_patch::PatchOperation;
use serde_json::{Map, Value, json};
use tokio::sync::watch;

use super::admission::{admit_crd, unknown_fields};
use super::error::invalid;
pub use super::error::{FieldValidation, StoreError};
use super::events;
use super::registry::{CRDS, Registry};
use super::schema::{FieldError, default_and_validate, prune_unknown};
use super::selector::{FieldSelector, LabelSelector};

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Main,
    Status,
}

/// How a watch event names a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "ADDED",
            ChangeKind::Modified => "MODIFIED",
            ChangeKind::Deleted => "DELETED",
        }
    }
}

/// One write, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub resource: usize,
    pub kind: ChangeKind,
    pub object: Value,
}

/// What a list or watch asks for.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// A patch body by its content type.
pub enum Patch {
    /// `application/merge-patch+json` (and strategic merge, which the operator only uses for
    /// maps and whole lists, where the two agree).
    Merge(Value),
    /// `application/json-patch+json`.
    Json(Vec<PatchOperation>),
    /// `application/apply-patch+yaml`: server-side apply by `manager`.
    Apply { manager: String, object: Value },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    resource: usize,
    namespace: String,
    name: String,
}

/// How many changes watches can resume from; an older `resourceVersion` is answered with
/// 410 Expired and the client lists again, as with a real API server's compacted etcd.
const LOG_CAPACITY: usize = 200_000;

pub struct Store {
    registry: Registry,
    objects: BTreeMap<Key, Value>,
    /// The last configuration each field manager applied to each object, so that a field it
    /// stops applying is removed (server-side apply's ownership, without conflicts between
    /// managers: every apply is treated as forced).
    applied: HashMap<(Key, Scope, String), Value>,
    log: VecDeque<Change>,
    revision: u64,
    next_uid: u64,
    notify: watch::Sender<u64>,
    /// The current write's `fieldValidation`, and the warnings it raised (see [`Store::validating`]).
    validation: FieldValidation,
    warnings: Vec<String>,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            applied: HashMap::new(),
            log: VecDeque::new(),
            revision: 0,
            next_uid: 0,
            notify: watch::channel(0).0,
            registry: Registry::default(),
            validation: FieldValidation::default(),
            warnings: Vec::new(),
        }
    }
}

impl Store {
    /// The kinds served now.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The index of a served kind.
    pub fn kind(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.registry.find(group, version, plural)
    }

    /// Runs `write` with `validation` for unknown fields of custom resources; returns its
    /// result and the warnings it raised (for the response's `Warning` headers).
    pub fn validating<T>(
        &mut self,
        validation: FieldValidation,
        write: impl FnOnce(&mut Self) -> T,
    ) -> (T, Vec<String>) {
        self.validation = validation;
        let result = write(self);
        self.validation = FieldValidation::default();
        (result, std::mem::take(&mut self.warnings))
    }

    /// The revision of the last write.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Wakes up on every write.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn list(&self, resource: usize, filter: &Filter) -> Vec<Value> {
        // Keys sort by kind, then namespace: a list reads only its own range.
        let start = key(resource, filter.namespace.as_deref().unwrap_or(""), "");
        self.objects
            .range(start..)
            .take_while(|(key, _)| {
                key.resource == resource
                    && filter
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| key.namespace == *ns)
            })
            .filter(|(_, object)| filter.matches(object))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Every change of `resource` after `revision`, or Expired if the log no longer reaches
    /// back that far.
    pub fn changes_since(
        &self,
        resource: usize,
        revision: u64,
        filter: &Filter,
    ) -> Result<Vec<Change>, StoreError> {
        if let Some(oldest) = self.log.front()
            && revision + 1 < oldest.revision
        {
            return Err(StoreError::Expired {
                asked: revision,
                oldest: oldest.revision,
            });
        }
        let start = self.log.partition_point(|c| c.revision <= revision);
        Ok(self
            .log
            .range(start..)
            .filter(|c| c.resource == resource && filter.matches(&c.object))
            .cloned()
            .collect())
    }

    pub fn get(&self, resource: usize, namespace: &str, name: &str) -> Result<Value, StoreError> {
        self.objects
            .get(&key(resource, namespace, name))
            .cloned()
            .ok_or_else(|| self.not_found(resource, name))
    }

    pub fn create(
        &mut self,
        resource: usize,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, StoreError> {
        let metadata = metadata_mut(&mut object)?;
        let name = match metadata.get("name").and_then(Value::as_str) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match metadata.get("generateName").and_then(Value::as_str) {
                Some(prefix) => format!("{prefix}{:05x}", self.next_uid + 1),
                None => {
                    return Err(self.invalid(
                        resource,
                        "",
                        vec![FieldError::new(
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )],
                    ));
                }
            },
        };
        let namespaced = self.registry[resource].namespaced;
        check_namespace(metadata, namespace, namespaced)?;
        let key = key(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                resource: self.registry[resource].qualified_resource(),
                name,
            });
        }
        self.next_uid += 1;
        metadata.insert("name".into(), name.into());
        if namespaced {
            metadata.insert("namespace".into(), namespace.into());
        }
        metadata.insert(
            "uid".into(),
            format!("00000000-0000-4000-8000-{:012x}", self.next_uid).into(),
        );
        metadata.insert("creationTimestamp".into(), now().into());
        metadata.insert("generation".into(), 1.into());
        metadata.remove("deletionTimestamp");
        metadata.remove("resourceVersion");
        self.commit(key, None, object, Scope::Main)
    }

    /// PUT: the whole object, refused if its resourceVersion is not the current one.
    pub fn replace(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        object: Value,
        scope: Scope,
    ) -> Result<Value, StoreError> {
        let key = key(resource, namespace, name);
        let current = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(resource, name))?;
        self.check_revision(&object, &current, resource, name)?;
        self.commit(key, Some(current), object, scope)
    }

    pub fn patch(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        patch: Patch,
        scope: Scope,
    ) -> Result<Value, StoreError> {
        let key = key(resource, namespace, name);
        let current = self.objects.get(&key).cloned();
        let Some(current) = current else {
            // Server-side apply creates what does not exist yet.
            return match patch {
                Patch::Apply { manager, object } if scope == Scope::Main => {
                    let created = self.create(resource, namespace, object.clone())?;
                    self.applied.insert((key, scope, manager), object);
                    Ok(created)
                }
                _ => Err(self.not_found(resource, name)),
            };
        };
        let mut updated = current.clone();
        match patch {
            Patch::Merge(body) => {
                self.check_revision(&body, &current, resource, name)?;
                json_patch::merge(&mut updated, &body);
            }
            Patch::Json(mut operations) => {
                // As the API server's JSON patch does, a test for null passes on a missing
                // path (kube's finalizer helper relies on it).
                operations.retain(|op| match op {
                    PatchOperation::Test(test) => {
                        !(test.value.is_null() && updated.pointer(test.path.as_str()).is_none())
                    }
                    _ => true,
                });
                json_patch::patch(&mut updated, &operations).map_err(|e| {
                    StoreError::Unprocessable(format!("the JSON patch did not apply: {e}"))
                })?
            }
            Patch::Apply { manager, object } => {
                self.check_revision(&object, &current, resource, name)?;
                let ownership = (key.clone(), scope, manager);
                if let Some(previous) = self.applied.get(&ownership) {
                    remove_unapplied(&mut updated, previous, &object);
                }
                json_patch::merge(&mut updated, &object);
                self.applied.insert(ownership, object);
            }
        }
        self.commit(key, Some(current), updated, scope)
    }

    /// Deletes at once, or marks the object for deletion while it has finalizers. Objects it
    /// owns are deleted after it, unless `orphan`.
    pub fn delete(
        &mut self,
        resource: usize,
        namespace: &str,
        name: &str,
        orphan: bool,
    ) -> Result<Value, StoreError> {
        let key = key(resource, namespace, name);
        let mut object = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| self.not_found(resource, name))?;
        if has_finalizers(&object) {
            if object["metadata"]["deletionTimestamp"].is_null() {
                object["metadata"]["deletionTimestamp"] = now().into();
                object["metadata"]["deletionGracePeriodSeconds"] = 0.into();
                return Ok(self.record(key, object, ChangeKind::Modified));
            }
            return Ok(object);
        }
        Ok(self.remove(key, orphan))
    }

    /// Applies the rules every write shares (and, for custom resources and CRDs, admission),
    /// stores the result and logs it.
    fn commit(
        &mut self,
        key: Key,
        current: Option<Value>,
        mut object: Value,
        scope: Scope,
    ) -> Result<Value, StoreError> {
        let rules = self.registry[key.resource].clone();
        if let Some(current) = &current {
            object = match scope {
                Scope::Status => {
                    let mut kept = current.clone();
                    kept["status"] = object.get("status").cloned().unwrap_or(Value::Null);
                    kept
                }
                Scope::Main => object,
            };
            if scope == Scope::Main && rules.status_subresource {
                match current.get("status") {
                    Some(status) => object["status"] = status.clone(),
                    None => {
                        object.as_object_mut().map(|o| o.remove("status"));
                    }
                }
            }
            // What the server owns cannot be changed by a client.
            for field in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match current["metadata"].get(field) {
                    Some(value) => object["metadata"][field] = value.clone(),
                    None => {
                        object["metadata"].as_object_mut().map(|m| m.remove(field));
                    }
                }
            }
        }
        if current.is_none() && rules.status_subresource {
            // A new object's status is the controllers' to write, not its creator's.
            object.as_object_mut().map(|o| o.remove("status"));
        }
        object["apiVersion"] = rules.api_version().into();
        object["kind"] = rules.kind.clone().into();
        if rules.kind == "Secret" {
            encode_string_data(&mut object);
        }
        if object.get("status").is_some_and(Value::is_null) {
            object.as_object_mut().map(|o| o.remove("status"));
        }
        if let Some(custom) = &rules.custom {
            let unknown = prune_unknown(custom, &mut object);
            let warnings = unknown_fields(&rules, unknown, self.validation)?;
            self.warnings.extend(warnings);
            default_and_validate(custom, &mut object, current.as_ref())
                .map_err(|causes| self.invalid(key.resource, &key.name, causes))?;
        }
        let served = if key.resource == CRDS {
            Some(admit_crd(&self.registry, &mut object, current.as_ref())?)
        } else {
            None
        };
        if let Some(current) = &current
            && without_metadata_and_status(&object) != without_metadata_and_status(current)
        {
            let generation = current["metadata"]["generation"].as_i64().unwrap_or(0);
            object["metadata"]["generation"] = (generation + 1).into();
        }
        if let Some(current) = &current {
            // A write that changes nothing is no change: no new revision, no watch event (or
            // every status write would wake its own controller again).
            let mut unchanged = object.clone();
            unchanged["metadata"]["resourceVersion"] =
                current["metadata"]["resourceVersion"].clone();
            if unchanged == *current {
                return Ok(unchanged);
            }
        }
        let deleting = !object["metadata"]["deletionTimestamp"].is_null();
        if deleting && !has_finalizers(&object) {
            self.objects.insert(key.clone(), object);
            return Ok(self.remove(key, false));
        }
        let kind = if current.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        let stored = self.record(key, object, kind);
        if let Some(served) = served {
            self.registry.serve(served);
        }
        Ok(stored)
    }

    fn not_found(&self, resource: usize, name: &str) -> StoreError {
        StoreError::NotFound {
            resource: self.registry[resource].qualified_resource(),
            name: name.to_owned(),
        }
    }

    fn invalid(&self, resource: usize, name: &str, causes: Vec<FieldError>) -> StoreError {
        invalid(&self.registry[resource], name, causes)
    }

    /// Optimistic concurrency: a write that names a resourceVersion must name the current one.
    fn check_revision(
        &self,
        body: &Value,
        current: &Value,
        resource: usize,
        name: &str,
    ) -> Result<(), StoreError> {
        match body["metadata"]["resourceVersion"].as_str() {
            Some(asked) if !asked.is_empty() && current["metadata"]["resourceVersion"] != asked => {
                Err(StoreError::Conflict {
                    resource: self.registry[resource].qualified_resource(),
                    name: name.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Stores (or removes) `object` as one revision, and its view in the other Event API if it
    /// is an Event.
    fn record(&mut self, key: Key, object: Value, kind: ChangeKind) -> Value {
        let mirror = self.event_mirror(&key, &object);
        let stored = self.record_one(key, object, kind);
        if let Some((key, object)) = mirror {
            let exists = self.objects.contains_key(&key);
            // The view follows its source: created, changed or gone with it.
            let kind = match (kind, exists) {
                (ChangeKind::Deleted, false) => return stored,
                (ChangeKind::Deleted, true) => ChangeKind::Deleted,
                (_, true) => ChangeKind::Modified,
                (_, false) => ChangeKind::Added,
            };
            self.record_one(key, object, kind);
        }
        stored
    }

    /// An Event's key and object in the other Event API.
    fn event_mirror(&self, key: &Key, object: &Value) -> Option<(Key, Value)> {
        let core = self.registry.find("", "v1", "events")?;
        let events_v1 = self.registry.find("events.k8s.io", "v1", "events")?;
        let (resource, view) = if key.resource == events_v1 {
            (core, events::to_core(object))
        } else if key.resource == core {
            (events_v1, events::to_events_v1(object))
        } else {
            return None;
        };
        let mirror_key = Key {
            resource,
            ..key.clone()
        };
        Some((mirror_key, view))
    }

    fn record_one(&mut self, key: Key, mut object: Value, kind: ChangeKind) -> Value {
        self.revision += 1;
        object["metadata"]["resourceVersion"] = self.revision.to_string().into();
        if kind == ChangeKind::Deleted {
            self.objects.remove(&key);
            self.applied.retain(|(k, _, _), _| *k != key);
        } else {
            self.objects.insert(key.clone(), object.clone());
        }
        if self.log.len() == LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(Change {
            revision: self.revision,
            resource: key.resource,
            kind,
            object: object.clone(),
        });
        self.notify.send_replace(self.revision);
        object
    }

    /// Removes an object and then, as the garbage collector would, the objects only it owned;
    /// a CRD takes its kind and every object of it along.
    fn remove(&mut self, key: Key, orphan: bool) -> Value {
        let object = self.objects[&key].clone();
        let uid = object["metadata"]["uid"].clone();
        let is_crd = key.resource == CRDS;
        let crd_name = key.name.clone();
        let removed = self.record(key, object, ChangeKind::Deleted);
        if is_crd && let Some(kind) = self.registry.withdraw(&crd_name) {
            let instances: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.resource == kind)
                .cloned()
                .collect();
            for instance in instances {
                let object = self.objects[&instance].clone();
                self.record(instance, object, ChangeKind::Deleted);
            }
        }
        if orphan {
            return removed;
        }
        let live_uids: Vec<Value> = self
            .objects
            .values()
            .map(|o| o["metadata"]["uid"].clone())
            .collect();
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| {
                let owners = o["metadata"]["ownerReferences"].as_array();
                owners.is_some_and(|owners| {
                    owners.iter().any(|r| r["uid"] == uid)
                        && owners.iter().all(|r| !live_uids.contains(&r["uid"]))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for dependent in dependents {
            let (resource, namespace, name) =
                (dependent.resource, dependent.namespace, dependent.name);
            // Already gone if it was a dependent of an earlier dependent.
            let _ = self.delete(resource, &namespace, &name, false);
        }
        removed
    }
}

fn key(resource: usize, namespace: &str, name: &str) -> Key {
    Key {
        resource,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    }
}

fn metadata_mut(object: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    let Some(fields) = object.as_object_mut() else {
        return Err(StoreError::BadRequest(
            "the body is not a JSON object".into(),
        ));
    };
    fields
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| StoreError::BadRequest("metadata is not an object".into()))
}

fn check_namespace(
    metadata: &mut Map<String, Value>,
    namespace: &str,
    namespaced: bool,
) -> Result<(), StoreError> {
    if !namespaced {
        // A cluster-scoped object has no namespace, whatever the client wrote.
        metadata.remove("namespace");
        return Ok(());
    }
    match metadata.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != namespace => Err(StoreError::BadRequest(format!(
            "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
        ))),
        _ => Ok(()),
    }
}

fn has_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

fn without_metadata_and_status(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(fields) = rest.as_object_mut() {
        for field in ["metadata", "status", "apiVersion", "kind"] {
            fields.remove(field);
        }
    }
    rest
}

/// Removes the fields a manager applied before and no longer applies.
fn remove_unapplied(object: &mut Value, previous: &Value, applied: &Value) {
    let (Some(fields), Some(previous)) = (object.as_object_mut(), previous.as_object()) else {
        return;
    };
    for (name, before) in previous {
        match applied.get(name) {
            None => {
                fields.remove(name);
            }
            Some(now) if before.is_object() && now.is_object() => {
                if let Some(field) = fields.get_mut(name) {
                    remove_unapplied(field, before, now);
                }
            }
            Some(_) => {}
        }
    }
}

/// Secrets are stored with `data` only, as the API server does with `stringData`.
fn encode_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(string_data) = secret.as_object_mut().and_then(|s| s.remove("stringData")) else {
        return;
    };
    let Some(entries) = string_data.as_object() else {
        return;
    };
    if !secret["data"].is_object() {
        secret["data"] = json!({});
    }
    for (name, value) in entries {
        let text = value.as_str().unwrap_or_default();
        secret["data"][name] = base64::engine::general_purpose::STANDARD
            .encode(text)
            .into();
    }
}

pub(super) fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .expect("the current second is a valid timestamp")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"containers": []}})
    }

    const PODS: usize = 0;
    const SECRETS: usize = 3;

    /// A CRD for `things`, whose schema is `spec`.
    pub fn crd(spec: Value) -> Value {
        json!({
            "metadata": {"name": "things.example.dev"},
            "spec": {
                "group": "example.dev",
                "names": {"plural": "things", "singular": "thing", "kind": "Thing", "shortNames": ["th"]},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": spec,
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        },
                    }},
                }],
            },
        })
    }

    /// A store serving `things` with an open spec; returns the kind's index.
    fn with_things() -> (Store, usize) {
        let mut store = Store::default();
        let open = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        store.create(CRDS, "", crd(open)).unwrap();
        let things = store.kind("example.dev", "v1", "things").unwrap();
        (store, things)
    }

    #[test]
    fn writes_naming_an_old_revision_conflict() {
        let mut store = Store::default();
        let created = store.create(PODS, "ns", pod("a")).unwrap();
        let mut edit = created.clone();
        edit["spec"]["nodeName"] = "n1".into();
        store
            .replace(PODS, "ns", "a", edit.clone(), Scope::Main)
            .unwrap();
        let stale = store.replace(PODS, "ns", "a", edit, Scope::Main);
        assert!(matches!(stale, Err(StoreError::Conflict { .. })));
    }

    #[test]
    fn status_and_spec_are_written_separately_and_spec_bumps_the_generation() {
        let (mut store, things) = with_things();
        store
            .create(
                things,
                "ns",
                json!({"metadata": {"name": "r"}, "spec": {"x": 1}}),
            )
            .unwrap();
        let status = Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"x": 9}}));
        let run = store
            .patch(things, "ns", "r", status, Scope::Status)
            .unwrap();
        assert_eq!(run["status"]["phase"], "Running");
        assert_eq!(run["spec"]["x"], 1);
        assert_eq!(run["metadata"]["generation"], 1);
        let spec = Patch::Merge(json!({"spec": {"x": 2}, "status": {"phase": "Failed"}}));
        let run = store.patch(things, "ns", "r", spec, Scope::Main).unwrap();
        assert_eq!(run["status"]["phase"], "Running");
        assert_eq!(run["metadata"]["generation"], 2);
    }

    #[test]
    fn finalizers_hold_deletion_and_owners_cascade() {
        let (mut store, things) = with_things();
        let owner = store
            .create(
                things,
                "ns",
                json!({"metadata": {"name": "r", "finalizers": ["f"]}}),
            )
            .unwrap();
        let mut child = pod("c");
        child["metadata"]["ownerReferences"] = json!([{"uid": owner["metadata"]["uid"]}]);
        store.create(PODS, "ns", child).unwrap();

        let marked = store.delete(things, "ns", "r", false).unwrap();
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(store.get(PODS, "ns", "c").is_ok());

        let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
        store
            .patch(things, "ns", "r", release, Scope::Main)
            .unwrap();
        assert!(store.get(things, "ns", "r").is_err());
        assert!(store.get(PODS, "ns", "c").is_err());
    }

    #[test]
    fn apply_removes_what_the_manager_stopped_applying() {
        let mut store = Store::default();
        let apply = |object: Value| Patch::Apply {
            manager: "op".into(),
            object,
        };
        let first = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}});
        store
            .patch(PODS, "ns", "a", apply(first), Scope::Main)
            .unwrap();
        let other = Patch::Merge(json!({"metadata": {"labels": {"z": "3"}}}));
        store.patch(PODS, "ns", "a", other, Scope::Main).unwrap();
        let second = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        let pod = store
            .patch(PODS, "ns", "a", apply(second), Scope::Main)
            .unwrap();
        assert_eq!(pod["metadata"]["labels"], json!({"x": "1", "z": "3"}));
    }

    #[test]
    fn watches_resume_from_a_revision_until_it_is_compacted() {
        let mut store = Store::default();
        store.create(PODS, "ns", pod("a")).unwrap();
        let after_a = store.revision();
        store.create(PODS, "ns", pod("b")).unwrap();
        store.delete(PODS, "ns", "a", false).unwrap();
        let changes = store
            .changes_since(PODS, after_a, &Filter::default())
            .unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [ChangeKind::Added, ChangeKind::Deleted]);
        assert_eq!(changes[1].object["metadata"]["name"], "a");
    }

    #[test]
    fn a_write_that_changes_nothing_is_not_a_revision() {
        let mut store = Store::default();
        store.create(PODS, "ns", pod("a")).unwrap();
        let before = store.revision();
        let same = Patch::Merge(json!({"spec": {"containers": []}}));
        store.patch(PODS, "ns", "a", same, Scope::Main).unwrap();
        assert_eq!(store.revision(), before);
    }

    #[test]
    fn lists_are_scoped_to_their_namespace() {
        let (mut store, things) = with_things();
        store.create(PODS, "a", pod("x")).unwrap();
        store.create(PODS, "b", pod("y")).unwrap();
        store.create(things, "a", pod("r")).unwrap();
        let in_a = Filter {
            namespace: Some("a".into()),
            ..Filter::default()
        };
        assert_eq!(store.list(PODS, &in_a).len(), 1);
        assert_eq!(store.list(PODS, &Filter::default()).len(), 2);
    }

    #[test]
    fn string_data_is_stored_as_data() {
        let mut store = Store::default();
        let secret = json!({"metadata": {"name": "s"}, "stringData": {"k": "hi"}});
        let stored = store.create(SECRETS, "ns", secret).unwrap();
        assert_eq!(stored["data"]["k"], "aGk=");
        assert!(stored.get("stringData").is_none());
    }

    #[test]
    fn a_crd_serves_its_kind_until_it_is_deleted_with_its_objects() {
        let (mut store, things) = with_things();
        let crd = store.get(CRDS, "", "things.example.dev").unwrap();
        assert!(crd["metadata"].get("namespace").is_none());
        assert_eq!(crd["status"]["conditions"][1]["type"], "Established");
        store.create(things, "ns", pod("t")).unwrap();
        store.delete(CRDS, "", "things.example.dev", false).unwrap();
        assert_eq!(store.kind("example.dev", "v1", "things"), None);
        let changes = store.changes_since(things, 0, &Filter::default()).unwrap();
        assert_eq!(changes.last().unwrap().kind, ChangeKind::Deleted);
    }

    #[test]
    fn custom_resources_are_pruned_defaulted_and_validated() {
        let mut store = Store::default();
        let spec = json!({
            "type": "object",
            "properties": {"size": {"type": "integer", "minimum": 1, "default": 3}},
        });
        store.create(CRDS, "", crd(spec)).unwrap();
        let things = store.kind("example.dev", "v1", "things").unwrap();
        let thing = |spec: Value| json!({"metadata": {"name": "t"}, "spec": spec});

        let (created, warnings) = store.validating(FieldValidation::Warn, |s| {
            s.create(things, "ns", thing(json!({"extra": true})))
        });
        let created = created.unwrap();
        assert_eq!(created["spec"], json!({"size": 3}));
        assert_eq!(warnings, ["unknown field \"spec.extra\""]);

        let (strict, _) = store.validating(FieldValidation::Strict, |s| {
            s.patch(
                things,
                "ns",
                "t",
                Patch::Merge(json!({"spec": {"extra": 1}})),
                Scope::Main,
            )
        });
        let message = strict.unwrap_err().to_string();
        assert!(
            message.contains("strict decoding error: unknown field \"spec.extra\""),
            "{message}"
        );

        let invalid = store.patch(
            things,
            "ns",
            "t",
            Patch::Merge(json!({"spec": {"size": 0}})),
            Scope::Main,
        );
        assert_eq!(
            invalid.unwrap_err().to_string(),
            "Thing.example.dev \"t\" is invalid: spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
        );
        assert_eq!(store.get(things, "ns", "t").unwrap()["spec"]["size"], 3);
    }

    #[test]
    fn a_crd_is_refused_when_its_rules_do_not_compile_or_its_names_are_taken() {
        let mut store = Store::default();
        let mut broken =
            crd(json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}));
        let refused = store.create(CRDS, "", broken.clone()).unwrap_err();
        assert!(matches!(refused, StoreError::Invalid { .. }), "{refused}");
        assert!(
            refused
                .to_string()
                .contains("x-kubernetes-validations[0].rule"),
            "{refused}"
        );

        broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
            json!({"type": "object"});
        store.create(CRDS, "", broken.clone()).unwrap();
        broken["metadata"]["name"] = "widgets.example.dev".into();
        broken["spec"]["names"]["plural"] = "widgets".into();
        let taken = store.create(CRDS, "", broken).unwrap_err();
        assert!(
            taken
                .to_string()
                .contains("already served by things.example.dev"),
            "{taken}"
        );
    }
}
