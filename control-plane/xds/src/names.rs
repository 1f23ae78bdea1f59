//! Subscribed names, interned: proxies that ask for the same names share one sorted list.
//!
//! A SotW EDS request lists every cluster a proxy has (1,300 names in the benchmark mesh) and is
//! sent again with every ACK; proxies of one scope send the same list. Kept per proxy, those lists
//! were a fifth of the server's heap, and sorting them on every request a share of its CPU. Here a
//! request's list is looked up by a hash of it as sent, so an unchanged list costs one pass over
//! its bytes, and proxies sending the same list share one [`Names`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Weak};

use parking_lot::Mutex;

use crate::version::StableHasher;

/// A sorted list of distinct resource names.
#[derive(PartialEq, Eq)]
pub struct Names {
    names: Box<[Arc<str>]>,
}

impl Names {
    pub fn contains(&self, name: &str) -> bool {
        self.names.binary_search_by(|n| (**n).cmp(name)).is_ok()
    }

    /// In order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[Arc<str>] {
        &self.names
    }
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut names: Vec<Arc<str>> = iter.into_iter().map(|n| Arc::from(n.as_ref())).collect();
        names.sort_unstable();
        names.dedup();
        Self {
            names: names.into(),
        }
    }
}

/// Interned lists, found by a hash of a list as a client sent it (order and repeats included) and
/// by a hash of its sorted form. A 64-bit hash stands for the list, as content hashes stand for
/// resources: a collision, vanishingly unlikely between honest clients, would hand a proxy another
/// proxy's list.
#[derive(Default)]
struct Interner {
    as_sent: HashMap<u64, Weak<Names>>,
    sorted: HashMap<u64, Vec<Weak<Names>>>,
    /// Insertions since dead entries were last dropped.
    inserted: usize,
}

static INTERNER: LazyLock<Mutex<Interner>> = LazyLock::new(Mutex::default);

fn hash_list<'a>(names: impl ExactSizeIterator<Item = &'a [u8]>) -> u64 {
    let mut hash = StableHasher::new();
    hash.word(names.len() as u64);
    for name in names {
        hash.bytes(name);
    }
    hash.finish()
}

/// The shared [`Names`] for a list of names as a client sent it (names that are not UTF-8, which
/// decoding refuses, are left out).
pub(crate) fn intern<N: AsRef<[u8]>>(names: &[N]) -> Arc<Names> {
    let as_sent = hash_list(names.iter().map(AsRef::as_ref));
    if let Some(known) = INTERNER
        .lock()
        .as_sent
        .get(&as_sent)
        .and_then(Weak::upgrade)
    {
        return known;
    }
    let mut sorted: Vec<&str> = names
        .iter()
        .filter_map(|n| std::str::from_utf8(n.as_ref()).ok())
        .collect();
    sorted.sort_unstable();
    sorted.dedup();
    intern_sorted(&sorted, Some(as_sent))
}

/// The shared [`Names`] for a sorted list of distinct names.
pub(crate) fn intern_sorted(sorted: &[&str], as_sent: Option<u64>) -> Arc<Names> {
    let key = hash_list(sorted.iter().map(|n| n.as_bytes()));
    let mut interner = INTERNER.lock();
    let found = interner.sorted.get(&key).and_then(|candidates| {
        candidates
            .iter()
            .filter_map(Weak::upgrade)
            .find(|n| n.names.iter().map(|n| &**n).eq(sorted.iter().copied()))
    });
    let names = match found {
        Some(names) => names,
        None => {
            let names = Arc::new(Names {
                names: sorted.iter().map(|n| Arc::from(*n)).collect(),
            });
            interner
                .sorted
                .entry(key)
                .or_default()
                .push(Arc::downgrade(&names));
            names
        }
    };
    if let Some(as_sent) = as_sent {
        interner.as_sent.insert(as_sent, Arc::downgrade(&names));
    }
    interner.inserted += 1;
    if interner.inserted > 1024 && interner.inserted > interner.as_sent.len() {
        interner.prune();
    }
    names
}

impl Interner {
    fn prune(&mut self) {
        self.inserted = 0;
        self.as_sent.retain(|_, w| w.strong_count() > 0);
        self.sorted.retain(|_, candidates| {
            candidates.retain(|w| w.strong_count() > 0);
            !candidates.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn the_same_names_in_any_order_are_one_shared_list() {
        let a = intern(&strings(&["b", "a", "c"]));
        let b = intern(&strings(&["c", "b", "a", "a"]));
        let c = intern(&strings(&["b", "a", "c"]));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &c));
        assert_eq!(a.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(a.contains("b") && !a.contains("d"));
        assert!(!Arc::ptr_eq(&a, &intern(&strings(&["a", "b"]))));
    }

    #[test]
    fn a_list_nobody_holds_is_let_go() {
        let weak = Arc::downgrade(&intern(&strings(&["only-here-once"])));
        assert!(weak.upgrade().is_none());
        let again = intern(&strings(&["only-here-once"]));
        assert_eq!(again.len(), 1);
    }
}
