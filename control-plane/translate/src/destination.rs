//! Which cluster a VirtualService destination means, for HTTP and TCP routes alike.

use meshd_model::Snapshot;
use meshd_model::input::networking::Destination;
use meshd_model::traffic::resolve_host;

use crate::names::outbound_cluster;

/// The cluster a destination means here: explicit port, else the listener's port if the service has
/// it, else the service's only port. Short hosts resolve in the VirtualService's namespace.
pub(crate) fn cluster_for(
    d: &Destination,
    vs_namespace: &str,
    snapshot: &Snapshot,
    listener_port: u32,
) -> String {
    let host = resolve_host(&d.host, vs_namespace);
    let port = d.port.as_ref().map(|p| p.number).unwrap_or_else(|| {
        match snapshot.registry.services.get(&host) {
            Some(svc) if svc.port(listener_port).is_some() => listener_port,
            Some(svc) if svc.ports.len() == 1 => svc.ports[0].port,
            _ => listener_port,
        }
    });
    outbound_cluster(port, d.subset.as_deref().unwrap_or(""), &host)
}
