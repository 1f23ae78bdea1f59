//! Requests as the server reads them.
//!
//! A SotW EDS request lists every cluster the proxy has (≈1,300 names in the benchmark mesh) and
//! comes again with every ACK. Decoded as a `DiscoveryRequest`, each name is a `String` of its own,
//! allocated and dropped per request: a sixth of the server's CPU once responses were shared. Here
//! the names stay slices of the received bytes; the subscription they make is found by a hash of
//! them (`names::intern`), so an unchanged list allocates nothing.

use bytes::Bytes;
use meshd_proto::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use meshd_proto::pb::google::rpc::Status as RpcStatus;
use prost::Message;

use crate::Node;

/// The fields of a `DiscoveryRequest` the server reads, with the same field numbers (the others
/// are skipped when decoding); `resource_names` as bytes, which the wire does not distinguish from
/// strings.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct SotwRequest {
    #[prost(string, tag = "1")]
    pub(crate) version_info: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) node: Option<Node>,
    #[prost(bytes = "bytes", repeated, tag = "3")]
    pub(crate) resource_names: Vec<Bytes>,
    #[prost(string, tag = "4")]
    pub(crate) type_url: String,
    #[prost(string, tag = "5")]
    pub(crate) response_nonce: String,
    #[prost(message, optional, tag = "6")]
    pub(crate) error_detail: Option<RpcStatus>,
}

impl From<&DiscoveryRequest> for SotwRequest {
    fn from(request: &DiscoveryRequest) -> Self {
        Self {
            version_info: request.version_info.clone(),
            node: request.node.clone(),
            resource_names: request
                .resource_names
                .iter()
                .map(|n| Bytes::copy_from_slice(n.as_bytes()))
                .collect(),
            type_url: request.type_url.clone(),
            response_nonce: request.response_nonce.clone(),
            error_detail: request.error_detail.clone(),
        }
    }
}

/// A request that is not the message it claims to be.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InvalidRequest {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("resource name {0} is not UTF-8")]
    NotUtf8(usize),
}

/// A request message from the bytes of one gRPC message.
pub(crate) trait Decode: Sized {
    fn decode_message(bytes: Bytes) -> Result<Self, InvalidRequest>;
}

impl Decode for SotwRequest {
    /// Names are slices of `bytes`, checked to be UTF-8 as a `string` field would be.
    fn decode_message(bytes: Bytes) -> Result<Self, InvalidRequest> {
        let request = <Self as Message>::decode(bytes)?;
        if let Some(i) = request
            .resource_names
            .iter()
            .position(|n| std::str::from_utf8(n).is_err())
        {
            return Err(InvalidRequest::NotUtf8(i));
        }
        Ok(request)
    }
}

impl Decode for DeltaDiscoveryRequest {
    fn decode_message(bytes: Bytes) -> Result<Self, InvalidRequest> {
        Ok(<Self as Message>::decode(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_as_the_discovery_request_it_was_and_its_names_share_its_bytes() {
        let request = DiscoveryRequest {
            version_info: "v1".to_owned(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".to_owned(),
                ..Default::default()
            }),
            resource_names: vec!["outbound|80||a.ns".to_owned(), "ünïcode".to_owned()],
            type_url: "t".to_owned(),
            response_nonce: "n".to_owned(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "bad".to_owned(),
                details: vec![],
            }),
            ..Default::default()
        };
        let bytes = Bytes::from(request.encode_to_vec());
        let read = SotwRequest::decode_message(bytes.clone());
        let read = read.unwrap_or_else(|e| panic!("decode: {e}"));
        assert_eq!(read, SotwRequest::from(&request));
        assert_eq!(read.resource_names[1], "ünïcode".as_bytes());
        let inside = bytes.as_ptr_range();
        assert!(inside.contains(&read.resource_names[0].as_ptr()));
    }

    #[test]
    fn a_name_that_is_not_utf8_fails_as_a_string_would() {
        let mut bytes = DiscoveryRequest {
            resource_names: vec!["ab".to_owned()],
            ..Default::default()
        }
        .encode_to_vec();
        let at = bytes.len() - 1;
        bytes[at] = 0xff;
        assert!(SotwRequest::decode_message(Bytes::from(bytes.clone())).is_err());
        assert!(DiscoveryRequest::decode(&bytes[..]).is_err());
    }
}
