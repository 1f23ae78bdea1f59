//! What a proxy sees, before any Envoy resource is built: the outbound ports and services its scope
//! reaches, the VirtualServices that apply to a host, the ports of its own workload, and (for
//! routers) the Gateway servers it binds. The builders of each resource type read the same plan,
//! so clusters, listeners and routes agree on it.

pub(crate) mod gateway_servers;

use std::collections::{BTreeMap, BTreeSet};

use meshd_model::traffic::{MESH_GATEWAY, host_matches};
use meshd_model::{NodeType, Protocol, Proxy, ServiceModel, Snapshot, VirtualServiceModel};

use crate::Scope;

/// Ports the sidecar itself owns; services on them are not captured.
const RESERVED_PORTS: [u32; 6] = [15000, 15001, 15006, 15020, 15021, 15090];

/// The outbound ports with an HTTP listener, and the TCP listeners by (address, port) → the
/// services there, in hostname order (on a VIP the first one owns it). A TCP listener whose first
/// service leaves the protocol undeclared sniffs: its HTTP connections use the port's route table,
/// so `route_ports` holds the HTTP ports and those.
pub(crate) struct OutboundPlan {
    pub http_ports: BTreeSet<u32>,
    pub tcp: BTreeMap<(String, u32), Vec<std::sync::Arc<ServiceModel>>>,
    pub route_ports: BTreeSet<u32>,
}

/// What the scope sees: the services (ports) its Sidecar, if any, lets it reach.
pub(crate) fn outbound_plan(snapshot: &Snapshot, scope: &Scope) -> OutboundPlan {
    let mut http_ports = BTreeSet::new();
    let mut tcp = BTreeMap::new();
    for svc in snapshot.registry.services.values() {
        for sp in svc
            .ports
            .iter()
            .filter(|p| !RESERVED_PORTS.contains(&p.port) && scope.sees(snapshot, svc, p.port))
        {
            if sp.protocol.is_http() {
                http_ports.insert(sp.port);
            }
        }
    }
    for svc in snapshot.registry.services.values() {
        for sp in svc.ports.iter().filter(|p| {
            !RESERVED_PORTS.contains(&p.port)
                && !p.protocol.is_http()
                && scope.sees(snapshot, svc, p.port)
        }) {
            let vips: Vec<&String> = svc
                .addresses
                .iter()
                .filter(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
                .collect();
            if vips.is_empty() {
                // Without a VIP the port (and for TLS the SNI) must identify the service.
                if !http_ports.contains(&sp.port) {
                    tcp.entry(("0.0.0.0".to_string(), sp.port))
                        .or_insert_with(Vec::new)
                        .push(svc.clone());
                }
            } else {
                for vip in vips {
                    tcp.entry((vip.clone(), sp.port))
                        .or_insert_with(Vec::new)
                        .push(svc.clone());
                }
            }
        }
    }
    let mut route_ports = http_ports.clone();
    route_ports.extend(
        tcp.iter()
            .filter(|((_, port), services)| sniffs(services, *port))
            .map(|((_, port), _)| *port),
    );
    OutboundPlan {
        http_ports,
        tcp,
        route_ports,
    }
}

/// Whether the outbound listener for these services (the first one owns it) sniffs the protocol.
pub(crate) fn sniffs(services: &[std::sync::Arc<ServiceModel>], port: u32) -> bool {
    services
        .first()
        .and_then(|s| s.port(port))
        .is_some_and(|p| p.protocol.is_sniffed())
}

/// Every VirtualService for `host` that sidecars in `namespace` see, in (namespace, name) order.
pub(crate) fn mesh_virtual_services<'a>(
    snapshot: &'a Snapshot,
    host: &str,
    namespace: &str,
) -> Vec<&'a VirtualServiceModel> {
    snapshot
        .traffic
        .virtual_services
        .iter()
        .filter(|vs| {
            vs.applies_to_gateway(MESH_GATEWAY)
                && vs.visible_in(namespace)
                && vs.hosts.iter().any(|h| host_matches(h, host))
        })
        .map(|vs| vs.as_ref())
        .collect()
}

/// A port of this proxy's own workload that some service sends traffic to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InboundPort {
    /// The port the app listens on (the service's target port).
    pub port: u32,
    pub protocol: Protocol,
}

/// The ports of the proxy's workload that services route to, found as istiod does: by the proxy's IP
/// among the endpoints of every service (the registry's index by address, in service order).
pub(crate) fn inbound_ports(snapshot: &Snapshot, proxy: &Proxy) -> Vec<InboundPort> {
    if proxy.node_type != NodeType::Sidecar {
        return Vec::new();
    }
    let mut ports: BTreeMap<u32, Protocol> = BTreeMap::new();
    for served in snapshot
        .registry
        .served_ports
        .get(&proxy.ip)
        .into_iter()
        .flatten()
    {
        // Several services may share a target port; HTTP only if every one says so, TCP if one
        // says so, sniffed otherwise.
        ports
            .entry(served.port)
            .and_modify(|p| {
                if !served.protocol.may_be_http() || !p.may_be_http() {
                    *p = Protocol::Tcp
                } else if *p != served.protocol && !(p.is_http() && served.protocol.is_http()) {
                    *p = Protocol::Unknown
                }
            })
            .or_insert(served.protocol);
    }
    ports
        .into_iter()
        .map(|(port, protocol)| InboundPort { port, protocol })
        .collect()
}
