//! What a proxy should hold of one type, as shared parts, and what differs from what it holds.
//!
//! A proxy's answer is a few shared [`ResourceSet`]s (its scope's outbound set, its own inbound
//! set), each with the part its subscription selects. Per proxy only that short list is kept, for
//! what was sent and what was accepted; nothing is copied per name.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::names::Names;
use crate::resource::Pick;
use crate::version::StableHasher;
use crate::{Resource, ResourceSet};

/// One generated set, and which of its resources the proxy gets.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    set: Arc<ResourceSet>,
    pick: Pick,
}

impl Part {
    fn len(&self) -> usize {
        match &self.pick {
            Pick::All => self.set.len(),
            Pick::Some(selection) => selection.indices.len(),
        }
    }

    /// The position in the set of the `k`th resource picked.
    fn at(&self, k: usize) -> usize {
        match &self.pick {
            Pick::All => k,
            Pick::Some(selection) => selection.indices[k] as usize,
        }
    }

    fn resource(&self, k: usize) -> &Arc<Resource> {
        &self.set.resources()[self.at(k)]
    }

    fn version(&self) -> u64 {
        match &self.pick {
            Pick::All => self.set.version(),
            Pick::Some(selection) => selection.version,
        }
    }

    /// The picked position of `name`, if it is picked.
    fn find(&self, name: &str) -> Option<usize> {
        let i = self.set.position(name)?;
        match &self.pick {
            Pick::All => Some(i),
            Pick::Some(selection) => selection.indices.binary_search(&(i as u32)).ok(),
        }
    }

    /// Whether both pick the same resources of the same set.
    fn same_as(&self, other: &Part) -> bool {
        Arc::ptr_eq(&self.set, &other.set) && self.len() == other.len() && {
            match (&self.pick, &other.pick) {
                (Pick::All, Pick::All) => true,
                (Pick::Some(a), Pick::Some(b)) => Arc::ptr_eq(a, b) || a.indices == b.indices,
                _ => false,
            }
        }
    }
}

/// Where a resource is in a [`Desired`]: part, and position among that part's picks.
pub(crate) type Loc = (usize, usize);

/// Resources `start..end` (picked positions) of one part's set that are also neighbours in it.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    set: Arc<ResourceSet>,
    start: usize,
    end: usize,
}

impl Span {
    /// Their entries, as one shared slice.
    pub(crate) fn bytes(&self) -> Bytes {
        self.set.run(self.start, self.end)
    }

    pub(crate) fn resources(&self) -> &[Arc<Resource>] {
        &self.set.resources()[self.start..self.end]
    }
}

/// What a proxy should hold of one type.
#[derive(Clone, Debug, Default)]
pub(crate) struct Desired {
    parts: Vec<Part>,
    version: u64,
}

impl Desired {
    /// What `names` selects of the generated sets (`None`: everything). A name in an earlier set
    /// hides the same name in a later one: a response holds each name once.
    pub(crate) fn select(generated: Vec<Arc<ResourceSet>>, names: Option<&Arc<Names>>) -> Self {
        let mut parts: Vec<Part> = Vec::with_capacity(generated.len());
        for set in generated {
            let pick = match names {
                None => Pick::All,
                Some(names) => set.select(names),
            };
            let part = Part { set, pick };
            let hidden = (0..part.len()).any(|k| {
                parts
                    .iter()
                    .any(|p| p.find(part.resource(k).name()).is_some())
            });
            let part = if hidden {
                let kept = (0..part.len())
                    .filter(|k| {
                        let name = part.resource(*k).name();
                        parts.iter().all(|p| p.find(name).is_none())
                    })
                    .map(|k| part.at(k))
                    .collect();
                let selection = part.set.selection(kept);
                Part {
                    pick: Pick::Some(Arc::new(selection)),
                    set: part.set,
                }
            } else {
                part
            };
            parts.push(part);
        }
        let version = match parts.as_slice() {
            [one] => one.version(),
            parts => {
                let mut hash = StableHasher::new();
                for part in parts {
                    hash.word(part.version());
                }
                hash.finish()
            }
        };
        Self { parts, version }
    }

    /// Equal versions mean the same names at the same versions.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.parts
            .iter()
            .flat_map(|p| (0..p.len()).map(move |k| p.resource(k)))
    }

    pub(crate) fn find(&self, name: &str) -> Option<Loc> {
        self.parts
            .iter()
            .enumerate()
            .find_map(|(i, p)| Some((i, p.find(name)?)))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        let (part, k) = self.find(name)?;
        Some(self.parts[part].resource(k))
    }

    /// Everything, as runs of neighbours.
    pub(crate) fn spans(&self) -> Vec<Span> {
        let all: Vec<Loc> = self
            .parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..p.len()).map(move |k| (i, k)))
            .collect();
        self.spans_of(all)
    }

    /// Some resources, as runs of neighbours (in part order, then name order).
    pub(crate) fn spans_of(&self, mut locs: Vec<Loc>) -> Vec<Span> {
        locs.sort_unstable();
        locs.dedup();
        let mut spans: Vec<Span> = Vec::new();
        for (part, k) in locs {
            let p = &self.parts[part];
            let at = p.at(k);
            match spans.last_mut() {
                Some(last) if Arc::ptr_eq(&last.set, &p.set) && last.end == at => last.end += 1,
                _ => spans.push(Span {
                    set: Arc::clone(&p.set),
                    start: at,
                    end: at + 1,
                }),
            }
        }
        spans
    }
}

/// How a proxy's holdings differ from what it should hold.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// What it lacks or holds at another version.
    pub(crate) changed: Vec<Loc>,
    /// Names it holds at another version.
    pub(crate) updated: Vec<Arc<str>>,
    /// Names it holds that it should not.
    pub(crate) removed: Vec<Arc<str>>,
}

/// `desired` against `held`, walking each pair of corresponding parts in name order; parts
/// unchanged since (the same shared selection of the same set) are skipped whole.
pub(crate) fn diff(held: &Desired, desired: &Desired) -> Changes {
    let mut changes = Changes::default();
    // Present on one side of a part pair only: may still be in another part of the other side.
    let mut added: Vec<Loc> = Vec::new();
    let mut dropped: Vec<Arc<str>> = Vec::new();
    for (i, want) in desired.parts.iter().enumerate() {
        let Some(have) = held.parts.get(i) else {
            added.extend((0..want.len()).map(|k| (i, k)));
            continue;
        };
        if have.same_as(want) {
            continue;
        }
        let (mut h, mut w) = (0, 0);
        while w < want.len() {
            let wr = want.resource(w);
            if h < have.len() {
                let hr = have.resource(h);
                match hr.name().cmp(wr.name()) {
                    std::cmp::Ordering::Less => {
                        dropped.push(Arc::clone(hr.shared_name()));
                        h += 1;
                        continue;
                    }
                    std::cmp::Ordering::Equal => {
                        if hr.version() != wr.version() {
                            changes.changed.push((i, w));
                            changes.updated.push(Arc::clone(wr.shared_name()));
                        }
                        h += 1;
                        w += 1;
                        continue;
                    }
                    std::cmp::Ordering::Greater => {}
                }
            }
            added.push((i, w));
            w += 1;
        }
        dropped.extend((h..have.len()).map(|k| Arc::clone(have.resource(k).shared_name())));
    }
    for have in held.parts.iter().skip(desired.parts.len()) {
        dropped.extend((0..have.len()).map(|k| Arc::clone(have.resource(k).shared_name())));
    }
    for (i, k) in added {
        let resource = desired.parts[i].resource(k);
        match held.get(resource.name()) {
            Some(h) if h.version() == resource.version() => {}
            Some(_) => {
                changes.changed.push((i, k));
                changes.updated.push(Arc::clone(resource.shared_name()));
            }
            None => changes.changed.push((i, k)),
        }
    }
    changes.removed = dropped
        .into_iter()
        .filter(|name| desired.find(name).is_none())
        .collect();
    changes
}

/// `desired` against names and versions a client declared it holds.
pub(crate) fn diff_known(known: &HashMap<Arc<str>, u64>, desired: &Desired) -> Changes {
    let mut changes = Changes::default();
    for (i, part) in desired.parts.iter().enumerate() {
        for k in 0..part.len() {
            let resource = part.resource(k);
            match known.get(resource.name()) {
                Some(version) if *version == resource.version() => {}
                Some(_) => {
                    changes.changed.push((i, k));
                    changes.updated.push(Arc::clone(resource.shared_name()));
                }
                None => changes.changed.push((i, k)),
            }
        }
    }
    let mut removed: Vec<Arc<str>> = known
        .keys()
        .filter(|name| desired.find(name).is_none())
        .cloned()
        .collect();
    removed.sort_unstable();
    changes.removed = removed;
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Any;
    use crate::names::intern;

    fn mk(name: &str, version: &str) -> Arc<Resource> {
        Arc::new(Resource::new(
            name,
            &Any {
                type_url: "t".to_owned(),
                value: format!("{name}@{version}").into_bytes(),
            },
        ))
    }

    fn set(items: &[(&str, &str)]) -> Arc<ResourceSet> {
        Arc::new(items.iter().map(|(n, v)| mk(n, v)).collect())
    }

    fn names_of(desired: &Desired, locs: &[Loc]) -> Vec<String> {
        desired
            .spans_of(locs.to_vec())
            .iter()
            .flat_map(|s| s.resources().iter().map(|r| r.name().to_owned()))
            .collect()
    }

    #[test]
    fn an_earlier_part_hides_a_name_in_a_later_one() {
        let outbound = set(&[("a", "1"), ("b", "1")]);
        let inbound = set(&[("b", "2"), ("c", "1")]);
        let desired = Desired::select(vec![outbound, inbound], None);
        let all: Vec<String> = desired
            .iter()
            .map(|r| r.body().value)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .collect();
        assert_eq!(all, ["a@1", "b@1", "c@1"]);
    }

    #[test]
    fn neighbours_are_one_span() {
        let whole = set(&[("a", "1"), ("b", "1"), ("c", "1"), ("d", "1")]);
        let desired = Desired::select(vec![whole], None);
        assert_eq!(desired.spans().len(), 1);
        let spans = desired.spans_of(vec![(0, 3), (0, 0), (0, 1)]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].resources().len(), 2);
    }

    #[test]
    fn a_diff_names_changed_new_and_removed_resources() {
        let held = Desired::select(vec![set(&[("a", "1"), ("b", "1"), ("c", "1")])], None);
        let desired = Desired::select(vec![set(&[("a", "1"), ("b", "2"), ("d", "1")])], None);
        let changes = diff(&held, &desired);
        assert_eq!(names_of(&desired, &changes.changed), ["b", "d"]);
        assert_eq!(changes.updated, [Arc::from("b")]);
        assert_eq!(changes.removed, [Arc::from("c")]);
        assert!(diff(&desired, &desired).changed.is_empty());
    }

    #[test]
    fn a_name_moving_between_parts_is_neither_sent_nor_removed() {
        let held = Desired::select(vec![set(&[("a", "1")]), set(&[("b", "1")])], None);
        let desired = Desired::select(vec![set(&[("a", "1"), ("b", "1")]), set(&[])], None);
        let changes = diff(&held, &desired);
        assert!(changes.changed.is_empty(), "{changes:?}");
        assert!(changes.removed.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_subscription_selects_from_every_part() {
        let names = intern(&["b".to_owned(), "c".to_owned()]);
        let desired = Desired::select(
            vec![
                set(&[("a", "1"), ("b", "1")]),
                set(&[("c", "1"), ("d", "1")]),
            ],
            Some(&names),
        );
        let picked: Vec<&str> = desired.iter().map(|r| r.name()).collect();
        assert_eq!(picked, ["b", "c"]);
        assert!(desired.get("a").is_none());
    }

    #[test]
    fn declared_versions_are_compared_by_value() {
        let desired = Desired::select(vec![set(&[("a", "1"), ("b", "1")])], None);
        let a = desired.get("a").map(|r| r.version()).unwrap_or_default();
        let known = HashMap::from([
            (Arc::from("a"), a),
            (Arc::from("b"), 0),
            (Arc::from("gone"), 1),
        ]);
        let changes = diff_known(&known, &desired);
        assert_eq!(names_of(&desired, &changes.changed), ["b"]);
        assert_eq!(changes.removed, [Arc::from("gone")]);
    }
}
