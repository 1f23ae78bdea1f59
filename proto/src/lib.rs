//! Wire types meshd speaks: Envoy's xDS API (re-exported from `envoy-types`), the type URLs
//! it names resources by, and helpers to pack messages into `Any`.

pub use envoy_types::pb;

pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const SECRET: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

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
