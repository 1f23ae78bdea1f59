//! Pure translation: `(&Snapshot, &Proxy)` → Envoy clusters, endpoints, listeners and routes; also
//! the bootstrap a proxy starts from and the secrets it is sent.
//!
//! Nothing here does I/O. Outbound resources depend only on the snapshot and the proxy's [`Scope`]
//! (so the control plane builds them once per scope and shares them); inbound resources depend on
//! the proxy's own workload.

pub mod audit;
mod authz;
pub mod blame;
pub mod bootstrap;
pub mod changes;
pub mod check;
mod cluster;
mod destination;
mod endpoint;
pub mod fault;
mod gateway;
mod hcm;
mod http_route;
mod listener;
mod locality;
pub mod names;
mod plan;
mod route;
pub mod secret;
mod tcp_route;
pub mod telemetry;
pub mod tls;
mod traffic_policy;
mod util;

use std::collections::BTreeMap;

use meshd_model::{NodeType, Proxy, Snapshot};
use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::pb::envoy::config::listener::v3::Listener;
use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;

pub use cluster::{inbound_clusters, outbound_clusters};
pub use endpoint::{
    caller_localities, endpoints, proxy_endpoints, service_endpoints, service_locality_endpoints,
};
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
    /// `region/zone/subzone`, only while some DestinationRule balances by locality (endpoints
    /// then depend on it); `None` otherwise, so proxies keep sharing.
    pub locality: Option<String>,
    /// The Sidecar resource that scopes this proxy's outbound config, if any.
    pub sidecar: Option<meshd_model::ObjectKey>,
    /// The Telemetries that select this proxy's workload by label (namespace- and mesh-wide ones
    /// follow from `namespace`).
    pub telemetry: Vec<meshd_model::ObjectKey>,
    /// How the workload is named in spans, only while it traces (span tags carry the names, so
    /// proxies share listeners per name then).
    pub names: Option<telemetry::WorkloadNames>,
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
            locality: None,
            sidecar: None,
            telemetry: Vec::new(),
            names: None,
        }
    }

    /// [`Scope::of`], plus, for sidecars, the workload labels that `sourceLabels` matches of the
    /// VirtualServices it sees, and the `workloadSelector`s of DestinationRules in its namespace,
    /// select on. Sidecars still share per namespace while no such match
    /// exists, and afterwards per distinct values of just those labels. Also the proxy's locality
    /// while locality load balancing needs it.
    pub fn for_proxy(snapshot: &Snapshot, proxy: &Proxy) -> Scope {
        let mut scope = Scope::of(proxy);
        scope.locality = locality::proxy_locality(snapshot, proxy);
        {
            // The registry's Pod is trusted over what the node claims.
            let labels = snapshot
                .pod_by_ip(&proxy.ip)
                .map_or(&proxy.labels, |pod| &pod.labels);
            if proxy.node_type == NodeType::Sidecar {
                scope.sidecar = snapshot
                    .sidecars
                    .for_workload(&proxy.namespace, labels)
                    .map(|s| s.key.clone());
            }
            scope.telemetry = telemetry::workload_keys(snapshot, &proxy.namespace, labels);
            if telemetry::traces(snapshot, &scope) {
                scope.names = Some(telemetry::WorkloadNames::of(
                    &proxy.pod_name,
                    &proxy.namespace,
                    labels,
                ));
            }
        }
        if proxy.node_type != NodeType::Sidecar {
            return scope;
        }
        let keys: std::collections::BTreeSet<&String> = snapshot
            .traffic
            .virtual_services
            .iter()
            .filter(|vs| {
                vs.applies_to_gateway(meshd_model::traffic::MESH_GATEWAY)
                    && vs.visible_in(&proxy.namespace)
            })
            .flat_map(|vs| vs.source_label_selectors())
            .flat_map(|selector| selector.keys())
            .chain(
                snapshot
                    .traffic
                    .destination_rules
                    .selector_keys_in(&proxy.namespace),
            )
            .collect();
        if keys.is_empty() {
            return scope;
        }
        // The registry's Pod is trusted over what the node claims.
        let labels = snapshot
            .pod_by_ip(&proxy.ip)
            .map_or(&proxy.labels, |pod| &pod.labels);
        scope.labels = labels
            .iter()
            .filter(|(k, _)| keys.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        scope
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
    let scope = Scope::for_proxy(snapshot, proxy);
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

impl Scope {
    /// The Sidecar resource scoping this proxy, resolved in `snapshot`.
    pub(crate) fn sidecar<'a>(
        &self,
        snapshot: &'a Snapshot,
    ) -> Option<&'a meshd_model::sidecar_scope::SidecarModel> {
        self.sidecar
            .as_ref()
            .and_then(|k| snapshot.sidecars.get(k))
            .map(|s| s.as_ref())
    }

    /// The service's port is in this proxy's egress scope (everything without a Sidecar).
    pub(crate) fn sees(
        &self,
        snapshot: &Snapshot,
        svc: &meshd_model::ServiceModel,
        port: u32,
    ) -> bool {
        self.sidecar(snapshot).is_none_or(|s| s.sees(svc, port))
    }

    /// The Sidecar's outbound traffic policy, else the mesh's.
    pub(crate) fn outbound_policy(&self, snapshot: &Snapshot) -> meshd_model::OutboundPolicy {
        self.sidecar(snapshot)
            .and_then(|s| s.outbound_policy)
            .unwrap_or(snapshot.mesh.outbound_traffic_policy.mode)
    }
}
