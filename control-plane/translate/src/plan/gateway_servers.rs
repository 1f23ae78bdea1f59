//! The Gateway servers a router binds: which Gateways select it, how each server handles its
//! connections, and which servers share a port.

use std::collections::BTreeMap;

use meshd_model::input::labels_match;
use meshd_model::input::networking::Server;
use meshd_model::{GatewayModel, Snapshot};

use crate::Scope;

fn is_http(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB"
    )
}

/// Protocols a gateway proxies as opaque TCP.
fn is_tcp(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_uppercase().as_str(),
        "TCP" | "MONGO" | "MYSQL" | "REDIS"
    )
}

/// How a server handles its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Http,
    /// Plain TCP routed by the VirtualServices' `tcp` routes.
    Tcp,
    /// HTTPS terminated here (SIMPLE, MUTUAL, or ISTIO_MUTUAL with the proxy's mesh certificate),
    /// then HTTP.
    Terminate,
    /// TLS terminated here as for `Terminate`, then `tcp` routes (Istio's egress gateway for TCP).
    TerminateTcp,
    /// TLS routed by SNI to the VirtualServices' `tls` routes, untouched.
    Passthrough,
    /// TLS routed by Istio's SNI (`outbound_.<port>_.<subset>_.<host>`) straight to that cluster.
    AutoPassthrough,
}

impl ServerKind {
    /// Servers of one port share a listener: HTTP and TCP servers each want the whole port, the
    /// TLS kinds share it by SNI.
    pub(crate) fn port_class(self) -> u8 {
        match self {
            ServerKind::Http => 0,
            ServerKind::Tcp => 1,
            _ => 2,
        }
    }
}

pub(crate) fn kind(server: &Server) -> Option<ServerKind> {
    if is_http(&server.port.protocol) {
        return Some(ServerKind::Http);
    }
    if is_tcp(&server.port.protocol) {
        return Some(ServerKind::Tcp);
    }
    let https = server.port.protocol.eq_ignore_ascii_case("HTTPS");
    let tls_port = https || server.port.protocol.eq_ignore_ascii_case("TLS");
    let mode = server
        .tls
        .as_ref()
        .map(|t| t.mode.as_deref().unwrap_or("SIMPLE").to_ascii_uppercase());
    match (tls_port, mode.as_deref()) {
        (true, Some("SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL")) if https => Some(ServerKind::Terminate),
        (true, Some("SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL")) => Some(ServerKind::TerminateTcp),
        (true, Some("PASSTHROUGH")) => Some(ServerKind::Passthrough),
        (true, Some("AUTO_PASSTHROUGH")) => Some(ServerKind::AutoPassthrough),
        _ => None,
    }
}

/// The server terminates TLS with the proxy's mesh certificate (`ISTIO_MUTUAL`).
pub(crate) fn istio_mutual(server: &Server) -> bool {
    server
        .tls
        .as_ref()
        .and_then(|t| t.mode.as_deref())
        .is_some_and(|m| m.eq_ignore_ascii_case("ISTIO_MUTUAL"))
}

pub(crate) fn terminates_tls(server: &Server) -> bool {
    kind(server) == Some(ServerKind::Terminate)
}

/// Gateways selecting this router, by its labels.
pub(crate) fn selected<'a>(snapshot: &'a Snapshot, scope: &Scope) -> Vec<&'a GatewayModel> {
    snapshot
        .traffic
        .gateways
        .iter()
        .filter(|g| !g.selector.is_empty() && labels_match(&g.selector, &scope.labels))
        .filter(|g| g.serves_namespace(&scope.namespace))
        .map(|g| g.as_ref())
        .collect()
}

/// One server as bound on a router: which gateway it belongs to.
pub(crate) struct Bound<'a> {
    pub gateway: &'a GatewayModel,
    pub server: &'a Server,
}

impl Bound<'_> {
    pub(crate) fn https_route_name(&self) -> String {
        format!(
            "https.{}.{}.{}.{}",
            self.server.port.number,
            self.server.port.name,
            self.gateway.key.name,
            self.gateway.key.namespace
        )
    }
}

/// Servers by port. A port serves plain HTTP, plain TCP, or TLS (terminated or passed through, by
/// SNI); a port where Gateways mix them keeps the class its first server has (Istio refuses such
/// configurations too), and a plain TCP port keeps only its first server.
pub(crate) fn servers_by_port<'a>(
    snapshot: &'a Snapshot,
    scope: &Scope,
) -> BTreeMap<u32, Vec<Bound<'a>>> {
    let mut ports: BTreeMap<u32, Vec<Bound<'a>>> = BTreeMap::new();
    for gateway in selected(snapshot, scope) {
        for server in gateway.servers.iter() {
            let Some(k) = kind(server) else { continue };
            let list = ports.entry(server.port.number).or_default();
            if list
                .first()
                .and_then(|b| kind(b.server))
                .is_some_and(|first| first.port_class() != k.port_class() || k == ServerKind::Tcp)
            {
                continue;
            }
            list.push(Bound { gateway, server });
        }
    }
    ports
}
