//! The HTTP connection manager as Istio configures it, and the HTTP filter chain it runs.

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::listener::v3::{
    Filter, ListenerFilter, filter, listener_filter,
};
use meshd_proto::pb::envoy::extensions::filters::http::cors::v3::Cors;
use meshd_proto::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use meshd_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use meshd_proto::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
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

/// A sidecar's outbound HTTP connection manager for `port`: routes from RDS `"<port>"`.
pub(crate) fn outbound_http_filter(port: u32) -> Filter {
    let hcm = http_connection_manager(
        format!("outbound_0.0.0.0_{port}"),
        http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: port.to_string(),
        }),
        http_filters(),
    );
    hcm_filter(&hcm)
}

/// What Envoy's `http_inspector` reports for plaintext HTTP; a sniffing listener's HTTP chain
/// matches these.
pub(crate) const SNIFFED_HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

/// The listener filter that tells plaintext HTTP from anything else.
pub(crate) fn http_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.http_inspector".to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(pack(
            &HttpInspector::default(),
        ))),
        ..Default::default()
    }
}
