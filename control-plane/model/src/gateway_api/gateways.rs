//! A Gateway of a class meshd controls, as the Istio Gateway its router proxies serve (one
//! server per listener) and the state of each listener: which routes it admits, for which
//! hostname, and what its status says.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::finding::{Finding, GATEWAY_API_CONDITION, Severity};
use crate::input::gateway_api::{KubeGateway, Listener};
use crate::input::networking::{Server, ServerPort, ServerTls};
use crate::object::{GATEWAY_API_GROUP, Kind, Object, ObjectKey};
use crate::registry::{Registry, cluster_domain_host};
use crate::traffic::GatewayModel;

use super::status::{Condition, conditions, first_problem};
use super::{GATEWAY_NAME_LABEL, granted};

/// The route kinds a listener of `protocol` (and TLS mode) can carry.
fn supported_kinds(protocol: &str, passthrough: bool) -> &'static [&'static str] {
    match protocol {
        "HTTP" | "HTTPS" => &["HTTPRoute", "GRPCRoute"],
        "TLS" if passthrough => &["TLSRoute"],
        "TLS" => &["TCPRoute"],
        "TCP" => &["TCPRoute"],
        _ => &[],
    }
}

/// Which namespaces' routes a listener admits.
#[derive(Clone, Debug)]
pub(crate) enum AllowedFrom {
    Same,
    All,
    Selector(crate::input::gateway_api::LabelSelector),
}

#[derive(Clone, Debug)]
pub(crate) struct ListenerState {
    pub name: String,
    pub port: u32,
    pub hostname: Option<String>,
    /// Route kinds it admits (after `allowedRoutes.kinds`).
    pub kinds: Vec<&'static str>,
    pub from: AllowedFrom,
    /// Served (has a server in the Istio Gateway).
    pub programmed: bool,
    accepted: Vec<(&'static str, String)>,
    resolved: Vec<(&'static str, String)>,
    conflict: Option<(&'static str, String)>,
    /// Routes attached to it (counted as routes are converted).
    pub attached: usize,
}

impl ListenerState {
    /// Routes of `namespace` may attach (`allowedRoutes.namespaces`).
    pub(crate) fn admits_namespace(
        &self,
        gateway_namespace: &str,
        namespace: &str,
        objects: &BTreeMap<ObjectKey, Object>,
    ) -> bool {
        match &self.from {
            AllowedFrom::All => true,
            AllowedFrom::Same => namespace == gateway_namespace,
            AllowedFrom::Selector(selector) => {
                let key = ObjectKey::new(Kind::Namespace, "", namespace);
                let labels = match objects.get(&key) {
                    Some(Object::Namespace(ns)) => ns.metadata.labels.clone(),
                    _ => BTreeMap::new(),
                };
                selector.matches(&labels)
            }
        }
    }

    fn status(&self, generation: Option<i64>) -> Value {
        let kinds: Vec<Value> = self
            .kinds
            .iter()
            .map(|k| json!({"group": GATEWAY_API_GROUP, "kind": k}))
            .collect();
        let accepted = first_problem("Accepted", "Accepted", &self.accepted);
        let resolved = first_problem("ResolvedRefs", "ResolvedRefs", &self.resolved);
        let conflicted = match &self.conflict {
            Some((reason, message)) => Condition {
                kind: "Conflicted",
                ok: true,
                reason,
                message: message.clone(),
            },
            None => Condition::no("Conflicted", "NoConflicts", String::new()),
        };
        let programmed = if self.programmed {
            Condition::yes("Programmed", "Programmed")
        } else {
            Condition::no(
                "Programmed",
                "Invalid",
                "the listener is not served".to_string(),
            )
        };
        json!({
            "name": self.name,
            "attachedRoutes": self.attached,
            "supportedKinds": kinds,
            "conditions": conditions(&[accepted, programmed, resolved, conflicted], generation),
        })
    }
}

/// One Gateway of a class meshd controls, converted.
#[derive(Clone, Debug)]
pub(crate) struct GatewayState {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    pub model: GatewayModel,
    pub listeners: Vec<ListenerState>,
    /// The generated Service's addresses (`<gateway>-<class>`), when it exists.
    addresses: Vec<String>,
}

impl GatewayState {
    pub(crate) fn convert(
        gw: &KubeGateway,
        deployment_name: &str,
        objects: &BTreeMap<ObjectKey, Object>,
        registry: &Registry,
    ) -> GatewayState {
        let meta = &gw.metadata.meta;
        let namespace = meta.namespace.clone().unwrap_or_default();
        let key = ObjectKey::new(Kind::KubeGateway, namespace.clone(), meta.name.clone());
        let mut listeners = Vec::new();
        let mut servers = Vec::new();
        for l in &gw.spec.listeners {
            let (state, server) = listener(&key, l, objects);
            listeners.push(state);
            servers.extend(server);
        }
        mark_conflicts(&mut listeners, &gw.spec.listeners);
        // A conflicted listener is not served: two servers claiming one port and host would
        // make the route tables ambiguous.
        servers.retain(|s: &Server| {
            listeners
                .iter()
                .any(|l| l.programmed && s.port.name == l.name)
        });
        let addresses = registry
            .services
            .get(&cluster_domain_host(deployment_name, &namespace))
            .map(|s| s.addresses.clone())
            .unwrap_or_default();
        GatewayState {
            model: GatewayModel {
                key: key.clone(),
                selector: BTreeMap::from([(GATEWAY_NAME_LABEL.to_string(), meta.name.clone())]),
                servers,
            },
            key,
            generation: gw.metadata.generation,
            listeners,
            addresses,
        }
    }

    /// A finding per listener that is not served as written (for `meshd analyze`).
    pub(crate) fn findings(&self) -> Vec<Finding> {
        self.listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let (reason, message) = l
                    .accepted
                    .iter()
                    .chain(&l.resolved)
                    .chain(&l.conflict)
                    .next()?;
                Some(Finding::new(
                    Severity::Warning,
                    GATEWAY_API_CONDITION,
                    &self.key,
                    &format!("spec.listeners[{i}]"),
                    format!("listener {:?} ({reason}): {message}", l.name),
                ))
            })
            .collect()
    }

    pub(crate) fn status(&self) -> Value {
        let accepted = if self.listeners.is_empty() {
            Condition::no(
                "Accepted",
                "Invalid",
                "a Gateway needs at least one listener".to_string(),
            )
        } else {
            Condition::yes("Accepted", "Accepted")
        };
        let programmed = if self.addresses.is_empty() {
            Condition::no(
                "Programmed",
                "AddressNotAssigned",
                "its Service has no address yet".to_string(),
            )
        } else {
            Condition::yes("Programmed", "Programmed")
        };
        let addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|a| json!({"type": "IPAddress", "value": a}))
            .collect();
        json!({
            "addresses": addresses,
            "conditions": conditions(&[accepted, programmed], self.generation),
            "listeners": self.listeners.iter().map(|l| l.status(self.generation)).collect::<Vec<_>>(),
        })
    }
}

/// A listener's state and, when it can be served, its server.
fn listener(
    gateway: &ObjectKey,
    l: &Listener,
    objects: &BTreeMap<ObjectKey, Object>,
) -> (ListenerState, Option<Server>) {
    let protocol = l.protocol.to_ascii_uppercase();
    let tls_mode = l
        .tls
        .as_ref()
        .and_then(|t| t.mode.clone())
        .unwrap_or_else(|| "Terminate".to_string());
    let passthrough = tls_mode == "Passthrough";
    let supported = supported_kinds(&protocol, passthrough);
    let mut accepted = Vec::new();
    let mut resolved = Vec::new();
    if supported.is_empty() {
        accepted.push((
            "UnsupportedProtocol",
            format!("protocol {:?} is not supported", l.protocol),
        ));
    }
    let allowed = l.allowed_routes.as_ref();
    let mut kinds: Vec<&'static str> = supported.to_vec();
    if let Some(wanted) = allowed.map(|a| &a.kinds).filter(|k| !k.is_empty()) {
        kinds.retain(|k| wanted.iter().any(|w| w.kind == *k));
        for w in wanted {
            let group_ok = w
                .group
                .as_deref()
                .is_none_or(|g| g.is_empty() || g == GATEWAY_API_GROUP);
            if !group_ok || !supported.contains(&w.kind.as_str()) {
                resolved.push((
                    "InvalidRouteKinds",
                    format!("route kind {:?} is not supported on this listener", w.kind),
                ));
            }
        }
    }
    let from = match allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
    {
        Some("All") => AllowedFrom::All,
        Some("Selector") => AllowedFrom::Selector(
            allowed
                .and_then(|a| a.namespaces.as_ref())
                .and_then(|n| n.selector.clone())
                .unwrap_or_default(),
        ),
        _ => AllowedFrom::Same,
    };
    let hostname = l.hostname.clone().filter(|h| !h.is_empty());
    let host = format!("*/{}", hostname.as_deref().unwrap_or("*"));
    let mut tls = None;
    if protocol == "HTTPS" || protocol == "TLS" {
        if passthrough {
            if protocol == "HTTPS" {
                accepted.push((
                    "UnsupportedValue",
                    "HTTPS listeners terminate TLS; use protocol TLS to pass it through"
                        .to_string(),
                ));
            }
            tls = Some(ServerTls {
                mode: Some("PASSTHROUGH".to_string()),
                ..Default::default()
            });
        } else {
            match certificate(gateway, l, objects) {
                Ok(secret) => {
                    tls = Some(ServerTls {
                        mode: Some("SIMPLE".to_string()),
                        credential_name: Some(secret),
                        ..Default::default()
                    })
                }
                Err(problem) => resolved.push(problem),
            }
        }
    }
    let servable = accepted.is_empty() && resolved.iter().all(|(r, _)| *r == "InvalidRouteKinds");
    let servable = servable && (tls.is_some() || !(protocol == "HTTPS" || protocol == "TLS"));
    let server = servable.then(|| Server {
        port: ServerPort {
            number: l.port,
            protocol: protocol.clone(),
            name: l.name.clone(),
        },
        hosts: vec![host],
        name: Some(l.name.clone()),
        tls,
    });
    let state = ListenerState {
        name: l.name.clone(),
        port: l.port,
        hostname,
        kinds,
        from,
        programmed: server.is_some(),
        accepted,
        resolved,
        conflict: None,
        attached: 0,
    };
    (state, server)
}

/// The Secret a terminating listener serves: one `certificateRefs` entry, a Secret in the
/// Gateway's namespace (another namespace only where a ReferenceGrant allows it — and then
/// refused, since router proxies are sent only their own namespace's Secrets).
fn certificate(
    gateway: &ObjectKey,
    l: &Listener,
    objects: &BTreeMap<ObjectKey, Object>,
) -> Result<String, (&'static str, String)> {
    let refs = l
        .tls
        .as_ref()
        .map(|t| t.certificate_refs.as_slice())
        .unwrap_or_default();
    let Some(r) = refs.first() else {
        return Err((
            "InvalidCertificateRef",
            "a terminating listener needs tls.certificateRefs".to_string(),
        ));
    };
    if !r.is_secret() {
        return Err((
            "InvalidCertificateRef",
            format!("certificate reference {:?} is not a Secret", r.name),
        ));
    }
    let namespace = r.namespace.as_deref().unwrap_or(&gateway.namespace);
    if namespace != gateway.namespace {
        let allowed = granted(
            objects,
            ("Gateway", &gateway.namespace),
            ("", "Secret", namespace, &r.name),
        );
        let message = if allowed {
            format!(
                "Secret {namespace}/{} is in another namespace; meshd serves a gateway only \
                 Secrets of its own namespace",
                r.name
            )
        } else {
            format!(
                "no ReferenceGrant in {namespace} allows Gateways of {} to use Secret {}",
                gateway.namespace, r.name
            )
        };
        return Err(("RefNotPermitted", message));
    }
    let key = ObjectKey::new(Kind::Secret, namespace, r.name.clone());
    if !objects.contains_key(&key) {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {namespace}/{} not found", r.name),
        ));
    }
    Ok(r.name.clone())
}

/// Listeners on one port must agree on the protocol and differ in hostname.
fn mark_conflicts(states: &mut [ListenerState], listeners: &[Listener]) {
    for i in 0..listeners.len() {
        for j in 0..listeners.len() {
            if i == j || listeners[i].port != listeners[j].port {
                continue;
            }
            let (a, b) = (&listeners[i], &listeners[j]);
            let conflict = if !a.protocol.eq_ignore_ascii_case(&b.protocol) {
                Some((
                    "ProtocolConflict",
                    format!("listener {:?} uses port {} too", b.name, b.port),
                ))
            } else if a.hostname.as_deref().unwrap_or("") == b.hostname.as_deref().unwrap_or("") {
                Some((
                    "HostnameConflict",
                    format!("listener {:?} serves the same hostname and port", b.name),
                ))
            } else {
                None
            };
            if let Some(c) = conflict
                && states[i].conflict.is_none()
            {
                states[i].conflict = Some(c);
                states[i].programmed = false;
            }
        }
    }
}
