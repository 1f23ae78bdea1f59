//! HTTP as a pod's app sees it: curl run inside the pod's namespace, so iptables captures it
//! exactly like an app's request.

use std::process::Output;

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
    fn header_lookup_ignores_case() {
        let result = HttpResult {
            headers: vec![("server".into(), "envoy".into())],
            ..HttpResult::default()
        };
        assert_eq!(result.header("Server"), Some("envoy"));
        assert_eq!(result.header("x-missing"), None);
    }
}
