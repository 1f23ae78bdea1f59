//! VirtualService validation as istiod does it: every field istiod's validation (or its CRD
//! schema) refuses becomes an IST0106 error naming the field, and the object is left out;
//! dangling references are IST0101 warnings and the object is kept. HTTP routes are checked in
//! `http.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::finding::{Checks, Finding};
use crate::input::networking::{Destination, HttpRoute, StringMatch, VirtualService};
use crate::object::{Kind, ObjectKey};
use crate::registry::Registry;
use crate::syntax;

use super::{MESH_GATEWAY, VirtualServiceModel, host_matches, key_of, resolve_host};

mod http;

const GRPC_STATUS: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The numeric code of a gRPC status name (`UNAVAILABLE` → 14).
pub fn grpc_status_code(name: &str) -> Option<u32> {
    GRPC_STATUS
        .iter()
        .position(|s| s.eq_ignore_ascii_case(name))
        .and_then(|i| u32::try_from(i).ok())
}

/// Request headers Envoy will not let a route add or remove: pseudo-headers and `host`.
pub fn is_internal_header(name: &str) -> bool {
    name.starts_with(':') || name.eq_ignore_ascii_case("host")
}

/// Setting these request headers rewrites the authority instead.
pub fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// `10.0.0.0/8` or a bare address (a /32 or /128) → (address, prefix length).
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u32)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (text, None),
    };
    let ip: IpAddr = addr.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    (len <= max).then_some((ip, len))
}

/// The VirtualService validator's helpers.
#[derive(Debug)]
struct VirtualServiceRules;

type Check<'a> = Checks<'a, VirtualServiceRules>;

struct Context<'a> {
    namespace: &'a str,
    registry: &'a Registry,
    rules: &'a super::DestinationRules,
}

impl Check<'_> {
    fn result(&mut self, field: &str, result: Result<(), String>) {
        if let Err(e) = result {
            self.error(field, e);
        }
    }

    /// Where `empty_is_presence` (header and query matches) an empty match tests presence; a
    /// prefix match may be empty only for the URI.
    fn string_match(&mut self, m: &StringMatch, field: &str, empty_is_presence: bool, uri: bool) {
        let set = [&m.exact, &m.prefix, &m.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if set > 1 || (set == 0 && !empty_is_presence) {
            self.error(
                field,
                "exactly one of exact, prefix or regex must be set".to_string(),
            );
        }
        if !uri && m.prefix.as_deref() == Some("") {
            self.error(
                &format!("{field}.prefix"),
                "prefix string match should not be empty".to_string(),
            );
        }
        if let Some(re) = &m.regex {
            self.result(&format!("{field}.regex"), syntax::regex::re2(re));
        }
    }

    fn duration(&mut self, value: &str, field: &str) {
        self.result(field, syntax::duration_ms(value).map(|_| ()));
    }

    /// A match or destination port: `Some(0)` is "unset" where istiod says so (`zero_unset`).
    fn port(&mut self, port: Option<u32>, field: &str, zero_unset: bool) {
        match port {
            Some(0) if zero_unset => {}
            Some(p) => self.result(field, syntax::port(u64::from(p))),
            None => {}
        }
    }

    fn subnets(&mut self, subnets: &[String], field: &str) {
        for (i, s) in subnets.iter().enumerate() {
            self.result(&format!("{field}[{i}]"), syntax::ip_or_cidr(s));
        }
    }

    fn source_labels(&mut self, labels: &BTreeMap<String, String>, field: &str) {
        self.result(field, syntax::labels(labels));
    }

    fn gateway_names(&mut self, names: &[String], field: &str) {
        for (i, g) in names.iter().enumerate() {
            let at = format!("{field}[{i}]");
            match g.split_once('/') {
                None => self.result(&at, syntax::fqdn(g)),
                Some((ns, name)) => {
                    if !syntax::is_dns1123_label(ns) {
                        self.error(&at, format!("invalid value for namespace: {ns:?}"));
                    }
                    if !syntax::is_dns1123_label(name) {
                        self.error(&at, format!("invalid value for gateway name: {name:?}"));
                    }
                }
            }
        }
    }

    /// A destination: host required and a valid (wildcard) domain other than `*`; subset a DNS
    /// label; host and subset looked up (warnings only).
    fn destination(&mut self, d: &Destination, field: &str, ctx: &Context<'_>) {
        if d.host.is_empty() {
            self.error(&format!("{field}.host"), "host is required".to_string());
            return;
        }
        if d.host == "*" {
            self.error(
                &format!("{field}.host"),
                "invalid destination host *".to_string(),
            );
            return;
        }
        self.result(&format!("{field}.host"), syntax::wildcard_domain(&d.host));
        self.port(
            d.port.as_ref().map(|p| p.number),
            &format!("{field}.port.number"),
            false,
        );
        if let Some(subset) = &d.subset
            && !syntax::is_dns1123_label(subset)
        {
            self.error(
                &format!("{field}.subset"),
                format!("subset name is invalid: {subset:?}"),
            );
        }
        let host = resolve_host(&d.host, ctx.namespace);
        if !ctx.registry.services.contains_key(&host) {
            self.warn(
                "IST0101",
                &format!("{field}.host"),
                format!("referenced host not found: {host:?}"),
            );
        }
        if let Some(subset) = &d.subset
            && ctx
                .rules
                .get(&host)
                .and_then(|r| r.subset(subset))
                .is_none()
        {
            self.warn(
                "IST0101",
                &format!("{field}.subset"),
                format!("referenced host+subset in destinationrule not found: {host:?}+{subset:?}"),
            );
        }
    }

    /// Weighted destinations of an HTTP, TCP or TLS route. Like istiod, weights need not add up
    /// to 100 (Envoy shares by their ratio), but several destinations cannot all weigh 0.
    fn destinations<'d>(
        &mut self,
        list: impl Iterator<Item = (&'d Destination, Option<u32>)> + Clone,
        field: &str,
        ctx: &Context<'_>,
    ) {
        let count = list.clone().count();
        let total: u64 = list.clone().map(|(_, w)| u64::from(w.unwrap_or(0))).sum();
        if count > 1 && total == 0 {
            self.error(field, "total destination weight = 0".to_string());
        }
        for (j, (d, w)) in list.enumerate() {
            if w.is_some_and(|w| w > i32::MAX as u32) {
                self.error(
                    &format!("{field}[{j}].weight"),
                    "weight is too large".to_string(),
                );
            }
            self.destination(d, &format!("{field}[{j}].destination"), ctx);
        }
    }

    fn hosts(&mut self, vs: &VirtualService, mesh: bool) {
        let hosts = &vs.spec.hosts;
        if hosts.is_empty() {
            // istiod takes a VirtualService without hosts as a delegate; meshd does not
            // implement delegation, so refusing it is better than ignoring it.
            self.error(
                "spec.hosts",
                "at least one host is required (delegate VirtualServices are not supported)"
                    .to_string(),
            );
        }
        let mut all_valid = true;
        for (i, h) in hosts.iter().enumerate() {
            let at = format!("spec.hosts[{i}]");
            if let Err(e) = syntax::wildcard_domain(h) {
                if !syntax::is_ip(h) {
                    self.error(&at, e);
                    all_valid = false;
                }
            } else if mesh && h == "*" {
                self.error(
                    &at,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway"
                        .to_string(),
                );
                all_valid = false;
            }
        }
        if all_valid {
            for (i, a) in hosts.iter().enumerate() {
                for b in hosts.iter().skip(i + 1) {
                    if host_matches(a, b) || host_matches(b, a) {
                        self.error(
                            "spec.hosts",
                            format!("duplicate hosts in virtual service: {a} & {b}"),
                        );
                    }
                }
            }
        }
    }
}

/// An HTTP route with match ports of 0 (istiod's "unset") left out.
fn normalize_http(route: &HttpRoute) -> HttpRoute {
    let mut route = route.clone();
    for m in &mut route.matches {
        m.port = m.port.filter(|p| *p != 0);
    }
    route
}

pub(super) fn validate_virtual_service(
    vs: &VirtualService,
    registry: &Registry,
    rules: &super::DestinationRules,
    findings: &mut Vec<Finding>,
) -> Option<VirtualServiceModel> {
    let key = key_of(Kind::VirtualService, &vs.metadata);
    validate_as(key, vs, registry, rules, findings)
}

/// Validates `vs` as the object `key` says it came from (a Gateway API route converted to a
/// VirtualService is judged by the same rules, and its findings name the route).
pub(crate) fn validate_as(
    key: ObjectKey,
    vs: &VirtualService,
    registry: &Registry,
    rules: &super::DestinationRules,
    findings: &mut Vec<Finding>,
) -> Option<VirtualServiceModel> {
    let ns = key.namespace.clone();
    let ctx = Context {
        namespace: &ns,
        registry,
        rules,
    };
    let mut check = Check::new(&key);
    let spec = &vs.spec;
    check.gateway_names(&spec.gateways, "spec.gateways");
    let mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == MESH_GATEWAY);
    check.hosts(vs, mesh);
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        check.error(
            "spec",
            "http, tcp or tls must be provided in virtual service".to_string(),
        );
    }
    let hosts: Vec<String> = spec.hosts.iter().map(|h| resolve_host(h, &ns)).collect();
    for (i, route) in spec.http.iter().enumerate() {
        check.http_route(route, &format!("spec.http[{i}]"), &ctx);
    }
    for (i, route) in spec.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        if route.route.is_empty() {
            check.error(&format!("{at}.route"), "TCP route is required".to_string());
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            check.port(m.port, &format!("{mat}.port"), true);
            check.subnets(&m.destination_subnets, &format!("{mat}.destinationSubnets"));
            check.source_labels(&m.source_labels, &format!("{mat}.sourceLabels"));
            check.gateway_names(&m.gateways, &format!("{mat}.gateways"));
        }
        check.destinations(
            route.route.iter().map(|d| (&d.destination, d.weight)),
            &format!("{at}.route"),
            &ctx,
        );
    }
    for (i, route) in spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if route.matches.is_empty() {
            check.error(
                &format!("{at}.match"),
                "TLS route must have at least one match condition".to_string(),
            );
        }
        if route.route.is_empty() {
            check.error(&format!("{at}.route"), "TLS route is required".to_string());
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            if m.sni_hosts.is_empty() {
                check.error(
                    &format!("{mat}.sniHosts"),
                    "TLS match must have at least one SNI host".to_string(),
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let field = format!("{mat}.sniHosts[{k}]");
                if let Err(e) = syntax::wildcard_domain(sni) {
                    if !syntax::is_ip(sni) {
                        check.error(&field, e);
                    }
                    continue;
                }
                let sni = resolve_host(sni, &ns);
                if !hosts.iter().any(|h| host_matches(h, &sni)) {
                    check.error(
                        &field,
                        format!(
                            "SNI host {sni:?} is not a compatible subset of any of the virtual \
                             service hosts"
                        ),
                    );
                }
            }
            check.port(m.port, &format!("{mat}.port"), true);
            check.subnets(&m.destination_subnets, &format!("{mat}.destinationSubnets"));
            check.source_labels(&m.source_labels, &format!("{mat}.sourceLabels"));
            check.gateway_names(&m.gateways, &format!("{mat}.gateways"));
        }
        check.destinations(
            route.route.iter().map(|d| (&d.destination, d.weight)),
            &format!("{at}.route"),
            &ctx,
        );
    }
    for (i, message) in syntax::export_to(&ns, &spec.export_to, syntax::ExportKind::Plain) {
        let field = i.map_or("spec.exportTo".to_string(), |i| {
            format!("spec.exportTo[{i}]")
        });
        check.error(&field, message);
    }
    if !check.finish(findings) {
        return None;
    }
    let gateways = if spec.gateways.is_empty() {
        vec![MESH_GATEWAY.to_string()]
    } else {
        spec.gateways
            .iter()
            .map(|g| {
                if g == MESH_GATEWAY || g.contains('/') {
                    g.clone()
                } else {
                    format!("{ns}/{g}")
                }
            })
            .collect()
    };
    let export_to = &spec.export_to;
    // None: every namespace sees it.
    let export_to = (!export_to.is_empty() && !export_to.iter().any(|e| e == "*")).then(|| {
        export_to
            .iter()
            .map(|e| if e == "." { ns.clone() } else { e.clone() })
            .collect::<BTreeSet<String>>()
    });
    let mut tcp = spec.tcp.clone();
    for m in tcp.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        m.port = m.port.filter(|p| *p != 0);
    }
    let mut tls = spec.tls.clone();
    for m in tls.iter_mut().flat_map(|r| r.matches.iter_mut()) {
        m.port = m.port.filter(|p| *p != 0);
    }
    Some(VirtualServiceModel {
        hosts,
        gateways,
        http: spec.http.iter().map(normalize_http).collect(),
        tcp,
        tls,
        export_to,
        gateway_semantics: key.kind.is_gateway_api(),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_bare_addresses_parse() {
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Some(("10.0.0.0".parse().unwrap(), 8))
        );
        assert_eq!(
            parse_cidr("10.1.2.3"),
            Some(("10.1.2.3".parse().unwrap(), 32))
        );
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
        assert_eq!(parse_cidr("example.com"), None);
    }

    #[test]
    fn grpc_status_names_map_to_codes() {
        assert_eq!(grpc_status_code("OK"), Some(0));
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("unauthenticated"), Some(16));
        assert_eq!(grpc_status_code("NOPE"), None);
    }
}
