//! istioctl-like commands that read a running meshd's debug API, `analyze`, and `dashboard`.

pub mod analyze;
pub mod dashboard;
pub mod envoy_admin;
pub mod proxy_config;
pub mod proxy_status;
pub mod version;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::Context;

#[derive(clap::Args, Debug, Clone)]
pub struct DebugAddr {
    /// meshd's debug API.
    #[arg(
        long = "debug-addr",
        env = "MESHD_DEBUG_ADDR_CLIENT",
        default_value = "127.0.0.1:15014"
    )]
    pub addr: String,
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
