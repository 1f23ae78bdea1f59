//! Cluster rules beyond protoc-gen-validate, from the cluster implementations Envoy 1.40
//! instantiates.

use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy,
};

use super::Violation;
use super::endpoint::endpoint_addresses;

/// `typed_extension_protocol_options` keys Envoy has a protocol-options factory for
/// (`source/common/upstream/upstream_impl.cc`: "Didn't find a registered network or http
/// filter or protocol options implementation").
const PROTOCOL_OPTIONS: [&str; 2] = [
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions",
];

pub(super) fn check(cluster: &Cluster) -> Vec<Violation> {
    let mut out = Vec::new();
    let kind = match cluster.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).ok(),
        // A custom cluster type is its extension's business.
        Some(ClusterDiscoveryType::ClusterType(_)) => None,
        None => Some(DiscoveryType::Static),
    };
    let lb = LbPolicy::try_from(cluster.lb_policy).ok();
    match kind {
        // source/extensions/clusters/eds/eds.cc and source/common/config/utility.cc.
        Some(DiscoveryType::Eds) => match &cluster.eds_cluster_config {
            None => out.push(Violation::new(
                "eds_cluster_config",
                "cannot create an EDS cluster without an EDS config",
            )),
            Some(eds) if eds.eds_config.is_none() => out.push(Violation::new(
                "eds_cluster_config.eds_config",
                "Missing config source specifier",
            )),
            Some(_) => {}
        },
        // source/extensions/clusters/static/static_cluster.cc resolves without DNS.
        Some(DiscoveryType::Static) => {
            if let Some(cla) = &cluster.load_assignment {
                endpoint_addresses(cla, "load_assignment", &mut out);
            }
        }
        // source/extensions/clusters/logical_dns/logical_dns_cluster.cc.
        Some(DiscoveryType::LogicalDns) => {
            let localities = cluster
                .load_assignment
                .as_ref()
                .map_or(&[][..], |c| &c.endpoints[..]);
            let single = localities.len() == 1 && localities[0].lb_endpoints.len() == 1;
            if !single {
                out.push(Violation::new(
                    "load_assignment",
                    "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single \
                     lb_endpoint",
                ));
            }
        }
        // source/extensions/clusters/original_dst/original_dst_cluster.cc and
        // source/common/upstream/cluster_factory_impl.cc.
        Some(DiscoveryType::OriginalDst) => {
            if lb != Some(LbPolicy::ClusterProvided) {
                out.push(Violation::new(
                    "lb_policy",
                    "Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'",
                ));
            }
            if cluster.load_assignment.is_some() {
                out.push(Violation::new(
                    "load_assignment",
                    "ORIGINAL_DST clusters must have no load assignment configured",
                ));
            }
        }
        Some(DiscoveryType::StrictDns) | None => {}
    }
    // source/common/upstream/cluster_manager_impl.cc: only ORIGINAL_DST provides its own.
    if lb == Some(LbPolicy::ClusterProvided)
        && kind.is_some()
        && kind != Some(DiscoveryType::OriginalDst)
    {
        out.push(Violation::new(
            "lb_policy",
            "cluster provided LB specified but the cluster type does not provide one",
        ));
    }
    load_balancer(cluster, lb, &mut out);
    let mut keys: Vec<&String> = cluster.typed_extension_protocol_options.keys().collect();
    keys.sort();
    for key in keys {
        if !PROTOCOL_OPTIONS.contains(&key.as_str()) {
            out.push(Violation::new(
                format!("typed_extension_protocol_options[{key:?}]"),
                format!("no protocol options implementation is registered for name '{key}'"),
            ));
        }
    }
    out
}

/// The hashing load balancers' own settings, used only with their policy: ring sizes in order
/// (`source/extensions/load_balancing_policies/ring_hash/ring_hash_lb.cc`) and a prime Maglev
/// table (`source/extensions/load_balancing_policies/maglev/maglev_lb.cc`).
fn load_balancer(cluster: &Cluster, lb: Option<LbPolicy>, out: &mut Vec<Violation>) {
    match (lb, &cluster.lb_config) {
        (Some(LbPolicy::RingHash), Some(LbConfig::RingHashLbConfig(ring))) => {
            let min = ring.minimum_ring_size.map_or(1024, |v| v.value);
            let max = ring.maximum_ring_size.map_or(8 * 1024 * 1024, |v| v.value);
            if min > max {
                out.push(Violation::new(
                    "ring_hash_lb_config",
                    format!("ring hash: minimum_ring_size ({min}) > maximum_ring_size ({max})"),
                ));
            }
        }
        (Some(LbPolicy::Maglev), Some(LbConfig::MaglevLbConfig(maglev))) => {
            let size = maglev.table_size.map_or(65537, |v| v.value);
            if !is_prime(size) {
                out.push(Violation::new(
                    "maglev_lb_config.table_size",
                    format!("The table size of maglev must be prime number, not {size}"),
                ));
            }
        }
        _ => {}
    }
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
