//! The Kubernetes Gateway API, as istiod serves it: Gateways of a class meshd controls become
//! Istio Gateways served by router proxies labelled `gateway.networking.k8s.io/gateway-name`,
//! routes become VirtualServices (HTTPRoute, GRPCRoute, TCPRoute, TLSRoute) bound to them — or,
//! for a route whose parent is a Service (GAMMA), to the mesh's sidecars — so both APIs go
//! through one translation and behave alike where they overlap. What each object's `status`
//! should say (conditions, route parents, addresses) and which Gateways need a Deployment are
//! computed here, from the same objects; the leader writes them (`meshd-kube`).

use std::collections::BTreeMap;

use serde::Serialize;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use crate::finding::{Finding, GATEWAY_API_CONDITION, REFERENCED_NOT_FOUND, Severity};
use crate::input::networking::{
    Gateway, GatewaySpec, HttpRoute, L4MatchAttributes, RouteDestination, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualService,
};
use crate::object::{GATEWAY_API_GROUP, Kind, Object, ObjectKey};
use crate::registry::Registry;
use crate::traffic::gateway::validate_as as validate_gateway_as;
use crate::traffic::virtual_service::validate_as as validate_vs_as;
use crate::traffic::{MESH_GATEWAY, Traffic, VirtualServiceModel};

use attach::Parent;
use gateways::GatewayState;
use routes::{Converted, Precedence, RouteInfo};
use status::Condition;

mod attach;
mod deployment;
mod gateways;
mod routes;
mod status;

pub use crate::traffic::gateway::GENERATED_SUFFIX;

/// istiod's controller name for the classes it serves (`istio`); meshd serves the same.
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";
/// The class istiod creates and serves by default.
pub const DEFAULT_CLASS: &str = "istio";
/// The label that ties router proxies (and the Deployment meshd creates) to their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The annotation choosing the generated Service's type (`LoadBalancer` by default).
pub const SERVICE_TYPE_ANNOTATION: &str = "networking.istio.io/service-type";

/// What the Gateway API objects of a snapshot mean beyond traffic: status and deployments.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GatewayApi {
    /// The `status` each Gateway API object should carry (GatewayClass, Gateway and routes),
    /// without `lastTransitionTime`s: the writer keeps a condition's time while its status,
    /// reason and message stay, and writes nothing when nothing else differs.
    pub statuses: BTreeMap<ObjectKey, serde_json::Value>,
    /// Gateways of a class meshd controls: what their Deployment, Service and ServiceAccount are.
    pub deployments: Vec<GatewayDeployment>,
}

/// The workload meshd runs for one Gateway (istiod's automated deployment): Deployment, Service
/// and ServiceAccount named `<gateway>-<class>` in the Gateway's namespace, owned by the Gateway.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayDeployment {
    pub gateway: ObjectKey,
    /// The Gateway's uid, for the owner reference (absent in files).
    pub uid: Option<String>,
    /// `<gateway>-<class>`: the Deployment's, Service's and ServiceAccount's name.
    pub name: String,
    /// Labels for the pods and the Service selector: `gateway.networking.k8s.io/gateway-name`
    /// and `istio.io/gateway-name` (istiod's), plus `spec.infrastructure.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.infrastructure.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `ClusterIP`, `NodePort` or `LoadBalancer` (the annotation, else `LoadBalancer`).
    pub service_type: String,
    /// The listeners' distinct ports, with a name each (`<protocol>-<port>`, lower case).
    pub ports: Vec<DeploymentPort>,
    /// `spec.addresses` of type `IPAddress`: the Service's `loadBalancerIP`.
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeploymentPort {
    pub name: String,
    pub port: u32,
}

impl GatewayApi {
    /// Converts the Gateway API objects among `objects` and adds what they route to `traffic`.
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        registry: &Registry,
        traffic: &mut Traffic,
        findings: &mut Vec<Finding>,
    ) -> GatewayApi {
        let mut api = GatewayApi::default();
        for object in routes::of_kind(objects, Kind::GatewayClass) {
            if let Object::GatewayClass(c) = object
                && c.spec.controller_name == CONTROLLER_NAME
            {
                let accepted = Condition::yes("Accepted", "Accepted");
                api.statuses.insert(
                    object.key(),
                    json!({"conditions": status::conditions(&[accepted], c.metadata.generation)}),
                );
            }
        }
        let mut gateways = Vec::new();
        for object in routes::of_kind(objects, Kind::KubeGateway) {
            let Object::KubeGateway(gw) = object else {
                continue;
            };
            let Some(d) = deployment::of(gw, objects) else {
                continue;
            };
            gateways.push(GatewayState::convert(gw, &d.name, objects, registry));
            api.deployments.push(d);
        }
        let mut merged = Merged::default();
        for object in objects.values() {
            convert_route(
                object,
                &mut gateways,
                objects,
                registry,
                traffic,
                &mut merged,
                &mut api,
                findings,
            );
        }
        for g in &gateways {
            let istio = Gateway {
                metadata: Default::default(),
                spec: GatewaySpec {
                    selector: g.model.selector.clone(),
                    servers: g.model.servers.clone(),
                },
            };
            // Servers were built from listeners already judged; what Istio's rules still
            // refuse is reported on the Gateway.
            if !g.model.servers.is_empty()
                && let Some(model) = validate_gateway_as(g.key.clone(), &istio, objects, findings)
            {
                traffic.gateways.push(Arc::new(model));
            }
            findings.extend(g.findings());
            api.statuses.insert(g.key.clone(), g.status());
        }
        merged.finish(traffic);
        api
    }
}

/// Merged HTTP routes per (gateway reference, host, who sees them): one VirtualService each,
/// its routes in the spec's precedence order across every route that attached.
#[derive(Default)]
struct Merged {
    http: BTreeMap<Place, Vec<(Precedence, HttpRoute)>>,
    keys: BTreeMap<Place, ObjectKey>,
}

/// (gateway reference or `mesh`, host, the one namespace that sees it or every one).
type Place = (String, String, Option<String>);

impl Merged {
    fn add(
        &mut self,
        group: (String, String, Option<String>),
        key: &ObjectKey,
        routes: Vec<(Precedence, HttpRoute)>,
    ) {
        self.keys
            .entry(group.clone())
            .or_insert_with(|| key.clone());
        self.http.entry(group).or_default().extend(routes);
    }

    fn finish(self, traffic: &mut Traffic) {
        for (group, mut routes) in self.http {
            routes.sort_by(|a, b| a.0.cmp(&b.0));
            let (gateway, host, export) = group.clone();
            let Some(key) = self.keys.get(&group) else {
                continue;
            };
            traffic.virtual_services.push(Arc::new(VirtualServiceModel {
                key: key.clone(),
                hosts: vec![host],
                gateways: vec![gateway],
                http: routes.into_iter().map(|(_, r)| r).collect(),
                tcp: Vec::new(),
                tls: Vec::new(),
                export_to: export.map(|ns| BTreeSet::from([ns])),
                gateway_semantics: true,
            }));
        }
    }
}

/// One route: its parents resolved, its rules converted, validated as a VirtualService would
/// be, attached, and its status.
#[allow(clippy::too_many_arguments)]
fn convert_route(
    object: &Object,
    gateways: &mut [GatewayState],
    objects: &BTreeMap<ObjectKey, Object>,
    registry: &Registry,
    traffic: &mut Traffic,
    merged: &mut Merged,
    api: &mut GatewayApi,
    findings: &mut Vec<Finding>,
) {
    let key = object.key();
    let (meta, parents, hostnames) = match object {
        Object::HttpRoute(r) => (&r.metadata, &r.spec.parent_refs, &r.spec.hostnames),
        Object::GrpcRoute(r) => (&r.metadata, &r.spec.parent_refs, &r.spec.hostnames),
        Object::TcpRoute(r) | Object::TlsRoute(r) => {
            (&r.metadata, &r.spec.parent_refs, &r.spec.hostnames)
        }
        _ => return,
    };
    let info = RouteInfo {
        key: &key,
        created: meta.creation_timestamp.as_deref().unwrap_or(""),
        objects,
        registry,
    };
    let mut converted = Converted {
        http: Vec::new(),
        unresolved: Vec::new(),
        unsupported: Vec::new(),
    };
    let mut l4: Vec<(Vec<RouteDestination>, usize)> = Vec::new();
    match object {
        Object::HttpRoute(r) => {
            for (i, rule) in r.spec.rules.iter().enumerate() {
                routes::http_rule(
                    &info,
                    i,
                    &rule.matches,
                    &rule.filters,
                    &rule.backend_refs,
                    rule.timeouts.as_ref(),
                    rule.retry.as_ref(),
                    &mut converted,
                );
            }
        }
        Object::GrpcRoute(r) => {
            for (i, rule) in r.spec.rules.iter().enumerate() {
                routes::grpc_rule(
                    &info,
                    i,
                    &rule.matches,
                    &rule.filters,
                    &rule.backend_refs,
                    &mut converted,
                );
            }
        }
        Object::TcpRoute(r) | Object::TlsRoute(r) => {
            for (i, rule) in r.spec.rules.iter().enumerate() {
                let destinations =
                    info.l4_destinations(&rule.backend_refs, &mut converted.unresolved);
                // A rule with no backend left routes nothing.
                if !destinations.is_empty() {
                    l4.push((destinations, i));
                }
            }
        }
        _ => {}
    }
    let invalid = probe(&key, &converted, &l4, registry, traffic, findings);
    let kind = key.kind.name();
    let mut parent_status = Vec::new();
    for message in &converted.unsupported {
        findings.push(Finding::new(
            Severity::Warning,
            GATEWAY_API_CONDITION,
            &key,
            "spec.rules",
            format!("not accepted (UnsupportedValue): {message}"),
        ));
    }
    for (i, (reason, message)) in converted.unresolved.iter().enumerate() {
        if converted.unresolved[..i].iter().any(|(_, m)| m == message) {
            continue;
        }
        let code = if *reason == "BackendNotFound" {
            REFERENCED_NOT_FOUND
        } else {
            GATEWAY_API_CONDITION
        };
        findings.push(Finding::new(
            Severity::Warning,
            code,
            &key,
            "spec.rules",
            format!("ResolvedRefs {reason}: {message}"),
        ));
    }
    for (pi, parent) in parents.iter().enumerate() {
        let (resolved, accepted) = attach::resolve(
            parent,
            kind,
            &key.namespace,
            hostnames,
            gateways,
            objects,
            registry,
        );
        let Some(mut accepted) = accepted else {
            continue;
        };
        if let Some(errors) = invalid.as_ref().filter(|_| accepted.ok) {
            accepted = Condition::no("Accepted", "UnsupportedValue", errors.clone());
        } else if !converted.unsupported.is_empty() && accepted.ok {
            accepted = Condition::no(
                "Accepted",
                "UnsupportedValue",
                converted.unsupported.join("; "),
            );
        } else if accepted.ok {
            let problem = attach_parent(
                &key, &resolved, &converted, &l4, gateways, objects, registry, traffic, merged,
                findings,
            );
            if let Some(message) = problem {
                accepted = Condition::no("Accepted", "UnsupportedValue", message);
            }
        }
        if !accepted.ok {
            findings.push(Finding::new(
                Severity::Warning,
                GATEWAY_API_CONDITION,
                &key,
                &format!("spec.parentRefs[{pi}]"),
                format!("not accepted ({}): {}", accepted.reason, accepted.message),
            ));
        }
        let resolved_refs =
            status::first_problem("ResolvedRefs", "ResolvedRefs", &converted.unresolved);
        parent_status.push(json!({
            "parentRef": parent,
            "controllerName": CONTROLLER_NAME,
            "conditions": status::conditions(&[accepted, resolved_refs], meta.generation),
        }));
    }
    if !parent_status.is_empty() {
        api.statuses.insert(key, json!({"parents": parent_status}));
    }
}

/// Adds a route's converted rules for one accepted parent; `Some(message)` when the
/// VirtualService they make is refused (the message is also a finding on the route).
#[allow(clippy::too_many_arguments)]
fn attach_parent(
    key: &ObjectKey,
    parent: &Parent,
    converted: &Converted,
    l4: &[(Vec<RouteDestination>, usize)],
    gateways: &mut [GatewayState],
    objects: &BTreeMap<ObjectKey, Object>,
    registry: &Registry,
    traffic: &mut Traffic,
    merged: &mut Merged,
    findings: &mut Vec<Finding>,
) -> Option<String> {
    let _ = objects;
    // (gateway reference, host, listener port, export) for each place the rules go.
    let mut places: Vec<(String, String, Option<u32>, Option<String>)> = Vec::new();
    match parent {
        Parent::NotOurs => return None,
        Parent::Service { service, port } => {
            let export = (service.namespace != key.namespace).then(|| key.namespace.clone());
            places.push((
                MESH_GATEWAY.to_string(),
                service.hostname.clone(),
                *port,
                export,
            ));
        }
        Parent::Gateway { gateway, listeners } => {
            let g = &mut gateways[*gateway];
            let reference = g.model.reference();
            for (li, hosts) in listeners {
                g.listeners[*li].attached += 1;
                for h in hosts {
                    places.push((
                        reference.clone(),
                        h.clone(),
                        Some(g.listeners[*li].port),
                        None,
                    ));
                }
            }
        }
    }
    for (gateway, host, port, export) in places {
        let vs = route_virtual_service(key, converted, l4, &gateway, &host, port);
        if vs.spec.http.is_empty() && vs.spec.tcp.is_empty() && vs.spec.tls.is_empty() {
            continue;
        }
        // The rules were judged once (`probe`); what this binding adds is only its host.
        let mut scratch = Vec::new();
        let Some(mut model) = validate_vs_as(
            key.clone(),
            &vs,
            registry,
            &traffic.destination_rules,
            &mut scratch,
        ) else {
            let message = scratch
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| f.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            findings.extend(scratch);
            return Some(message);
        };
        if let Some(ns) = &export {
            model.export_to = Some(BTreeSet::from([ns.clone()]));
        }
        if model.http.is_empty() {
            traffic.virtual_services.push(Arc::new(model));
            continue;
        }
        let routes = converted
            .http
            .iter()
            .map(|(p, _)| p.clone())
            .zip(model.http)
            .collect();
        merged.add((gateway, host, export), key, routes);
    }
    None
}

/// The VirtualService a route's converted rules make for one place: a gateway (or `mesh`), a
/// host, the listener port they are bound to.
fn route_virtual_service(
    key: &ObjectKey,
    converted: &Converted,
    l4: &[(Vec<RouteDestination>, usize)],
    gateway: &str,
    host: &str,
    port: Option<u32>,
) -> VirtualService {
    let mut vs = VirtualService::default();
    vs.metadata.namespace = Some(key.namespace.clone());
    vs.metadata.name = key.name.clone();
    vs.spec.hosts = vec![host.to_string()];
    vs.spec.gateways = vec![gateway.to_string()];
    match key.kind {
        Kind::HttpRoute | Kind::GrpcRoute => {
            vs.spec.http = converted
                .http
                .iter()
                .map(|(_, r)| {
                    let mut r = r.clone();
                    for m in &mut r.matches {
                        m.port = port;
                    }
                    r
                })
                .collect();
        }
        Kind::TcpRoute => {
            vs.spec.tcp = l4
                .iter()
                .map(|(d, _)| TcpRoute {
                    matches: vec![L4MatchAttributes {
                        port,
                        ..Default::default()
                    }],
                    route: d.clone(),
                })
                .collect();
        }
        Kind::TlsRoute => {
            vs.spec.tls = l4
                .iter()
                .map(|(d, _)| TlsRoute {
                    matches: vec![TlsMatchAttributes {
                        sni_hosts: vec![host.to_string()],
                        port,
                        ..Default::default()
                    }],
                    route: d.clone(),
                })
                .collect();
        }
        _ => {}
    }
    vs
}

/// Judges a route's rules once, whatever it attaches to (so `meshd analyze` and the webhook
/// see the errors of a route on its own, and a route with many parents reports them once):
/// `Some(errors)` when the VirtualService they make is invalid.
fn probe(
    key: &ObjectKey,
    converted: &Converted,
    l4: &[(Vec<RouteDestination>, usize)],
    registry: &Registry,
    traffic: &Traffic,
    findings: &mut Vec<Finding>,
) -> Option<String> {
    let gateway = format!("{}/{}", key.namespace, GENERATED_SUFFIX);
    let vs = route_virtual_service(key, converted, l4, &gateway, "*", None);
    if vs.spec.http.is_empty() && vs.spec.tcp.is_empty() && vs.spec.tls.is_empty() {
        return None;
    }
    let before = findings.len();
    let valid = validate_vs_as(
        key.clone(),
        &vs,
        registry,
        &traffic.destination_rules,
        findings,
    );
    // The findings name the route's own fields, not the VirtualService's it was judged as.
    let http: Vec<(usize, usize)> = converted.http.iter().map(|(p, _)| p.place()).collect();
    let l4_rules: Vec<usize> = l4.iter().map(|(_, rule)| *rule).collect();
    for f in &mut findings[before..] {
        f.field = route_field(&f.field, key.kind, &http, &l4_rules);
    }
    if valid.is_some() {
        return None;
    }
    Some(
        findings[before..]
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Where in a route a field of the VirtualService it was judged as comes from: `spec.http[N]`
/// is a match (`http[N]`: rule and match) of a rule, `spec.tcp[N]`/`spec.tls[N]` the N-th rule
/// with backends (`l4_rules`: their indices among the route's rules); below them the nearest field of the route (`timeout` is
/// `timeouts.request`, a `route` is in `backendRefs`, `redirect`/`rewrite`/`headers`/`mirrors`
/// are `filters`). Anything else stays as it is.
fn route_field(field: &str, kind: Kind, http: &[(usize, usize)], l4_rules: &[usize]) -> String {
    let indexed = |prefix: &str| -> Option<(usize, &str)> {
        let rest = field.strip_prefix(prefix)?;
        let (n, rest) = rest.split_once(']')?;
        Some((n.parse().ok()?, rest))
    };
    if let Some((n, rest)) = indexed("spec.http[") {
        let Some(&(rule, m)) = http.get(n) else {
            return field.to_string();
        };
        let path = if kind == Kind::GrpcRoute {
            "method"
        } else {
            "path"
        };
        let below = if let Some(in_match) = rest.strip_prefix(".match[0]") {
            let part = [
                (".uri", path),
                (".headers", "headers"),
                (".queryParams", "queryParams"),
                (".method", "method"),
            ]
            .into_iter()
            .find(|(vs, _)| in_match.starts_with(vs))
            .map(|(_, route)| format!(".{route}"))
            .unwrap_or_default();
            format!(".matches[{m}]{part}")
        } else if rest.starts_with(".timeout") {
            ".timeouts.request".to_string()
        } else if rest.starts_with(".retries.perTryTimeout") {
            ".timeouts.backendRequest".to_string()
        } else if rest.starts_with(".retries") {
            ".retry".to_string()
        } else if rest.starts_with(".route") {
            ".backendRefs".to_string()
        } else if [".redirect", ".rewrite", ".headers", ".mirror"]
            .iter()
            .any(|p| rest.starts_with(p))
        {
            ".filters".to_string()
        } else {
            String::new()
        };
        return format!("spec.rules[{rule}]{below}");
    }
    for prefix in ["spec.tcp[", "spec.tls["] {
        if let Some((n, rest)) = indexed(prefix) {
            let Some(rule) = l4_rules.get(n) else {
                return field.to_string();
            };
            let below = if rest.starts_with(".route") {
                ".backendRefs"
            } else {
                ""
            };
            return format!("spec.rules[{rule}]{below}");
        }
    }
    if field.starts_with("spec.hosts") {
        return "spec.hostnames".to_string();
    }
    field.to_string()
}

/// A ReferenceGrant in the target's namespace lets objects of `from` (kind, namespace) refer
/// to `to` (group, kind, namespace, name).
pub(crate) fn granted(
    objects: &BTreeMap<ObjectKey, Object>,
    from: (&str, &str),
    to: (&str, &str, &str, &str),
) -> bool {
    let (from_kind, from_ns) = from;
    let (to_group, to_kind, to_ns, to_name) = to;
    let to_group = if to_group == "core" { "" } else { to_group };
    routes::of_kind(objects, Kind::ReferenceGrant).any(|o| {
        let Object::ReferenceGrant(g) = o else {
            return false;
        };
        g.metadata.meta.namespace.as_deref() == Some(to_ns)
            && g.spec.from.iter().any(|f| {
                f.group == GATEWAY_API_GROUP && f.kind == from_kind && f.namespace == from_ns
            })
            && g.spec.to.iter().any(|t| {
                let group = if t.group == "core" {
                    ""
                } else {
                    t.group.as_str()
                };
                group == to_group
                    && t.kind == to_kind
                    && t.name.as_deref().is_none_or(|n| n == to_name)
            })
    })
}

/// meshd serves class `istio` (istiod's default, whether or not its GatewayClass object exists)
/// and every GatewayClass whose `controllerName` is istiod's.
pub fn controls_class(class: &str, objects: &BTreeMap<ObjectKey, Object>) -> bool {
    if class == DEFAULT_CLASS {
        return true;
    }
    let key = ObjectKey::new(crate::Kind::GatewayClass, "", class);
    matches!(objects.get(&key), Some(Object::GatewayClass(c)) if c.spec.controller_name == CONTROLLER_NAME)
}

#[cfg(test)]
mod tests;
