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
    fn updates_touch_single_objects_and_keep_precedence() {
        let mut index = Index::default();
        index.reset("kube:Namespace", vec![mk_namespace("one")]);
        index.take_changes();
        index.update("kube:Namespace", vec![mk_namespace("two")], Vec::new());
        assert_eq!(index.objects().len(), 2);
        assert_eq!(index.take_changes(), BTreeSet::from([Kind::Namespace]));
        index.update("kube:Namespace", vec![mk_namespace("two")], Vec::new());
        assert!(index.take_changes().is_empty());
        // A key two origins hold survives the removal from one of them.
        index.reset("z.yaml", vec![mk_namespace("two")]);
        let two = mk_namespace("two").key();
        index.update("kube:Namespace", Vec::new(), vec![two.clone()]);
        assert!(index.objects().contains_key(&two));
        index.update(
            "kube:Namespace",
            Vec::new(),
            vec![mk_namespace("one").key()],
        );
        assert_eq!(index.objects().len(), 1);
        index.reset("z.yaml", Vec::new());
        assert!(index.objects().is_empty());
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
