//! ClusterLoadAssignments for every EDS cluster.

mod locality;

use std::collections::{BTreeMap, BTreeSet};

use meshd_model::input::labels_match;
use meshd_model::traffic::locality::Locality;
use meshd_model::{Resolution, ServiceModel, Snapshot};
use meshd_proto::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use meshd_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use crate::names::outbound_cluster;
use crate::util::{socket_address, u32_value};

/// The bootstrap's own ([`proxy_endpoints`]); one assignment per EDS cluster (every ClientSideLb
/// service port), named like the cluster; then the per-locality ones.
pub fn endpoints(snapshot: &Snapshot) -> Vec<ClusterLoadAssignment> {
    let services = snapshot.registry.services.values();
    let mut out: Vec<ClusterLoadAssignment> = proxy_endpoints();
    out.extend(
        services
            .clone()
            .flat_map(|svc| service_endpoints(snapshot, svc)),
    );
    // Per-locality variants for proxies that balance by locality.
    let callers = caller_localities(snapshot);
    out.extend(services.flat_map(|svc| service_locality_endpoints(snapshot, svc, &callers)));
    out
}

/// What every proxy's bootstrap clusters read over EDS, whatever the mesh holds: the readiness
/// cluster's endpoint.
pub fn proxy_endpoints() -> Vec<ClusterLoadAssignment> {
    vec![crate::bootstrap::readiness_assignment()]
}

/// The assignments of one service's clusters (its ports, and each subset of the rules for its
/// host), without the per-locality ones: what [`endpoints`] holds for it. Built per service so a
/// control plane can rebuild only the services whose endpoints changed.
pub fn service_endpoints(snapshot: &Snapshot, svc: &ServiceModel) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    if svc.resolution != Resolution::ClientSideLb {
        return out;
    }
    // Endpoints are shared by every proxy, so they cover the subsets of every rule for the
    // host (the first definition of a name wins, rules for exactly this host first).
    let mut rules: Vec<_> = snapshot
        .traffic
        .destination_rules
        .for_host(&svc.hostname)
        .collect();
    rules.sort_by_key(|r| r.host != svc.hostname);
    let mut subsets: Vec<&meshd_model::traffic::SubsetModel> = Vec::new();
    for s in rules.iter().flat_map(|r| r.subsets.iter()) {
        if !subsets.iter().any(|known| known.name == s.name) {
            subsets.push(s);
        }
    }
    for sp in &svc.ports {
        let eps = snapshot.registry.endpoints(&svc.hostname, sp.port);
        // Subset clusters get the endpoints whose workload labels the subset selects.
        for subset in &subsets {
            let selected: Vec<_> = eps
                .iter()
                .filter(|e| labels_match(&subset.labels, &e.labels))
                .cloned()
                .collect();
            out.push(assignment(
                snapshot,
                outbound_cluster(sp.port, &subset.name, &svc.hostname),
                &selected,
            ));
        }
        out.push(assignment(
            snapshot,
            outbound_cluster(sp.port, "", &svc.hostname),
            eps,
        ));
    }
    out
}

/// The localities calling proxies may be in, while some rule balances by locality (empty
/// otherwise): each gets its own variant of a locality-balanced cluster's assignment.
pub fn caller_localities(snapshot: &Snapshot) -> BTreeSet<Locality> {
    locality::callers(snapshot)
}

/// One service's per-locality assignments, one per locality in `callers`
/// ([`caller_localities`]) for each of its clusters that balances by locality.
pub fn service_locality_endpoints(
    snapshot: &Snapshot,
    svc: &ServiceModel,
    callers: &BTreeSet<Locality>,
) -> Vec<ClusterLoadAssignment> {
    locality::service_assignments(snapshot, svc, callers)
}

/// One endpoint as Envoy takes it, with its workload's names; with a sidecar, marked for
/// auto-mTLS.
pub(crate) fn lb_endpoint(snapshot: &Snapshot, e: &meshd_model::Endpoint) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
        load_balancing_weight: u32_value(e.weight.max(1)),
        metadata: crate::tls::endpoint_metadata(
            crate::tls::endpoint_speaks_mtls(snapshot, e),
            crate::telemetry::endpoint_metadata(e.workload.as_deref(), &e.namespace, &e.labels),
        ),
        ..Default::default()
    }
}

fn assignment(
    snapshot: &Snapshot,
    cluster_name: String,
    eps: &[meshd_model::Endpoint],
) -> ClusterLoadAssignment {
    // Grouped by locality, as istiod groups them, so Envoy (and `proxy-config endpoints`) sees
    // where each endpoint is; all at one priority, so the grouping alone changes no balancing.
    let mut groups: BTreeMap<Option<Locality>, Vec<LbEndpoint>> = BTreeMap::new();
    for e in eps {
        groups
            .entry(e.locality())
            .or_default()
            .push(lb_endpoint(snapshot, e));
    }
    let endpoints = groups
        .into_iter()
        .map(|(locality, lb_endpoints)| LocalityLbEndpoints {
            locality: locality.map(|l| EnvoyLocality {
                region: l.region,
                zone: l.zone,
                sub_zone: l.subzone,
            }),
            lb_endpoints,
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name,
        endpoints,
        ..Default::default()
    }
}
