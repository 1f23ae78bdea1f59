//! The app-health listener on 15020: what pilot-agent does for Istio's rewritten kubelet probes,
//! done by Envoy itself.
//!
//! Injection points an app container's `httpGet` probes at `:15020/app-health/<container>/<probe>`
//! (the kubelet's plaintext probes would otherwise meet STRICT mTLS on the app's port). Each becomes
//! a route that forwards the probe to the app's original port and path on 127.0.0.1 — loopback, so
//! the capture rules leave it alone, and 15020 itself is never captured inbound.

use std::collections::BTreeMap;

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, header_value_option,
};
use meshd_proto::pb::envoy::config::listener::v3::Listener;
use meshd_proto::pb::envoy::config::route::v3::{Route, RouteAction, route, route_action};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;

use super::{http_listener, path_match, static_cluster, to_cluster};
use crate::tls::tls_socket;
use crate::util::duration;

/// Istio's app-health port.
pub const PORT: u16 = 15020;
const LISTENER: &str = "app_health";

/// A kubelet probe as the app's container declared it: where the app itself answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppProbe {
    /// The app's port on 127.0.0.1.
    pub port: u16,
    /// The app's path for the probe.
    pub path: String,
    pub scheme: ProbeScheme,
    /// The Host header (and, over HTTPS, the SNI) the probe carries, if the container names one.
    pub host: Option<String>,
    /// Headers the probe adds, in order.
    pub headers: Vec<(String, String)>,
    pub timeout_seconds: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeScheme {
    #[default]
    Http,
    Https,
}

/// One cluster per app port and scheme.
fn cluster_name(probe: &AppProbe) -> String {
    match probe.scheme {
        ProbeScheme::Http => format!("app_health|{}", probe.port),
        ProbeScheme::Https => format!("app_health|{}|tls", probe.port),
    }
}

/// Clusters to the app's probe ports on 127.0.0.1; none without probes. Probes sharing a cluster
/// take the first one's SNI, in path order.
pub(super) fn clusters(probes: &BTreeMap<String, AppProbe>) -> Vec<Cluster> {
    let mut by_name: BTreeMap<String, &AppProbe> = BTreeMap::new();
    for probe in probes.values() {
        by_name.entry(cluster_name(probe)).or_insert(probe);
    }
    by_name
        .into_iter()
        .map(|(name, probe)| {
            let mut cluster = static_cluster(&name, duration(1, 0), "127.0.0.1", probe.port);
            if probe.scheme == ProbeScheme::Https {
                // The kubelet does not verify an HTTPS probe's certificate either.
                let context = UpstreamTlsContext {
                    sni: probe.host.clone().unwrap_or_default(),
                    ..Default::default()
                };
                cluster.transport_socket = Some(tls_socket(pack(&context)));
            }
            cluster
        })
        .collect()
}

/// The listener on 15020, with a route per probe path; `None` without probes.
pub(super) fn listener(probes: &BTreeMap<String, AppProbe>) -> Option<Listener> {
    if probes.is_empty() {
        return None;
    }
    let routes = probes
        .iter()
        .map(|(path, probe)| {
            let mut action = RouteAction {
                prefix_rewrite: probe.path.clone(),
                timeout: Some(duration(probe.timeout_seconds.max(1).into(), 0)),
                ..to_cluster(&cluster_name(probe))
            };
            if let Some(host) = &probe.host {
                action.host_rewrite_specifier = Some(
                    route_action::HostRewriteSpecifier::HostRewriteLiteral(host.clone()),
                );
            }
            Route {
                r#match: Some(path_match(path)),
                action: Some(route::Action::Route(action)),
                request_headers_to_add: probe
                    .headers
                    .iter()
                    .map(|(key, value)| HeaderValueOption {
                        header: Some(HeaderValue {
                            key: key.clone(),
                            value: value.clone(),
                            ..Default::default()
                        }),
                        append_action:
                            header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    Some(http_listener(LISTENER, PORT, LISTENER, "app", routes))
}
