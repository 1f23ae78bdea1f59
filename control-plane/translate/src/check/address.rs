//! Addresses Envoy resolves without DNS: listener addresses, the endpoints of static and EDS
//! clusters, and filter chain CIDR ranges must be IP addresses
//! (`source/common/network/utility.cc`, `source/common/network/resolver_impl.cc`: "malformed IP
//! address").

use std::net::IpAddr;

use meshd_proto::pb::envoy::config::core::v3::{Address, address};

use super::{Violation, join};

/// Envoy parses addresses with `inet_pton`: dotted quads and IPv6 text, no hostnames, no
/// brackets, no zone suffixes.
pub(super) fn is_ip(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
}

/// A socket address whose host must be an IP address (a named resolver is left to Envoy).
pub(super) fn check_ip(address: Option<&Address>, path: &str, out: &mut Vec<Violation>) {
    let Some(address::Address::SocketAddress(socket)) = address.and_then(|a| a.address.as_ref())
    else {
        return;
    };
    if socket.resolver_name.is_empty() && !is_ip(&socket.address) {
        out.push(Violation::new(
            join(path, "socket_address.address"),
            format!("malformed IP address: {}", socket.address),
        ));
    }
}
