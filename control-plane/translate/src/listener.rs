//! Listeners: `virtualOutbound` (15001) hands captured connections to a per-port listener by their
//! original destination; `virtualInbound` (15006) serves the workload's own ports.

use meshd_model::telemetry::WorkloadMode;
use meshd_model::{MtlsMode, NodeType, OutboundPolicy, Protocol, Proxy, Snapshot};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::TrafficDirection;
use meshd_proto::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use meshd_proto::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use meshd_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use meshd_proto::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use meshd_proto::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpFilter, http_connection_manager,
};
use meshd_proto::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};

use crate::Scope;
use crate::hcm::{
    SNIFFED_HTTP_PROTOCOLS, hcm_filter, http_connection_manager, http_filter, http_inspector,
    outbound_http_filter,
};
use crate::names::*;
use crate::plan::{inbound_ports, outbound_plan};
use crate::telemetry::{ListenerTelemetry, capturing};
use crate::util::*;

/// Sidecars' outbound listeners, or a gateway's, with the access logs and tracer of the client
/// side.
pub fn outbound_listeners(snapshot: &Snapshot, scope: &Scope) -> Vec<Listener> {
    let mut listeners = if scope.node_type == NodeType::Sidecar {
        sidecar_outbound_listeners(snapshot, scope)
    } else {
        crate::gateway::gateway_listeners(snapshot, scope)
    };
    ListenerTelemetry::new(snapshot, scope, WorkloadMode::Client, scope.names.as_ref())
        .apply(&mut listeners, capturing(scope.node_type));
    listeners
}

fn sidecar_outbound_listeners(snapshot: &Snapshot, scope: &Scope) -> Vec<Listener> {
    let plan = outbound_plan(snapshot, scope);
    let mut out = vec![virtual_outbound(snapshot, scope)];
    for port in &plan.http_ports {
        out.push(bound_elsewhere_listener(
            "0.0.0.0",
            *port,
            outbound_http_filter(*port),
        ));
    }
    for ((address, port), services) in &plan.tcp {
        out.push(crate::tcp_route::outbound_tcp_listener(
            snapshot, scope, address, *port, services,
        ));
    }
    out
}

/// A per-destination listener that owns no socket: virtualOutbound hands connections to it.
fn bound_elsewhere_listener(address: &str, port: u32, filter: Filter) -> Listener {
    Listener {
        name: format!("{address}_{port}"),
        address: Some(socket_address(address, port)),
        filter_chains: vec![FilterChain {
            filters: vec![filter],
            ..Default::default()
        }],
        bind_to_port: bool_value(false),
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn virtual_outbound(snapshot: &Snapshot, scope: &Scope) -> Listener {
    let catch_all = match scope.outbound_policy(snapshot) {
        OutboundPolicy::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundPolicy::RegistryOnly => BLACKHOLE_CLUSTER,
    };
    Listener {
        name: VIRTUAL_OUTBOUND.to_string(),
        address: Some(socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: bool_value(true),
        filter_chains: vec![FilterChain {
            name: "PassthroughFilterChain".to_string(),
            filters: vec![tcp_proxy_filter(catch_all, catch_all)],
            ..Default::default()
        }],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// A sidecar's `virtualInbound`, with the access logs and tracer of the server side.
pub fn inbound_listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    if proxy.node_type != NodeType::Sidecar {
        return Vec::new();
    }
    let mut listeners = virtual_inbound(snapshot, proxy);
    let scope = Scope::for_proxy(snapshot, proxy);
    ListenerTelemetry::new(snapshot, &scope, WorkloadMode::Server, scope.names.as_ref())
        .apply(&mut listeners, capturing(NodeType::Sidecar));
    listeners
}

fn virtual_inbound(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    // PeerAuthentication selects on the workload's labels: the registry's Pod, else the node's claim.
    let (namespace, labels) = match snapshot.pod_by_ip(&proxy.ip) {
        Some(pod) => (pod.namespace.clone(), pod.labels.clone()),
        None => (proxy.namespace.clone(), proxy.labels.clone()),
    };
    // AuthorizationPolicy and RequestAuthentication select on the same namespace and labels.
    let authz = crate::authz::InboundAuthz::for_workload(snapshot, &namespace, &labels);
    let tcp_filters = |cluster: &str| {
        let mut filters = authz.network_filters();
        filters.push(tcp_proxy_filter(cluster, cluster));
        filters
    };
    let mut chains = Vec::new();
    let mut any_tls = false;
    let mut any_sniffed = false;
    for p in inbound_ports(snapshot, proxy) {
        let cluster = inbound_cluster(p.port);
        let served = if p.protocol.is_sniffed() {
            Served::Sniffed
        } else if p.protocol.is_http() {
            Served::Http
        } else {
            Served::Tcp
        };
        any_sniffed |= served == Served::Sniffed;
        let filters = |http: bool| {
            if http {
                vec![inbound_http(
                    p.port,
                    &cluster,
                    p.protocol,
                    authz.http_filters(),
                )]
            } else {
                tcp_filters(&cluster)
            }
        };
        let mode = snapshot
            .peer_authentications
            .mode(&namespace, &labels, p.port);
        any_tls |= proxy.mtls && mode != MtlsMode::Disable;
        chains.extend(mode_chains(
            &cluster,
            Some(p.port),
            mode,
            proxy.mtls,
            served,
            filters,
        ));
    }
    let passthrough = |_| tcp_filters(INBOUND_PASSTHROUGH_CLUSTER);
    let mode = snapshot.peer_authentications.mode(&namespace, &labels, 0);
    any_tls |= proxy.mtls && mode != MtlsMode::Disable;
    chains.extend(mode_chains(
        "InboundPassthroughFilterChain",
        None,
        mode,
        proxy.mtls,
        Served::Tcp,
        passthrough,
    ));
    let mut listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.original_dst".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }];
    if any_tls {
        // Tells TLS from plaintext, so PERMISSIVE ports can serve both.
        listener_filters.push(ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_string(),
            config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
                &TlsInspector::default(),
            ))),
            ..Default::default()
        });
    }
    if any_sniffed {
        // Tells plaintext HTTP from anything else on ports without a declared protocol.
        listener_filters.push(http_inspector());
    }
    vec![Listener {
        name: VIRTUAL_INBOUND.to_string(),
        address: Some(socket_address("0.0.0.0", INBOUND_PORT)),
        listener_filters,
        // A server-first protocol sends nothing for the inspectors to read: after the timeout the
        // connection continues to the non-TLS, non-HTTP chain instead of being dropped.
        continue_on_listener_filters_timeout: any_tls || any_sniffed,
        filter_chains: chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    }]
}

/// How an inbound port is served: HTTP, TCP, or sniffed (both, by what the connection looks like).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    Http,
    Tcp,
    Sniffed,
}

/// ALPN values a mesh client offers for HTTP over mTLS on a port without a declared protocol:
/// meshd's sidecars configure no ALPN there, so Envoy's HTTP connection pool offers `http/1.1` or
/// `h2`; Istio's own proxies offer `istio-http/1.0`, `istio-http/1.1` or `istio-h2`.
const MTLS_HTTP_PROTOCOLS: [&str; 5] = [
    "http/1.1",
    "h2",
    "istio-http/1.0",
    "istio-http/1.1",
    "istio-h2",
];

/// The filter chains for one inbound port (or the catch-all) under a PeerAuthentication mode:
/// STRICT terminates mTLS and closes plaintext connections; PERMISSIVE serves both; DISABLE serves
/// plaintext. A proxy without a mesh certificate cannot terminate mTLS, so STRICT fails closed there.
/// A sniffed port gets each chain twice: one for HTTP (by the client's ALPN over mTLS, by
/// `http_inspector` in plaintext) and one for the rest. `filters(http)` builds either kind.
fn mode_chains(
    name: &str,
    port: Option<u32>,
    mode: MtlsMode,
    has_certificate: bool,
    served: Served,
    filters: impl Fn(bool) -> Vec<Filter>,
) -> Vec<FilterChain> {
    // An empty transport matches anything the TLS chain did not take, including connections whose
    // protocol the inspector could not tell.
    let matching = |transport: &str, protocols: &[&str]| {
        (port.is_some() || !transport.is_empty()).then(|| FilterChainMatch {
            destination_port: port.and_then(u32_value),
            transport_protocol: transport.to_string(),
            application_protocols: protocols.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        })
    };
    let closed = || FilterChain {
        name: format!("{name}-plaintext-refused"),
        filter_chain_match: matching("", &[]),
        filters: vec![tcp_proxy_filter(BLACKHOLE_CLUSTER, BLACKHOLE_CLUSTER)],
        ..Default::default()
    };
    let tls_chain = |suffix: &str, protocols: &[&str], http: bool| FilterChain {
        name: format!("{name}-mtls{suffix}"),
        filter_chain_match: matching("tls", protocols),
        filters: filters(http),
        transport_socket: Some(crate::tls::inbound_mtls_socket(http)),
        ..Default::default()
    };
    let plain_chain = |suffix: &str, protocols: &[&str], http: bool| FilterChain {
        name: format!("{name}{suffix}"),
        filter_chain_match: matching("", protocols),
        filters: filters(http),
        ..Default::default()
    };
    let tls = || match served {
        Served::Sniffed => vec![
            tls_chain("-http", &MTLS_HTTP_PROTOCOLS, true),
            tls_chain("-tcp", &[], false),
        ],
        other => vec![tls_chain("", &[], other == Served::Http)],
    };
    let plain = || match served {
        Served::Sniffed => vec![
            plain_chain("-http", &SNIFFED_HTTP_PROTOCOLS, true),
            plain_chain("-tcp", &[], false),
        ],
        other => vec![plain_chain("", &[], other == Served::Http)],
    };
    match (mode, has_certificate) {
        (MtlsMode::Disable, _) | (MtlsMode::Permissive, false) => plain(),
        (MtlsMode::Permissive, true) => [tls(), plain()].concat(),
        (MtlsMode::Strict, true) => [tls(), vec![closed()]].concat(),
        (MtlsMode::Strict, false) => vec![closed()],
    }
}

/// `authz`: request authentication and authorization filters, run before the router.
fn inbound_http(port: u32, cluster: &str, _protocol: Protocol, authz: Vec<HttpFilter>) -> Filter {
    let route_config = RouteConfiguration {
        name: cluster.to_string(),
        virtual_hosts: vec![VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".to_string()],
            routes: vec![Route {
                name: "default".to_string(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".to_string())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_string(),
                    )),
                    timeout: Some(duration(0, 0)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: bool_value(false),
        ..Default::default()
    };
    let mut http_filters = authz;
    http_filters.push(http_filter(
        "envoy.filters.http.router",
        pack(&Router::default()),
    ));
    let mut hcm = http_connection_manager(
        format!("inbound_0.0.0.0_{port}"),
        http_connection_manager::RouteSpecifier::RouteConfig(route_config),
        http_filters,
    );
    // The app learns who called from the mTLS peer's URI SAN; anything a client sent is replaced.
    hcm.forward_client_cert_details =
        http_connection_manager::ForwardClientCertDetails::SanitizeSet as i32;
    hcm.set_current_client_cert_details =
        Some(http_connection_manager::SetCurrentClientCertDetails {
            uri: true,
            ..Default::default()
        });
    hcm_filter(&hcm)
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&tcp))),
    }
}
