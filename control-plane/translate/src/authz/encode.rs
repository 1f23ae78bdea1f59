//! Protobuf bytes with map entries in key order.
//!
//! prost encodes a map field in `HashMap` iteration order, which differs between two maps with the
//! same content; resource versions are hashes of the bytes, so an RBAC `policies` map or a
//! jwt_authn `providers` map with more than one entry would change version on every build. These
//! helpers encode the rest of the message with prost and append the entries sorted by key, which
//! is the same message to any protobuf reader (fields may come in any order; map entries are
//! repeated `{1: key, 2: value}` messages).

use std::collections::BTreeMap;

use prost::Message;

/// Wire type 2: length-delimited.
const LENGTH_DELIMITED: u64 = 2;

fn varint(mut value: u64, buf: &mut Vec<u8>) {
    while value >= 0x80 {
        buf.push(((value & 0x7f) as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends field `tag` holding `bytes` (a string or an encoded message).
pub fn length_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    varint((u64::from(tag) << 3) | LENGTH_DELIMITED, buf);
    varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

/// `message` (whose map field `tag` must be empty) followed by `entries` as that map field.
pub fn with_sorted_map<M: Message, V: Message>(
    message: &M,
    tag: u32,
    entries: &BTreeMap<String, V>,
) -> Vec<u8> {
    let mut buf = message.encode_to_vec();
    for (key, value) in entries {
        let mut entry = Vec::new();
        length_delimited(1, key.as_bytes(), &mut entry);
        length_delimited(2, &value.encode_to_vec(), &mut entry);
        length_delimited(tag, &entry, &mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use meshd_proto::pb::envoy::config::rbac::v3::{Policy, Rbac, permission};

    fn policy(n: u32) -> Policy {
        Policy {
            permissions: vec![meshd_proto::pb::envoy::config::rbac::v3::Permission {
                rule: Some(permission::Rule::DestinationPort(n)),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn map_entries_decode_back_and_bytes_do_not_depend_on_insertion_order() {
        let entries: BTreeMap<String, Policy> =
            (0..20).map(|i| (format!("rule[{i}]"), policy(i))).collect();
        let base = Rbac {
            action: 1,
            ..Default::default()
        };
        let bytes = with_sorted_map(&base, 2, &entries);
        let decoded = Rbac::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.action, 1);
        assert_eq!(decoded.policies.len(), 20);
        for (k, v) in &entries {
            assert_eq!(&decoded.policies[k], v);
        }
        // The same map built in another order encodes identically.
        let reversed: BTreeMap<String, Policy> = entries.into_iter().rev().collect();
        assert_eq!(with_sorted_map(&base, 2, &reversed), bytes);
    }

    #[test]
    fn varints_match_prost() {
        for v in [0u64, 1, 127, 128, 300, 16_384, u64::from(u32::MAX)] {
            let mut ours = Vec::new();
            varint(v, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(v, &mut theirs);
            assert_eq!(ours, theirs, "{v}");
        }
    }
}
