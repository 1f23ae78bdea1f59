//! Clusters: one per outbound service port, one per inbound workload port, and Istio's fixed ones.

use std::collections::HashMap;

use meshd_model::{
    DestinationRuleModel, NodeType, Protocol, Proxy, Resolution, ServiceModel, Snapshot,
};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, circuit_breakers::Thresholds, cluster,
};
use meshd_proto::pb::envoy::config::core::v3::{
    BindConfig, Http2ProtocolOptions, SocketAddress, socket_address,
};
use meshd_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use meshd_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};

use crate::Scope;
use crate::names::*;
use crate::plan::{gateway_servers, inbound_ports};
use crate::util::*;
use crate::{tls, traffic_policy};

fn connect_timeout(snapshot: &Snapshot) -> Option<meshd_proto::pb::google::protobuf::Duration> {
    let (s, n) = snapshot.mesh.duration_secs().unwrap_or((10, 0));
    Some(duration(s, n))
}

/// Istio leaves unset circuit-breaker thresholds at the maximum rather than Envoy's 1024 defaults.
fn default_circuit_breakers() -> Option<CircuitBreakers> {
    Some(CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: u32_value(u32::MAX),
            max_pending_requests: u32_value(u32::MAX),
            max_requests: u32_value(u32::MAX),
            max_retries: u32_value(u32::MAX),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn http2_options() -> HashMap<String, meshd_proto::pb::google::protobuf::Any> {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    HashMap::from([(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        pack(&options),
    )])
}

fn discovery(t: cluster::DiscoveryType) -> Option<cluster::ClusterDiscoveryType> {
    Some(cluster::ClusterDiscoveryType::Type(t as i32))
}

fn base_cluster(snapshot: &Snapshot, name: String, t: cluster::DiscoveryType) -> Cluster {
    Cluster {
        name,
        cluster_discovery_type: discovery(t),
        connect_timeout: connect_timeout(snapshot),
        ..Default::default()
    }
}

/// Clusters for every service port the scope can see, plus BlackHole and Passthrough.
pub fn outbound_clusters(snapshot: &Snapshot, scope: &Scope) -> Vec<Cluster> {
    let mut out = Vec::new();
    for svc in snapshot.registry.services.values() {
        let rule = traffic_policy::rule_for(snapshot, scope, &svc.hostname).map(|r| r.as_ref());
        // Auto-mTLS for in-mesh destinations, when this proxy holds a certificate to present.
        let auto_mtls = scope.mtls
            && snapshot.mesh.enable_auto_mtls
            && !svc.mesh_external
            && svc.resolution == Resolution::ClientSideLb;
        for sp in svc
            .ports
            .iter()
            .filter(|p| scope.sees(snapshot, svc, p.port))
        {
            let base = outbound_cluster_for(snapshot, svc, sp.port, sp.protocol, rule);
            // The destination's identities, for auto-mTLS or a rule's ISTIO_MUTUAL.
            let sans = if scope.mtls && (auto_mtls || rule.is_some()) {
                tls::endpoint_identities(
                    snapshot,
                    snapshot.registry.endpoints(&svc.hostname, sp.port),
                )
            } else {
                Vec::new()
            };
            let with_policy = |mut c: Cluster, subset: &str| {
                let settings = rule
                    .map(|r| r.settings(subset, sp.port))
                    .unwrap_or_default();
                let target = traffic_policy::ClusterTarget {
                    host: &svc.hostname,
                    port: sp.port,
                    subset,
                    protocol: sp.protocol,
                    proxy_mtls: scope.mtls,
                    auto_mtls,
                    sans: &sans,
                    proxy_locality: scope.locality.as_deref(),
                    rule: rule.map(|r| &r.key),
                };
                traffic_policy::apply(&mut c, &settings, &target);
                c
            };
            // One cluster per DestinationRule subset, with its own settings and endpoints.
            for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
                let mut c = base.clone();
                c.name = outbound_cluster(sp.port, &subset.name, &svc.hostname);
                if let Some(eds) = c.eds_cluster_config.as_mut() {
                    eds.service_name = c.name.clone();
                }
                out.push(with_policy(c, &subset.name));
            }
            out.push(with_policy(base, ""));
        }
    }
    let twins = sni_dnat_clusters(snapshot, scope, &out);
    out.extend(twins);
    let mut blackhole = base_cluster(
        snapshot,
        BLACKHOLE_CLUSTER.to_string(),
        cluster::DiscoveryType::Static,
    );
    blackhole.metadata = crate::telemetry::catch_all_metadata(BLACKHOLE_CLUSTER);
    out.push(blackhole);
    let mut passthrough = base_cluster(
        snapshot,
        PASSTHROUGH_CLUSTER.to_string(),
        cluster::DiscoveryType::OriginalDst,
    );
    passthrough.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    passthrough.circuit_breakers = default_circuit_breakers();
    passthrough.metadata = crate::telemetry::catch_all_metadata(PASSTHROUGH_CLUSTER);
    out.push(passthrough);
    out.extend(crate::telemetry::clusters(snapshot));
    out
}

/// AUTO_PASSTHROUGH gateways need a cluster named like each SNI they may see: a twin of every
/// mesh cluster (same endpoints, no TLS of its own — the client's mTLS passes through).
fn sni_dnat_clusters(snapshot: &Snapshot, scope: &Scope, clusters: &[Cluster]) -> Vec<Cluster> {
    let auto = gateway_servers::selected(snapshot, scope).iter().any(|g| {
        g.servers
            .iter()
            .any(|s| gateway_servers::kind(s) == Some(gateway_servers::ServerKind::AutoPassthrough))
    });
    if !auto {
        return Vec::new();
    }
    clusters
        .iter()
        .filter_map(|c| {
            let (port, subset, host) = crate::names::parse_outbound_cluster(&c.name)?;
            let mut twin = c.clone();
            twin.name = crate::tls::mesh_sni(port, subset, host);
            twin.transport_socket = None;
            twin.transport_socket_matches.clear();
            Some(twin)
        })
        .collect()
}

fn outbound_cluster_for(
    snapshot: &Snapshot,
    svc: &ServiceModel,
    port: u32,
    protocol: Protocol,
    rule: Option<&DestinationRuleModel>,
) -> Cluster {
    let name = outbound_cluster(port, "", &svc.hostname);
    let mut c = match svc.resolution {
        Resolution::ClientSideLb => {
            let mut c = base_cluster(snapshot, name.clone(), cluster::DiscoveryType::Eds);
            c.eds_cluster_config = Some(cluster::EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name,
            });
            c.lb_policy = cluster::LbPolicy::LeastRequest as i32;
            c
        }
        Resolution::Passthrough => {
            let mut c = base_cluster(snapshot, name, cluster::DiscoveryType::OriginalDst);
            c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
            c
        }
        Resolution::DnsLb | Resolution::DnsRoundRobin => {
            let logical = svc.resolution == Resolution::DnsRoundRobin;
            let t = if logical {
                cluster::DiscoveryType::LogicalDns
            } else {
                cluster::DiscoveryType::StrictDns
            };
            let mut c = base_cluster(snapshot, name.clone(), t);
            c.dns_lookup_family = cluster::DnsLookupFamily::V4Only as i32;
            let mut targets: Vec<(String, u32)> = snapshot
                .registry
                .endpoints(&svc.hostname, port)
                .iter()
                .map(|e| (e.address.clone(), e.port))
                .collect();
            if targets.is_empty() {
                targets.push((svc.hostname.trim_start_matches("*.").to_string(), port));
            }
            // LOGICAL_DNS takes exactly one host.
            if logical {
                targets.truncate(1);
            }
            c.load_assignment = Some(ClusterLoadAssignment {
                cluster_name: name,
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: targets
                        .into_iter()
                        .map(|(host, port)| LbEndpoint {
                            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                                Endpoint {
                                    address: Some(socket_address(&host, port)),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            });
            c
        }
    };
    c.circuit_breakers = default_circuit_breakers();
    if protocol.is_http2() {
        c.typed_extension_protocol_options = http2_options();
    }
    let source = rule
        .map(|r| r.key.config_path())
        .unwrap_or_else(|| svc.source.config_path());
    c.metadata = crate::telemetry::cluster_metadata(&source, svc);
    c
}

/// `inbound|<port>||` for each port of the proxy's workload, and InboundPassthroughCluster.
pub fn inbound_clusters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Cluster> {
    if proxy.node_type != NodeType::Sidecar {
        return Vec::new();
    }
    let mut out: Vec<Cluster> = inbound_ports(snapshot, proxy)
        .into_iter()
        .map(|p| {
            let mut c = inbound_passthrough(snapshot, inbound_cluster(p.port));
            if p.protocol.is_http2() {
                c.typed_extension_protocol_options = http2_options();
            }
            c
        })
        .collect();
    out.push(inbound_passthrough(
        snapshot,
        INBOUND_PASSTHROUGH_CLUSTER.to_string(),
    ));
    out
}

/// Inbound clusters connect to the original destination (the app on the pod IP) from 127.0.0.6,
/// which the capture rules let through untouched.
fn inbound_passthrough(snapshot: &Snapshot, name: String) -> Cluster {
    let mut c = base_cluster(snapshot, name, cluster::DiscoveryType::OriginalDst);
    c.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
    c.circuit_breakers = default_circuit_breakers();
    c.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: INBOUND_PASSTHROUGH_BIND.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}
