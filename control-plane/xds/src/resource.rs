//! Resources as the server shares them: encoded once, and grouped into sets that proxies share.
//!
//! A [`ResourceSet`] is built once per equivalence class (a scope's outbound clusters, the mesh's
//! endpoints) and handed to every proxy of that class: its order, its version and, per
//! subscription, which of its resources a subscription selects are computed once for all of them.
//! Its resources' bytes lie back to back in one buffer, so a response carrying neighbours carries
//! one slice of it.

use std::fmt;
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use crate::Any;
use crate::names::Names;
use crate::protobuf as wire;
use crate::version::{content_version, format_version, set_version};

/// One resource, encoded once and shared by every proxy that is sent it.
#[derive(Clone)]
pub struct Resource {
    name: Arc<str>,
    version: u64,
    /// The resource as one `resources` entry of a response (see [`wire::any_field`]); empty for a
    /// resource known only by name and version.
    field: Bytes,
}

impl Resource {
    /// `body`, encoded once and versioned by its bytes: equal versions mean equal bytes.
    pub fn new(name: impl Into<Arc<str>>, body: &Any) -> Self {
        let field = wire::any_field(body);
        Self {
            name: name.into(),
            version: content_version(&field),
            field,
        }
    }

    /// `body` under a version chosen by the caller (which promises it changes with the bytes).
    pub fn with_version(name: impl Into<Arc<str>>, version: u64, body: &Any) -> Self {
        Self {
            name: name.into(),
            version,
            field: wire::any_field(body),
        }
    }

    /// A resource a client holds of which only the name and version are known.
    pub(crate) fn known(name: Arc<str>, version: u64) -> Self {
        Self {
            name,
            version,
            field: Bytes::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// The version as the wire carries it.
    pub fn version_info(&self) -> String {
        format_version(self.version)
    }

    /// The resource decoded again: a copy, for checks and debugging, never for sending. Empty for
    /// a resource known only by name and version.
    pub fn body(&self) -> Any {
        wire::any_of_field(&self.field).unwrap_or_default()
    }

    /// Bytes of the encoded `Any`, with the few bytes of its field header.
    pub fn encoded_len(&self) -> usize {
        self.field.len()
    }

    pub(crate) fn field(&self) -> &Bytes {
        &self.field
    }
}

impl fmt::Debug for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resource")
            .field("name", &self.name)
            .field("version", &format_args!("{:016x}", self.version))
            .field("bytes", &self.field.len())
            .finish()
    }
}

impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.version == other.version && self.field == other.field
    }
}

/// The resources of one subscription in a set: their positions, and the version of the selection.
#[derive(Debug)]
pub(crate) struct Selection {
    pub(crate) indices: Box<[u32]>,
    pub(crate) version: u64,
}

/// Which of a set's resources a proxy gets.
#[derive(Clone, Debug)]
pub(crate) enum Pick {
    All,
    Some(Arc<Selection>),
}

/// Subscriptions remembered per set; a set lives for one snapshot, so this stays small.
const SELECTIONS_KEPT: usize = 64;

/// Resources sorted by name, each name once, shared by every proxy they are generated for.
pub struct ResourceSet {
    resources: Box<[Arc<Resource>]>,
    /// Every resource's entry, back to back; each resource's own bytes are a slice of this.
    encoded: Bytes,
    /// Where each resource's entry starts in `encoded`, and where the last one ends.
    offsets: Box<[usize]>,
    version: u64,
    /// What each recent subscription selects, keyed by the interned [`Names`]; the `Weak` keeps
    /// the key's address from being reused while it is here.
    selections: Mutex<Vec<(Weak<Names>, Pick)>>,
}

impl ResourceSet {
    /// Sorted by name, each name once: the last of a name.
    fn canonical(resources: impl IntoIterator<Item = Arc<Resource>>) -> Vec<Arc<Resource>> {
        let mut list: Vec<Arc<Resource>> = resources.into_iter().collect();
        // Stable: equal names stay in their order, and the later one takes the kept place.
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.dedup_by(|later, kept| {
            let same = later.name == kept.name;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        list
    }

    /// The set of `resources`; of two with one name, the last is kept (as a map built from the
    /// list would keep it).
    pub fn new(resources: impl IntoIterator<Item = Arc<Resource>>) -> Self {
        Self::of_canonical(Self::canonical(resources))
    }

    /// The set of a [`Self::canonical`] list.
    fn of_canonical(list: Vec<Arc<Resource>>) -> Self {
        let total = list.iter().map(|r| r.field.len()).sum();
        let mut buf = BytesMut::with_capacity(total);
        let mut offsets = Vec::with_capacity(list.len() + 1);
        for resource in &list {
            offsets.push(buf.len());
            buf.extend_from_slice(&resource.field);
        }
        offsets.push(buf.len());
        let encoded = buf.freeze();
        let resources: Box<[Arc<Resource>]> = list
            .iter()
            .zip(offsets.windows(2))
            .map(|(r, at)| {
                Arc::new(Resource {
                    name: Arc::clone(&r.name),
                    version: r.version,
                    field: encoded.slice(at[0]..at[1]),
                })
            })
            .collect();
        let version = set_version(resources.iter().map(|r| (r.name(), r.version)));
        Self {
            resources,
            encoded,
            offsets: offsets.into(),
            version,
            selections: Mutex::new(Vec::new()),
        }
    }

    pub fn empty() -> Self {
        Self::new([])
    }

    /// A hash of every `(name, version)`: equal versions mean equal sets.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Bytes of every resource's entry together: what a response holding the whole set carries.
    pub fn encoded_len(&self) -> usize {
        self.encoded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// In name order.
    pub fn resources(&self) -> &[Arc<Resource>] {
        &self.resources
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Arc<Resource>> {
        self.resources.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.position(name).map(|i| &self.resources[i])
    }

    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.resources
            .binary_search_by(|r| (*r.name).cmp(name))
            .ok()
    }

    /// The entries of resources `start..end` as one slice of the shared buffer.
    pub(crate) fn run(&self, start: usize, end: usize) -> Bytes {
        self.encoded.slice(self.offsets[start]..self.offsets[end])
    }

    /// What `names` selects of this set, computed once per set and subscription.
    pub(crate) fn select(&self, names: &Arc<Names>) -> Pick {
        let key = Arc::as_ptr(names);
        if let Some((_, pick)) = self
            .selections
            .lock()
            .iter()
            .find(|(known, _)| known.as_ptr() == key)
        {
            return pick.clone();
        }
        // Computed outside the lock: proxies racing on a new subscription both compute it, and
        // one result is kept.
        let pick = self.compute(names);
        let mut selections = self.selections.lock();
        if selections.len() >= SELECTIONS_KEPT {
            selections.retain(|(known, _)| known.strong_count() > 0);
            if selections.len() >= SELECTIONS_KEPT {
                selections.remove(0);
            }
        }
        selections.push((Arc::downgrade(names), pick.clone()));
        pick
    }

    /// Both lists are sorted: one walk.
    fn compute(&self, names: &Names) -> Pick {
        let wanted = names.as_slice();
        let mut indices = Vec::new();
        let mut w = 0;
        for (i, resource) in self.resources.iter().enumerate() {
            while w < wanted.len() && *wanted[w] < *resource.name {
                w += 1;
            }
            if w == wanted.len() {
                break;
            }
            if *wanted[w] == *resource.name {
                indices.push(i);
            }
        }
        if indices.len() == self.resources.len() {
            return Pick::All;
        }
        Pick::Some(Arc::new(self.selection(indices)))
    }

    /// A selection of these positions (ascending).
    pub(crate) fn selection(&self, indices: Vec<usize>) -> Selection {
        let version = set_version(indices.iter().map(|i| {
            let r = &self.resources[*i];
            (r.name(), r.version)
        }));
        Selection {
            // Sets hold far fewer than 2^32 resources.
            indices: indices.into_iter().map(|i| i as u32).collect(),
            version,
        }
    }
}

impl fmt::Debug for ResourceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceSet")
            .field("version", &format_args!("{:016x}", self.version))
            .field("resources", &self.resources)
            .finish()
    }
}

impl FromIterator<Arc<Resource>> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = Arc<Resource>>>(iter: I) -> Self {
        Self::new(iter)
    }
}

/// Equal sets built separately, shared: the first set of a version handed in is kept (weakly)
/// and handed out for every later equal one. Sets built one per scope (the namespaces of a mesh
/// without `Sidecar`s all see the same clusters, listeners and routes) then hold one copy of
/// their bytes instead of one per scope.
#[derive(Debug, Default)]
pub struct Interner {
    inner: Mutex<Interned>,
}

#[derive(Debug, Default)]
struct Interned {
    by_version: std::collections::HashMap<u64, Weak<ResourceSet>>,
    /// Entries after the last sweep of dropped sets.
    swept_at: usize,
}

impl Interner {
    /// The set of `resources` (as [`ResourceSet::new`] makes it), or the equal one already shared.
    pub fn set(&self, resources: Vec<Arc<Resource>>) -> Arc<ResourceSet> {
        let list = ResourceSet::canonical(resources);
        let version = set_version(list.iter().map(|r| (r.name(), r.version)));
        let mut inner = self.inner.lock();
        if let Some(kept) = inner.by_version.get(&version).and_then(Weak::upgrade) {
            return kept;
        }
        if inner.by_version.len() > 2 * inner.swept_at.max(64) {
            inner.by_version.retain(|_, kept| kept.strong_count() > 0);
            inner.swept_at = inner.by_version.len();
        }
        let set = Arc::new(ResourceSet::of_canonical(list));
        inner.by_version.insert(version, Arc::downgrade(&set));
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::intern;

    fn mk(name: &str, body: &str) -> Arc<Resource> {
        Arc::new(Resource::new(
            name,
            &Any {
                type_url: "t".to_owned(),
                value: body.as_bytes().to_vec(),
            },
        ))
    }

    #[test]
    fn a_set_is_sorted_keeps_the_last_of_a_name_and_shares_one_buffer() {
        let set = ResourceSet::new([mk("b", "1"), mk("a", "1"), mk("b", "2"), mk("b", "3")]);
        let names: Vec<&str> = set.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(set.get("b").map(|r| r.body().value), Some(b"3".to_vec()));
        let whole = set.run(0, 2);
        assert_eq!(set.resources()[0].field().as_ptr(), whole.as_ptr());
        assert_eq!(
            whole.len(),
            set.iter().map(|r| r.encoded_len()).sum::<usize>()
        );
    }

    #[test]
    fn versions_follow_content() {
        assert_eq!(mk("a", "x").version(), mk("b", "x").version());
        assert_ne!(mk("a", "x").version(), mk("a", "y").version());
        let one = ResourceSet::new([mk("a", "x"), mk("b", "x")]);
        let again = ResourceSet::new([mk("b", "x"), mk("a", "x")]);
        let other = ResourceSet::new([mk("a", "x"), mk("b", "y")]);
        assert_eq!(one.version(), again.version());
        assert_ne!(one.version(), other.version());
    }

    #[test]
    fn a_selection_is_computed_once_per_subscription() {
        let set = ResourceSet::new([mk("a", "1"), mk("b", "1"), mk("c", "1")]);
        let names = intern(&["c".to_owned(), "a".to_owned(), "zzz".to_owned()]);
        let Pick::Some(first) = set.select(&names) else {
            panic!("a and c are not all of the set");
        };
        assert_eq!(&*first.indices, &[0, 2]);
        let Pick::Some(second) = set.select(&names) else {
            panic!("same subscription, same selection");
        };
        assert!(Arc::ptr_eq(&first, &second));
        let everything = intern(&["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        assert!(matches!(set.select(&everything), Pick::All));
    }
    #[test]
    fn equal_sets_built_apart_share_one_copy() {
        let interner = Interner::default();
        let build = |body: &str| {
            Arc::new(Resource::new(
                body,
                &Any {
                    type_url: "t".to_owned(),
                    value: body.as_bytes().to_vec(),
                },
            ))
        };
        let first = interner.set(vec![build("x"), build("y")]);
        let again = interner.set(vec![build("y"), build("x")]);
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            first.version(),
            ResourceSet::new(vec![build("x"), build("y")]).version()
        );
        assert!(!Arc::ptr_eq(&first, &interner.set(vec![build("x")])));
        // Once nobody holds it, an equal set is built anew.
        let version = first.version();
        drop((first, again));
        assert_eq!(
            interner.set(vec![build("x"), build("y")]).version(),
            version
        );
    }
}
