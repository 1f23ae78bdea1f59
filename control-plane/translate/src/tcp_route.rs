//! Outbound TCP and TLS listeners: VirtualService `tcp` routes (by port and destination subnet) and
//! `tls` routes (by SNI) become filter chains whose tcp_proxy sends to one cluster or splits by
//! weight; a service without such routes gets one chain to its own cluster.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use meshd_model::input::labels_match;
use meshd_model::input::networking::RouteDestination;
use meshd_model::traffic::{MESH_GATEWAY, parse_cidr};
use meshd_model::{OutboundPolicy, Protocol, ServiceModel, Snapshot, VirtualServiceModel};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::{CidrRange, TrafficDirection};
use meshd_proto::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use meshd_proto::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use meshd_proto::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use crate::Scope;
use crate::destination::cluster_for;
use crate::hcm::{SNIFFED_HTTP_PROTOCOLS, http_inspector, outbound_http_filter};
use crate::names::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, outbound_cluster};
use crate::plan::{mesh_virtual_services, sniffs};
use crate::util::*;

/// One filter chain before it becomes Envoy's: what it matches and where it sends.
struct Chain {
    server_names: Vec<String>,
    subnets: Vec<String>,
    filter: Filter,
    /// The VirtualService it comes from.
    config: Option<String>,
}

/// The match conditions every L4 match shares.
struct L4Match<'a> {
    port: Option<u32>,
    source_labels: &'a BTreeMap<String, String>,
    source_namespace: Option<&'a str>,
    gateways: &'a [String],
}

impl L4Match<'_> {
    /// The match applies to sidecars in this scope, on this listener port.
    fn applies(&self, scope: &Scope, port: u32) -> bool {
        self.port.is_none_or(|p| p == port)
            && self.source_namespace.is_none_or(|ns| ns == scope.namespace)
            && labels_match(self.source_labels, &scope.labels)
            && (self.gateways.is_empty() || self.gateways.iter().any(|g| g == MESH_GATEWAY))
    }
}

fn is_tls(protocol: Protocol) -> bool {
    matches!(protocol, Protocol::Tls | Protocol::Https)
}

/// The listener `<address>_<port>` for the services there. A VIP belongs to its first service; on
/// `0.0.0.0` TLS services share the port by SNI, anything else is the first service's.
pub(crate) fn outbound_tcp_listener(
    snapshot: &Snapshot,
    scope: &Scope,
    address: &str,
    port: u32,
    services: &[Arc<ServiceModel>],
) -> Listener {
    let tls_port = services
        .first()
        .and_then(|s| s.port(port))
        .is_some_and(|p| is_tls(p.protocol));
    let wildcard = address == "0.0.0.0";
    let members: Vec<&ServiceModel> = if wildcard && tls_port {
        services
            .iter()
            .filter(|s| s.port(port).is_some_and(|p| is_tls(p.protocol)))
            .map(|s| s.as_ref())
            .collect()
    } else {
        services.iter().take(1).map(|s| s.as_ref()).collect()
    };
    let mut chains = Vec::new();
    for svc in members {
        chains.extend(service_chains(
            snapshot, scope, svc, port, tls_port, wildcard,
        ));
    }
    let chains = without_repeated_matches(chains);
    let sni = chains.iter().any(|c| !c.server_names.is_empty());
    // When every chain matches on something, connections matching none go where unknown
    // destinations go (as the catch-all of virtualOutbound does) instead of being closed.
    let default_filter_chain = chains
        .iter()
        .all(|c| !c.server_names.is_empty() || !c.subnets.is_empty())
        .then(|| {
            let cluster = match scope.outbound_policy(snapshot) {
                OutboundPolicy::AllowAny => PASSTHROUGH_CLUSTER,
                OutboundPolicy::RegistryOnly => BLACKHOLE_CLUSTER,
            };
            FilterChain {
                name: "PassthroughFilterChain".to_string(),
                filters: vec![tcp_proxy_filter(
                    cluster,
                    tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string()),
                )],
                ..Default::default()
            }
        });
    let mut filter_chains: Vec<FilterChain> = chains.into_iter().map(filter_chain).collect();
    let mut listener_filters = Vec::new();
    if sni {
        listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        });
    }
    // Undeclared protocol: what the inspector recognises as HTTP gets the port's HTTP routes, the
    // rest stays on the TCP chains. A server-first protocol sends nothing to inspect; after the
    // listener filter timeout it continues as TCP.
    let sniffing = !tls_port && sniffs(services, port);
    if sniffing {
        listener_filters.push(http_inspector());
        filter_chains.insert(
            0,
            FilterChain {
                name: format!("{address}_{port}-http"),
                filter_chain_match: Some(FilterChainMatch {
                    application_protocols: SNIFFED_HTTP_PROTOCOLS.map(String::from).to_vec(),
                    ..Default::default()
                }),
                filters: vec![outbound_http_filter(port)],
                ..Default::default()
            },
        );
    }
    // Like every per-destination listener it owns no socket: virtualOutbound hands connections over.
    Listener {
        name: format!("{address}_{port}"),
        address: Some(socket_address(address, port)),
        filter_chains,
        default_filter_chain,
        listener_filters,
        continue_on_listener_filters_timeout: sniffing,
        bind_to_port: bool_value(false),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// Istio's order: TLS routes by SNI, then TCP routes; the service's own cluster unless a TLS route
/// matched or a TCP route catches everything.
fn service_chains(
    snapshot: &Snapshot,
    scope: &Scope,
    svc: &ServiceModel,
    port: u32,
    tls_port: bool,
    wildcard: bool,
) -> Vec<Chain> {
    let virtual_services = mesh_virtual_services(snapshot, &svc.hostname, &scope.namespace);
    let mut chains = Vec::new();
    let mut tls_matched = false;
    if tls_port {
        for vs in &virtual_services {
            for route in &vs.tls {
                for m in &route.matches {
                    let l4 = L4Match {
                        port: m.port,
                        source_labels: &m.source_labels,
                        source_namespace: m.source_namespace.as_deref(),
                        gateways: &m.gateways,
                    };
                    if !l4.applies(scope, port) {
                        continue;
                    }
                    tls_matched = true;
                    chains.push(Chain {
                        server_names: m.sni_hosts.clone(),
                        subnets: m.destination_subnets.clone(),
                        filter: route_filter(snapshot, vs, port, &route.route),
                        config: Some(vs.key.config_path()),
                    });
                }
            }
        }
    }
    let (tcp_chains, catch_all) = tcp_route_chains(snapshot, scope, &virtual_services, port);
    chains.extend(tcp_chains);
    if !tls_matched && !catch_all {
        // On a shared TLS port only the SNI tells services apart.
        let server_names = if tls_port && wildcard {
            vec![svc.hostname.clone()]
        } else {
            Vec::new()
        };
        chains.push(Chain {
            server_names,
            subnets: Vec::new(),
            filter: tcp_proxy_to(port, &svc.hostname),
            config: None,
        });
    }
    chains
}

/// Chains for `tcp` routes, and whether one of them catches every connection. As in Istio, the
/// first route with no match (or a match without subnets) ends the list; a route whose matches all
/// name subnets gets one chain for all of them.
fn tcp_route_chains(
    snapshot: &Snapshot,
    scope: &Scope,
    virtual_services: &[&VirtualServiceModel],
    port: u32,
) -> (Vec<Chain>, bool) {
    let mut chains = Vec::new();
    for vs in virtual_services {
        for route in &vs.tcp {
            let chain = |subnets: Vec<String>| Chain {
                server_names: Vec::new(),
                subnets,
                filter: route_filter(snapshot, vs, port, &route.route),
                config: Some(vs.key.config_path()),
            };
            if route.matches.is_empty() {
                chains.push(chain(Vec::new()));
                return (chains, true);
            }
            let mut subnets = Vec::new();
            for m in &route.matches {
                let l4 = L4Match {
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: m.source_namespace.as_deref(),
                    gateways: &m.gateways,
                };
                if !l4.applies(scope, port) {
                    continue;
                }
                if m.destination_subnets.is_empty() {
                    chains.push(chain(Vec::new()));
                    return (chains, true);
                }
                subnets.extend(m.destination_subnets.iter().cloned());
            }
            if !subnets.is_empty() {
                chains.push(chain(subnets));
            }
        }
    }
    (chains, false)
}

/// A gateway's tcp_proxy for a server on `port`: the first `tcp` route among `virtual_services`
/// (bound to `gateway`, in order) without matches or with a match for this gateway and port.
pub(crate) fn gateway_tcp_filter(
    snapshot: &Snapshot,
    virtual_services: &[&VirtualServiceModel],
    gateway: &str,
    port: u32,
) -> Option<Filter> {
    virtual_services.iter().find_map(|vs| {
        vs.tcp
            .iter()
            .find(|route| {
                !route.route.is_empty()
                    && (route.matches.is_empty()
                        || route.matches.iter().any(|m| {
                            m.port.is_none_or(|p| p == port)
                                && vs.match_applies_to_gateway(&m.gateways, gateway)
                        }))
            })
            .map(|route| route_filter(snapshot, vs, port, &route.route))
    })
}

/// tcp_proxy for a route's destinations: one cluster, or a weighted split.
fn route_filter(
    snapshot: &Snapshot,
    vs: &VirtualServiceModel,
    port: u32,
    destinations: &[RouteDestination],
) -> Filter {
    let single = destinations.len() == 1;
    let weighted: Vec<(String, u32)> = destinations
        .iter()
        .map(|d| {
            let weight = if single { 100 } else { d.weight.unwrap_or(0) };
            (
                cluster_for(&d.destination, &vs.key.namespace, snapshot, port),
                weight,
            )
        })
        .filter(|(_, weight)| *weight > 0)
        .collect();
    let stat = weighted
        .first()
        .map(|(cluster, _)| cluster.clone())
        .unwrap_or_default();
    let specifier = match weighted.as_slice() {
        [(cluster, _)] => tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()),
        _ => tcp_proxy::ClusterSpecifier::WeightedClusters(tcp_proxy::WeightedCluster {
            clusters: weighted
                .into_iter()
                .map(
                    |(name, weight)| tcp_proxy::weighted_cluster::ClusterWeight {
                        name,
                        weight,
                        ..Default::default()
                    },
                )
                .collect(),
        }),
    };
    tcp_proxy_filter(&stat, specifier)
}

/// tcp_proxy to the service's own cluster on `port`.
fn tcp_proxy_to(port: u32, host: &str) -> Filter {
    let cluster = outbound_cluster(port, "", host);
    tcp_proxy_filter(
        &cluster,
        tcp_proxy::ClusterSpecifier::Cluster(cluster.clone()),
    )
}

fn tcp_proxy_filter(stat_prefix: &str, specifier: tcp_proxy::ClusterSpecifier) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(specifier),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&tcp))),
    }
}

/// Envoy refuses a listener where two chains match the same (subnet, server name): the first chain
/// keeps it; a later chain loses those server names, or is dropped when nothing is left.
fn without_repeated_matches(chains: Vec<Chain>) -> Vec<Chain> {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut out = Vec::new();
    for mut chain in chains {
        let ranges: Vec<String> = if chain.subnets.is_empty() {
            vec!["*".to_string()]
        } else {
            chain.subnets.clone()
        };
        let taken = |seen: &HashSet<(String, String)>, name: &str| {
            ranges
                .iter()
                .any(|r| seen.contains(&(r.clone(), name.to_string())))
        };
        if !chain.server_names.is_empty() {
            chain.server_names.retain(|n| !taken(&seen, n));
            if chain.server_names.is_empty() {
                continue;
            }
        } else if taken(&seen, "") {
            continue;
        }
        let names = if chain.server_names.is_empty() {
            vec![String::new()]
        } else {
            chain.server_names.clone()
        };
        for r in &ranges {
            for n in &names {
                seen.insert((r.clone(), n.clone()));
            }
        }
        out.push(chain);
    }
    out
}

fn filter_chain(chain: Chain) -> FilterChain {
    let prefix_ranges: Vec<CidrRange> = chain
        .subnets
        .iter()
        .filter_map(|s| parse_cidr(s))
        .map(|(ip, len)| CidrRange {
            address_prefix: ip.to_string(),
            prefix_len: u32_value(len),
        })
        .collect();
    let matching =
        (!prefix_ranges.is_empty() || !chain.server_names.is_empty()).then(|| FilterChainMatch {
            prefix_ranges,
            server_names: chain.server_names,
            ..Default::default()
        });
    FilterChain {
        filter_chain_match: matching,
        filters: vec![chain.filter],
        metadata: chain.config.as_deref().and_then(istio_config_metadata),
        ..Default::default()
    }
}
