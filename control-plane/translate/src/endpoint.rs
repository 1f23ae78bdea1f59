//! ClusterLoadAssignments for every EDS cluster.

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
        for sp in &svc.ports {
            let eps = snapshot.registry.endpoints(&svc.hostname, sp.port);
            let lb_endpoints = eps
                .iter()
                .map(|e| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(&e.address, e.port)),
                        ..Default::default()
                    })),
                    load_balancing_weight: u32_value(e.weight.max(1)),
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            let endpoints = if lb_endpoints.is_empty() {
                Vec::new()
            } else {
                vec![LocalityLbEndpoints {
                    lb_endpoints,
                    ..Default::default()
                }]
            };
            out.push(ClusterLoadAssignment {
                cluster_name: outbound_cluster(sp.port, "", &svc.hostname),
                endpoints,
                ..Default::default()
            });
        }
    }
    out
}
