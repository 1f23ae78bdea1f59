//! Port protocols, detected the way Istio does: explicit `appProtocol`, else the port name's prefix
//! (`http`, `http-web`, `grpc-api`, ...), else unknown. Unknown ports are sniffed, as istiod does:
//! HTTP/1.1 and h2c get HTTP routing, anything else is proxied as TCP.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    GrpcWeb,
    Https,
    Tls,
    Tcp,
    Mongo,
    Mysql,
    Redis,
    /// Not declared: the proxies sniff each connection (see `is_sniffed`).
    Unknown,
}

impl Protocol {
    /// Istio's protocol names, case-insensitive.
    pub fn parse(name: &str) -> Option<Protocol> {
        Some(match name.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" | "h2c" | "kubernetes.io/h2c" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "tcp" | "udp" => Protocol::Tcp,
            "mongo" => Protocol::Mongo,
            "mysql" => Protocol::Mysql,
            "redis" => Protocol::Redis,
            _ => return None,
        })
    }

    /// Istio's detection for Kubernetes ports: `appProtocol` wins, then the name's `<protocol>[-suffix]`.
    pub fn detect(app_protocol: Option<&str>, port_name: Option<&str>) -> Protocol {
        if let Some(p) = app_protocol.and_then(Protocol::parse) {
            return p;
        }
        let Some(name) = port_name else {
            return Protocol::Unknown;
        };
        if let Some(p) = Protocol::parse(name) {
            return p;
        }
        // "grpc-web" must be tried whole before the prefix rule turns it into grpc.
        if name.to_ascii_lowercase().starts_with("grpc-web-") {
            return Protocol::GrpcWeb;
        }
        name.split_once('-')
            .and_then(|(prefix, _)| Protocol::parse(prefix))
            .unwrap_or(Protocol::Unknown)
    }

    /// Ports that get only an HTTP connection manager.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http | Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb
        )
    }

    /// Ports whose protocol is not declared: each connection is inspected (Envoy's
    /// `http_inspector`); HTTP/1.x and h2c go to an HTTP connection manager, the rest to TCP.
    pub fn is_sniffed(self) -> bool {
        self == Protocol::Unknown
    }

    /// Ports whose HTTP traffic gets routes: declared HTTP, or sniffed.
    pub fn may_be_http(self) -> bool {
        self.is_http() || self.is_sniffed()
    }

    /// Upstream speaks HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
            Protocol::Mongo => "Mongo",
            Protocol::Mysql => "MySQL",
            Protocol::Redis => "Redis",
            Protocol::Unknown => "UnsupportedProtocol",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_name_prefix_decides_protocol() {
        assert_eq!(Protocol::detect(None, Some("http")), Protocol::Http);
        assert_eq!(Protocol::detect(None, Some("http-web")), Protocol::Http);
        assert_eq!(Protocol::detect(None, Some("grpc-api")), Protocol::Grpc);
        assert_eq!(Protocol::detect(None, Some("grpc-web")), Protocol::GrpcWeb);
        assert_eq!(Protocol::detect(None, Some("tcp-db")), Protocol::Tcp);
        assert_eq!(Protocol::detect(None, Some("web")), Protocol::Unknown);
        assert_eq!(Protocol::detect(None, None), Protocol::Unknown);
    }

    #[test]
    fn undeclared_ports_are_sniffed_not_served_as_http() {
        let unnamed = Protocol::detect(None, None);
        assert!(unnamed.is_sniffed());
        assert!(!unnamed.is_http());
        assert!(unnamed.may_be_http());
        assert!(!Protocol::Tcp.may_be_http());
        assert!(!Protocol::Http.is_sniffed());
    }

    #[test]
    fn app_protocol_wins_over_name() {
        assert_eq!(Protocol::detect(Some("tcp"), Some("http")), Protocol::Tcp);
        assert_eq!(
            Protocol::detect(Some("kubernetes.io/h2c"), None),
            Protocol::Http2
        );
    }
}
