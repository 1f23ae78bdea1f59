//! What a proxy itself says it applied, read from its Envoy admin port (`/config_dump`,
//! `/logging`, `/server_info`) — the other side of what meshd says it sent.

use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

use super::Reached;
use super::port_forward::{Kubectl, pod_of};
use crate::envoy_http::request;

/// A config dump of a large proxy takes a while to print.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Envoy's admin port in an injected pod.
const ADMIN_PORT: u16 = 15000;

#[derive(clap::Args, Debug, Clone)]
pub struct AdminAddr {
    /// The proxy's Envoy admin address (default 127.0.0.1:15000: run in the pod's network
    /// namespace). Without it, when a cluster is configured, the pod's admin port is reached
    /// through `kubectl port-forward`, as istioctl does.
    #[arg(long = "admin-addr")]
    pub admin_addr: Option<String>,
}

impl AdminAddr {
    /// `--admin-addr`; else, with a cluster configured, a port-forward to the proxy's pod; else
    /// the local default.
    pub fn reach(&self, proxy_id: &str, kubectl: &Kubectl) -> anyhow::Result<Reached> {
        Reached::choose(self.admin_addr.as_deref(), kubectl, ADMIN_PORT, || {
            let (pod, namespace) = pod_of(proxy_id)?;
            Ok((namespace, format!("pod/{pod}")))
        })
    }
}

fn get_json(addr: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = request(addr, "GET", path, TIMEOUT)?;
    if status != 200 {
        anyhow::bail!("Envoy admin {path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("Envoy admin {path}: invalid JSON"))
}

/// One config dump type: its name, meshd's section for it, and its lists with where each entry
/// keeps its resource.
type Section = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Envoy's `/config_dump` (endpoints included), in the shape of meshd's own
/// `/debug/config_dump`: `{clusters|listeners|routes|endpoints|secrets: [{name, resource}]}`,
/// static and dynamic (active) resources alike; `bootstrap` as Envoy printed it.
pub fn config_dump(addr: &str) -> anyhow::Result<Value> {
    let dump = get_json(addr, "/config_dump?include_eds")?;
    let mut out = serde_json::Map::new();
    let layout: [Section; 5] = [
        (
            "ClustersConfigDump",
            "clusters",
            &[
                ("static_clusters", "/cluster"),
                ("dynamic_active_clusters", "/cluster"),
            ],
        ),
        (
            "ListenersConfigDump",
            "listeners",
            &[
                ("static_listeners", "/listener"),
                ("dynamic_listeners", "/active_state/listener"),
            ],
        ),
        (
            "RoutesConfigDump",
            "routes",
            &[
                ("static_route_configs", "/route_config"),
                ("dynamic_route_configs", "/route_config"),
            ],
        ),
        (
            "EndpointsConfigDump",
            "endpoints",
            &[
                ("static_endpoint_configs", "/endpoint_config"),
                ("dynamic_endpoint_configs", "/endpoint_config"),
            ],
        ),
        (
            "SecretsConfigDump",
            "secrets",
            &[
                ("static_secrets", "/secret"),
                ("dynamic_active_secrets", "/secret"),
            ],
        ),
    ];
    for config in dump["configs"].as_array().into_iter().flatten() {
        let kind = config["@type"].as_str().unwrap_or_default();
        if kind.ends_with(".BootstrapConfigDump") {
            out.insert("bootstrap".into(), config["bootstrap"].clone());
        }
        for (dump_type, section, lists) in &layout {
            if !kind.ends_with(&format!(".{dump_type}")) {
                continue;
            }
            let mut entries = Vec::new();
            for (list, pointer) in *lists {
                for entry in config[*list].as_array().into_iter().flatten() {
                    let Some(resource) = entry.pointer(pointer) else {
                        continue;
                    };
                    let name = resource["name"]
                        .as_str()
                        .or_else(|| resource["cluster_name"].as_str())
                        .or_else(|| entry["name"].as_str())
                        .unwrap_or_default();
                    entries.push(serde_json::json!({
                        "name": name,
                        "version": entry["version_info"].clone(),
                        "resource": resource,
                    }));
                }
            }
            out.insert((*section).into(), Value::Array(entries));
        }
    }
    Ok(Value::Object(out))
}

/// Envoy's loggers and their levels; with `level`, sets them all first (as
/// `istioctl proxy-config log --level` does).
pub fn logging(addr: &str, level: Option<&str>) -> anyhow::Result<String> {
    let path = match level {
        Some(level) => format!("/logging?level={level}"),
        None => "/logging".to_owned(),
    };
    let (status, body) = request(addr, "POST", &path, TIMEOUT)?;
    if status != 200 {
        anyhow::bail!("Envoy admin {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}
