//! ClusterLoadAssignment: EDS hands Envoy endpoints it does not resolve, so each address must be
//! an IP address (`source/extensions/clusters/eds/eds.cc` through the IP resolver).

use meshd_proto::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};

use super::Violation;
use super::address::check_ip;

pub(super) fn check(cla: &ClusterLoadAssignment) -> Vec<Violation> {
    let mut out = Vec::new();
    endpoint_addresses(cla, "", &mut out);
    out
}

/// Every endpoint's address and additional addresses, as IP addresses.
pub(super) fn endpoint_addresses(
    cla: &ClusterLoadAssignment,
    path: &str,
    out: &mut Vec<Violation>,
) {
    for (i, locality) in cla.endpoints.iter().enumerate() {
        for (j, lb) in locality.lb_endpoints.iter().enumerate() {
            let Some(lb_endpoint::HostIdentifier::Endpoint(endpoint)) = &lb.host_identifier else {
                continue;
            };
            let at = super::join(path, &format!("endpoints[{i}].lb_endpoints[{j}].endpoint"));
            check_ip(endpoint.address.as_ref(), &super::join(&at, "address"), out);
            for (k, extra) in endpoint.additional_addresses.iter().enumerate() {
                check_ip(
                    extra.address.as_ref(),
                    &super::join(&at, &format!("additional_addresses[{k}].address")),
                    out,
                );
            }
        }
    }
}
