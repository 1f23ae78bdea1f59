//! HTTP routes of a VirtualService: matches, the one action (route, redirect or direct
//! response), and what a route may add to it (rewrites, retries, faults, mirrors, CORS, header
//! changes), checked as istiod checks them.

use crate::input::networking::{
    CorsPolicy, HeaderOperations, Headers, HttpFaultInjection, HttpRoute, Percent,
};
use crate::syntax::{self, header};

use super::{Check, Context, GRPC_STATUS};

/// Envoy's `retryOn` conditions, as istiod lists them.
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

/// Status codes with a name in Go's `net/http` (istiod takes only those as `retryOn` entries).
fn is_named_status(code: u32) -> bool {
    matches!(code,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428
        | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

const CORS_METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
];

/// Direct responses above this are refused, as in istiod (control-plane memory).
const MAX_DIRECT_RESPONSE_BODY: usize = 1024 * 1024;

impl Check<'_> {
    /// A fault's share of requests: 0, or between 0.0001 and 100.
    fn fault_percent(&mut self, p: &Percent, field: &str) {
        let v = p.value;
        if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
            self.error(
                field,
                format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
            );
        }
    }

    fn mirror_percent(&mut self, p: &Percent, field: &str) {
        if !(0.0..=100.0).contains(&p.value) {
            self.error(
                field,
                format!("mirror percentage {} is not between 0 and 100", p.value),
            );
        }
    }

    fn header_operations(&mut self, ops: &HeaderOperations, field: &str, request: bool) {
        for (verb, headers) in [("set", &ops.set), ("add", &ops.add)] {
            for (name, value) in headers {
                let at = format!("{field}.{verb}.{name}");
                self.result(&at, header::operation_name(name, request));
                self.result(&at, header::value(value));
            }
        }
        for (i, name) in ops.remove.iter().enumerate() {
            self.result(
                &format!("{field}.remove[{i}]"),
                header::operation_name(name, false),
            );
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

    fn cors(&mut self, cors: &CorsPolicy, field: &str) {
        if cors.allow_origins.is_empty() {
            self.warn(
                "IST0106",
                &format!("{field}.allowOrigins"),
                "no origin is allowed: every cross-origin request is refused".to_string(),
            );
        }
        for (k, o) in cors.allow_origins.iter().enumerate() {
            let at = format!("{field}.allowOrigins[{k}]");
            self.string_match(o, &at, false, true);
            let value = o.exact.as_ref().or(o.prefix.as_ref()).or(o.regex.as_ref());
            if value.is_some_and(|v| v.is_empty()) {
                self.error(
                    &at,
                    "'' is not a valid match type for CORS allow origins".to_string(),
                );
            }
        }
        for (k, m) in cors.allow_methods.iter().enumerate() {
            if !CORS_METHODS.contains(&m.as_str()) {
                self.error(
                    &format!("{field}.allowMethods[{k}]"),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (list, name) in [
            (&cors.allow_headers, "allowHeaders"),
            (&cors.expose_headers, "exposeHeaders"),
        ] {
            for (k, h) in list.iter().enumerate() {
                if h != "*" {
                    self.result(&format!("{field}.{name}[{k}]"), header::token_name(h));
                }
            }
        }
        if let Some(age) = &cors.max_age {
            let at = format!("{field}.maxAge");
            match syntax::duration_ms(age) {
                Err(e) => self.error(&at, e),
                Ok(d) if d.subsec_nanos() != 0 => self.error(
                    &at,
                    format!(
                        "maxAge {age:?}: max_age duration is accurate only to seconds precision"
                    ),
                ),
                Ok(_) => {}
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

    fn matches(&mut self, route: &HttpRoute, at: &str) {
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            if let Some(uri) = &m.uri {
                self.string_match(uri, &format!("{mat}.uri"), false, true);
            }
            for (name, sm) in [("method", &m.method), ("authority", &m.authority)] {
                if let Some(sm) = sm {
                    self.string_match(sm, &format!("{mat}.{name}"), false, false);
                }
            }
            for (kind, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for (h, sm) in map {
                    let field = format!("{mat}.{kind}.{h}");
                    self.result(&field, header::match_name(h));
                    // In withoutHeaders `regex: "*"` means "present", not a regex.
                    if kind == "withoutHeaders" && sm.regex.as_deref() == Some("*") {
                        continue;
                    }
                    self.string_match(sm, &field, true, false);
                }
            }
            for (q, sm) in &m.query_params {
                self.string_match(sm, &format!("{mat}.queryParams.{q}"), true, false);
            }
            self.port(m.port, &format!("{mat}.port"), true);
            self.source_labels(&m.source_labels, &format!("{mat}.sourceLabels"));
            self.gateway_names(&m.gateways, &format!("{mat}.gateways"));
            if let Some(ns) = &m.source_namespace
                && !syntax::is_dns1123_label(ns)
            {
                self.error(
                    &format!("{mat}.sourceNamespace"),
                    format!("sourceNamespace match {ns:?} is invalid"),
                );
            }
        }
    }

    /// Exactly one of route, redirect and direct response; faults and rewrites only with a route.
    fn action(&mut self, route: &HttpRoute, at: &str) {
        let forwards = !route.route.is_empty();
        let other = if route.redirect.is_some() {
            Some("redirect")
        } else if route.direct_response.is_some() {
            Some("directResponse")
        } else {
            None
        };
        match other {
            None if !forwards => self.error(
                at,
                "HTTP route, redirect or direct_response is required".to_string(),
            ),
            None => {}
            Some(other) => {
                for (set, name) in [
                    (forwards, "route"),
                    (route.fault.is_some(), "fault"),
                    (route.rewrite.is_some(), "rewrite"),
                    (
                        other == "redirect" && route.direct_response.is_some(),
                        "directResponse",
                    ),
                ] {
                    if set {
                        self.error(
                            &format!("{at}.{name}"),
                            format!("HTTP route cannot contain both {name} and {other}"),
                        );
                    }
                }
                if route.mirror.is_some() || !route.mirrors.is_empty() {
                    self.warn(
                        "IST0106",
                        &format!("{at}.mirror"),
                        format!("nothing is forwarded with {other}, so nothing is mirrored"),
                    );
                }
            }
        }
        if let Some(r) = &route.redirect {
            let field = format!("{at}.redirect");
            if r.uri.is_none()
                && r.prefix_rewrite.is_none()
                && r.authority.is_none()
                && r.scheme.is_none()
                && r.port.is_none()
            {
                self.error(
                    &field,
                    "redirect must specify URI, authority, scheme, or port".to_string(),
                );
            }
            // Envoy has names for these redirect codes only.
            if let Some(code) = r.redirect_code
                && !matches!(code, 301 | 302 | 303 | 307 | 308)
            {
                self.error(
                    &format!("{field}.redirectCode"),
                    format!("{code} is not a valid redirect code (301, 302, 303, 307, 308)"),
                );
            }
            if let Some(s) = &r.scheme
                && s != "http"
                && s != "https"
            {
                self.error(
                    &format!("{field}.scheme"),
                    format!("invalid redirect scheme {s:?}, must be \"http\" or \"https\""),
                );
            }
            self.port(r.port, &format!("{field}.port"), true);
        }
        if let Some(d) = &route.direct_response {
            let field = format!("{at}.directResponse");
            // istiod lets 600 through; Envoy refuses it, so meshd stops at 599.
            if !(200..=599).contains(&d.status) {
                self.error(
                    &format!("{field}.status"),
                    format!("HTTP status {} is not in range 200-599", d.status),
                );
            }
            let size = d
                .body
                .as_ref()
                .and_then(|b| b.string.as_ref())
                .map_or(0, String::len);
            if size > MAX_DIRECT_RESPONSE_BODY {
                self.error(
                    &format!("{field}.body"),
                    "large direct_responses may impact control plane performance, must be less \
                     than 1MB"
                        .to_string(),
                );
            } else if size > 100 * 1024 {
                self.warn(
                    "IST0106",
                    &format!("{field}.body"),
                    "large direct_responses may impact control plane performance".to_string(),
                );
            }
        }
    }

    fn retries(&mut self, route: &HttpRoute, at: &str) {
        let Some(r) = &route.retries else { return };
        let at = format!("{at}.retries");
        if r.attempts == 0
            && (r.per_try_timeout.is_some()
                || r.retry_on.is_some()
                || r.retry_remote_localities.is_some())
        {
            self.error(
                &at,
                "http retry policy configured when attempts are set to 0 (disabled)".to_string(),
            );
        }
        if let Some(t) = &r.per_try_timeout {
            self.duration(t, &format!("{at}.perTryTimeout"));
        }
        // As istiod reads it: split at commas, nothing trimmed.
        for part in r.retry_on.iter().flat_map(|on| on.split(',')) {
            let is_code = part.parse::<u32>().is_ok_and(is_named_status);
            if !is_code && !RETRY_ON.contains(&part) {
                self.error(
                    &format!("{at}.retryOn"),
                    format!("{part:?} is not a valid retryOn policy"),
                );
            }
        }
    }

    fn rewrite(&mut self, route: &HttpRoute, at: &str) {
        let Some(rw) = &route.rewrite else { return };
        let field = format!("{at}.rewrite");
        if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
            self.error(
                &field,
                "rewrite may only contain one of URI or UriRegexRewrite".to_string(),
            );
        }
        if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
            self.error(
                &field,
                "rewrite must specify at least one of URI, UriRegexRewrite, or authority"
                    .to_string(),
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let at = format!("{field}.uriRegexRewrite");
            if rr.pattern.is_empty() || rr.rewrite.is_empty() {
                self.error(
                    &at,
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified"
                        .to_string(),
                );
            } else {
                self.result(&format!("{at}.match"), syntax::regex::re2(&rr.pattern));
            }
        }
        // The authority may be rewritten in one place only.
        let set_by_headers = route
            .headers
            .iter()
            .filter_map(|h| h.request.as_ref())
            .flat_map(|r| r.set.keys().chain(r.add.keys()))
            .any(|name| super::is_authority_header(name));
        if rw.authority.is_some() && set_by_headers {
            self.error(
                &format!("{at}.headers.request"),
                "authority header cannot be set multiple times".to_string(),
            );
        }
    }

    fn fault(&mut self, fault: &HttpFaultInjection, at: &str) {
        let at = format!("{at}.fault");
        if fault.delay.is_none() && fault.abort.is_none() {
            self.error(
                &at,
                "HTTP fault injection must have an abort and/or a delay".to_string(),
            );
        }
        if let Some(d) = &fault.delay {
            match &d.fixed_delay {
                None => self.error(
                    &format!("{at}.delay.fixedDelay"),
                    "fixedDelay is required".to_string(),
                ),
                Some(t) => self.duration(t, &format!("{at}.delay.fixedDelay")),
            }
            match &d.percentage {
                Some(p) => self.fault_percent(p, &format!("{at}.delay.percentage.value")),
                None => self.warn(
                    "IST0106",
                    &format!("{at}.delay.percentage"),
                    "without a percentage no request is delayed".to_string(),
                ),
            }
        }
        if let Some(a) = &fault.abort {
            match (a.http_status, &a.grpc_status) {
                (None, None) => self.warn(
                    "IST0106",
                    &format!("{at}.abort"),
                    "abort configured, but error type not set; no request is aborted".to_string(),
                ),
                (Some(_), Some(_)) => self.error(
                    &format!("{at}.abort"),
                    "httpStatus and grpcStatus cannot both be set".to_string(),
                ),
                // istiod lets 600 through; Envoy refuses it, so meshd stops at 599.
                (Some(code), None) if !(200..=599).contains(&code) => self.error(
                    &format!("{at}.abort.httpStatus"),
                    format!("HTTP status {code} is not in range 200-599"),
                ),
                (None, Some(name)) if !GRPC_STATUS.contains(&name.as_str()) => self.error(
                    &format!("{at}.abort.grpcStatus"),
                    format!("gRPC status {name:?} is not supported (e.g. NOT_FOUND, UNAVAILABLE)"),
                ),
                _ => {}
            }
            match &a.percentage {
                Some(p) => self.fault_percent(p, &format!("{at}.abort.percentage.value")),
                None => self.warn(
                    "IST0106",
                    &format!("{at}.abort.percentage"),
                    "without a percentage no request is aborted".to_string(),
                ),
            }
        }
    }

    pub(super) fn http_route(&mut self, route: &HttpRoute, at: &str, ctx: &Context<'_>) {
        self.matches(route, at);
        self.action(route, at);
        if let Some(t) = &route.timeout {
            self.duration(t, &format!("{at}.timeout"));
        }
        self.retries(route, at);
        self.rewrite(route, at);
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
        if let Some(f) = &route.fault {
            self.fault(f, at);
        }
        if route.mirror.is_some() && !route.mirrors.is_empty() {
            self.error(
                &format!("{at}.mirrors"),
                "HTTP route cannot contain both mirror and mirrors".to_string(),
            );
        }
        if let Some(m) = &route.mirror {
            self.destination(m, &format!("{at}.mirror"), ctx);
        }
        if let Some(p) = &route.mirror_percentage {
            self.mirror_percent(p, &format!("{at}.mirrorPercentage.value"));
        }
        for (j, m) in route.mirrors.iter().enumerate() {
            let field = format!("{at}.mirrors[{j}]");
            self.destination(&m.destination, &format!("{field}.destination"), ctx);
            if let Some(p) = &m.percentage {
                self.mirror_percent(p, &format!("{field}.percentage.value"));
            }
        }
        if let Some(c) = &route.cors_policy {
            self.cors(c, &format!("{at}.corsPolicy"));
        }
    }
}
