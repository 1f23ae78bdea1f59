//! VirtualService HTTP routes → Envoy routes, shared by sidecar and gateway route tables.
//!
//! Fault injection and CORS are per-route configs of the always-present fault and cors filters
//! (`typed_per_filter_config`). That field is a protobuf map, which prost encodes in hash order, so
//! a message holding two entries would encode (and hash into a resource version) differently from
//! build to build. Each message therefore holds at most one: a route with both a fault and a CORS
//! policy keeps the fault on the route and gives the CORS policy to each weighted cluster, where
//! Envoy's cors filter finds it just the same.

use std::collections::{BTreeMap, HashMap};

use meshd_model::duration::parse as parse_duration;
use meshd_model::input::labels_match;
use meshd_model::input::networking::{
    CorsPolicy, Destination, HeaderOperations, Headers, HttpFaultInjection, HttpRoute, Percent,
    StringMatch,
};
use meshd_model::traffic::{grpc_status_code, is_authority_header, is_internal_header};
use meshd_model::{Snapshot, VirtualServiceModel};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option,
};
use meshd_proto::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster, header_matcher, query_parameter_matcher,
    redirect_action, retry_policy, route, route_action, route_match, weighted_cluster,
};
use meshd_proto::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use meshd_proto::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCorsPolicy;
use meshd_proto::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use meshd_proto::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use meshd_proto::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use meshd_proto::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use meshd_proto::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use meshd_proto::pb::google::protobuf::Any;

use crate::destination::cluster_for;
use crate::util::*;

const FAULT_FILTER: &str = "envoy.filters.http.fault";
const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Where the routes are being built: the listener port (sidecars) and which gateway (`mesh` or
/// `ns/name`) is asking, for `match.port` and `match.gateways`; the asking proxies' namespace and
/// labels, for `match.sourceNamespace` and `match.sourceLabels`.
pub(crate) struct RouteContext<'a> {
    pub snapshot: &'a Snapshot,
    pub port: u32,
    pub gateway: &'a str,
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
}

fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = if let Some(e) = &m.exact {
        string_matcher::MatchPattern::Exact(e.clone())
    } else if let Some(p) = &m.prefix {
        string_matcher::MatchPattern::Prefix(p.clone())
    } else {
        string_matcher::MatchPattern::SafeRegex(regex_matcher(
            m.regex.as_deref().unwrap_or_default(),
        ))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

fn is_presence(m: &StringMatch) -> bool {
    m.exact.is_none() && m.prefix.is_none() && m.regex.is_none()
}

fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        ..Default::default()
    }
}

/// `invert`: for `withoutHeaders`; an empty match tests presence.
fn header(name: &str, m: &StringMatch, invert: bool) -> HeaderMatcher {
    let specifier = if is_presence(m) {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(string_matcher(m, false))
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        invert_match: invert,
        ..Default::default()
    }
}

/// One Envoy match per Istio match (they OR); within one, every condition must hold (AND). Matches
/// for another port, gateway, namespace or workload are left out here.
fn route_matches(
    vs: &VirtualServiceModel,
    r: &HttpRoute,
    ctx: &RouteContext<'_>,
) -> Vec<RouteMatch> {
    if r.matches.is_empty() {
        return vec![RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }];
    }
    r.matches
        .iter()
        .filter(|m| {
            // A Gateway API route is bound to its listener's port on gateways too.
            m.port.is_none_or(|p| {
                p == ctx.port
                    || (ctx.gateway != meshd_model::traffic::MESH_GATEWAY && !vs.gateway_semantics)
            })
        })
        .filter(|m| vs.match_applies_to_gateway(&m.gateways, ctx.gateway))
        .filter(|m| {
            m.source_namespace
                .as_deref()
                .is_none_or(|ns| ns == ctx.namespace)
        })
        .filter(|m| labels_match(&m.source_labels, ctx.labels))
        .map(|m| {
            let path_specifier = Some(match &m.uri {
                None => route_match::PathSpecifier::Prefix("/".into()),
                Some(u) => {
                    if let Some(e) = &u.exact {
                        route_match::PathSpecifier::Path(e.clone())
                    } else if let Some(p) = &u.prefix {
                        // (A GRPCRoute's `/service/` prefix stays a plain prefix.)
                        if vs.gateway_semantics && !p.ends_with('/') {
                            // Gateway API prefixes match whole segments: `/api` is not `/apix`.
                            route_match::PathSpecifier::PathSeparatedPrefix(p.clone())
                        } else {
                            route_match::PathSpecifier::Prefix(p.clone())
                        }
                    } else {
                        route_match::PathSpecifier::SafeRegex(regex_matcher(
                            u.regex.as_deref().unwrap_or_default(),
                        ))
                    }
                }
            });
            let mut headers: Vec<HeaderMatcher> = m
                .headers
                .iter()
                .map(|(k, v)| header(&k.to_ascii_lowercase(), v, false))
                .collect();
            headers.extend(
                m.without_headers
                    .iter()
                    .map(|(k, v)| header(&k.to_ascii_lowercase(), v, true)),
            );
            if let Some(method) = &m.method {
                headers.push(header(":method", method, false));
            }
            if let Some(authority) = &m.authority {
                headers.push(header(":authority", authority, false));
            }
            let query_parameters = m
                .query_params
                .iter()
                .map(|(k, v)| QueryParameterMatcher {
                    name: k.clone(),
                    query_parameter_match_specifier: Some(if is_presence(v) {
                        query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true)
                    } else {
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                            string_matcher(v, false),
                        )
                    }),
                })
                .collect();
            RouteMatch {
                path_specifier,
                case_sensitive: if m.ignore_uri_case {
                    bool_value(false)
                } else {
                    None
                },
                headers,
                query_parameters,
                ..Default::default()
            }
        })
        .collect()
}

fn destination_cluster(
    d: &Destination,
    vs: &VirtualServiceModel,
    ctx: &RouteContext<'_>,
) -> String {
    cluster_for(d, &vs.key.namespace, ctx.snapshot, ctx.port)
}

/// Istio's `Percent` (0–100, fractions allowed) as parts per million.
fn million(p: &Percent) -> FractionalPercent {
    FractionalPercent {
        numerator: (p.value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: fractional_percent::DenominatorType::Million as i32,
    }
}

fn hundred_percent() -> FractionalPercent {
    FractionalPercent {
        numerator: 100,
        denominator: fractional_percent::DenominatorType::Hundred as i32,
    }
}

fn runtime_fraction(p: FractionalPercent) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(p),
        runtime_key: String::new(),
    }
}

/// Istio's default: two retries on connection-level failures and 503, never the same host twice.
pub(crate) fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .to_string(),
        num_retries: u32_value(2),
        retry_host_predicate: vec![retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack(&PreviousHostsPredicate::default()),
            )),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    }
}

fn retry_policy(r: &HttpRoute) -> Option<RetryPolicy> {
    let Some(retries) = &r.retries else {
        return Some(default_retry_policy());
    };
    if retries.attempts == 0 {
        return None;
    }
    let mut policy = default_retry_policy();
    policy.num_retries = u32_value(retries.attempts);
    if let Some(on) = &retries.retry_on {
        // Istio lets status codes stand among the retry conditions; Envoy wants them apart.
        let mut conditions = Vec::new();
        let mut codes = Vec::new();
        for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => conditions.push(part.to_string()),
            }
        }
        if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
            conditions.push("retriable-status-codes".to_string());
        }
        policy.retry_on = conditions.join(",");
        policy.retriable_status_codes = codes;
    }
    if let Some((s, n)) = retries
        .per_try_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
    {
        policy.per_try_timeout = Some(duration(s, n));
    }
    if retries.retry_remote_localities == Some(true) {
        // Each retry prefers a priority (locality) not tried yet, after two tries on one.
        policy.retry_priority = Some(retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_string(),
            config_type: Some(retry_policy::retry_priority::ConfigType::TypedConfig(pack(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    Some(policy)
}

/// Header changes of a route or a weighted destination, in Envoy's terms.
#[derive(Clone, Default)]
struct HeaderChanges {
    request_add: Vec<HeaderValueOption>,
    request_remove: Vec<String>,
    response_add: Vec<HeaderValueOption>,
    response_remove: Vec<String>,
    /// A request `host`/`:authority` set or added: Envoy rewrites the authority instead.
    authority: Option<String>,
}

impl HeaderChanges {
    fn of<'h>(headers: impl IntoIterator<Item = &'h Headers>) -> HeaderChanges {
        let mut out = HeaderChanges::default();
        for h in headers {
            if let Some(ops) = &h.request {
                out.authority = out.authority.or_else(|| {
                    ops.set
                        .iter()
                        .chain(&ops.add)
                        .find(|(name, _)| is_authority_header(name))
                        .map(|(_, v)| v.clone())
                });
                out.request_add.extend(options(ops));
                out.request_remove.extend(removals(ops));
            }
            if let Some(ops) = &h.response {
                out.response_add.extend(options(ops));
                out.response_remove.extend(removals(ops));
            }
        }
        out
    }
}

/// `set` overwrites (or adds), `add` appends (or adds); headers Envoy will not touch are dropped
/// (validation warned).
fn options(ops: &HeaderOperations) -> Vec<HeaderValueOption> {
    use header_value_option::HeaderAppendAction;
    let set = ops
        .set
        .iter()
        .map(|kv| (kv, HeaderAppendAction::OverwriteIfExistsOrAdd));
    let add = ops
        .add
        .iter()
        .map(|kv| (kv, HeaderAppendAction::AppendIfExistsOrAdd));
    set.chain(add)
        .filter(|((name, _), _)| !is_internal_header(name))
        .map(|((name, value), action)| HeaderValueOption {
            header: Some(HeaderValue {
                key: name.to_ascii_lowercase(),
                value: value.clone(),
                ..Default::default()
            }),
            append_action: action as i32,
            ..Default::default()
        })
        .collect()
}

fn removals(ops: &HeaderOperations) -> Vec<String> {
    ops.remove
        .iter()
        .filter(|name| !is_internal_header(name))
        .map(|name| name.to_ascii_lowercase())
        .collect()
}

/// The route's own header changes; a route with a single destination also takes that
/// destination's (a weighted destination keeps its own, on its cluster entry).
fn route_header_changes(r: &HttpRoute) -> HeaderChanges {
    let own = r.headers.iter();
    let single = (r.route.len() == 1)
        .then(|| r.route[0].headers.as_ref())
        .flatten();
    HeaderChanges::of(own.chain(single))
}

fn fault_config(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let (s, n) = parse_duration(d.fixed_delay.as_deref()?).ok()?;
        Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::FixedDelay(duration(s, n))),
            percentage: d.percentage.as_ref().map(million),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = match (a.http_status, &a.grpc_status) {
            (Some(code), _) => fault_abort::ErrorType::HttpStatus(code),
            (None, Some(name)) => fault_abort::ErrorType::GrpcStatus(grpc_status_code(name)?),
            (None, None) => return None,
        };
        Some(FaultAbort {
            error_type: Some(error_type),
            percentage: a.percentage.as_ref().map(million),
            ..Default::default()
        })
    });
    (delay.is_some() || abort.is_some()).then(|| HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

fn cors_config(c: &CorsPolicy) -> EnvoyCorsPolicy {
    EnvoyCorsPolicy {
        allow_origin_string_match: c
            .allow_origins
            .iter()
            .map(|o| string_matcher(o, false))
            .collect(),
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_deref()
            .and_then(|a| parse_duration(a).ok())
            .map(|(s, _)| s.to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.and_then(bool_value),
        filter_enabled: Some(runtime_fraction(hundred_percent())),
        forward_not_matching_preflights: if c.unmatched_preflights.as_deref() == Some("IGNORE") {
            bool_value(false)
        } else {
            None
        },
        ..Default::default()
    }
}

/// Per-filter configs: (on the route, on each weighted cluster). One entry per map, see the
/// module comment.
fn filter_configs(r: &HttpRoute) -> (HashMap<String, Any>, HashMap<String, Any>) {
    let fault = r.fault.as_ref().and_then(fault_config).map(|f| pack(&f));
    let cors = r.cors_policy.as_ref().map(|c| pack(&cors_config(c)));
    match (fault, cors) {
        (Some(f), Some(c)) => (
            HashMap::from([(FAULT_FILTER.to_string(), f)]),
            HashMap::from([(CORS_FILTER.to_string(), c)]),
        ),
        (Some(f), None) => (
            HashMap::from([(FAULT_FILTER.to_string(), f)]),
            HashMap::new(),
        ),
        (None, Some(c)) => (
            HashMap::from([(CORS_FILTER.to_string(), c)]),
            HashMap::new(),
        ),
        (None, None) => (HashMap::new(), HashMap::new()),
    }
}

fn mirror_policies(
    r: &HttpRoute,
    vs: &VirtualServiceModel,
    ctx: &RouteContext<'_>,
) -> Vec<route_action::RequestMirrorPolicy> {
    // Unset: every request; an explicit 0: none.
    let fraction = |p: Option<&Percent>| match p {
        None => Some(hundred_percent()),
        Some(p) if p.value <= 0.0 => None,
        Some(p) => Some(million(p)),
    };
    let single = r.mirror.iter().map(|d| (d, r.mirror_percentage.as_ref()));
    let many = r
        .mirrors
        .iter()
        .map(|m| (&m.destination, m.percentage.as_ref()));
    single
        .chain(many)
        .filter_map(|(d, p)| {
            Some(route_action::RequestMirrorPolicy {
                cluster: destination_cluster(d, vs, ctx),
                runtime_fraction: Some(runtime_fraction(fraction(p)?)),
                trace_sampled: bool_value(false),
                ..Default::default()
            })
        })
        .collect()
}

fn action(
    r: &HttpRoute,
    vs: &VirtualServiceModel,
    ctx: &RouteContext<'_>,
    matched: &RouteMatch,
) -> route::Action {
    if let Some(redirect) = &r.redirect {
        let path = redirect
            .uri
            .clone()
            .map(redirect_action::PathRewriteSpecifier::PathRedirect)
            .or_else(|| {
                redirect
                    .prefix_rewrite
                    .clone()
                    .map(redirect_action::PathRewriteSpecifier::PrefixRewrite)
            });
        let scheme = redirect
            .scheme
            .clone()
            .map(redirect_action::SchemeRewriteSpecifier::SchemeRedirect);
        let code = match redirect.redirect_code.unwrap_or(301) {
            302 => redirect_action::RedirectResponseCode::Found,
            303 => redirect_action::RedirectResponseCode::SeeOther,
            307 => redirect_action::RedirectResponseCode::TemporaryRedirect,
            308 => redirect_action::RedirectResponseCode::PermanentRedirect,
            _ => redirect_action::RedirectResponseCode::MovedPermanently,
        };
        return route::Action::Redirect(RedirectAction {
            host_redirect: redirect.authority.clone().unwrap_or_default(),
            port_redirect: redirect.port.unwrap_or(0),
            path_rewrite_specifier: path,
            scheme_rewrite_specifier: scheme,
            response_code: code as i32,
            ..Default::default()
        });
    }
    if let Some(direct) = &r.direct_response {
        return route::Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: direct
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .map(|s| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(s)),
                    ..Default::default()
                }),
            ..Default::default()
        });
    }
    let (_, cluster_filters) = filter_configs(r);
    // A CORS policy that must live on the cluster entries needs weighted clusters, even for one.
    let cluster_specifier = if r.route.len() == 1 && cluster_filters.is_empty() {
        route_action::ClusterSpecifier::Cluster(destination_cluster(
            &r.route[0].destination,
            vs,
            ctx,
        ))
    } else {
        let single = r.route.len() == 1;
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: r
                .route
                .iter()
                .map(|d| (d, if single { 100 } else { d.weight.unwrap_or(0) }))
                .filter(|(_, weight)| *weight > 0)
                .map(|(d, weight)| {
                    // One destination's headers are already on the route.
                    let changes = if single {
                        HeaderChanges::default()
                    } else {
                        HeaderChanges::of(d.headers.iter())
                    };
                    weighted_cluster::ClusterWeight {
                        name: destination_cluster(&d.destination, vs, ctx),
                        weight: u32_value(weight),
                        request_headers_to_add: changes.request_add,
                        request_headers_to_remove: changes.request_remove,
                        response_headers_to_add: changes.response_add,
                        response_headers_to_remove: changes.response_remove,
                        host_rewrite_specifier: changes.authority.map(
                            weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral,
                        ),
                        typed_per_filter_config: cluster_filters.clone(),
                        ..Default::default()
                    }
                })
                .collect(),
            ..Default::default()
        })
    };
    let timeout = r
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .unwrap_or((0, 0));
    let mut action = RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: Some(duration(timeout.0, timeout.1)),
        retry_policy: retry_policy(r),
        request_mirror_policies: mirror_policies(r, vs, ctx),
        ..Default::default()
    };
    if let Some(authority) = route_header_changes(r).authority {
        action.host_rewrite_specifier = Some(
            route_action::HostRewriteSpecifier::HostRewriteLiteral(authority),
        );
    }
    if let Some(rewrite) = &r.rewrite {
        if let Some(uri) = &rewrite.uri {
            // A prefix (or exact path) match swaps the matched part; a regex match swaps the path.
            match &matched.path_specifier {
                Some(route_match::PathSpecifier::SafeRegex(_)) => {
                    action.regex_rewrite = Some(RegexMatchAndSubstitute {
                        pattern: Some(regex_matcher("^.*$")),
                        substitution: uri.clone(),
                    });
                }
                _ => action.prefix_rewrite = uri.clone(),
            }
        }
        if let Some(rr) = &rewrite.uri_regex_rewrite {
            action.regex_rewrite = Some(RegexMatchAndSubstitute {
                pattern: Some(regex_matcher(&rr.pattern)),
                substitution: rr.rewrite.clone(),
            });
        }
        if let Some(authority) = &rewrite.authority {
            action.host_rewrite_specifier = Some(
                route_action::HostRewriteSpecifier::HostRewriteLiteral(authority.clone()),
            );
        }
    }
    route::Action::Route(action)
}

/// Envoy routes for a VirtualService's HTTP section, in order.
pub(crate) fn virtual_service_routes(
    vs: &VirtualServiceModel,
    ctx: &RouteContext<'_>,
) -> Vec<Route> {
    let mut out = Vec::new();
    for r in &vs.http {
        let headers = route_header_changes(r);
        let (route_filters, _) = filter_configs(r);
        for m in route_matches(vs, r, ctx) {
            let action = action(r, vs, ctx, &m);
            out.push(Route {
                name: r.name.clone().unwrap_or_default(),
                r#match: Some(m),
                action: Some(action),
                metadata: istio_config_metadata(
                    &r.origin.as_ref().unwrap_or(&vs.key).config_path(),
                ),
                typed_per_filter_config: route_filters.clone(),
                request_headers_to_add: headers.request_add.clone(),
                request_headers_to_remove: headers.request_remove.clone(),
                response_headers_to_add: headers.response_add.clone(),
                response_headers_to_remove: headers.response_remove.clone(),
                ..Default::default()
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use meshd_model::input::networking::HttpRetry;

    use super::*;

    #[test]
    fn retry_remote_localities_prefers_priorities_not_tried_yet() {
        let route = HttpRoute {
            retries: Some(HttpRetry {
                attempts: 3,
                retry_on: Some("gateway-error,503".to_string()),
                retry_remote_localities: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let policy = retry_policy(&route).unwrap();
        assert_eq!(policy.retry_on, "gateway-error,retriable-status-codes");
        assert_eq!(policy.retriable_status_codes, [503]);
        let priority = policy.retry_priority.unwrap();
        assert_eq!(priority.name, "envoy.retry_priorities.previous_priorities");
        let Some(retry_policy::retry_priority::ConfigType::TypedConfig(any)) = priority.config_type
        else {
            panic!("typed config expected");
        };
        let config: PreviousPrioritiesConfig = meshd_proto::unpack(&any).unwrap();
        assert_eq!(config.update_frequency, 2);
    }

    #[test]
    fn percentages_become_parts_per_million() {
        assert_eq!(million(&Percent { value: 12.5 }).numerator, 125_000);
        assert_eq!(million(&Percent { value: 100.0 }).numerator, 1_000_000);
        assert_eq!(million(&Percent { value: 0.0001 }).numerator, 1);
    }
}
