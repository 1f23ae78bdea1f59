//! istioctl-like commands that read a running meshd's debug API, `analyze`, and `dashboard`.

pub mod analyze;
pub mod dashboard;
pub mod envoy_admin;
pub mod port_forward;
pub mod proxy_config;
pub mod proxy_status;
pub mod version;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

/// meshd's monitoring port on its Service.
const MONITORING_PORT: u16 = 15014;

#[derive(clap::Args, Debug, Clone)]
pub struct DebugAddr {
    /// meshd's debug API (default 127.0.0.1:15014). Without it, when a cluster is configured
    /// (`--kubeconfig`, `KUBECONFIG`, ~/.kube/config), meshd's Service `istiod` is reached
    /// through `kubectl port-forward`, as istioctl does.
    #[arg(long = "debug-addr", env = "MESHD_DEBUG_ADDR_CLIENT")]
    pub addr: Option<String>,
    /// Where meshd runs.
    #[arg(long = "istio-namespace", default_value = "istio-system")]
    pub istio_namespace: String,
    #[command(flatten)]
    pub kubectl: port_forward::Kubectl,
}

/// An address that answers for as long as this lives (a port-forward, if one was needed).
pub struct Reached {
    pub addr: String,
    _forward: Option<port_forward::Forward>,
}

impl Reached {
    /// `given` when the user named an address; else, with a cluster configured, a port-forward
    /// to `port` of what `target` names (`(namespace, service/NAME|pod/NAME)`); else `port` on
    /// loopback.
    pub fn choose(
        given: Option<&str>,
        kubectl: &port_forward::Kubectl,
        port: u16,
        target: impl FnOnce() -> anyhow::Result<(String, String)>,
    ) -> anyhow::Result<Reached> {
        if let Some(addr) = given {
            return Ok(Reached {
                addr: addr.to_owned(),
                _forward: None,
            });
        }
        if kubectl.configured(std::env::home_dir()) {
            let (namespace, target) = target()?;
            let forward = kubectl.forward(&namespace, &target, port)?;
            return Ok(Reached {
                addr: forward.addr.clone(),
                _forward: Some(forward),
            });
        }
        Ok(Reached {
            addr: format!("127.0.0.1:{port}"),
            _forward: None,
        })
    }
}

impl DebugAddr {
    /// `--debug-addr`; else, with a cluster configured, a port-forward to meshd's Service; else
    /// the local default.
    pub fn reach(&self) -> anyhow::Result<Reached> {
        Reached::choose(self.addr.as_deref(), &self.kubectl, MONITORING_PORT, || {
            Ok((self.istio_namespace.clone(), "service/istiod".to_owned()))
        })
    }
}

/// GET over HTTP/1.0, so the answer is never chunked; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream =
        TcpStream::connect(addr).with_context(|| format!("connecting to meshd at {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    Ok((status, body.to_string()))
}

pub fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = http_get(addr, path)?;
    if status != 200 {
        anyhow::bail!("{path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("{path}: invalid JSON"))
}

/// Prints rows as aligned columns, like istioctl.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
