//! Gateways: a router proxy gets a bound listener per Gateway server port whose `selector` matches
//! its labels. Plain HTTP servers share a route table `http.<port>`; each HTTPS server gets a TLS
//! filter chain (SNI on its hosts, certificate over SDS from a `credentialName` Secret) and a table
//! `https.<port>.<portName>.<gateway>.<namespace>`, as Istio names them.

use std::collections::{BTreeMap, HashSet};

use meshd_model::Snapshot;
use meshd_model::input::networking::{Server, ServerTls};
use meshd_model::traffic::host_matches;
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, TrafficDirection, TransportSocket, data_source, transport_socket,
};
use meshd_proto::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use meshd_proto::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost, virtual_host};
use meshd_proto::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    Rds, http_connection_manager,
};
use meshd_proto::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    TlsCertificate, common_tls_context,
};

use crate::Scope;
use crate::hcm::{hcm_filter, http_connection_manager, http_filters};
use crate::http_route::{RouteContext, virtual_service_routes};
use crate::plan::gateway_servers::{
    Bound, ServerKind, istio_mutual, kind, servers_by_port, terminates_tls,
};
use crate::tls::{credential_ca_secret, credential_secret};
use crate::util::*;

fn gateway_hcm(
    port: u32,
    route_name: String,
) -> meshd_proto::pb::envoy::config::listener::v3::Filter {
    let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads()),
        route_config_name: route_name,
    });
    let mut hcm = http_connection_manager(format!("outbound_0.0.0.0_{port}"), rds, http_filters());
    // A gateway is the edge: it trusts no client-supplied forwarding headers.
    hcm.use_remote_address = bool_value(true);
    hcm_filter(&hcm)
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

/// How a server terminates TLS: ISTIO_MUTUAL with the proxy's own mesh certificate (SDS `default`)
/// and mesh clients only (`ROOTCA`), as the mesh's sidecars do; otherwise its own certificate.
fn terminating_socket(server: &Server, http: bool) -> Option<TransportSocket> {
    if istio_mutual(server) {
        return Some(crate::tls::inbound_mtls_socket(http));
    }
    let http2 = server.port.protocol.eq_ignore_ascii_case("HTTP2");
    server.tls.as_ref().map(|t| downstream_tls(t, http2, http))
}

/// Terminating TLS with the server's certificate: from its Secret over SDS, or from files.
fn downstream_tls(tls: &ServerTls, http2: bool, http: bool) -> TransportSocket {
    let mutual = tls
        .mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("MUTUAL"));
    let mut common = CommonTlsContext {
        alpn_protocols: if !http {
            Vec::new()
        } else if http2 {
            vec!["h2".into(), "http/1.1".into()]
        } else {
            vec!["http/1.1".into()]
        },
        ..Default::default()
    };
    match &tls.credential_name {
        Some(name) => {
            common.tls_certificate_sds_secret_configs = vec![sds(credential_secret(name))];
            if mutual {
                common.validation_context_type = Some(
                    common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(
                        sds(credential_ca_secret(name)),
                    ),
                );
            }
        }
        None => {
            common.tls_certificates = vec![TlsCertificate {
                certificate_chain: tls.server_certificate.as_deref().and_then(file),
                private_key: tls.private_key.as_deref().and_then(file),
                ..Default::default()
            }];
            if mutual {
                common.validation_context_type = Some(
                    common_tls_context::ValidationContextType::ValidationContext(
                        CertificateValidationContext {
                            trusted_ca: tls.ca_certificates.as_deref().and_then(file),
                            ..Default::default()
                        },
                    ),
                );
            }
        }
    }
    let context = DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: if mutual { bool_value(true) } else { None },
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&context))),
    }
}

/// SNI names for a server: its hosts without namespace prefixes; `*` means any name.
fn server_names(server: &Server) -> Vec<String> {
    let names: Vec<String> = server
        .hosts
        .iter()
        .map(|h| h.split_once('/').map_or(h.as_str(), |(_, h)| h).to_string())
        .collect();
    if names.iter().any(|h| h == "*") {
        Vec::new()
    } else {
        names
    }
}

/// PASSTHROUGH: one chain per `tls` route of a VirtualService bound to the gateway, matching the
/// route's SNI hosts that the server covers, proxied untouched to its destination(s).
fn passthrough_chains(snapshot: &Snapshot, b: &Bound<'_>, port: u32) -> Vec<FilterChain> {
    let gateway = b.gateway.reference();
    let mut out = Vec::new();
    for vs in snapshot
        .traffic
        .virtual_services
        .iter()
        .filter(|vs| vs.applies_to_gateway(&gateway))
    {
        for (i, route) in vs.tls.iter().enumerate() {
            let names: Vec<String> = route
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .flat_map(|m| m.sni_hosts.iter())
                .filter(|sni| served_host(sni, &b.server.hosts, &vs.key.namespace).is_some())
                .cloned()
                .collect();
            if names.is_empty() || route.route.is_empty() {
                continue;
            }
            let cluster_for = |d: &meshd_model::input::networking::RouteDestination| {
                let host =
                    meshd_model::traffic::resolve_host(&d.destination.host, &vs.key.namespace);
                let dest_port = d
                    .destination
                    .port
                    .as_ref()
                    .map(|p| p.number)
                    .unwrap_or_else(|| {
                        snapshot
                            .registry
                            .services
                            .get(&host)
                            .filter(|s| s.ports.len() == 1)
                            .map_or(port, |s| s.ports[0].port)
                    });
                crate::names::outbound_cluster(
                    dest_port,
                    d.destination.subset.as_deref().unwrap_or(""),
                    &host,
                )
            };
            let specifier = if route.route.len() == 1 {
                tcp_proxy::ClusterSpecifier::Cluster(cluster_for(&route.route[0]))
            } else {
                tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
                    clusters: route
                        .route
                        .iter()
                        .filter(|d| d.weight.unwrap_or(0) > 0)
                        .map(|d| tcp_proxy::weighted_cluster::ClusterWeight {
                            name: cluster_for(d),
                            weight: d.weight.unwrap_or(0),
                            ..Default::default()
                        })
                        .collect(),
                })
            };
            out.push(FilterChain {
                name: format!(
                    "passthrough|{port}|{}.{}|{i}",
                    vs.key.namespace, vs.key.name
                ),
                filter_chain_match: Some(FilterChainMatch {
                    server_names: names,
                    ..Default::default()
                }),
                filters: vec![tcp_proxy_to(
                    &format!("{}.{}.tls[{i}]", vs.key.namespace, vs.key.name),
                    specifier,
                )],
                ..Default::default()
            });
        }
    }
    out
}

/// AUTO_PASSTHROUGH: the client's SNI names the cluster (Istio's `outbound_.<port>_.<subset>_.<host>`),
/// so `sni_cluster` sets it and tcp_proxy connects there.
fn auto_passthrough_chain(b: &Bound<'_>, port: u32) -> FilterChain {
    use meshd_proto::pb::envoy::extensions::filters::network::sni_cluster::v3::SniCluster;
    FilterChain {
        name: format!("auto-passthrough|{port}|{}", b.gateway.reference()),
        filter_chain_match: Some(FilterChainMatch {
            server_names: server_names(b.server),
            ..Default::default()
        }),
        filters: vec![
            Filter {
                name: "envoy.filters.network.sni_cluster".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(
                    pack(&SniCluster::default()),
                )),
            },
            tcp_proxy_to(
                &format!("auto_passthrough_{port}"),
                tcp_proxy::ClusterSpecifier::Cluster(crate::names::BLACKHOLE_CLUSTER.to_string()),
            ),
        ],
        ..Default::default()
    }
}

fn tcp_proxy_to(stat_prefix: &str, cluster: tcp_proxy::ClusterSpecifier) -> Filter {
    let config = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&config))),
    }
}

/// Envoy refuses two chains with the same match: an SNI name already taken is dropped from later
/// chains, and a chain left with nothing to match is dropped.
fn without_repeated_server_names(chains: Vec<FilterChain>) -> Vec<FilterChain> {
    let mut any_taken = false;
    let mut taken: HashSet<String> = HashSet::new();
    chains
        .into_iter()
        .filter_map(|mut c| {
            let names = c
                .filter_chain_match
                .as_ref()
                .map(|m| m.server_names.clone())
                .unwrap_or_default();
            if names.is_empty() {
                return (!std::mem::replace(&mut any_taken, true)).then_some(c);
            }
            let kept: Vec<String> = names
                .into_iter()
                .filter(|n| taken.insert(n.to_ascii_lowercase()))
                .collect();
            if kept.is_empty() {
                return None;
            }
            if let Some(m) = c.filter_chain_match.as_mut() {
                m.server_names = kept;
            }
            Some(c)
        })
        .collect()
}

/// Ports every proxy's bootstrap listens on (stats, readiness).
fn bootstrap_ports() -> [u32; 2] {
    [
        u32::from(crate::bootstrap::PROMETHEUS_PORT),
        u32::from(crate::bootstrap::HEALTH_PORT),
    ]
}

pub(crate) fn gateway_listeners(snapshot: &Snapshot, scope: &Scope) -> Vec<Listener> {
    let mut out = Vec::new();
    for (port, bound) in servers_by_port(snapshot, scope) {
        // The bootstrap's own listeners hold these ports; Envoy refuses a second listener on one.
        if bootstrap_ports().contains(&port) {
            continue;
        }
        let class = bound
            .first()
            .and_then(|b| kind(b.server))
            .map(ServerKind::port_class);
        let (filter_chains, listener_filters) = if class == Some(ServerKind::Tcp.port_class()) {
            let chains = bound
                .iter()
                .take(1)
                .filter_map(|b| {
                    Some(FilterChain {
                        name: format!("tcp|{port}|{}", b.gateway.reference()),
                        filters: vec![gateway_tcp_filter(snapshot, scope, b, port)?],
                        ..Default::default()
                    })
                })
                .collect();
            (chains, Vec::new())
        } else if class != Some(ServerKind::Http.port_class()) {
            let mut chains = Vec::new();
            for b in &bound {
                match kind(b.server) {
                    Some(ServerKind::Terminate) => chains.push(FilterChain {
                        name: b.https_route_name(),
                        filter_chain_match: Some(FilterChainMatch {
                            server_names: server_names(b.server),
                            ..Default::default()
                        }),
                        filters: vec![gateway_hcm(port, b.https_route_name())],
                        transport_socket: terminating_socket(b.server, true),
                        ..Default::default()
                    }),
                    Some(ServerKind::TerminateTcp) => {
                        if let Some(filter) = gateway_tcp_filter(snapshot, scope, b, port) {
                            chains.push(FilterChain {
                                name: format!("tls|{port}|{}", b.gateway.reference()),
                                filter_chain_match: Some(FilterChainMatch {
                                    server_names: server_names(b.server),
                                    ..Default::default()
                                }),
                                filters: vec![filter],
                                transport_socket: terminating_socket(b.server, false),
                                ..Default::default()
                            });
                        }
                    }
                    Some(ServerKind::Passthrough) => {
                        chains.extend(passthrough_chains(snapshot, b, port))
                    }
                    Some(ServerKind::AutoPassthrough) => {
                        chains.push(auto_passthrough_chain(b, port))
                    }
                    _ => {}
                }
            }
            let chains = without_repeated_server_names(chains);
            let inspector = ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_string(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                    &TlsInspector::default(),
                ))),
                ..Default::default()
            };
            (chains, vec![inspector])
        } else {
            (
                vec![FilterChain {
                    filters: vec![gateway_hcm(port, format!("http.{port}"))],
                    ..Default::default()
                }],
                Vec::new(),
            )
        };
        // Passthrough servers no TLS route matches have no chain; Envoy refuses a listener
        // without one, and istiod builds none.
        if filter_chains.is_empty() {
            continue;
        }
        out.push(Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(socket_address("0.0.0.0", port)),
            filter_chains,
            listener_filters,
            traffic_direction: TrafficDirection::Outbound as i32,
            ..Default::default()
        });
    }
    out
}

/// tcp_proxy for a TCP server, or a TLS server that terminates: the first `tcp` route of a
/// VirtualService bound to the gateway, for a host the server covers, whose match (if any) names
/// this gateway (short names in the VirtualService's namespace) and this port.
fn gateway_tcp_filter(
    snapshot: &Snapshot,
    scope: &Scope,
    b: &Bound<'_>,
    port: u32,
) -> Option<Filter> {
    let gateway = b.gateway.reference();
    let bound: Vec<&meshd_model::VirtualServiceModel> = snapshot
        .traffic
        .virtual_services
        .iter()
        .filter(|vs| vs.applies_to_gateway(&gateway) && vs.visible_in(&scope.namespace))
        .filter(|vs| {
            vs.hosts
                .iter()
                .any(|h| served_host(h, &b.server.hosts, &vs.key.namespace).is_some())
        })
        .map(|vs| vs.as_ref())
        .collect();
    crate::tcp_route::gateway_tcp_filter(snapshot, &bound, &gateway, port)
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

/// A route table for servers sharing it: a virtual host per host, routes of every VirtualService
/// bound to one of the servers' gateways merged in order. `https_redirect` answers every request
/// with a redirect to https instead.
fn route_table(
    snapshot: &Snapshot,
    scope: &Scope,
    name: String,
    port: u32,
    servers: &[&Bound<'_>],
) -> RouteConfiguration {
    let mut hosts: BTreeMap<String, Vec<_>> = BTreeMap::new();
    let mut redirect_hosts: HashSet<String> = HashSet::new();
    // Only HTTP routes make virtual hosts: a VirtualService of TCP or TLS routes alone would
    // leave an empty one for its hosts.
    for vs in snapshot
        .traffic
        .virtual_services
        .iter()
        .filter(|vs| !vs.http.is_empty())
    {
        for b in servers {
            let gateway = b.gateway.reference();
            if !vs.applies_to_gateway(&gateway) || !vs.visible_in(&scope.namespace) {
                continue;
            }
            let ctx = RouteContext {
                snapshot,
                port,
                gateway: &gateway,
                namespace: &scope.namespace,
                labels: &scope.labels,
            };
            for h in &vs.hosts {
                if let Some(host) = served_host(h, &b.server.hosts, &vs.key.namespace) {
                    if b.server.tls.as_ref().is_some_and(|t| t.https_redirect) {
                        redirect_hosts.insert(host.clone());
                    }
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
            let require_tls = if redirect_hosts.contains(&host) {
                virtual_host::TlsRequirementType::All
            } else {
                virtual_host::TlsRequirementType::None
            };
            (!domains.is_empty()).then(|| VirtualHost {
                name: format!("{host}:{port}"),
                domains,
                routes,
                require_tls: require_tls as i32,
                ..Default::default()
            })
        })
        .collect();
    RouteConfiguration {
        name,
        virtual_hosts,
        validate_clusters: bool_value(false),
        ..Default::default()
    }
}

pub(crate) fn gateway_routes(snapshot: &Snapshot, scope: &Scope) -> Vec<RouteConfiguration> {
    let mut out = Vec::new();
    for (port, bound) in servers_by_port(snapshot, scope) {
        let first = bound.first().and_then(|b| kind(b.server));
        if first == Some(ServerKind::Tcp) {
            continue;
        }
        if first != Some(ServerKind::Http) {
            for b in bound.iter().filter(|b| terminates_tls(b.server)) {
                out.push(route_table(
                    snapshot,
                    scope,
                    b.https_route_name(),
                    port,
                    &[b],
                ));
            }
        } else {
            let all: Vec<&Bound<'_>> = bound.iter().collect();
            out.push(route_table(
                snapshot,
                scope,
                format!("http.{port}"),
                port,
                &all,
            ));
        }
    }
    out
}
