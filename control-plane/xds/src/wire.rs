//! Responses written in protobuf's wire format around the resources' shared bytes.
//!
//! prost would copy every resource into a per-stream buffer and encode it again for every proxy;
//! here a response is a list of pieces: a few small ones written per response (the gRPC message
//! header, `version_info`, `type_url`, `nonce`) and the resources' own bytes, shared by every
//! proxy. Fields are written in field-number order, as prost writes them, so a response is
//! byte-for-byte what prost would encode for the same message (tested below).
//!
//! Field numbers (`envoy/service/discovery/v3/discovery.proto`):
//! `DiscoveryResponse`: version_info 1, resources 2, type_url 4, nonce 5;
//! `DeltaDiscoveryResponse`: system_version_info 1, resources 2, type_url 4, nonce 5,
//! removed_resources 6; `Resource`: version 1, resource 2, name 3; `Any`: type_url 1, value 2.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::protobuf::{key, put_string, put_varint, put_version, string_len, varint_len};
use crate::version::format_version;

/// The gRPC message header: a compression flag and a big-endian length.
pub(crate) const GRPC_HEADER: usize = 5;

/// Shared pieces up to this size are copied next to the small fields around them: a separate piece
/// costs more to carry than to copy.
const INLINE_MAX: usize = 64;

/// A message ready to send: its gRPC frame as pieces, most of them shared.
#[derive(Clone, Debug, Default)]
pub(crate) struct Encoded {
    pub(crate) pieces: Vec<Bytes>,
}

impl Encoded {
    /// A whole message in one piece: for responses built per request (debug answers), which
    /// have no shared parts.
    pub(crate) fn message<M: Message>(message: &M) -> Self {
        let len = message.encoded_len();
        let mut frame = BytesMut::with_capacity(GRPC_HEADER + len);
        frame.put_u8(0);
        frame.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        message.encode_raw(&mut frame);
        Self {
            pieces: vec![frame.freeze()],
        }
    }

    /// Every byte of the frame, header included.
    pub(crate) fn len(&self) -> usize {
        self.pieces.iter().map(Bytes::len).sum()
    }

    /// The frame in one buffer (tests and fuzzing only: sending never joins the pieces).
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for piece in &self.pieces {
            out.extend_from_slice(piece);
        }
        out
    }

    /// The message without its gRPC header, decoded (tests and fuzzing).
    pub(crate) fn decode<M: Message + Default>(&self) -> Result<M, prost::DecodeError> {
        let frame = self.to_vec();
        M::decode(frame.get(GRPC_HEADER..).unwrap_or_default())
    }
}

/// Collects pieces: small writes go to one scratch buffer (allocated once, at its final size),
/// shared bytes are kept as they are.
struct Writer {
    pieces: Vec<Bytes>,
    scratch: BytesMut,
}

impl Writer {
    fn new(small: usize, shared: usize) -> Self {
        Self {
            pieces: Vec::with_capacity(2 * shared + 2),
            scratch: BytesMut::with_capacity(small),
        }
    }

    fn shared(&mut self, bytes: &Bytes) {
        if bytes.len() <= INLINE_MAX {
            self.scratch.extend_from_slice(bytes);
        } else {
            self.flush();
            self.pieces.push(bytes.clone());
        }
    }

    fn flush(&mut self) {
        if !self.scratch.is_empty() {
            self.pieces.push(self.scratch.split().freeze());
        }
    }

    fn finish(mut self) -> Encoded {
        self.flush();
        Encoded {
            pieces: self.pieces,
        }
    }

    fn grpc_header(&mut self, message_len: usize) {
        self.scratch.put_u8(0);
        // A response over 4 GiB cannot be built from resources Envoy accepts; saturate rather
        // than wrap.
        self.scratch
            .put_u32(u32::try_from(message_len).unwrap_or(u32::MAX));
    }

    fn string(&mut self, field: u8, value: &str) {
        put_string(&mut self.scratch, field, value.as_bytes());
    }
}

/// A State-of-the-World response whose resources are `runs`: each the concatenated `resources`
/// entries of neighbouring resources, shared.
pub(crate) fn sotw(version: u64, type_url: &str, nonce: &str, runs: &[Bytes]) -> Encoded {
    let version = format_version(version);
    let small = string_len(version.len()) + string_len(type_url.len()) + string_len(nonce.len());
    let message_len = small + runs.iter().map(Bytes::len).sum::<usize>();
    let mut w = Writer::new(GRPC_HEADER + small + runs.len() * INLINE_MAX, runs.len());
    w.grpc_header(message_len);
    w.string(1, &version);
    for run in runs {
        w.shared(run);
    }
    w.string(4, type_url);
    w.string(5, nonce);
    w.finish()
}

/// What a Delta response says of one resource: its name, its version, and its `resources` entry
/// as [`any_field`] wrote it.
pub(crate) type DeltaEntry<'a> = (&'a str, u64, &'a Bytes);

/// One Delta `Resource` message: version, the shared `resource` entry, name.
fn delta_resource_len((name, _, field): DeltaEntry<'_>) -> usize {
    string_len(16) + field.len() + string_len(name.len())
}

/// A Delta response carrying `resources` and removing `removed`.
pub(crate) fn delta<'a>(
    system_version: u64,
    type_url: &str,
    nonce: &str,
    resources: impl Iterator<Item = DeltaEntry<'a>> + Clone,
    removed: &[Arc<str>],
) -> Encoded {
    let system_version = format_version(system_version);
    let mut small = string_len(system_version.len())
        + string_len(type_url.len())
        + string_len(nonce.len())
        + removed.iter().map(|n| string_len(n.len())).sum::<usize>();
    let mut message_len = small;
    let mut count = 0;
    for resource in resources.clone() {
        let inner = delta_resource_len(resource);
        message_len += 1 + varint_len(inner as u64) + inner;
        // The field's key and length, the version and the name are written per response.
        let (name, _, field) = resource;
        small += 1 + varint_len(inner as u64) + string_len(16) + string_len(name.len());
        if field.len() <= INLINE_MAX {
            small += field.len();
        }
        count += 1;
    }
    let mut w = Writer::new(GRPC_HEADER + small, count);
    w.grpc_header(message_len);
    w.string(1, &system_version);
    for resource in resources {
        let inner = delta_resource_len(resource);
        let (name, version, field) = resource;
        w.scratch.put_u8(key(2));
        put_varint(&mut w.scratch, inner as u64);
        put_version(&mut w.scratch, 1, version);
        w.shared(field);
        w.string(3, name);
    }
    w.string(4, type_url);
    w.string(5, nonce);
    for name in removed {
        w.string(6, name);
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use meshd_proto::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource as WireResource,
    };

    use super::*;
    use crate::Any;
    use crate::protobuf::{any_field, any_of_field};

    fn mk_any(type_url: &str, len: usize) -> Any {
        Any {
            type_url: type_url.to_owned(),
            value: (0..len).map(|i| (i % 251) as u8).collect(),
        }
    }

    /// Sizes either side of the inline limit and of one- and two-byte lengths.
    fn sizes() -> Vec<usize> {
        vec![
            0, 1, 10, 40, 63, 64, 65, 100, 127, 128, 300, 16_383, 16_384, 70_000,
        ]
    }

    /// Neighbouring entries joined, as a set's buffer holds them.
    fn run(fields: &[Bytes]) -> Bytes {
        fields.concat().into()
    }

    #[test]
    fn a_sotw_response_is_what_prost_encodes() {
        let type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
        let bodies: Vec<Any> = sizes().into_iter().map(|n| mk_any(type_url, n)).collect();
        let fields: Vec<Bytes> = bodies.iter().map(any_field).collect();
        let runs = vec![run(&fields[..3]), run(&fields[3..4]), run(&fields[5..])];
        let encoded = sotw(7, type_url, "nonce-1", &runs);

        let expected = DiscoveryResponse {
            version_info: format_version(7),
            resources: (0..bodies.len())
                .filter(|i| *i != 4)
                .map(|i| bodies[i].clone())
                .collect(),
            type_url: type_url.to_owned(),
            nonce: "nonce-1".to_owned(),
            ..Default::default()
        };
        let frame = encoded.to_vec();
        let message = expected.encode_to_vec();
        assert_eq!(frame[0], 0);
        assert_eq!(&frame[1..5], &(message.len() as u32).to_be_bytes());
        assert_eq!(&frame[GRPC_HEADER..], &message[..]);
        assert_eq!(encoded.decode::<DiscoveryResponse>(), Ok(expected));
    }

    #[test]
    fn an_empty_sotw_response_is_what_prost_encodes() {
        let encoded = sotw(0, "t", "n", &[]);
        let expected = DiscoveryResponse {
            version_info: format_version(0),
            type_url: "t".to_owned(),
            nonce: "n".to_owned(),
            ..Default::default()
        };
        assert_eq!(
            &encoded.to_vec()[GRPC_HEADER..],
            &expected.encode_to_vec()[..]
        );
    }

    #[test]
    fn a_delta_response_is_what_prost_encodes() {
        let type_url = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
        let resources: Vec<(String, u64, Any)> = sizes()
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    "n".repeat(i * 20 + 1),
                    i as u64 * 0x1234_5678_9abc,
                    mk_any(type_url, n),
                )
            })
            .collect();
        let fields: Vec<Bytes> = resources
            .iter()
            .map(|(_, _, body)| any_field(body))
            .collect();
        let entries = resources
            .iter()
            .zip(&fields)
            .map(|((name, version, _), field)| (name.as_str(), *version, field));
        let removed: Vec<Arc<str>> = vec!["gone".into(), "x".repeat(200).into()];
        let encoded = delta(9, type_url, "nonce-2", entries, &removed);

        let expected = DeltaDiscoveryResponse {
            system_version_info: format_version(9),
            resources: resources
                .iter()
                .map(|(name, version, body)| WireResource {
                    name: name.clone(),
                    version: format_version(*version),
                    resource: Some(body.clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: type_url.to_owned(),
            removed_resources: removed.iter().map(|n| n.to_string()).collect(),
            nonce: "nonce-2".to_owned(),
            ..Default::default()
        };
        let frame = encoded.to_vec();
        let message = expected.encode_to_vec();
        assert_eq!(&frame[1..5], &(message.len() as u32).to_be_bytes());
        assert_eq!(&frame[GRPC_HEADER..], &message[..]);
        assert_eq!(encoded.decode::<DeltaDiscoveryResponse>(), Ok(expected));
    }

    #[test]
    fn large_resources_are_shared_not_copied() {
        let field = any_field(&mk_any("t", 100_000));
        let encoded = sotw(1, "t", "n", std::slice::from_ref(&field));
        let shared = |e: &Encoded| e.pieces.iter().any(|p| p.as_ptr() == field.as_ptr());
        assert!(shared(&encoded), "the resource's bytes were copied");
        let delta = delta(1, "t", "n", [("big", 1, &field)].into_iter(), &[]);
        assert!(shared(&delta), "the resource's bytes were copied");
    }

    #[test]
    fn an_entry_reads_back_as_its_any() {
        for len in sizes() {
            let body = mk_any("t", len);
            assert_eq!(any_of_field(&any_field(&body)), Some(body));
        }
        assert_eq!(any_of_field(&[]), None);
    }

    #[test]
    fn varints_match_prost() {
        for value in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut ours = BytesMut::new();
            put_varint(&mut ours, value);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(value, &mut theirs);
            assert_eq!(&ours[..], &theirs[..]);
            assert_eq!(varint_len(value), theirs.len());
        }
    }
}
