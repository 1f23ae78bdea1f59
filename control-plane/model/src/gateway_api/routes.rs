//! Route rules as VirtualService routes: HTTPRoute and GRPCRoute matches, filters, weighted
//! backends and timeouts; TCPRoute and TLSRoute backends. Backends resolve to Services (or
//! Istio `Hostname`s), across namespaces only where a ReferenceGrant allows; what does not
//! resolve answers 500, as the spec asks, and is reported in `ResolvedRefs`.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::input::gateway_api::{
    BackendObjectReference, BackendRef, GrpcRouteMatch, HeaderModifier, HttpRouteFilter,
    HttpRouteMatch, NameValueMatch,
};
use crate::input::networking::{
    Destination, DirectResponse, HeaderOperations, Headers, HttpMatch, HttpMirrorPolicy,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination, Percent, PortSelector,
    RegexRewrite, RouteDestination, StringMatch,
};
use crate::object::{Kind, Object, ObjectKey};
use crate::registry::{Registry, cluster_domain_host};

use super::granted;

/// The order the spec fixes among matches of every route on one hostname: exact paths, then
/// regular expressions, then the longest prefix; then a method, more headers, more query
/// parameters; then the older route, its namespace/name, and the rule and match order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Precedence {
    path_kind: u8,
    prefix_len: Reverse<usize>,
    method: Reverse<bool>,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    created: String,
    route: (String, String),
    rule: usize,
    index: usize,
}

impl Precedence {
    /// Which rule of the route, and which match of that rule, this is.
    pub(crate) fn place(&self) -> (usize, usize) {
        (self.rule, self.index)
    }
}

/// What the rules of one route say, for every parent it attaches to.
pub(crate) struct Converted {
    pub http: Vec<(Precedence, HttpRoute)>,
    /// `ResolvedRefs` problems (reason, message); empty: every reference resolved.
    pub unresolved: Vec<(&'static str, String)>,
    /// Filters or values meshd cannot honour: the route is not accepted.
    pub unsupported: Vec<String>,
}

pub(crate) struct RouteInfo<'a> {
    pub key: &'a ObjectKey,
    pub created: &'a str,
    pub objects: &'a BTreeMap<ObjectKey, Object>,
    pub registry: &'a Registry,
}

impl RouteInfo<'_> {
    fn kind_name(&self) -> &'static str {
        self.key.kind.name()
    }

    /// A backend reference as a destination, or why it does not resolve.
    fn backend(
        &self,
        r: &BackendObjectReference,
        grpc: bool,
    ) -> Result<Destination, (&'static str, String)> {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Service");
        let namespace = r.namespace.as_deref().unwrap_or(&self.key.namespace);
        let host = match (group, kind) {
            ("" | "core", "Service") => cluster_domain_host(&r.name, namespace),
            ("networking.istio.io", "Hostname") => r.name.clone(),
            _ => {
                return Err((
                    "InvalidKind",
                    format!("backend kind {group}/{kind} is not supported"),
                ));
            }
        };
        if namespace != self.key.namespace
            && !granted(
                self.objects,
                (self.kind_name(), &self.key.namespace),
                (group, kind, namespace, &r.name),
            )
        {
            return Err((
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in {namespace} allows {}s of {} to use {kind} {}",
                    self.kind_name(),
                    self.key.namespace,
                    r.name
                ),
            ));
        }
        let Some(service) = self.registry.services.get(&host) else {
            return Err((
                "BackendNotFound",
                format!("{kind} {namespace}/{} not found", r.name),
            ));
        };
        let port = match r.port {
            Some(p) => p,
            None if service.ports.len() == 1 && !grpc => service.ports[0].port,
            None => {
                return Err((
                    "UnsupportedValue",
                    format!("backend {} needs a port", r.name),
                ));
            }
        };
        if service.port(port).is_none() && kind == "Service" {
            return Err((
                "BackendNotFound",
                format!("Service {namespace}/{} has no port {port}", r.name),
            ));
        }
        Ok(Destination {
            host,
            subset: None,
            port: Some(PortSelector { number: port }),
        })
    }

    /// Weighted destinations of a rule (weight 0 left out); what did not resolve goes to
    /// `unresolved`.
    fn destinations(
        &self,
        refs: &[BackendRef],
        grpc: bool,
        unresolved: &mut Vec<(&'static str, String)>,
        unsupported: &mut Vec<String>,
    ) -> Vec<HttpRouteDestination> {
        let mut out = Vec::new();
        for b in refs {
            let weight = b.weight.unwrap_or(1);
            match self.backend(&b.reference, grpc) {
                Ok(destination) => {
                    if weight == 0 {
                        continue;
                    }
                    let mut headers = Headers::default();
                    for f in &b.filters {
                        apply_header_filter(f, &mut headers, unsupported);
                    }
                    out.push(HttpRouteDestination {
                        destination,
                        weight: Some(weight),
                        headers: (headers != Headers::default()).then_some(headers),
                    });
                }
                Err(problem) => unresolved.push(problem),
            }
        }
        out
    }

    /// TCPRoute/TLSRoute backends.
    pub(crate) fn l4_destinations(
        &self,
        refs: &[BackendRef],
        unresolved: &mut Vec<(&'static str, String)>,
    ) -> Vec<RouteDestination> {
        let mut unsupported = Vec::new();
        self.destinations(refs, false, unresolved, &mut unsupported)
            .into_iter()
            .map(|d| RouteDestination {
                destination: d.destination,
                weight: d.weight,
            })
            .collect()
    }
}

fn string_match(kind: Option<&str>, value: &str) -> StringMatch {
    if kind == Some("RegularExpression") {
        StringMatch {
            regex: Some(value.to_string()),
            ..Default::default()
        }
    } else {
        StringMatch {
            exact: Some(value.to_string()),
            ..Default::default()
        }
    }
}

fn name_value(matches: &[NameValueMatch], lower: bool) -> BTreeMap<String, StringMatch> {
    matches
        .iter()
        .map(|m| {
            let name = if lower {
                m.name.to_ascii_lowercase()
            } else {
                m.name.clone()
            };
            (name, string_match(m.kind.as_deref(), &m.value))
        })
        .collect()
}

/// A PathPrefix as Gateway API means it (whole segments): no trailing `/` except the root.
fn prefix(value: &str) -> String {
    let trimmed = value.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

fn http_match(m: &HttpRouteMatch) -> (HttpMatch, u8, usize) {
    let path = m.path.as_ref();
    let kind = path.and_then(|p| p.kind.as_deref()).unwrap_or("PathPrefix");
    let value = path.and_then(|p| p.value.as_deref()).unwrap_or("/");
    let (uri, path_kind, len) = match kind {
        "Exact" => (
            StringMatch {
                exact: Some(value.to_string()),
                ..Default::default()
            },
            0,
            value.len(),
        ),
        "RegularExpression" => (
            StringMatch {
                regex: Some(value.to_string()),
                ..Default::default()
            },
            1,
            value.len(),
        ),
        _ => {
            let p = prefix(value);
            let len = p.len();
            (
                StringMatch {
                    prefix: Some(p),
                    ..Default::default()
                },
                2,
                len,
            )
        }
    };
    let out = HttpMatch {
        uri: Some(uri),
        method: m.method.as_deref().map(|v| string_match(None, v)),
        headers: name_value(&m.headers, true),
        query_params: name_value(&m.query_params, false),
        ..Default::default()
    };
    (out, path_kind, len)
}

/// A GRPCRoute method match as a path match: `/service/method`.
fn grpc_match(m: &GrpcRouteMatch) -> HttpMatch {
    let uri = m.method.as_ref().map(|method| {
        let regex = method.kind.as_deref() == Some("RegularExpression");
        let service = method.service.as_deref();
        let name = method.method.as_deref();
        match (regex, service, name) {
            (false, Some(s), Some(n)) => StringMatch {
                exact: Some(format!("/{s}/{n}")),
                ..Default::default()
            },
            (false, Some(s), None) => StringMatch {
                prefix: Some(format!("/{s}/")),
                ..Default::default()
            },
            (false, None, Some(n)) => StringMatch {
                regex: Some(format!("/[^/]+/{}", regex_escape(n))),
                ..Default::default()
            },
            (true, s, n) => StringMatch {
                regex: Some(format!(
                    "/{}/{}",
                    s.unwrap_or("[^/]+"),
                    n.unwrap_or("[^/]+")
                )),
                ..Default::default()
            },
            (false, None, None) => StringMatch {
                prefix: Some("/".to_string()),
                ..Default::default()
            },
        }
    });
    HttpMatch {
        uri,
        headers: name_value(&m.headers, true),
        ..Default::default()
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn operations(m: &HeaderModifier) -> HeaderOperations {
    HeaderOperations {
        set: m
            .set
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        remove: m.remove.clone(),
    }
}

/// Header modifier filters into `headers`; anything else is unsupported in that position.
fn apply_header_filter(f: &HttpRouteFilter, headers: &mut Headers, unsupported: &mut Vec<String>) {
    match f.kind.as_str() {
        "RequestHeaderModifier" => {
            if let Some(m) = &f.request_header_modifier {
                headers.request = Some(operations(m));
            }
        }
        "ResponseHeaderModifier" => {
            if let Some(m) = &f.response_header_modifier {
                headers.response = Some(operations(m));
            }
        }
        other => unsupported.push(format!("filter {other:?} is not supported on a backend")),
    }
}

/// What a rule's filters do to the VirtualService route.
fn apply_filters(
    info: &RouteInfo<'_>,
    filters: &[HttpRouteFilter],
    prefix_matched: Option<&str>,
    route: &mut HttpRoute,
    unresolved: &mut Vec<(&'static str, String)>,
    unsupported: &mut Vec<String>,
) {
    let mut headers = Headers::default();
    for f in filters {
        match f.kind.as_str() {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => {
                apply_header_filter(f, &mut headers, unsupported)
            }
            "RequestRedirect" => {
                let Some(r) = &f.request_redirect else {
                    continue;
                };
                let mut redirect = HttpRedirect {
                    scheme: r.scheme.clone(),
                    authority: r.hostname.clone(),
                    port: r.port,
                    redirect_code: Some(r.status_code.unwrap_or(302)),
                    ..Default::default()
                };
                if let Some(p) = &r.path {
                    match p.kind.as_str() {
                        "ReplaceFullPath" => redirect.uri = p.replace_full_path.clone(),
                        "ReplacePrefixMatch" => {
                            redirect.prefix_rewrite = p.replace_prefix_match.as_deref().map(prefix);
                        }
                        other => unsupported.push(format!("redirect path type {other:?}")),
                    }
                }
                route.redirect = Some(redirect);
            }
            "URLRewrite" => {
                let Some(r) = &f.url_rewrite else {
                    continue;
                };
                let mut rewrite = HttpRewrite {
                    authority: r.hostname.clone(),
                    ..Default::default()
                };
                if let Some(p) = &r.path {
                    match p.kind.as_str() {
                        "ReplaceFullPath" => {
                            rewrite.uri_regex_rewrite = Some(RegexRewrite {
                                pattern: "^/.*$".to_string(),
                                rewrite: p.replace_full_path.clone().unwrap_or_default(),
                            })
                        }
                        "ReplacePrefixMatch" => {
                            let to = prefix(p.replace_prefix_match.as_deref().unwrap_or("/"));
                            match prefix_matched {
                                // `/old/x` → `/x`: the matched prefix and its slashes go.
                                Some(from) if to == "/" && from != "/" => {
                                    rewrite.uri_regex_rewrite = Some(RegexRewrite {
                                        pattern: format!("^{}/*", regex_escape(from)),
                                        rewrite: "/".to_string(),
                                    })
                                }
                                Some(_) => rewrite.uri = Some(to),
                                None => unsupported.push(
                                    "ReplacePrefixMatch needs a PathPrefix match".to_string(),
                                ),
                            }
                        }
                        other => unsupported.push(format!("rewrite path type {other:?}")),
                    }
                }
                route.rewrite = Some(rewrite);
            }
            "RequestMirror" => {
                let Some(m) = &f.request_mirror else {
                    continue;
                };
                match info.backend(&m.backend_ref, false) {
                    Ok(destination) => {
                        let percentage = match (&m.fraction, m.percent) {
                            (Some(f), _) => Some(Percent {
                                value: 100.0 * f64::from(f.numerator)
                                    / f64::from(f.denominator.unwrap_or(100).max(1)),
                            }),
                            (None, Some(p)) => Some(Percent {
                                value: f64::from(p),
                            }),
                            (None, None) => None,
                        };
                        route.mirrors.push(HttpMirrorPolicy {
                            destination,
                            percentage,
                        });
                    }
                    Err(problem) => unresolved.push(problem),
                }
            }
            other => unsupported.push(format!("filter {other:?} is not supported")),
        }
    }
    if headers != Headers::default() {
        route.headers = Some(headers);
    }
}

/// One VirtualService route per match of an HTTPRoute rule.
#[allow(clippy::too_many_arguments)]
pub(crate) fn http_rule(
    info: &RouteInfo<'_>,
    rule_index: usize,
    matches: &[HttpRouteMatch],
    filters: &[HttpRouteFilter],
    backends: &[BackendRef],
    timeouts: Option<&crate::input::gateway_api::HttpRouteTimeouts>,
    retry: Option<&crate::input::gateway_api::HttpRouteRetry>,
    out: &mut Converted,
) {
    let default_match = [HttpRouteMatch::default()];
    let matches = if matches.is_empty() {
        &default_match[..]
    } else {
        matches
    };
    for (i, m) in matches.iter().enumerate() {
        let (vs_match, path_kind, len) = http_match(m);
        let precedence = Precedence {
            path_kind,
            prefix_len: Reverse(if path_kind == 0 { 0 } else { len }),
            method: Reverse(m.method.is_some()),
            headers: Reverse(m.headers.len()),
            query: Reverse(m.query_params.len()),
            created: info.created.to_string(),
            route: (info.key.namespace.clone(), info.key.name.clone()),
            rule: rule_index,
            index: i,
        };
        let prefix_matched = vs_match.uri.as_ref().and_then(|u| u.prefix.clone());
        let route = rule_route(
            info,
            vs_match,
            prefix_matched.as_deref(),
            filters,
            backends,
            false,
            out,
        );
        let mut route = route;
        if let Some(t) = timeouts {
            route.timeout = t.request.clone();
            if let Some(per_try) = &t.backend_request {
                // Each try gets the backend timeout; the tries stay Istio's default two.
                let retries = route.retries.get_or_insert_with(|| HttpRetry {
                    attempts: 2,
                    ..Default::default()
                });
                retries.per_try_timeout = Some(per_try.clone());
            }
        }
        if let Some(r) = retry {
            let retries = route.retries.get_or_insert_with(HttpRetry::default);
            retries.attempts = r.attempts.unwrap_or(1);
            if !r.codes.is_empty() {
                let codes: Vec<String> = r.codes.iter().map(u32::to_string).collect();
                retries.retry_on = Some(codes.join(","));
            }
        }
        out.http.push((precedence, route));
    }
}

/// One VirtualService route per match of a GRPCRoute rule.
pub(crate) fn grpc_rule(
    info: &RouteInfo<'_>,
    rule_index: usize,
    matches: &[GrpcRouteMatch],
    filters: &[HttpRouteFilter],
    backends: &[BackendRef],
    out: &mut Converted,
) {
    let default_match = [GrpcRouteMatch::default()];
    let matches = if matches.is_empty() {
        &default_match[..]
    } else {
        matches
    };
    for (i, m) in matches.iter().enumerate() {
        let vs_match = grpc_match(m);
        let uri = vs_match.uri.as_ref();
        let (path_kind, len) = match uri {
            Some(u) if u.exact.is_some() => (0, 0),
            Some(u) if u.regex.is_some() => (1, u.regex.as_ref().map_or(0, String::len)),
            Some(u) => (2, u.prefix.as_ref().map_or(0, String::len)),
            None => (2, 1),
        };
        let precedence = Precedence {
            path_kind,
            prefix_len: Reverse(len),
            method: Reverse(false),
            headers: Reverse(m.headers.len()),
            query: Reverse(0),
            created: info.created.to_string(),
            route: (info.key.namespace.clone(), info.key.name.clone()),
            rule: rule_index,
            index: i,
        };
        let route = rule_route(info, vs_match, None, filters, backends, true, out);
        out.http.push((precedence, route));
    }
}

fn rule_route(
    info: &RouteInfo<'_>,
    vs_match: HttpMatch,
    prefix_matched: Option<&str>,
    filters: &[HttpRouteFilter],
    backends: &[BackendRef],
    grpc: bool,
    out: &mut Converted,
) -> HttpRoute {
    let mut route = HttpRoute {
        matches: vec![vs_match],
        origin: Some(info.key.clone()),
        ..Default::default()
    };
    apply_filters(
        info,
        filters,
        prefix_matched,
        &mut route,
        &mut out.unresolved,
        &mut out.unsupported,
    );
    if route.redirect.is_none() {
        // A backend that does not resolve is left out and the others keep their weights (the
        // spec would answer 500 for its share); with none left, every request gets the 500.
        let dests = info.destinations(backends, grpc, &mut out.unresolved, &mut out.unsupported);
        if dests.is_empty() {
            // Nothing to send it to: the spec's 500 (and no route to a cluster that is not).
            route.direct_response = Some(DirectResponse {
                status: 500,
                body: None,
            });
            route.rewrite = None;
            route.mirrors.clear();
        } else {
            route.route = dests;
        }
    }
    route
}

/// `objects` of `kind`, for iteration in key order.
pub(crate) fn of_kind(
    objects: &BTreeMap<ObjectKey, Object>,
    kind: Kind,
) -> impl Iterator<Item = &Object> {
    objects
        .range(ObjectKey::new(kind, "", "")..)
        .take_while(move |(k, _)| k.kind == kind)
        .map(|(_, o)| o)
}
