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

/// How a server handles its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ServerKind {
    Http,
    /// HTTPS terminated here, SIMPLE or MUTUAL.
    Terminate,
    /// TLS routed by SNI to the VirtualServices' `tls` routes, untouched.
    Passthrough,
    /// TLS routed by Istio's SNI (`outbound_.<port>_.<subset>_.<host>`) straight to that cluster.
    AutoPassthrough,
}

pub(crate) fn kind(server: &Server) -> Option<ServerKind> {
    if is_http(&server.port.protocol) {
        return Some(ServerKind::Http);
    }
    let https = server.port.protocol.eq_ignore_ascii_case("HTTPS");
    let tls_port = https || server.port.protocol.eq_ignore_ascii_case("TLS");
    let mode = server
        .tls
        .as_ref()
        .map(|t| t.mode.as_deref().unwrap_or("SIMPLE").to_ascii_uppercase());
    match (tls_port, mode.as_deref()) {
        (true, Some("SIMPLE" | "MUTUAL")) if https => Some(ServerKind::Terminate),
        (true, Some("PASSTHROUGH")) => Some(ServerKind::Passthrough),
        (true, Some("AUTO_PASSTHROUGH")) => Some(ServerKind::AutoPassthrough),
        _ => None,
    }
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

/// Servers by port. A port serves either plain HTTP or terminated HTTPS; a port where a Gateway
/// mixes both keeps the kind its first server has (Istio refuses such configurations too).
pub(crate) fn servers_by_port<'a>(
    snapshot: &'a Snapshot,
    scope: &Scope,
) -> BTreeMap<u32, Vec<Bound<'a>>> {
    let mut ports: BTreeMap<u32, Vec<Bound<'a>>> = BTreeMap::new();
    // TLS kinds share a port (they differ by SNI); plain HTTP does not mix with them.
    let tls = |s: &Server| kind(s) != Some(ServerKind::Http);
    for gateway in selected(snapshot, scope) {
        for server in gateway.servers.iter().filter(|s| kind(s).is_some()) {
            let list = ports.entry(server.port.number).or_default();
            if list.first().is_some_and(|b| tls(b.server) != tls(server)) {
                continue;
            }
            list.push(Bound { gateway, server });
        }
    }
    ports
}
