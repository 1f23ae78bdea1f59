//! Outbound route configurations, one per HTTP port (named by the port, as Istio names them), with a
//! virtual host per service and a catch-all per outbound traffic policy.

use std::collections::HashSet;

use meshd_model::traffic::MESH_GATEWAY;
use meshd_model::{NodeType, OutboundPolicy, ServiceModel, Snapshot};
use meshd_proto::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};

use crate::Scope;
use crate::http_route::{RouteContext, default_retry_policy, virtual_service_routes};
use crate::names::*;
use crate::plan::{mesh_virtual_services, outbound_plan};
use crate::util::*;

pub fn outbound_routes(snapshot: &Snapshot, scope: &Scope) -> Vec<RouteConfiguration> {
    let mut routes = if scope.node_type != NodeType::Sidecar {
        crate::gateway::gateway_routes(snapshot, scope)
    } else {
        let plan = outbound_plan(snapshot, scope);
        plan.route_ports
            .iter()
            .map(|port| route_config_for_port(snapshot, scope, *port))
            .collect()
    };
    // DestinationRule consistent hashing: the hash key on every route to such a cluster. Every
    // request names its client to the server's metrics.
    for config in &mut routes {
        crate::traffic_policy::apply_consistent_hash(snapshot, scope, config);
        config
            .request_headers_to_add
            .push(crate::telemetry::peer_header());
    }
    routes
}

fn route_config_for_port(snapshot: &Snapshot, scope: &Scope, port: u32) -> RouteConfiguration {
    let mut used = HashSet::new();
    let mut virtual_hosts = Vec::new();
    // Services in the proxy's own namespace first, so their short names win (as in Kubernetes DNS).
    let mut services: Vec<&ServiceModel> = snapshot
        .registry
        .services
        .values()
        .map(|s| s.as_ref())
        .filter(|s| {
            s.port(port).is_some_and(|p| p.protocol.may_be_http()) && scope.sees(snapshot, s, port)
        })
        .collect();
    services.sort_by_key(|s| (s.namespace != scope.namespace, s.hostname.clone()));
    for svc in services {
        // Envoy rejects a route configuration where two virtual hosts share a domain: drop repeats.
        let domains: Vec<String> = domains_for(svc, port, &scope.namespace)
            .into_iter()
            .filter(|d| used.insert(d.to_ascii_lowercase()))
            .collect();
        if domains.is_empty() {
            continue;
        }
        let cluster = outbound_cluster(port, "", &svc.hostname);
        let ctx = RouteContext {
            snapshot,
            port,
            gateway: MESH_GATEWAY,
            namespace: &scope.namespace,
            labels: &scope.labels,
        };
        // The first VirtualService with HTTP routes for this caller wins; one with none here
        // (only TCP/TLS routes, or every match for another port or workload) does not claim it.
        let routes = mesh_virtual_services(snapshot, &svc.hostname, &scope.namespace)
            .into_iter()
            .map(|vs| virtual_service_routes(vs, &ctx))
            .find(|routes| !routes.is_empty())
            .unwrap_or_else(|| vec![default_route(&cluster)]);
        virtual_hosts.push(VirtualHost {
            name: format!("{}:{port}", svc.hostname),
            domains,
            routes,
            ..Default::default()
        });
    }
    let (name, cluster) = match scope.outbound_policy(snapshot) {
        OutboundPolicy::AllowAny => ("allow_any", PASSTHROUGH_CLUSTER),
        OutboundPolicy::RegistryOnly => ("block_all", BLACKHOLE_CLUSTER),
    };
    virtual_hosts.push(VirtualHost {
        name: name.to_string(),
        domains: vec!["*".to_string()],
        routes: vec![Route {
            name: name.to_string(),
            r#match: Some(prefix("/")),
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
    });
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts,
        validate_clusters: bool_value(false),
        ..Default::default()
    }
}

/// The names a client may use for a service on `port`, as Istio lists them: FQDN, `name.ns`,
/// `name.ns.svc`, the short name (same namespace only) and the VIPs — each bare and with `:port`.
fn domains_for(svc: &ServiceModel, port: u32, proxy_namespace: &str) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if svc.is_kubernetes() {
        names.push(format!("{}.{}.svc", svc.name, svc.namespace));
        names.push(format!("{}.{}", svc.name, svc.namespace));
        if svc.namespace == proxy_namespace {
            names.push(svc.name.clone());
        }
    }
    names.extend(
        svc.addresses
            .iter()
            .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
            .cloned(),
    );
    let mut out = Vec::with_capacity(names.len() * 2);
    for n in names {
        out.push(format!("{n}:{port}"));
        out.push(n);
    }
    out
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.to_string())),
        ..Default::default()
    }
}

/// Istio's default route: no timeout, two retries on connection-level failures and 503, never the
/// same host twice.
fn default_route(cluster: &str) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(prefix("/")),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.to_string())),
            timeout: Some(duration(0, 0)),
            retry_policy: Some(default_retry_policy()),
            ..Default::default()
        })),
        ..Default::default()
    }
}
