//! The index: every object from every source, kept per origin so one file (or one watch re-list)
//! can be replaced atomically. Synchronous; the async sources drive it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshd_model::{Kind, Object, ObjectKey};

/// Where objects came from: a file path, or a watch.
pub type Origin = String;

#[derive(Default)]
pub struct Index {
    by_origin: BTreeMap<Origin, BTreeMap<ObjectKey, Object>>,
    merged: Arc<BTreeMap<ObjectKey, Object>>,
    /// Kinds changed since the last `take_changes`.
    changed: BTreeSet<Kind>,
}

impl Index {
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

    pub fn objects(&self) -> Arc<BTreeMap<ObjectKey, Object>> {
        self.merged.clone()
    }

    /// The kinds changed since the last call.
    pub fn take_changes(&mut self) -> BTreeSet<Kind> {
        std::mem::take(&mut self.changed)
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
        assert_eq!(index.objects().len(), 3);
        assert_eq!(index.take_changes(), BTreeSet::from([Kind::Namespace]));
        index.reset("a.yaml", vec![mk_namespace("one")]);
        assert_eq!(index.objects().len(), 2);
        index.reset("b.yaml", Vec::new());
        assert_eq!(
            index
                .objects()
                .keys()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>(),
            vec!["one"]
        );
    }

    #[test]
    fn unchanged_reset_reports_no_change() {
        let mut index = Index::default();
        index.reset("a.yaml", vec![mk_namespace("one")]);
        index.take_changes();
        index.reset("a.yaml", vec![mk_namespace("one")]);
        assert!(index.take_changes().is_empty());
    }
}
