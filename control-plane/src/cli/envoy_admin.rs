//! What a proxy itself says it applied, read from its Envoy admin port (`/config_dump`,
//! `/logging`, `/server_info`) — the other side of what meshd says it sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

#[derive(clap::Args, Debug, Clone)]
pub struct AdminAddr {
    /// The proxy's Envoy admin address (run where it is reachable: the pod's network
    /// namespace, or through `kubectl port-forward POD 15000`).
    #[arg(long = "admin-addr", default_value = "127.0.0.1:15000")]
    pub admin_addr: String,
}

/// One HTTP/1.1 request (Envoy's admin refuses HTTP/1.0), the connection closed after it;
/// returns (status, body), a chunked body joined.
pub fn request(addr: &str, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .with_context(|| format!("connecting to the Envoy admin port at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let body = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size = std::str::from_utf8(&body[..line_end])?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .context("malformed chunk size")?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).context("truncated chunk")?);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

fn get_json(addr: &str, path: &str) -> anyhow::Result<Value> {
    let (status, body) = request(addr, "GET", path)?;
    if status != 200 {
        anyhow::bail!("Envoy admin {path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("Envoy admin {path}: invalid JSON"))
}

/// Envoy's `/config_dump` (endpoints included), in the shape of meshd's own
/// `/debug/config_dump`: `{clusters|listeners|routes|endpoints|secrets: [{name, resource}]}`,
/// static and dynamic (active) resources alike; `bootstrap` as Envoy printed it.
pub fn config_dump(addr: &str) -> anyhow::Result<Value> {
    let dump = get_json(addr, "/config_dump?include_eds")?;
    let mut out = serde_json::Map::new();
    // (section, where each entry keeps its resource) per dump type.
    let layout: [(&str, &str, &[(&str, &str)]); 5] = [
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
    let (status, body) = request(addr, "POST", &path)?;
    if status != 200 {
        anyhow::bail!("Envoy admin {path}: HTTP {status}: {}", body.trim());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunked_body_is_joined() {
        let body = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n";
        assert_eq!(dechunk(body).unwrap(), b"Wikipedia ");
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
