//! Wire types meshd speaks: Envoy's xDS API (re-exported from `envoy-types`), Istio's
//! certificate API, the type URLs resources are named by, and helpers to pack messages into `Any`.

pub use envoy_types::pb;

/// Istio's certificate API, `istio.v1.auth` (our `proto/istio/ca.proto`): messages, and the
/// `IstioCertificateService` client and server.
pub mod istio_ca {
    tonic::include_proto!("istio.v1.auth");
}

pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// The order istiod pushes in, so clusters exist before endpoints, and listeners before routes.
    pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

    /// Short name of a type URL as people and istioctl write it (`CDS`, `EDS`, ...).
    pub fn short(type_url: &str) -> &'static str {
        match type_url {
            CLUSTER => "CDS",
            ENDPOINT => "EDS",
            LISTENER => "LDS",
            ROUTE => "RDS",
            SECRET => "SDS",
            _ => "UNKNOWN",
        }
    }

    /// Wildcard types are sent whole; the others only by subscribed name.
    pub fn is_wildcard(type_url: &str) -> bool {
        matches!(type_url, CLUSTER | LISTENER)
    }
}

/// Packs a message into `Any` with its `type.googleapis.com/` URL.
pub fn pack<M: prost::Name>(message: &M) -> pb::google::protobuf::Any {
    pb::google::protobuf::Any {
        type_url: M::type_url(),
        value: prost::Message::encode_to_vec(message),
    }
}

/// Unpacks an `Any` if it holds an `M`.
pub fn unpack<M: prost::Name + Default>(any: &pb::google::protobuf::Any) -> Option<M> {
    if any.type_url != M::type_url() {
        return None;
    }
    prost::Message::decode(any.value.as_slice()).ok()
}

/// Envoy messages as JSON, the way Envoy prints them (proto field names, `@type` on `Any`).
pub mod json {
    use std::sync::OnceLock;

    use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

    use crate::pb::google::protobuf::Any;

    static DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"));

    /// The Envoy API's descriptors, decoded once.
    pub fn pool() -> &'static DescriptorPool {
        static POOL: OnceLock<DescriptorPool> = OnceLock::new();
        POOL.get_or_init(|| {
            // The bytes are produced by our build script from the same protos; failure is a build defect.
            DescriptorPool::decode(DESCRIPTORS).expect("embedded Envoy descriptor set is valid")
        })
    }

    #[derive(Debug, thiserror::Error)]
    pub enum JsonError {
        #[error("unknown message type {0}")]
        UnknownType(String),
        #[error("decoding {type_name}: {message}")]
        Decode { type_name: String, message: String },
        #[error("encoding JSON: {0}")]
        Json(String),
    }

    fn options() -> SerializeOptions {
        SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(true)
    }

    /// Any → JSON object with `@type`.
    pub fn any_to_json(any: &Any) -> Result<serde_json::Value, JsonError> {
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        let desc = pool()
            .get_message_by_name(type_name)
            .ok_or_else(|| JsonError::UnknownType(type_name.to_string()))?;
        let msg =
            DynamicMessage::decode(desc, any.value.as_slice()).map_err(|e| JsonError::Decode {
                type_name: type_name.to_string(),
                message: e.to_string(),
            })?;
        let mut value = msg
            .serialize_with_options(serde_json::value::Serializer, &options())
            .map_err(|e| JsonError::Json(e.to_string()))?;
        if let serde_json::Value::Object(map) = &mut value {
            map.insert(
                "@type".to_string(),
                serde_json::Value::String(any.type_url.clone()),
            );
        }
        Ok(value)
    }

    /// A typed message → JSON (no `@type`).
    pub fn to_json<M: prost::Name>(message: &M) -> Result<serde_json::Value, JsonError> {
        let mut value = any_to_json(&crate::pack(message))?;
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("@type");
        }
        Ok(value)
    }

    /// JSON (with or without `@type`) → typed message; used by tests and tools that read Envoy JSON.
    pub fn from_json<M: prost::Name + Default>(value: &serde_json::Value) -> Result<M, JsonError> {
        let type_name = M::full_name();
        let desc = pool()
            .get_message_by_name(&type_name)
            .ok_or_else(|| JsonError::UnknownType(type_name.clone()))?;
        let mut value = value.clone();
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("@type");
        }
        let dynamic = DynamicMessage::deserialize(desc, value).map_err(|e| JsonError::Decode {
            type_name: type_name.clone(),
            message: e.to_string(),
        })?;
        dynamic.transcode_to::<M>().map_err(|e| JsonError::Decode {
            type_name,
            message: e.to_string(),
        })
    }
}
