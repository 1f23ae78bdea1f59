//! The HTTP connection manager as Istio configures it, and the HTTP filter chain it runs.

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::listener::v3::{Filter, filter};
use meshd_proto::pb::envoy::extensions::filters::http::cors::v3::Cors;
use meshd_proto::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use meshd_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};

use crate::util::*;

pub(crate) fn http_filter(
    name: &str,
    config: meshd_proto::pb::google::protobuf::Any,
) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// Istio's outbound chain: fault and CORS are always present (configured per route), router last.
pub(crate) fn http_filters() -> Vec<HttpFilter> {
    vec![
        http_filter("envoy.filters.http.fault", pack(&HttpFault::default())),
        http_filter("envoy.filters.http.cors", pack(&Cors::default())),
        http_filter("envoy.filters.http.router", pack(&Router::default())),
    ]
}

pub(crate) fn http_connection_manager(
    stat_prefix: String,
    route: http_connection_manager::RouteSpecifier,
    http_filters: Vec<HttpFilter>,
) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(route),
        http_filters,
        normalize_path: bool_value(true),
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        use_remote_address: bool_value(false),
        ..Default::default()
    }
}

pub(crate) fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(hcm))),
    }
}
