//! What Envoy would refuse, found before meshd sends it: protoc-gen-validate's rules
//! (`meshd_proto::validate`) and the checks Envoy 1.40 makes beyond them when it builds a
//! cluster, endpoint set, listener or route table, and across one response (duplicate names,
//! two listeners on one address). Pure: no I/O.
//!
//! Each rule names the Envoy source file it comes from where it is written.

mod access_log;
mod address;
mod cluster;
mod common;
mod endpoint;
mod filter_chain;
mod filter_chain_order;
mod http;
mod intervals;
mod jwt;
mod listener;
pub mod regex;
mod route;
mod set;
mod tls;

use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::type_url;

pub use meshd_proto::validate::Violation;
pub use set::AddressIndex;

/// Every violation of one resource of type `type_url`: protoc-gen-validate's rules (into every
/// `Any` it holds), regexes, durations, and the type's own rules.
pub fn check_resource(type_url: &str, resource: &Any) -> Vec<Violation> {
    if resource.type_url != type_url {
        return vec![Violation::new(
            "",
            format!("resource is a {}, not a {type_url}", resource.type_url),
        )];
    }
    let mut out = meshd_proto::validate::validate_any(resource);
    out.extend(common::check(resource));
    out.extend(match type_url {
        type_url::CLUSTER => meshd_proto::unpack(resource)
            .map(|c| cluster::check(&c))
            .unwrap_or_default(),
        type_url::ENDPOINT => meshd_proto::unpack(resource)
            .map(|e| endpoint::check(&e))
            .unwrap_or_default(),
        type_url::LISTENER => meshd_proto::unpack(resource)
            .map(|l| listener::check(&l))
            .unwrap_or_default(),
        type_url::ROUTE => meshd_proto::unpack(resource)
            .map(|r| route::check(&r))
            .unwrap_or_default(),
        _ => Vec::new(),
    });
    out
}

/// The rules across one response of type `type_url` (every resource Envoy holds of a wildcard
/// type, or the subscribed ones): violations with the name of the resource they concern.
pub fn check_set(type_url: &str, resources: &[Any]) -> Vec<(String, Violation)> {
    set::check(type_url, resources)
}

/// Extends a path with a field, as the violations spell paths (`routes[0].match`).
fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else if field.starts_with('[') {
        format!("{path}{field}")
    } else {
        format!("{path}.{field}")
    }
}
