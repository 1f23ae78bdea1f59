//! HTTP as a pod's app sees it: curl run inside the pod's namespace, so iptables captures it
//! exactly like an app's request. Also a plain GET for servers on the host's loopback.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

use anyhow::Context as _;

/// One curl exchange. `status` is 0 when no response arrived; `error` then says why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpResult {
    pub status: u16,
    /// Headers of the final response, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// curl's complaint when it exited unsuccessfully (connection refused, reset, timeout, …).
    pub error: Option<String>,
}

impl HttpResult {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .map_err(|err| anyhow::anyhow!("response body is not JSON ({err}): {self:?}"))
    }

    /// The pod that answered a 200, from `meshd-echo`'s JSON body; `None` for anything else.
    pub fn echo_pod(&self) -> Option<String> {
        if self.status != 200 {
            return None;
        }
        let body: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        body["pod"].as_str().map(str::to_owned)
    }

    /// Builds the result from curl's output: stdout carries `%{http_code}`, the header and body
    /// dumps were written to files.
    pub(crate) fn from_curl(output: &Output, headers: &str, body: String) -> Self {
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let error = (!output.status.success()).then(|| {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            format!("curl {}: {stderr}", output.status)
        });
        HttpResult {
            status,
            headers: parse_last_header_block(headers),
            body,
            error,
        }
    }
}

/// `GET path` over plain HTTP/1.0 from `authority` (`HOST:PORT`) with std only, for servers on the
/// host's loopback (etcd, meshd outside a mesh): the status and the body.
pub fn get_plain(authority: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream =
        TcpStream::connect(authority).with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or((answer.as_str(), ""));
    let status = head
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("GET {path} from {authority}: no HTTP status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// curl's `-D` dump holds one block per response received (`100 Continue`, redirects); the last
/// one belongs to the response whose body we have.
fn parse_last_header_block(dump: &str) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            headers.clear();
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_final_response_headers_are_kept() {
        let dump = "HTTP/1.1 100 Continue\r\nX-Early: 1\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Envoy-Upstream-Service-Time: 3\r\n\r\n";
        let headers = parse_last_header_block(dump);
        assert_eq!(
            headers,
            vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                ("x-envoy-upstream-service-time".to_owned(), "3".to_owned()),
            ]
        );
    }

    #[test]
    fn only_a_200_from_meshd_echo_names_a_pod() {
        let answer = |status: u16, body: &str| HttpResult {
            status,
            body: body.to_owned(),
            ..HttpResult::default()
        };
        assert_eq!(
            answer(200, r#"{"pod": "echo-a"}"#).echo_pod().as_deref(),
            Some("echo-a")
        );
        assert_eq!(answer(418, r#"{"pod": "echo-a"}"#).echo_pod(), None);
        assert_eq!(answer(200, "no JSON").echo_pod(), None);
    }

    #[test]
    fn header_lookup_ignores_case() {
        let result = HttpResult {
            headers: vec![("server".into(), "envoy".into())],
            ..HttpResult::default()
        };
        assert_eq!(result.header("Server"), Some("envoy"));
        assert_eq!(result.header("x-missing"), None);
    }
}
