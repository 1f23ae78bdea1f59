//! ClusterLoadAssignments for every EDS cluster.

use meshd_model::input::labels_match;
use meshd_model::{Resolution, Snapshot};
use meshd_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};

use crate::names::outbound_cluster;
use crate::util::{socket_address, u32_value};

/// One assignment per EDS cluster (every ClientSideLb service port), named like the cluster.
pub fn endpoints(snapshot: &Snapshot) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    for svc in snapshot.registry.services.values() {
        if svc.resolution != Resolution::ClientSideLb {
            continue;
        }
        let rule = snapshot.traffic.destination_rule(&svc.hostname);
        for sp in &svc.ports {
            let eps = snapshot.registry.endpoints(&svc.hostname, sp.port);
            // Subset clusters get the endpoints whose workload labels the subset selects.
            for subset in rule.iter().flat_map(|r| r.subsets.iter()) {
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
    }
    out
}

fn assignment(
    snapshot: &Snapshot,
    cluster_name: String,
    eps: &[meshd_model::Endpoint],
) -> ClusterLoadAssignment {
    let lb_endpoints: Vec<LbEndpoint> = eps
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(socket_address(&e.address, e.port)),
                ..Default::default()
            })),
            load_balancing_weight: u32_value(e.weight.max(1)),
            metadata: if crate::tls::endpoint_speaks_mtls(snapshot, e) {
                crate::tls::mtls_endpoint_metadata()
            } else {
                None
            },
            ..Default::default()
        })
        .collect();
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![LocalityLbEndpoints {
            lb_endpoints,
            ..Default::default()
        }]
    };
    ClusterLoadAssignment {
        cluster_name,
        endpoints,
        ..Default::default()
    }
}
