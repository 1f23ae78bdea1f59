//! Versions and nonces.
//!
//! Versions are 64-bit hashes, stable across processes and restarts, so two sends of the same
//! resources carry the same version and a Delta client reconnecting after a restart is not sent
//! what it already holds. On the wire they are 16 hex digits. Nonces only need to be unique; they
//! are prefixed with the process start time so a nonce from a previous meshd never matches one of
//! ours.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const SEED: u64 = 0x243f_6a88_85a3_08d3;
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// A 64-bit hash fed eight bytes at a time (the byte-at-a-time FNV it replaces cost a measurable
/// share of a push). Each step is a bijection of the state for a given input word, so changing one
/// word of an input always changes the result; the last step mixes the bits. Written here rather
/// than taken from std, whose hashers may change between Rust releases.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StableHasher(u64);

impl StableHasher {
    pub(crate) fn new() -> Self {
        Self(SEED)
    }

    pub(crate) fn word(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(MULTIPLIER).rotate_left(31);
    }

    /// `bytes` followed by their length, so `("ab", "c")` and `("a", "bc")` hash differently.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(word));
        }
        self.word(bytes.len() as u64);
    }

    pub(crate) fn finish(self) -> u64 {
        // SplitMix64's finalizer.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The version of encoded bytes: equal versions mean equal bytes.
pub fn content_version(bytes: &[u8]) -> u64 {
    let mut hash = StableHasher::new();
    hash.bytes(bytes);
    hash.finish()
}

/// The version of a set of resources: a hash of its `(name, version)` pairs in order.
pub(crate) fn set_version<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> u64 {
    let mut hash = StableHasher::new();
    for (name, version) in pairs {
        hash.bytes(name.as_bytes());
        hash.word(version);
    }
    hash.finish()
}

/// A version as the wire carries it: 16 lowercase hex digits.
pub fn format_version(version: u64) -> String {
    format!("{version:016x}")
}

/// A version a client sent back. Ours parse to what we sent; anything else (another control
/// plane's, garbage) becomes a hash of the text, which matches none of ours in practice.
pub fn parse_version(text: &str) -> u64 {
    if text.len() == 16
        && let Ok(version) = u64::from_str_radix(text, 16)
        && format_version(version) == text
    {
        return version;
    }
    content_version(text.as_bytes())
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
        let a = set_version([("c1", 1), ("c2", 1)]);
        assert_eq!(a, set_version([("c1", 1), ("c2", 1)]));
        assert_ne!(a, set_version([("c1", 1), ("c2", 2)]));
        assert_ne!(a, set_version([("c1", 1)]));
        assert_ne!(set_version([("ab", 0)]), set_version([("a", 0)]));
        // Known values, so a change of hash function is noticed (it resends everything once).
        assert_eq!(format_version(set_version([])), "e9e0033e3badaf36");
        assert_eq!(format_version(content_version(b"")), "38f50c7db773a51e");
    }

    #[test]
    fn content_version_sees_every_byte_and_the_length() {
        let base = content_version(b"0123456789abcdef0");
        for i in 0..17 {
            let mut changed = *b"0123456789abcdef0";
            changed[i] ^= 1;
            assert_ne!(content_version(&changed), base, "byte {i}");
        }
        assert_ne!(content_version(b"abc"), content_version(b"abc\0"));
    }

    #[test]
    fn versions_round_trip_through_the_wire_and_foreign_ones_do_not_collide() {
        for version in [0, 1, u64::MAX, 0x0123_4567_89ab_cdef] {
            assert_eq!(parse_version(&format_version(version)), version);
        }
        assert_ne!(parse_version("1"), 1);
        assert_ne!(parse_version("0123456789ABCDEF"), 0x0123_4567_89ab_cdef);
    }

    #[test]
    fn nonces_are_unique() {
        let a = next_nonce();
        let b = next_nonce();
        assert_ne!(a, b);
        assert!(!a.is_empty());
    }
}
