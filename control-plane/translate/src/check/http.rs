//! The HTTP connection manager inside a listener, from
//! `source/extensions/filters/network/http_connection_manager/config.cc`: its HTTP filters end
//! with the one terminal filter, upgrade types are unique (case-insensitively), its access logs
//! parse, and an inline route table follows the route table rules.

use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};

use super::filter_chain_order::{Chain, Filter, order};
use super::{Violation, access_log, join, route};

pub(super) fn check(hcm: &HttpConnectionManager, path: &str, out: &mut Vec<Violation>) {
    let filters: Vec<Filter> = hcm
        .http_filters
        .iter()
        .map(|f| Filter {
            name: &f.name,
            type_url: match &f.config_type {
                Some(http_filter::ConfigType::TypedConfig(any)) => Some(any.type_url.as_str()),
                _ => None,
            },
            discovered: matches!(
                f.config_type,
                Some(http_filter::ConfigType::ConfigDiscovery(_))
            ) || f.is_optional,
        })
        .collect();
    order(Chain::Http, &filters, &join(path, "http_filters"), out);
    let mut seen: Vec<String> = Vec::new();
    for (i, upgrade) in hcm.upgrade_configs.iter().enumerate() {
        let lower = upgrade.upgrade_type.to_ascii_lowercase();
        if seen.contains(&lower) {
            out.push(Violation::new(
                join(path, &format!("upgrade_configs[{i}].upgrade_type")),
                format!(
                    "multiple upgrade configs with the same name: '{}'",
                    upgrade.upgrade_type
                ),
            ));
        }
        seen.push(lower);
    }
    access_log::check(&hcm.access_log, &join(path, "access_log"), out);
    if let Some(RouteSpecifier::RouteConfig(table)) = &hcm.route_specifier {
        route::check_at(table, &join(path, "route_config"), out);
    }
}
