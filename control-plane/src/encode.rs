//! Resources as the ADS server shares them: encoded once, versioned by their bytes.

use std::sync::Arc;

use meshd_proto::pack;
use meshd_xds::Resource;

/// A version that changes exactly when the bytes do: FNV-1a 64 (for files read; resources are
/// versioned by `meshd_xds::Resource::new`).
pub fn content_version(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `message`, packed and encoded once; its version is a hash of those bytes.
pub fn resource<M: prost::Name>(name: String, message: &M) -> Arc<Resource> {
    Arc::new(Resource::new(name, &pack(message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_version_changes_with_bytes_only() {
        assert_eq!(content_version(b"abc"), content_version(b"abc"));
        assert_ne!(content_version(b"abc"), content_version(b"abd"));
    }
}
