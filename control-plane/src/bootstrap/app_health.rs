//! The app's kubelet probes as injection hands them over: Istio's `ISTIO_KUBE_APP_PROBERS` JSON,
//! probe path on 15020 → the `httpGet` probe the app's container declared. The bootstrap turns
//! each into a route on its app-health listener.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use meshd_translate::bootstrap::{AppProbe, ProbeScheme};
use serde::Deserialize;

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

    /// The probes as the bootstrap takes them, by their path on 15020.
    pub fn probes(&self) -> BTreeMap<String, AppProbe> {
        self.0
            .iter()
            .map(|(path, prober)| {
                let http = &prober.http_get;
                let probe = AppProbe {
                    port: http.port,
                    path: http.path.clone(),
                    scheme: match http.scheme {
                        Scheme::Http => ProbeScheme::Http,
                        Scheme::Https => ProbeScheme::Https,
                    },
                    host: http.host.clone(),
                    headers: http
                        .http_headers
                        .iter()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect(),
                    timeout_seconds: prober.timeout_seconds,
                };
                (path.clone(), probe)
            })
            .collect()
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
        assert!("".parse::<AppProbers>().unwrap().probes().is_empty());
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
    fn each_prober_becomes_a_probe_of_the_app() {
        let probes = PROBERS.parse::<AppProbers>().unwrap().probes();
        assert_eq!(
            probes["/app-health/web/readyz"],
            AppProbe {
                port: 8080,
                path: "/ready".to_string(),
                scheme: ProbeScheme::Http,
                host: None,
                headers: Vec::new(),
                timeout_seconds: 3,
            }
        );
        let live = &probes["/app-health/web/livez"];
        assert_eq!(live.host.as_deref(), Some("web.local"));
        assert_eq!(live.headers, [("x-probe".to_string(), "1".to_string())]);
        assert_eq!(live.timeout_seconds, 1);
        let admin = &probes["/app-health/admin/readyz"];
        assert_eq!((admin.port, admin.scheme), (8443, ProbeScheme::Https));
    }
}
