//! Set versions and nonces.
//!
//! A set version is a stable hash of the `(name, version)` pairs a proxy is sent, so two sends of the
//! same resources carry the same `version_info` across processes and restarts. Nonces only need to be
//! unique; they are prefixed with the process start time so a nonce from a previous meshd never
//! matches one of ours.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bit: small, stable across Rust versions and platforms.
#[derive(Clone, Copy, Debug)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(FNV_OFFSET)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    /// A field followed by a separator, so `("ab", "c")` and `("a", "bc")` hash differently.
    fn write_field(&mut self, field: &str) {
        self.write(field.as_bytes());
        self.write(&[0]);
    }
}

/// The version of a set of resources: a hash of its `(name, version)` pairs in name order.
pub(crate) fn set_version<'a, I>(pairs: I) -> String
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut hash = Fnv::new();
    for (name, version) in pairs {
        hash.write_field(name);
        hash.write_field(version);
    }
    format!("{:016x}", hash.0)
}

/// [`set_version`] of a map of resources keyed by name.
pub(crate) fn map_version<R: AsRef<crate::Resource>>(resources: &BTreeMap<String, R>) -> String {
    set_version(
        resources
            .iter()
            .map(|(name, r)| (name.as_str(), r.as_ref().version.as_str())),
    )
}

static PROCESS_TAG: LazyLock<u32> = LazyLock::new(|| {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    // Truncation is intended: only needs to differ between restarts.
    (nanos & u128::from(u32::MAX)) as u32
});

static NEXT_NONCE: AtomicU64 = AtomicU64::new(1);

/// A nonce unique within this process and, with high probability, across restarts.
pub(crate) fn next_nonce() -> String {
    let n = NEXT_NONCE.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-{n:x}", *PROCESS_TAG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_version_is_stable_and_depends_on_every_pair() {
        let a = set_version([("c1", "v1"), ("c2", "v1")]);
        assert_eq!(a, set_version([("c1", "v1"), ("c2", "v1")]));
        assert_ne!(a, set_version([("c1", "v1"), ("c2", "v2")]));
        assert_ne!(a, set_version([("c1", "v1")]));
        assert_ne!(set_version([("ab", "c")]), set_version([("a", "bc")]));
        // Known value, so a change of hash function is noticed.
        assert_eq!(set_version([]), "cbf29ce484222325");
    }

    #[test]
    fn nonces_are_unique() {
        let a = next_nonce();
        let b = next_nonce();
        assert_ne!(a, b);
        assert!(!a.is_empty());
    }
}
