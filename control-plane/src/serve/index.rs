//! The index: every object from every source, kept per origin so one file (or one watch re-list)
//! can be replaced atomically, with each origin's invalid objects and the JWKS documents fetched
//! so far. Synchronous; the async sources drive it through [`Index::apply`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshd_model::{InvalidObject, JwksState, Kind, Object, ObjectKey, SourceEvent};

/// Where objects came from: a file path, or a watch.
pub type Origin = String;

#[derive(Default)]
pub struct Index {
    by_origin: BTreeMap<Origin, BTreeMap<ObjectKey, Object>>,
    merged: Arc<BTreeMap<ObjectKey, Object>>,
    /// Kinds changed since the last `take_changes`.
    changed: BTreeSet<Kind>,
    invalid: BTreeMap<Origin, Vec<InvalidObject>>,
    jwks: BTreeMap<String, JwksState>,
    /// The JWKS documents changed since the last `take_changes`.
    jwks_changed: bool,
    /// Sources that have not been read completely yet.
    unsynced: BTreeSet<String>,
    /// Objects left out of snapshots, as they were when left out, and why: until they change.
    quarantined: BTreeMap<ObjectKey, (Object, String)>,
}

/// What changed since the last [`Index::take_changes`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub kinds: BTreeSet<Kind>,
    pub jwks: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() && !self.jwks
    }
}

impl Index {
    /// An index that waits for `sources` to report `Synced`.
    pub fn new(sources: impl IntoIterator<Item = String>) -> Self {
        Index {
            unsynced: sources.into_iter().collect(),
            ..Index::default()
        }
    }

    /// Applies one source event.
    pub fn apply(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Reset {
                origin,
                objects,
                errors,
            } => {
                self.set_invalid(&origin, errors);
                self.reset(&origin, objects);
            }
            SourceEvent::Update {
                origin,
                apply,
                delete,
                errors,
            } => {
                if let Some(errors) = errors {
                    self.set_invalid(&origin, errors);
                }
                self.update(&origin, apply, delete);
            }
            SourceEvent::Synced { source } => {
                self.unsynced.remove(&source);
            }
            SourceEvent::Quarantine { key, reason } => {
                // An object that is gone or already out has nothing to leave out.
                if let Some(object) = self.merged.get(&key)
                    && !self.quarantined.contains_key(&key)
                {
                    tracing::warn!(object = %key, %reason, "leaving the object out until it changes");
                    self.changed.insert(key.kind);
                    self.quarantined.insert(key, (object.clone(), reason));
                }
            }
            SourceEvent::Jwks { uri, state } => {
                let changed = match state {
                    Some(state) => self.jwks.insert(uri, state.clone()) != Some(state),
                    None => self.jwks.remove(&uri).is_some(),
                };
                self.jwks_changed |= changed;
            }
        }
    }

    /// Every source has been read completely once.
    pub fn synced(&self) -> bool {
        self.unsynced.is_empty()
    }

    fn set_invalid(&mut self, origin: &str, errors: Vec<InvalidObject>) {
        for e in &errors {
            tracing::warn!(error = %e, "invalid object skipped");
        }
        if errors.is_empty() {
            self.invalid.remove(origin);
        } else {
            self.invalid.insert(origin.to_string(), errors);
        }
    }

    /// Every object a source could not use, by origin.
    pub fn invalid(&self) -> Vec<InvalidObject> {
        self.invalid.values().flatten().cloned().collect()
    }

    /// The JWKS documents fetched so far, by URI.
    pub fn jwks(&self) -> &BTreeMap<String, JwksState> {
        &self.jwks
    }

    /// Replaces everything `origin` contributed with `objects`.
    pub fn reset(&mut self, origin: &str, objects: Vec<Object>) {
        let new: BTreeMap<ObjectKey, Object> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let old = self.by_origin.remove(origin).unwrap_or_default();
        for (k, v) in &new {
            if old.get(k) != Some(v) {
                self.changed.insert(k.kind);
            }
        }
        for k in old.keys() {
            if !new.contains_key(k) {
                self.changed.insert(k.kind);
            }
        }
        if !new.is_empty() {
            self.by_origin.insert(origin.to_string(), new);
        }
        if !self.changed.is_empty() {
            self.rebuild();
        }
    }

    /// Adds or replaces `apply` and removes `delete` in what `origin` contributed (a watch
    /// event), touching only those keys of the merged view.
    pub fn update(&mut self, origin: &str, apply: Vec<Object>, delete: Vec<ObjectKey>) {
        let mut touched = Vec::new();
        let objects = self.by_origin.entry(origin.to_string()).or_default();
        for key in delete {
            if objects.remove(&key).is_some() {
                touched.push(key);
            }
        }
        for object in apply {
            let key = object.key();
            if objects.get(&key) != Some(&object) {
                objects.insert(key.clone(), object);
                touched.push(key);
            }
        }
        if objects.is_empty() {
            self.by_origin.remove(origin);
        }
        if touched.is_empty() {
            return;
        }
        // Cloned only when a published snapshot still shares the map.
        let merged = Arc::make_mut(&mut self.merged);
        for key in touched {
            self.changed.insert(key.kind);
            // The same precedence as `rebuild`: the last origin holding the key wins.
            match self.by_origin.values().rev().find_map(|o| o.get(&key)) {
                Some(winner) => merged.insert(key, winner.clone()),
                None => merged.remove(&key),
            };
        }
    }

    fn rebuild(&mut self) {
        let mut merged = BTreeMap::new();
        // Origins are visited in order, so when two files define one object the later path wins,
        // deterministically.
        for objects in self.by_origin.values() {
            for (k, v) in objects {
                merged.insert(k.clone(), v.clone());
            }
        }
        self.merged = Arc::new(merged);
    }

    /// The objects a snapshot is assembled from: all but the quarantined ones. A quarantined
    /// object that changed since is back (its new form gets its own chance).
    pub fn objects_for_snapshot(&mut self) -> Arc<BTreeMap<ObjectKey, Object>> {
        let merged = &self.merged;
        self.quarantined
            .retain(|key, (object, _)| merged.get(key) == Some(object));
        if self.quarantined.is_empty() {
            return self.merged.clone();
        }
        let mut objects = (*self.merged).clone();
        for key in self.quarantined.keys() {
            objects.remove(key);
        }
        Arc::new(objects)
    }

    /// The objects left out, and why.
    pub fn quarantined(&self) -> impl Iterator<Item = (&ObjectKey, &str)> {
        self.quarantined
            .iter()
            .map(|(key, (_, reason))| (key, reason.as_str()))
    }

    /// What changed since the last call.
    /// The kinds changed since the last [`Index::take_changes`].
    pub fn pending_kinds(&self) -> &BTreeSet<Kind> {
        &self.changed
    }

    pub fn take_changes(&mut self) -> Changes {
        Changes {
            kinds: std::mem::take(&mut self.changed),
            jwks: std::mem::take(&mut self.jwks_changed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshd_model::input::ObjectMeta;
    use meshd_model::input::kube::Namespace;

    fn mk_namespace(name: &str) -> Object {
        Object::Namespace(Arc::new(Namespace {
            metadata: ObjectMeta {
                name: name.into(),
                ..Default::default()
            },
        }))
    }

    #[test]
    fn resetting_an_origin_replaces_only_its_objects() {
        let mut index = Index::default();
        index.reset("a.yaml", vec![mk_namespace("one"), mk_namespace("two")]);
        index.reset("b.yaml", vec![mk_namespace("three")]);
        assert_eq!(index.objects_for_snapshot().len(), 3);
        assert_eq!(
            index.take_changes().kinds,
            BTreeSet::from([Kind::Namespace])
        );
        index.reset("a.yaml", vec![mk_namespace("one")]);
        assert_eq!(index.objects_for_snapshot().len(), 2);
        index.reset("b.yaml", Vec::new());
        assert_eq!(
            index
                .objects_for_snapshot()
                .keys()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            vec!["one"]
        );
    }

    #[test]
    fn updates_touch_single_objects_and_keep_precedence() {
        let mut index = Index::default();
        index.reset("kube:Namespace", vec![mk_namespace("one")]);
        index.take_changes();
        index.update("kube:Namespace", vec![mk_namespace("two")], Vec::new());
        assert_eq!(index.objects_for_snapshot().len(), 2);
        assert_eq!(
            index.take_changes().kinds,
            BTreeSet::from([Kind::Namespace])
        );
        index.update("kube:Namespace", vec![mk_namespace("two")], Vec::new());
        assert!(index.take_changes().is_empty());
        // A key two origins hold survives the removal from one of them.
        index.reset("z.yaml", vec![mk_namespace("two")]);
        let two = mk_namespace("two").key();
        index.update("kube:Namespace", Vec::new(), vec![two.clone()]);
        assert!(index.objects_for_snapshot().contains_key(&two));
        index.update(
            "kube:Namespace",
            Vec::new(),
            vec![mk_namespace("one").key()],
        );
        assert_eq!(index.objects_for_snapshot().len(), 1);
        index.reset("z.yaml", Vec::new());
        assert!(index.objects_for_snapshot().is_empty());
    }

    #[test]
    fn unchanged_reset_reports_no_change() {
        let mut index = Index::default();
        index.reset("a.yaml", vec![mk_namespace("one")]);
        index.take_changes();
        index.reset("a.yaml", vec![mk_namespace("one")]);
        assert!(index.take_changes().is_empty());
    }

    #[test]
    fn jwks_documents_count_as_changes_only_when_they_differ() {
        let mut index = Index::new(["file:/mesh".to_string()]);
        assert!(!index.synced());
        index.apply(SourceEvent::Synced {
            source: "file:/mesh".to_string(),
        });
        assert!(index.synced());
        let state = JwksState {
            keys: Some("{\"keys\":[]}".to_string()),
            error: None,
        };
        let event = |state: Option<JwksState>| SourceEvent::Jwks {
            uri: "https://keys.example/jwks.json".to_string(),
            state,
        };
        index.apply(event(Some(state.clone())));
        assert!(index.take_changes().jwks);
        index.apply(event(Some(state)));
        assert!(index.take_changes().is_empty());
        index.apply(event(None));
        assert!(index.take_changes().jwks);
        assert!(index.jwks().is_empty());
    }

    #[test]
    fn a_quarantined_object_stays_out_until_it_changes() {
        let mut index = Index::default();
        index.reset("a.yaml", vec![mk_namespace("one"), mk_namespace("two")]);
        index.take_changes();
        let two = mk_namespace("two").key();
        index.apply(SourceEvent::Quarantine {
            key: two.clone(),
            reason: "Envoy would reject it".to_string(),
        });
        assert!(!index.take_changes().is_empty(), "a new snapshot is due");
        assert!(!index.objects_for_snapshot().contains_key(&two));
        assert_eq!(index.quarantined().count(), 1);
        // The same object again: still out.
        index.reset("a.yaml", vec![mk_namespace("one"), mk_namespace("two")]);
        assert!(!index.objects_for_snapshot().contains_key(&two));
        // Changed: back in.
        let mut changed = Namespace {
            metadata: ObjectMeta {
                name: "two".into(),
                ..Default::default()
            },
        };
        changed.metadata.labels.insert("fixed".into(), "yes".into());
        index.reset(
            "a.yaml",
            vec![mk_namespace("one"), Object::Namespace(Arc::new(changed))],
        );
        assert!(index.objects_for_snapshot().contains_key(&two));
        assert_eq!(index.quarantined().count(), 0);
    }

    #[test]
    fn invalid_objects_are_kept_per_origin() {
        let mut index = Index::default();
        let bad = |n: usize| InvalidObject::file("a.yaml", n, "bad".to_string());
        index.apply(SourceEvent::Reset {
            origin: "a.yaml".to_string(),
            objects: vec![mk_namespace("one")],
            errors: vec![bad(2), bad(3)],
        });
        assert_eq!(index.invalid().len(), 2);
        index.apply(SourceEvent::Update {
            origin: "a.yaml".to_string(),
            apply: Vec::new(),
            delete: Vec::new(),
            errors: None,
        });
        assert_eq!(index.invalid().len(), 2, "no errors given: kept");
        index.apply(SourceEvent::Reset {
            origin: "a.yaml".to_string(),
            objects: Vec::new(),
            errors: Vec::new(),
        });
        assert!(index.invalid().is_empty());
    }
}
