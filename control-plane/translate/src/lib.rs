//! Pure translation: `(&Snapshot, &Proxy)` → Envoy clusters, endpoints, listeners and routes.
//!
//! Nothing here does I/O. Outbound resources depend only on the snapshot and the proxy's [`Scope`]
//! (so the control plane builds them once per scope and shares them); inbound resources depend on
//! the proxy's own workload.

mod authz;
mod cluster;
mod endpoint;
mod gateway;
mod http_route;
mod listener;
mod names;
mod route;
pub mod tls;
mod util;

use std::collections::BTreeMap;

use meshd_model::{NodeType, Proxy, Snapshot};
use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::pb::envoy::config::listener::v3::Listener;
use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;

pub use cluster::{inbound_clusters, outbound_clusters};
pub use endpoint::endpoints;
pub use listener::{inbound_listeners, outbound_listeners};
pub use names::*;
pub use route::outbound_routes;

/// What outbound config depends on besides the snapshot: proxies with equal scopes get equal
/// outbound resources.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub node_type: NodeType,
    pub namespace: String,
    /// Routers only: Gateways select them by label. Empty for sidecars, so they share per namespace.
    pub labels: BTreeMap<String, String>,
    /// The proxy holds a mesh certificate: outbound clusters use auto-mTLS.
    pub mtls: bool,
}

impl Scope {
    pub fn of(proxy: &Proxy) -> Scope {
        let labels = match proxy.node_type {
            NodeType::Router => proxy.labels.clone(),
            NodeType::Sidecar => BTreeMap::new(),
        };
        Scope {
            node_type: proxy.node_type,
            namespace: proxy.namespace.clone(),
            labels,
            mtls: proxy.mtls,
        }
    }
}

/// Everything one proxy gets, for tests and tools; the server builds the parts separately.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvoyConfig {
    pub clusters: Vec<Cluster>,
    pub endpoints: Vec<ClusterLoadAssignment>,
    pub listeners: Vec<Listener>,
    pub routes: Vec<RouteConfiguration>,
}

pub fn generate(snapshot: &Snapshot, proxy: &Proxy) -> EnvoyConfig {
    let scope = Scope::of(proxy);
    let mut clusters = outbound_clusters(snapshot, &scope);
    clusters.extend(inbound_clusters(snapshot, proxy));
    let mut listeners = outbound_listeners(snapshot, &scope);
    listeners.extend(inbound_listeners(snapshot, proxy));
    EnvoyConfig {
        clusters,
        endpoints: endpoints(snapshot),
        listeners,
        routes: outbound_routes(snapshot, &scope),
    }
}

impl EnvoyConfig {
    /// `{clusters, endpoints, listeners, routes}` as Envoy prints them.
    pub fn to_json(&self) -> serde_json::Value {
        fn list<M: prost::Name>(items: &[M]) -> serde_json::Value {
            serde_json::Value::Array(
                items
                    .iter()
                    .map(|m| {
                        meshd_proto::json::to_json(m)
                            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
                    })
                    .collect(),
            )
        }
        serde_json::json!({
            "clusters": list(&self.clusters),
            "endpoints": list(&self.endpoints),
            "listeners": list(&self.listeners),
            "routes": list(&self.routes),
        })
    }
}
