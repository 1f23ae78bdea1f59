//! VirtualService HTTP routes → Envoy routes, shared by sidecar and gateway route tables.

use meshd_model::input::networking::{HttpRoute, HttpRouteDestination, StringMatch};
use meshd_model::registry::parse_duration;
use meshd_model::traffic::resolve_host;
use meshd_model::{Snapshot, VirtualServiceModel};
use meshd_proto::pb::envoy::config::core::v3::{DataSource, data_source};
use meshd_proto::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy, Route,
    RouteAction, RouteMatch, WeightedCluster, header_matcher, query_parameter_matcher,
    redirect_action, route, route_action, route_match, weighted_cluster,
};
use meshd_proto::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};

use crate::names::outbound_cluster;
use crate::route::default_retry_policy;
use crate::util::*;

/// Where the routes are being built: the listener port (sidecars) and which gateway (`mesh` or
/// `ns/name`) is asking, for `match.port` and `match.gateways`.
pub(crate) struct RouteContext<'a> {
    pub snapshot: &'a Snapshot,
    pub port: u32,
    pub gateway: &'a str,
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

fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        ..Default::default()
    }
}

fn header(name: &str, m: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(
            string_matcher(m, false),
        )),
        ..Default::default()
    }
}

/// One Envoy match per Istio match (they OR); within one, every condition must hold (AND).
fn route_matches(r: &HttpRoute, ctx: &RouteContext<'_>) -> Vec<RouteMatch> {
    if r.matches.is_empty() {
        return vec![RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }];
    }
    r.matches
        .iter()
        .filter(|m| {
            m.port
                .is_none_or(|p| p == ctx.port || ctx.gateway != meshd_model::traffic::MESH_GATEWAY)
        })
        .filter(|m| {
            m.gateways.is_empty()
                || m.gateways
                    .iter()
                    .any(|g| g == ctx.gateway || g.ends_with(&format!("/{}", ctx.gateway)))
        })
        .map(|m| {
            let path_specifier = Some(match &m.uri {
                None => route_match::PathSpecifier::Prefix("/".into()),
                Some(u) => {
                    if let Some(e) = &u.exact {
                        route_match::PathSpecifier::Path(e.clone())
                    } else if let Some(p) = &u.prefix {
                        route_match::PathSpecifier::Prefix(p.clone())
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
                .map(|(k, v)| header(&k.to_ascii_lowercase(), v))
                .collect();
            if let Some(method) = &m.method {
                headers.push(header(":method", method));
            }
            if let Some(authority) = &m.authority {
                headers.push(header(":authority", authority));
            }
            let query_parameters = m
                .query_params
                .iter()
                .map(|(k, v)| QueryParameterMatcher {
                    name: k.clone(),
                    query_parameter_match_specifier: Some(
                        query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                            string_matcher(v, false),
                        ),
                    ),
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

/// The cluster a destination means here: explicit port, else the listener's port if the service has
/// it, else the service's only port.
pub(crate) fn destination_cluster(
    d: &HttpRouteDestination,
    vs: &VirtualServiceModel,
    ctx: &RouteContext<'_>,
) -> String {
    let host = resolve_host(&d.destination.host, &vs.key.namespace);
    let port = d
        .destination
        .port
        .as_ref()
        .map(|p| p.number)
        .unwrap_or_else(|| match ctx.snapshot.registry.services.get(&host) {
            Some(svc) if svc.port(ctx.port).is_some() => ctx.port,
            Some(svc) if svc.ports.len() == 1 => svc.ports[0].port,
            _ => ctx.port,
        });
    outbound_cluster(port, d.destination.subset.as_deref().unwrap_or(""), &host)
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
    Some(policy)
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
            .map(redirect_action::PathRewriteSpecifier::PathRedirect);
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
    let cluster_specifier = if r.route.len() == 1 {
        route_action::ClusterSpecifier::Cluster(destination_cluster(&r.route[0], vs, ctx))
    } else {
        route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: r
                .route
                .iter()
                .filter(|d| d.weight.unwrap_or(0) > 0)
                .map(|d| weighted_cluster::ClusterWeight {
                    name: destination_cluster(d, vs, ctx),
                    weight: u32_value(d.weight.unwrap_or(0)),
                    ..Default::default()
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
        ..Default::default()
    };
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
        for m in route_matches(r, ctx) {
            let action = action(r, vs, ctx, &m);
            out.push(Route {
                name: r.name.clone().unwrap_or_default(),
                r#match: Some(m),
                action: Some(action),
                metadata: istio_config_metadata(&vs.key.config_path()),
                ..Default::default()
            });
        }
    }
    out
}
