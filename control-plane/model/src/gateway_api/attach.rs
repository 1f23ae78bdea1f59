//! Where a route attaches: its `parentRefs` resolved to listeners of Gateways meshd serves (by
//! `sectionName`, `port`, the listener's allowed namespaces and kinds, and hostname
//! intersection) or to Services (mesh routes), with the `Accepted` condition each parent gets.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::input::gateway_api::ParentReference;
use crate::object::{GATEWAY_API_GROUP, Kind, Object, ObjectKey};
use crate::registry::{Registry, ServiceModel, cluster_domain_host};
use crate::traffic::host_matches;

use super::gateways::GatewayState;
use super::status::Condition;

/// One route's view of one parent.
pub(crate) enum Parent {
    /// Listeners (index into the Gateway's) it attaches to, with the hostnames it serves there.
    Gateway {
        gateway: usize,
        listeners: Vec<(usize, Vec<String>)>,
    },
    /// A mesh route: the Service's traffic from every sidecar, on `port` or every port.
    Service {
        service: Arc<ServiceModel>,
        port: Option<u32>,
    },
    /// A Gateway of another class, or a kind meshd does not serve: not ours to report on.
    NotOurs,
}

/// `parent` resolved for a route of `kind` in `namespace` with `hostnames`, and the `Accepted`
/// condition to report (`None` when the parent is not ours).
pub(crate) fn resolve(
    parent: &ParentReference,
    route_kind: &str,
    namespace: &str,
    hostnames: &[String],
    gateways: &[GatewayState],
    objects: &BTreeMap<ObjectKey, Object>,
    registry: &Registry,
) -> (Parent, Option<Condition>) {
    let group = parent.group.as_deref().unwrap_or(GATEWAY_API_GROUP);
    let kind = parent.kind.as_deref().unwrap_or("Gateway");
    let parent_ns = parent.namespace.as_deref().unwrap_or(namespace);
    if (group.is_empty() || group == "core") && kind == "Service" {
        let host = cluster_domain_host(&parent.name, parent_ns);
        let Some(service) = registry.services.get(&host) else {
            let c = Condition::no(
                "Accepted",
                "NoMatchingParent",
                format!("Service {parent_ns}/{} not found", parent.name),
            );
            return (Parent::NotOurs, Some(c));
        };
        if !matches!(route_kind, "HTTPRoute" | "GRPCRoute") {
            let c = Condition::no(
                "Accepted",
                "UnsupportedValue",
                format!("{route_kind} does not attach to Services in meshd"),
            );
            return (Parent::NotOurs, Some(c));
        }
        if let Some(port) = parent.port
            && service.port(port).is_none()
        {
            let c = Condition::no(
                "Accepted",
                "NoMatchingParent",
                format!("Service {parent_ns}/{} has no port {port}", parent.name),
            );
            return (Parent::NotOurs, Some(c));
        }
        let p = Parent::Service {
            service: service.clone(),
            port: parent.port,
        };
        return (p, Some(Condition::yes("Accepted", "Accepted")));
    }
    if group != GATEWAY_API_GROUP || kind != "Gateway" {
        return (Parent::NotOurs, None);
    }
    let Some(gi) = gateways
        .iter()
        .position(|g| g.key.namespace == parent_ns && g.key.name == parent.name)
    else {
        // A Gateway of another class (or none at all): another controller's business.
        let key = ObjectKey::new(Kind::KubeGateway, parent_ns, parent.name.clone());
        if objects.contains_key(&key) {
            return (Parent::NotOurs, None);
        }
        let c = Condition::no(
            "Accepted",
            "NoMatchingParent",
            format!("Gateway {parent_ns}/{} not found", parent.name),
        );
        return (Parent::NotOurs, Some(c));
    };
    let gw = &gateways[gi];
    let candidates: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| parent.section_name.as_ref().is_none_or(|s| s == &l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        let c = Condition::no(
            "Accepted",
            "NoMatchingParent",
            "no listener matches sectionName/port".to_string(),
        );
        return (Parent::NotOurs, Some(c));
    }
    let mut attached = Vec::new();
    let mut refusal: Option<(&'static str, String)> = None;
    for li in candidates {
        let l = &gw.listeners[li];
        if !l.programmed {
            refusal.get_or_insert((
                "NoMatchingParent",
                format!("listener {:?} is not served", l.name),
            ));
            continue;
        }
        if !l.kinds.contains(&route_kind) {
            refusal = Some((
                "NotAllowedByListeners",
                format!("listener {:?} does not allow {route_kind}", l.name),
            ));
            continue;
        }
        if !l.admits_namespace(&gw.key.namespace, namespace, objects) {
            refusal = Some((
                "NotAllowedByListeners",
                format!(
                    "listener {:?} does not allow routes from {namespace}",
                    l.name
                ),
            ));
            continue;
        }
        let hosts = if route_kind == "TCPRoute" {
            vec![l.hostname.clone().unwrap_or_else(|| "*".to_string())]
        } else {
            intersect(l.hostname.as_deref(), hostnames)
        };
        if hosts.is_empty() {
            refusal.get_or_insert((
                "NoMatchingListenerHostname",
                format!(
                    "no hostname of the route matches listener {:?} ({})",
                    l.name,
                    l.hostname.as_deref().unwrap_or("*")
                ),
            ));
            continue;
        }
        attached.push((li, hosts));
    }
    if attached.is_empty() {
        let (reason, message) = refusal.unwrap_or(("NoMatchingParent", String::new()));
        return (
            Parent::NotOurs,
            Some(Condition::no("Accepted", reason, message)),
        );
    }
    let p = Parent::Gateway {
        gateway: gi,
        listeners: attached,
    };
    (p, Some(Condition::yes("Accepted", "Accepted")))
}

/// The hostnames a route serves on a listener: the spec's intersection of the listener's
/// hostname (none: any) with the route's (none: the listener's).
pub(crate) fn intersect(listener: Option<&str>, route: &[String]) -> Vec<String> {
    let listener = listener.filter(|h| !h.is_empty());
    if route.is_empty() {
        return vec![listener.unwrap_or("*").to_string()];
    }
    let mut out: Vec<String> = Vec::new();
    for r in route {
        let r = r.to_ascii_lowercase();
        let host = match listener {
            None => Some(r),
            Some(l) if host_matches(l, &r) => Some(r),
            Some(l) if host_matches(&r, l) => Some(l.to_ascii_lowercase()),
            Some(_) => None,
        };
        if let Some(h) = host
            && !out.contains(&h)
        {
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        assert_eq!(intersect(None, &[]), hosts(&["*"]));
        assert_eq!(
            intersect(Some("a.example.com"), &[]),
            hosts(&["a.example.com"])
        );
        assert_eq!(
            intersect(
                Some("*.example.com"),
                &hosts(&["a.example.com", "b.other.com"])
            ),
            hosts(&["a.example.com"])
        );
        assert_eq!(
            intersect(Some("a.example.com"), &hosts(&["*.example.com"])),
            hosts(&["a.example.com"])
        );
        assert!(intersect(Some("a.example.com"), &hosts(&["b.example.com"])).is_empty());
        assert_eq!(
            intersect(Some("*.example.com"), &hosts(&["*.a.example.com"])),
            hosts(&["*.a.example.com"])
        );
    }
}
