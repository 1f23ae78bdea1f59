//! Route table rules beyond protoc-gen-validate, from `source/common/router/config_impl.cc`
//! (domains, weighted clusters, rewrites, direct responses) and
//! `source/common/router/header_parser.cc` (which headers may be changed).

use std::collections::HashMap;

use meshd_proto::pb::envoy::config::core::v3::{HeaderValueOption, data_source};
use meshd_proto::pb::envoy::config::route::v3::route::Action;
use meshd_proto::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use meshd_proto::pb::envoy::config::route::v3::{RouteAction, RouteConfiguration};

use super::{Violation, join};

/// Envoy's default for `max_direct_response_body_size_bytes`.
const DIRECT_RESPONSE_BODY_LIMIT: u32 = 4096;

pub(super) fn check(table: &RouteConfiguration) -> Vec<Violation> {
    let mut out = Vec::new();
    check_at(table, "", &mut out);
    out
}

/// `table` found at `path` (a listener's inline route table sits inside its HCM).
pub(super) fn check_at(table: &RouteConfiguration, path: &str, out: &mut Vec<Violation>) {
    domains(table, path, out);
    headers(
        &table.request_headers_to_add,
        &table.request_headers_to_remove,
        &table.response_headers_to_add,
        &table.response_headers_to_remove,
        path,
        out,
    );
    let body_limit = table
        .max_direct_response_body_size_bytes
        .map_or(DIRECT_RESPONSE_BODY_LIMIT, |v| v.value);
    for (i, vhost) in table.virtual_hosts.iter().enumerate() {
        let vpath = join(path, &format!("virtual_hosts[{i}]"));
        headers(
            &vhost.request_headers_to_add,
            &vhost.request_headers_to_remove,
            &vhost.response_headers_to_add,
            &vhost.response_headers_to_remove,
            &vpath,
            out,
        );
        for (j, route) in vhost.routes.iter().enumerate() {
            let rpath = join(&vpath, &format!("routes[{j}]"));
            headers(
                &route.request_headers_to_add,
                &route.request_headers_to_remove,
                &route.response_headers_to_add,
                &route.response_headers_to_remove,
                &rpath,
                out,
            );
            match &route.action {
                Some(Action::Route(action)) => route_action(action, &join(&rpath, "route"), out),
                Some(Action::DirectResponse(direct)) => {
                    let size = match direct.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                        Some(data_source::Specifier::InlineString(s)) => s.len(),
                        Some(data_source::Specifier::InlineBytes(b)) => b.len(),
                        _ => 0,
                    };
                    if size > body_limit as usize {
                        out.push(Violation::new(
                            join(&rpath, "direct_response.body"),
                            format!("response body size is {size} bytes; maximum is {body_limit}"),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Domains are matched lower-cased, each may appear once across the table, and only one
/// virtual host may be the `*` default.
fn domains(table: &RouteConfiguration, path: &str, out: &mut Vec<Violation>) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut star: Option<usize> = None;
    for (i, vhost) in table.virtual_hosts.iter().enumerate() {
        for (j, domain) in vhost.domains.iter().enumerate() {
            let at = join(path, &format!("virtual_hosts[{i}].domains[{j}]"));
            if domain == "*" {
                if star.is_some() {
                    out.push(Violation::new(
                        at,
                        "Only a single wildcard domain is permitted in a route table",
                    ));
                    continue;
                }
                star = Some(i);
            }
            let lower = domain.to_ascii_lowercase();
            if seen.insert(lower.clone(), i).is_some() && domain != "*" {
                out.push(Violation::new(
                    at,
                    format!(
                        "Only unique values for domains are permitted. Duplicate entry of \
                         domain {lower}"
                    ),
                ));
            }
        }
    }
}

fn route_action(action: &RouteAction, path: &str, out: &mut Vec<Violation>) {
    let rewrites = [
        !action.prefix_rewrite.is_empty(),
        action.regex_rewrite.is_some(),
        action.path_rewrite_policy.is_some(),
    ];
    if rewrites.iter().filter(|set| **set).count() > 1 {
        out.push(Violation::new(
            path,
            "Specify only one of prefix_rewrite, regex_rewrite or path_rewrite_policy",
        ));
    }
    let Some(ClusterSpecifier::WeightedClusters(weighted)) = &action.cluster_specifier else {
        return;
    };
    let mut sum: u64 = 0;
    for (i, cluster) in weighted.clusters.iter().enumerate() {
        let at = join(path, &format!("weighted_clusters.clusters[{i}]"));
        match cluster.weight {
            Some(w) => sum += u64::from(w.value),
            None => out.push(Violation::new(
                join(&at, "weight"),
                "Field 'weight' is missing",
            )),
        }
        headers(
            &cluster.request_headers_to_add,
            &cluster.request_headers_to_remove,
            &cluster.response_headers_to_add,
            &cluster.response_headers_to_remove,
            &at,
            out,
        );
    }
    let at = join(path, "weighted_clusters");
    if sum == 0 {
        out.push(Violation::new(
            at,
            "Sum of weights in the weighted_cluster must be greater than 0",
        ));
    } else if sum > u64::from(u32::MAX) {
        out.push(Violation::new(
            at,
            format!(
                "The sum of weights of all weighted clusters of a route exceeds {}",
                u32::MAX
            ),
        ));
    }
}

/// Pseudo-headers and `host` may be neither added nor removed
/// (`Http::HeaderUtility::isModifiableHeader`), and added values must format.
fn headers(
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
    path: &str,
    out: &mut Vec<Violation>,
) {
    let modifiable = |name: &str| !name.starts_with(':') && !name.eq_ignore_ascii_case("host");
    for (field, list) in [
        ("request_headers_to_add", request_add),
        ("response_headers_to_add", response_add),
    ] {
        for (i, option) in list.iter().enumerate() {
            let key = option.header.as_ref().map_or("", |h| h.key.as_str());
            if !modifiable(key) {
                out.push(Violation::new(
                    join(path, &format!("{field}[{i}].header.key")),
                    format!("{key}: :-prefixed or host headers may not be modified"),
                ));
            }
            let value = option.header.as_ref().map_or("", |h| h.value.as_str());
            if let Some(problem) = meshd_model::syntax::envoy_format::problem(value) {
                out.push(Violation::new(
                    join(path, &format!("{field}[{i}].header.value")),
                    problem,
                ));
            }
        }
    }
    for (field, list) in [
        ("request_headers_to_remove", request_remove),
        ("response_headers_to_remove", response_remove),
    ] {
        for (i, name) in list.iter().enumerate() {
            if !modifiable(name) {
                out.push(Violation::new(
                    join(path, &format!("{field}[{i}]")),
                    format!("{name}: :-prefixed or host headers may not be removed"),
                ));
            }
        }
    }
}
