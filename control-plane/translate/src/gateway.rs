//! Gateways: a router proxy gets a bound listener per Gateway server port whose `selector` matches
//! its labels, and a route table `http.<port>` of the VirtualServices bound to those Gateways.

use std::collections::{BTreeMap, HashSet};

use meshd_model::input::labels_match;
use meshd_model::traffic::host_matches;
use meshd_model::{GatewayModel, Snapshot};
use meshd_proto::pb::envoy::config::core::v3::TrafficDirection;
use meshd_proto::pb::envoy::config::listener::v3::{FilterChain, Listener};
use meshd_proto::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager,
};

use crate::Scope;
use crate::http_route::{RouteContext, virtual_service_routes};
use crate::listener::{hcm_filter, http_connection_manager, http_filters};
use crate::util::*;

fn is_http(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "GRPC"
    )
}

/// Gateways selecting this router, by its labels.
fn selected<'a>(snapshot: &'a Snapshot, scope: &Scope) -> Vec<&'a GatewayModel> {
    snapshot
        .traffic
        .gateways
        .iter()
        .filter(|g| !g.selector.is_empty() && labels_match(&g.selector, &scope.labels))
        .map(|g| g.as_ref())
        .collect()
}

/// HTTP server ports → (gateway reference, server hosts) bound on them.
fn http_servers(snapshot: &Snapshot, scope: &Scope) -> BTreeMap<u32, Vec<(String, Vec<String>)>> {
    let mut ports: BTreeMap<u32, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for gw in selected(snapshot, scope) {
        for server in gw.servers.iter().filter(|s| is_http(&s.port.protocol)) {
            ports
                .entry(server.port.number)
                .or_default()
                .push((gw.reference(), server.hosts.clone()));
        }
    }
    ports
}

pub(crate) fn gateway_listeners(snapshot: &Snapshot, scope: &Scope) -> Vec<Listener> {
    http_servers(snapshot, scope)
        .into_keys()
        .map(|port| {
            let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads()),
                route_config_name: format!("http.{port}"),
            });
            let mut hcm =
                http_connection_manager(format!("outbound_0.0.0.0_{port}"), rds, http_filters());
            // A gateway is the edge: it trusts no client-supplied forwarding headers.
            hcm.use_remote_address = bool_value(true);
            Listener {
                name: format!("0.0.0.0_{port}"),
                address: Some(socket_address("0.0.0.0", port)),
                filter_chains: vec![FilterChain {
                    filters: vec![hcm_filter(&hcm)],
                    ..Default::default()
                }],
                traffic_direction: TrafficDirection::Outbound as i32,
                ..Default::default()
            }
        })
        .collect()
}

/// The host a VirtualService host serves on a server: itself if the server covers it, the server's
/// host if the VirtualService host is the wider wildcard.
fn served_host(vs_host: &str, server_hosts: &[String], vs_namespace: &str) -> Option<String> {
    for sh in server_hosts {
        let (ns, pattern) = sh.split_once('/').unwrap_or(("*", sh));
        if ns != "*" && ns != "." && ns != vs_namespace {
            continue;
        }
        if host_matches(pattern, vs_host) {
            return Some(vs_host.to_string());
        }
        if host_matches(vs_host, pattern) {
            return Some(pattern.to_string());
        }
    }
    None
}

pub(crate) fn gateway_routes(snapshot: &Snapshot, scope: &Scope) -> Vec<RouteConfiguration> {
    let mut out = Vec::new();
    for (port, servers) in http_servers(snapshot, scope) {
        // Virtual hosts by host, routes of every VirtualService for that host merged in order.
        let mut hosts: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for vs in &snapshot.traffic.virtual_services {
            for (gateway, server_hosts) in &servers {
                if !vs.applies_to_gateway(gateway) {
                    continue;
                }
                let ctx = RouteContext {
                    snapshot,
                    port,
                    gateway,
                };
                for h in &vs.hosts {
                    if let Some(host) = served_host(h, server_hosts, &vs.key.namespace) {
                        hosts
                            .entry(host)
                            .or_default()
                            .extend(virtual_service_routes(vs, &ctx));
                    }
                }
            }
        }
        let mut used = HashSet::new();
        let virtual_hosts = hosts
            .into_iter()
            .filter_map(|(host, routes)| {
                // Envoy takes one wildcard per domain, so `*.example.com` gets no `:*` twin.
                let mut domains = vec![host.clone()];
                if !host.contains('*') {
                    domains.push(format!("{host}:*"));
                }
                let domains: Vec<String> = domains
                    .into_iter()
                    .filter(|d| used.insert(d.to_ascii_lowercase()))
                    .collect();
                (!domains.is_empty()).then(|| VirtualHost {
                    name: format!("{host}:{port}"),
                    domains,
                    routes,
                    ..Default::default()
                })
            })
            .collect();
        out.push(RouteConfiguration {
            name: format!("http.{port}"),
            virtual_hosts,
            validate_clusters: bool_value(false),
            ..Default::default()
        });
    }
    out
}
