//! The app-health listener on 15020: what pilot-agent does for Istio's rewritten kubelet probes,
//! done by Envoy itself.
//!
//! Injection points an app container's `httpGet` probes at `:15020/app-health/<container>/<probe>`
//! (the kubelet's plaintext probes would otherwise meet STRICT mTLS on the app's port) and hands
//! the originals to `meshd bootstrap` in Istio's `ISTIO_KUBE_APP_PROBERS` format. Each becomes a
//! route that forwards the probe to the app's original port and path on 127.0.0.1 — loopback, so
//! the capture rules leave it alone, and 15020 itself is never captured inbound.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{HCM_TYPE, ROUTER_TYPE, UPSTREAM_TLS_TYPE, socket_address};

/// Istio's app-health port.
pub const PORT: u16 = 15020;
const LISTENER: &str = "app_health";
const PATH_PREFIX: &str = "/app-health/";

/// Probe path on 15020 → the probe as the app's container declared it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProbers(pub BTreeMap<String, AppProber>);

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProber {
    pub http_get: HttpGet,
    #[serde(default = "one_second")]
    pub timeout_seconds: u32,
}

fn one_second() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    #[serde(default = "root_path")]
    pub path: String,
    /// Numeric: injection resolves named ports.
    pub port: u16,
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub http_headers: Vec<HttpHeader>,
}

fn root_path() -> String {
    "/".to_owned()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidAppProbers(String);

impl fmt::Display for InvalidAppProbers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app probers: {}", self.0)
    }
}

impl std::error::Error for InvalidAppProbers {}

impl FromStr for AppProbers {
    type Err = InvalidAppProbers;

    /// Empty means none (the env var is only set when a pod has probes to forward).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(AppProbers::default());
        }
        let probers: BTreeMap<String, AppProber> =
            serde_json::from_str(s).map_err(|e| InvalidAppProbers(e.to_string()))?;
        for (path, prober) in &probers {
            if !path.starts_with(PATH_PREFIX) {
                return Err(InvalidAppProbers(format!(
                    "{path:?} does not start with {PATH_PREFIX}"
                )));
            }
            if prober.http_get.port == 0 {
                return Err(InvalidAppProbers(format!("{path:?}: port 0")));
            }
            if !prober.http_get.path.starts_with('/') {
                return Err(InvalidAppProbers(format!(
                    "{path:?}: path {:?} does not start with /",
                    prober.http_get.path
                )));
            }
        }
        Ok(AppProbers(probers))
    }
}

impl AppProbers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One cluster per app port and scheme.
    fn cluster_name(http: &HttpGet) -> String {
        match http.scheme {
            Scheme::Http => format!("app_health|{}", http.port),
            Scheme::Https => format!("app_health|{}|tls", http.port),
        }
    }

    /// Clusters to the app's probe ports on 127.0.0.1; none without probers.
    pub fn clusters(&self) -> Vec<Value> {
        let mut by_name: BTreeMap<String, &HttpGet> = BTreeMap::new();
        for prober in self.0.values() {
            by_name
                .entry(Self::cluster_name(&prober.http_get))
                .or_insert(&prober.http_get);
        }
        by_name
            .into_iter()
            .map(|(name, http)| {
                let mut cluster = json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": name,
                        "endpoints": [{
                            "lb_endpoints": [{
                                "endpoint": { "address": socket_address("127.0.0.1", http.port) },
                            }],
                        }],
                    },
                });
                if http.scheme == Scheme::Https {
                    // The kubelet does not verify an HTTPS probe's certificate either.
                    let mut tls = json!({ "@type": UPSTREAM_TLS_TYPE });
                    if let Some(host) = &http.host {
                        tls["sni"] = json!(host);
                    }
                    cluster["transport_socket"] = json!({
                        "name": "envoy.transport_sockets.tls",
                        "typed_config": tls,
                    });
                }
                cluster
            })
            .collect()
    }

    /// The listener on 15020, or `None` without probers.
    pub fn listener(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        let routes: Vec<Value> = self
            .0
            .iter()
            .map(|(path, prober)| {
                let http = &prober.http_get;
                let mut route = json!({
                    "cluster": Self::cluster_name(http),
                    "prefix_rewrite": http.path,
                    "timeout": format!("{}s", prober.timeout_seconds.max(1)),
                });
                if let Some(host) = &http.host {
                    route["host_rewrite_literal"] = json!(host);
                }
                let mut entry = json!({ "match": { "path": path }, "route": route });
                if !http.http_headers.is_empty() {
                    entry["request_headers_to_add"] = http
                        .http_headers
                        .iter()
                        .map(|h| {
                            json!({
                                "header": { "key": h.name, "value": h.value },
                                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                            })
                        })
                        .collect();
                }
                entry
            })
            .collect();
        Some(json!({
            "name": LISTENER,
            "address": socket_address("0.0.0.0", PORT),
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": HCM_TYPE,
                        "stat_prefix": LISTENER,
                        "codec_type": "AUTO",
                        "route_config": {
                            "name": LISTENER,
                            "virtual_hosts": [{ "name": "app", "domains": ["*"], "routes": routes }],
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": { "@type": ROUTER_TYPE },
                        }],
                    },
                }],
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBERS: &str = r#"{
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 3},
        "/app-health/web/livez": {"httpGet": {"path": "/live", "port": 8080, "host": "web.local",
            "httpHeaders": [{"name": "x-probe", "value": "1"}]}},
        "/app-health/admin/readyz": {"httpGet": {"port": 8443, "scheme": "HTTPS"}}
    }"#;

    #[test]
    fn probers_parse_istios_format_and_empty_means_none() {
        let probers: AppProbers = PROBERS.parse().unwrap();
        assert_eq!(probers.0.len(), 3);
        let admin = &probers.0["/app-health/admin/readyz"];
        assert_eq!(admin.http_get.path, "/");
        assert_eq!(admin.http_get.scheme, Scheme::Https);
        assert_eq!(admin.timeout_seconds, 1);
        assert!("".parse::<AppProbers>().unwrap().is_empty());
        assert!("".parse::<AppProbers>().unwrap().listener().is_none());
    }

    #[test]
    fn malformed_probers_are_refused() {
        for bad in [
            "not json",
            r#"{"/elsewhere": {"httpGet": {"port": 80}}}"#,
            r#"{"/app-health/a/readyz": {"httpGet": {"port": 0}}}"#,
            r#"{"/app-health/a/readyz": {"httpGet": {"port": "http"}}}"#,
            r#"{"/app-health/a/readyz": {"httpGet": {"port": 80, "path": "x"}}}"#,
            r#"{"/app-health/a/readyz": {"httpGet": {"port": 80, "scheme": "FTP"}}}"#,
        ] {
            assert!(bad.parse::<AppProbers>().is_err(), "{bad}");
        }
    }

    #[test]
    fn each_probe_path_forwards_to_its_original_on_loopback() {
        let probers: AppProbers = PROBERS.parse().unwrap();
        let listener = probers.listener().unwrap();
        assert_eq!(
            listener["address"]["socket_address"],
            json!({ "address": "0.0.0.0", "port_value": 15020 })
        );
        let hcm = &listener["filter_chains"][0]["filters"][0]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let find = |path: &str| {
            routes
                .iter()
                .find(|r| r["match"]["path"] == path)
                .unwrap_or_else(|| panic!("no route for {path}"))
        };
        assert_eq!(
            find("/app-health/web/readyz")["route"],
            json!({ "cluster": "app_health|8080", "prefix_rewrite": "/ready", "timeout": "3s" })
        );
        let live = find("/app-health/web/livez");
        assert_eq!(live["route"]["host_rewrite_literal"], "web.local");
        assert_eq!(
            live["request_headers_to_add"][0]["header"],
            json!({ "key": "x-probe", "value": "1" })
        );
        assert_eq!(
            find("/app-health/admin/readyz")["route"]["cluster"],
            "app_health|8443|tls"
        );

        let clusters = probers.clusters();
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app_health|8080", "app_health|8443|tls"]);
        assert_eq!(
            clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({ "socket_address": { "address": "127.0.0.1", "port_value": 8080 } })
        );
        assert!(clusters[0].get("transport_socket").is_none());
        assert_eq!(
            clusters[1]["transport_socket"]["typed_config"]["@type"],
            UPSTREAM_TLS_TYPE
        );
    }
}
