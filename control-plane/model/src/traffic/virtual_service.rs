//! VirtualService validation: every field Envoy would reject, or Istio's validation refuses, becomes
//! an IST0106 error naming the field (the object is left out); dangling references are IST0101
//! warnings (the object is kept).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::duration::parse as parse_duration;
use crate::finding::{Checks, Finding};
use crate::input::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpRoute, Percent, StringMatch,
    VirtualService,
};
use crate::object::Kind;
use crate::registry::Registry;

use super::{MESH_GATEWAY, VirtualServiceModel, key_of, resolve_host};

/// Istio's `retryOn` names; Envoy takes them as they are.
const RETRY_ON: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

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

const HTTP_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
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

/// The VirtualService validator's helpers.
#[derive(Debug)]
struct VirtualServiceRules;

type Check<'a> = Checks<'a, VirtualServiceRules>;

impl Check<'_> {
    /// `empty_is_presence`: in header and query matches an empty match tests presence.
    fn string_match(&mut self, m: &StringMatch, field: &str, empty_is_presence: bool) {
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
        if empty_is_presence && m.prefix.as_deref() == Some("") {
            self.error(&format!("{field}.prefix"), "prefix is empty".to_string());
        }
        if let Some(re) = &m.regex {
            self.regex(re, &format!("{field}.regex"));
        }
    }

    fn regex(&mut self, re: &str, field: &str) {
        if re.is_empty() {
            self.error(field, "regex is empty".to_string());
            return;
        }
        // Envoy compiles RE2; Rust's regex accepts the same syntax and rejects what RE2 rejects
        // (look-around, back-references).
        if let Err(e) = regex::Regex::new(re) {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            self.error(field, format!("invalid regex {re:?}: {first}"));
        }
    }

    fn duration(&mut self, value: &str, field: &str) -> Option<(i64, i32)> {
        match parse_duration(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(field, e);
                None
            }
        }
    }

    fn percent(&mut self, p: &Percent, field: &str) {
        if !(0.0..=100.0).contains(&p.value) {
            self.error(
                field,
                format!("percentage {} is not between 0 and 100", p.value),
            );
        }
    }

    fn header_name(&mut self, name: &str, field: &str) {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        let bare = name.strip_prefix(':').unwrap_or(name);
        if bare.is_empty() || !bare.chars().all(token) {
            self.error(field, format!("invalid header name {name:?}"));
        }
    }

    fn header_operations(&mut self, ops: &HeaderOperations, field: &str, request: bool) {
        for (verb, headers) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in headers {
                let at = format!("{field}.{verb}.{name}");
                self.header_name(name, &at);
                if value.contains(['\r', '\n', '\0']) {
                    self.error(&at, "header values must not hold CR, LF or NUL".to_string());
                }
                if is_internal_header(name) && !(request && is_authority_header(name)) {
                    self.warn(
                        "IST0106",
                        &at,
                        format!("{name:?} cannot be changed by a route; ignored"),
                    );
                }
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            let at = format!("{field}.remove[{i}]");
            self.header_name(name, &at);
            if is_internal_header(name) {
                self.warn(
                    "IST0106",
                    &at,
                    format!("{name:?} cannot be removed by a route; ignored"),
                );
            }
        }
    }

    fn headers(&mut self, headers: &Headers, field: &str) {
        if let Some(r) = &headers.request {
            self.header_operations(r, &format!("{field}.request"), true);
        }
        if let Some(r) = &headers.response {
            self.header_operations(r, &format!("{field}.response"), false);
        }
    }

    fn port(&mut self, port: Option<u32>, field: &str) {
        if let Some(p) = port
            && !(1..=65535).contains(&p)
        {
            self.error(field, format!("port {p} is out of range"));
        }
    }

    fn subnets(&mut self, subnets: &[String], field: &str) {
        for (i, s) in subnets.iter().enumerate() {
            if parse_cidr(s).is_none() {
                self.error(
                    &format!("{field}[{i}]"),
                    format!("{s:?} is not an IP address or CIDR"),
                );
            }
        }
    }
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

struct Context<'a> {
    namespace: &'a str,
    registry: &'a Registry,
    rules: &'a super::DestinationRules,
}

impl Check<'_> {
    /// A destination: host required; host and subset looked up (warnings only).
    fn destination(&mut self, d: &Destination, field: &str, ctx: &Context<'_>) {
        if d.host.is_empty() {
            self.error(&format!("{field}.host"), "host is required".to_string());
            return;
        }
        self.port(d.port.as_ref().map(|p| p.number), &format!("{field}.port"));
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

    /// Weighted destinations of an HTTP, TCP or TLS route.
    fn destinations<'d>(
        &mut self,
        list: impl Iterator<Item = (&'d Destination, Option<u32>)> + Clone,
        field: &str,
        ctx: &Context<'_>,
    ) {
        let count = list.clone().count();
        if list.clone().any(|(_, w)| w.is_some()) || count > 1 {
            let total: u32 = list.clone().map(|(_, w)| w.unwrap_or(0)).sum();
            if total != 100 {
                self.error(
                    field,
                    format!("destination weights add up to {total}, not 100"),
                );
            }
        }
        for (j, (d, _)) in list.enumerate() {
            self.destination(d, &format!("{field}[{j}].destination"), ctx);
        }
    }

    fn cors(&mut self, cors: &CorsPolicy, field: &str) {
        if cors.allow_origins.is_empty() {
            self.warn(
                "IST0106",
                &format!("{field}.allowOrigins"),
                "no origin is allowed: every cross-origin request is refused".to_string(),
            );
        }
        for (k, o) in cors.allow_origins.iter().enumerate() {
            self.string_match(o, &format!("{field}.allowOrigins[{k}]"), false);
        }
        for (k, m) in cors.allow_methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&m.as_str()) {
                self.error(
                    &format!("{field}.allowMethods[{k}]"),
                    format!("{m:?} is not an HTTP method"),
                );
            }
        }
        for (list, name) in [
            (&cors.allow_headers, "allowHeaders"),
            (&cors.expose_headers, "exposeHeaders"),
        ] {
            for (k, h) in list.iter().enumerate() {
                if h != "*" {
                    self.header_name(h, &format!("{field}.{name}[{k}]"));
                }
            }
        }
        if let Some(age) = &cors.max_age {
            let at = format!("{field}.maxAge");
            if let Some((s, n)) = self.duration(age, &at)
                && (s < 1 || n != 0)
            {
                self.error(
                    &at,
                    format!("maxAge {age:?} must be whole seconds, at least 1s"),
                );
            }
        }
        if let Some(u) = &cors.unmatched_preflights
            && !matches!(u.as_str(), "UNSPECIFIED" | "FORWARD" | "IGNORE")
        {
            self.error(
                &format!("{field}.unmatchedPreflights"),
                format!("{u:?} is not FORWARD or IGNORE"),
            );
        }
    }

    fn http_route(&mut self, route: &HttpRoute, at: &str, ctx: &Context<'_>) {
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            for (name, sm) in [
                ("uri", &m.uri),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    self.string_match(sm, &format!("{mat}.{name}"), false);
                }
            }
            for (kind, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
                ("queryParams", &m.query_params),
            ] {
                for (h, sm) in map {
                    let field = format!("{mat}.{kind}.{h}");
                    if kind != "queryParams" {
                        self.header_name(h, &field);
                    }
                    self.string_match(sm, &field, true);
                }
            }
            self.port(m.port, &format!("{mat}.port"));
        }
        let is_route = !route.route.is_empty();
        let actions = [
            is_route,
            route.redirect.is_some(),
            route.direct_response.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if actions != 1 {
            self.error(
                at,
                "exactly one of route, redirect or directResponse must be set".to_string(),
            );
        }
        if !is_route {
            // Istio's conflicts: these only mean something when a request is forwarded.
            for (set, name) in [
                (route.fault.is_some(), "fault"),
                (route.rewrite.is_some(), "rewrite"),
                (route.mirror.is_some(), "mirror"),
                (!route.mirrors.is_empty(), "mirrors"),
            ] {
                if set {
                    self.error(
                        &format!("{at}.{name}"),
                        format!("{name} needs route, not redirect or directResponse"),
                    );
                }
            }
        }
        if let Some(code) = route.redirect.as_ref().and_then(|r| r.redirect_code)
            && !matches!(code, 301 | 302 | 303 | 307 | 308)
        {
            self.error(
                &format!("{at}.redirect.redirectCode"),
                format!("{code} is not a redirect code (301, 302, 303, 307, 308)"),
            );
        }
        if let Some(d) = &route.direct_response
            && !(200..=599).contains(&d.status)
        {
            self.error(
                &format!("{at}.directResponse.status"),
                format!("{} is not an HTTP status", d.status),
            );
        }
        if let Some(t) = &route.timeout {
            self.duration(t, &format!("{at}.timeout"));
        }
        if let Some(r) = &route.retries {
            if let Some(t) = &r.per_try_timeout {
                self.duration(t, &format!("{at}.retries.perTryTimeout"));
            }
            if let Some(on) = &r.retry_on {
                for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let is_code = part.parse::<u32>().is_ok_and(|c| (100..=599).contains(&c));
                    if !is_code && !RETRY_ON.contains(&part) {
                        self.error(
                            &format!("{at}.retries.retryOn"),
                            format!("{part:?} is not a retry condition or an HTTP status"),
                        );
                    }
                }
            }
        }
        if let Some(rw) = &route.rewrite
            && let Some(rr) = &rw.uri_regex_rewrite
        {
            let field = format!("{at}.rewrite.uriRegexRewrite");
            if rw.uri.is_some() {
                self.error(
                    &field,
                    "uri and uriRegexRewrite cannot both be set".to_string(),
                );
            }
            self.regex(&rr.pattern, &format!("{field}.match"));
        }
        self.destinations(
            route.route.iter().map(|d| (&d.destination, d.weight)),
            &format!("{at}.route"),
            ctx,
        );
        for (j, d) in route.route.iter().enumerate() {
            if let Some(h) = &d.headers {
                self.headers(h, &format!("{at}.route[{j}].headers"));
            }
        }
        if let Some(h) = &route.headers {
            self.headers(h, &format!("{at}.headers"));
        }
        self.fault(route, at);
        if route.mirror.is_some() && !route.mirrors.is_empty() {
            self.error(
                &format!("{at}.mirrors"),
                "mirror and mirrors cannot both be set".to_string(),
            );
        }
        if let Some(m) = &route.mirror {
            self.destination(m, &format!("{at}.mirror"), ctx);
        }
        if let Some(p) = &route.mirror_percentage {
            self.percent(p, &format!("{at}.mirrorPercentage.value"));
        }
        for (j, m) in route.mirrors.iter().enumerate() {
            let field = format!("{at}.mirrors[{j}]");
            self.destination(&m.destination, &format!("{field}.destination"), ctx);
            if let Some(p) = &m.percentage {
                self.percent(p, &format!("{field}.percentage.value"));
            }
        }
        if let Some(c) = &route.cors_policy {
            self.cors(c, &format!("{at}.corsPolicy"));
        }
    }

    fn fault(&mut self, route: &HttpRoute, at: &str) {
        let Some(fault) = &route.fault else {
            return;
        };
        let at = format!("{at}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            self.error(&at, "fault needs a delay or an abort".to_string());
        }
        if let Some(d) = &fault.delay {
            match &d.fixed_delay {
                None => self.error(
                    &format!("{at}.delay.fixedDelay"),
                    "fixedDelay is required".to_string(),
                ),
                Some(t) => {
                    let field = format!("{at}.delay.fixedDelay");
                    if let Some((s, n)) = self.duration(t, &field)
                        && s == 0
                        && n < 1_000_000
                    {
                        self.error(&field, format!("fixedDelay {t:?} is shorter than 1ms"));
                    }
                }
            }
            match &d.percentage {
                Some(p) => self.percent(p, &format!("{at}.delay.percentage.value")),
                None => self.warn(
                    "IST0106",
                    &format!("{at}.delay.percentage"),
                    "without a percentage no request is delayed".to_string(),
                ),
            }
        }
        if let Some(a) = &fault.abort {
            match (a.http_status, &a.grpc_status) {
                (None, None) => self.error(
                    &format!("{at}.abort"),
                    "abort needs httpStatus or grpcStatus".to_string(),
                ),
                (Some(_), Some(_)) => self.error(
                    &format!("{at}.abort"),
                    "httpStatus and grpcStatus cannot both be set".to_string(),
                ),
                (Some(code), None) if !(200..=599).contains(&code) => self.error(
                    &format!("{at}.abort.httpStatus"),
                    format!("{code} is not an HTTP status (200-599)"),
                ),
                (None, Some(name)) if grpc_status_code(name).is_none() => self.error(
                    &format!("{at}.abort.grpcStatus"),
                    format!("{name:?} is not a gRPC status name"),
                ),
                _ => {}
            }
            match &a.percentage {
                Some(p) => self.percent(p, &format!("{at}.abort.percentage.value")),
                None => self.warn(
                    "IST0106",
                    &format!("{at}.abort.percentage"),
                    "without a percentage no request is aborted".to_string(),
                ),
            }
        }
    }
}

fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

pub(super) fn validate_virtual_service(
    vs: &VirtualService,
    registry: &Registry,
    rules: &super::DestinationRules,
    findings: &mut Vec<Finding>,
) -> Option<VirtualServiceModel> {
    let key = key_of(Kind::VirtualService, &vs.metadata);
    let ns = key.namespace.clone();
    let ctx = Context {
        namespace: &ns,
        registry,
        rules,
    };
    let mut check = Check::new(&key);
    if vs.spec.hosts.is_empty() {
        check.error("spec.hosts", "at least one host is required".to_string());
    }
    for (i, h) in vs.spec.hosts.iter().enumerate() {
        if h.is_empty() || h.contains('/') || h.contains(' ') {
            check.error(&format!("spec.hosts[{i}]"), format!("invalid host {h:?}"));
        }
    }
    let hosts: Vec<String> = vs.spec.hosts.iter().map(|h| resolve_host(h, &ns)).collect();
    for (i, route) in vs.spec.http.iter().enumerate() {
        check.http_route(route, &format!("spec.http[{i}]"), &ctx);
    }
    for (i, route) in vs.spec.tcp.iter().enumerate() {
        let at = format!("spec.tcp[{i}]");
        if route.route.is_empty() {
            check.error(
                &format!("{at}.route"),
                "at least one destination is required".to_string(),
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            check.port(m.port, &format!("{at}.match[{j}].port"));
            check.subnets(
                &m.destination_subnets,
                &format!("{at}.match[{j}].destinationSubnets"),
            );
        }
        check.destinations(
            route.route.iter().map(|d| (&d.destination, d.weight)),
            &format!("{at}.route"),
            &ctx,
        );
    }
    for (i, route) in vs.spec.tls.iter().enumerate() {
        let at = format!("spec.tls[{i}]");
        if route.matches.is_empty() {
            check.error(
                &format!("{at}.match"),
                "a TLS route needs at least one match with sniHosts".to_string(),
            );
        }
        if route.route.is_empty() {
            check.error(
                &format!("{at}.route"),
                "at least one destination is required".to_string(),
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            if m.sni_hosts.is_empty() {
                check.error(
                    &format!("{mat}.sniHosts"),
                    "at least one SNI host is required".to_string(),
                );
            }
            for (k, sni) in m.sni_hosts.iter().enumerate() {
                let sni = resolve_host(sni, &ns);
                if !hosts.iter().any(|h| super::host_matches(h, &sni)) {
                    check.error(
                        &format!("{mat}.sniHosts[{k}]"),
                        format!("SNI host {sni:?} is not one of the VirtualService's hosts"),
                    );
                }
            }
            check.port(m.port, &format!("{mat}.port"));
            check.subnets(&m.destination_subnets, &format!("{mat}.destinationSubnets"));
        }
        check.destinations(
            route.route.iter().map(|d| (&d.destination, d.weight)),
            &format!("{at}.route"),
            &ctx,
        );
    }
    let export_to = &vs.spec.export_to;
    for (i, e) in export_to.iter().enumerate() {
        if !matches!(e.as_str(), "." | "*" | "~") && !valid_namespace(e) {
            check.error(
                &format!("spec.exportTo[{i}]"),
                format!("{e:?} is not \".\", \"*\" or a namespace"),
            );
        }
    }
    if export_to.len() > 1 && export_to.iter().any(|e| e == "*" || e == "~") {
        check.error(
            "spec.exportTo",
            "\"*\" and \"~\" cannot be combined with other entries".to_string(),
        );
    }
    if !check.finish(findings) {
        return None;
    }
    let gateways = if vs.spec.gateways.is_empty() {
        vec![MESH_GATEWAY.to_string()]
    } else {
        vs.spec
            .gateways
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
    // None: every namespace sees it.
    let export_to = (!export_to.is_empty() && !export_to.iter().any(|e| e == "*")).then(|| {
        export_to
            .iter()
            .filter(|e| *e != "~")
            .map(|e| if e == "." { ns.clone() } else { e.clone() })
            .collect::<BTreeSet<String>>()
    });
    Some(VirtualServiceModel {
        hosts,
        gateways,
        http: vs.spec.http.clone(),
        tcp: vs.spec.tcp.clone(),
        tls: vs.spec.tls.clone(),
        export_to,
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
