//! VirtualServices, DestinationRules and Gateways, validated. An object with an error is reported and
//! left out whole (its hosts keep their default routing); warnings keep the object.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::input::networking::{HttpRoute, TcpRoute, TlsRoute};
use crate::object::{Kind, Object, ObjectKey};
use crate::registry::Registry;

mod destination_rule;
pub(crate) mod gateway;
// Where workloads are: a leaf module of its own, since the registry places pods too.
pub use crate::locality;
pub(crate) mod virtual_service;

pub use destination_rule::*;

use gateway::validate_gateway;
use virtual_service::validate_virtual_service;
pub use virtual_service::{grpc_status_code, is_authority_header, is_internal_header, parse_cidr};

/// The gateway name that means "the sidecars of the mesh".
pub const MESH_GATEWAY: &str = "mesh";

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VirtualServiceModel {
    pub key: ObjectKey,
    /// FQDNs (short names resolved in the VirtualService's namespace) or wildcards.
    pub hosts: Vec<String>,
    /// `mesh` or `namespace/name`.
    pub gateways: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub tcp: Vec<TcpRoute>,
    pub tls: Vec<TlsRoute>,
    /// Namespaces whose proxies see it (`.` resolved); `None`: every namespace.
    pub export_to: Option<std::collections::BTreeSet<String>>,
    /// Converted from Gateway API routes: prefixes match whole path segments, and a route
    /// match's `port` binds it to that listener port on gateways too.
    pub gateway_semantics: bool,
}

impl VirtualServiceModel {
    pub fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| g == gateway)
    }

    /// A route match's `gateways` (empty: the VirtualService's own) name `gateway` (`mesh` or
    /// `ns/name`); a short name means the Gateway in the VirtualService's namespace, as in
    /// `spec.gateways`.
    pub fn match_applies_to_gateway(&self, match_gateways: &[String], gateway: &str) -> bool {
        if match_gateways.is_empty() {
            return self.applies_to_gateway(gateway);
        }
        match_gateways.iter().any(|g| {
            if g == MESH_GATEWAY || g.contains('/') {
                g == gateway
            } else {
                gateway
                    .split_once('/')
                    .is_some_and(|(ns, name)| ns == self.key.namespace && name == g)
            }
        })
    }

    /// Proxies in `namespace` may use it (`exportTo`).
    pub fn visible_in(&self, namespace: &str) -> bool {
        self.export_to
            .as_ref()
            .is_none_or(|namespaces| namespaces.contains(namespace))
    }

    /// Every `sourceLabels` selector in its HTTP, TCP and TLS matches.
    pub fn source_label_selectors(&self) -> impl Iterator<Item = &BTreeMap<String, String>> {
        let http = self
            .http
            .iter()
            .flat_map(|r| &r.matches)
            .map(|m| &m.source_labels);
        let tcp = self
            .tcp
            .iter()
            .flat_map(|r| &r.matches)
            .map(|m| &m.source_labels);
        let tls = self
            .tls
            .iter()
            .flat_map(|r| &r.matches)
            .map(|m| &m.source_labels);
        http.chain(tcp).chain(tls).filter(|s| !s.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayModel {
    pub key: ObjectKey,
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<crate::input::networking::Server>,
}

impl GatewayModel {
    /// `namespace/name`, as VirtualServices refer to it; a Gateway API Gateway by the name
    /// istiod gives its generated Gateway, so the two kinds never share a reference.
    pub fn reference(&self) -> String {
        if self.key.kind == Kind::KubeGateway {
            format!(
                "{}/{}-{}",
                self.key.namespace,
                self.key.name,
                gateway::GENERATED_SUFFIX
            )
        } else {
            format!("{}/{}", self.key.namespace, self.key.name)
        }
    }

    /// Router proxies in `namespace` may serve it: any for Istio Gateways (selectors reach
    /// across namespaces), only its own namespace's for a Gateway API Gateway.
    pub fn serves_namespace(&self, namespace: &str) -> bool {
        self.key.kind != Kind::KubeGateway || self.key.namespace == namespace
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Traffic {
    pub virtual_services: Vec<Arc<VirtualServiceModel>>,
    pub destination_rules: DestinationRules,
    pub gateways: Vec<Arc<GatewayModel>>,
}

/// Istio's short-name rule: a host without dots is a Service in the rule's namespace.
pub fn resolve_host(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        crate::registry::cluster_domain_host(host, namespace)
    }
}

/// `host` matches `pattern`, where the pattern may be `*` or `*.suffix`.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

impl Traffic {
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        registry: &Registry,
        findings: &mut Vec<Finding>,
    ) -> Traffic {
        let mut traffic = Traffic::default();
        for obj in objects.values() {
            let Object::DestinationRule(dr) = obj else {
                continue;
            };
            if let Some(model) = validate_destination_rule(dr, findings) {
                traffic.destination_rules.insert(model, findings);
            }
        }
        destination_rule::check_against_registry(
            &mut traffic.destination_rules,
            registry,
            findings,
        );
        for obj in objects.values() {
            match obj {
                Object::Gateway(gw) => {
                    if let Some(model) = validate_gateway(gw, objects, findings) {
                        traffic.gateways.push(Arc::new(model));
                    }
                }
                Object::VirtualService(vs) => {
                    if let Some(model) =
                        validate_virtual_service(vs, registry, &traffic.destination_rules, findings)
                    {
                        traffic.virtual_services.push(Arc::new(model));
                    }
                }
                _ => {}
            }
        }
        check_gateways(&traffic, findings);
        traffic
    }

    /// The DestinationRule a proxy uses for `host` (see [`DestinationRules::lookup`]).
    pub fn destination_rule(
        &self,
        host: &str,
        view: &RuleView<'_>,
    ) -> Option<&Arc<DestinationRuleModel>> {
        self.destination_rules.lookup(host, view)
    }
}

/// Server hosts without their `namespace/` prefix.
fn bare_host(host: &str) -> &str {
    host.split_once('/').map_or(host, |(_, h)| h)
}

/// Cross-object checks istiod's analyzers make: two Gateways on the same workloads claiming the
/// same port and host (IST0145), a VirtualService bound to a Gateway that does not exist or does
/// not serve one of its hosts (IST0101, IST0132). Reported only: what is served stays valid for
/// Envoy, since repeated domains and SNI names are dropped when translating.
fn check_gateways(traffic: &Traffic, findings: &mut Vec<Finding>) {
    for (i, a) in traffic.gateways.iter().enumerate() {
        for b in traffic.gateways.iter().skip(i + 1) {
            if a.selector.is_empty() || a.selector != b.selector {
                continue;
            }
            let clash = a.servers.iter().find_map(|sa| {
                b.servers.iter().find_map(|sb| {
                    if sa.port.number != sb.port.number {
                        return None;
                    }
                    sa.hosts.iter().find_map(|ha| {
                        sb.hosts.iter().find_map(|hb| {
                            let (ha, hb) = (bare_host(ha), bare_host(hb));
                            (host_matches(ha, hb) || host_matches(hb, ha))
                                .then(|| (sa.port.number, hb.to_string()))
                        })
                    })
                })
            });
            if let Some((port, host)) = clash {
                findings.push(Finding::new(
                    Severity::Error,
                    "IST0145",
                    &b.key,
                    "spec.servers",
                    format!(
                        "conflicts with {} on the same workloads: port {port}, host {host}",
                        a.key
                    ),
                ));
            }
        }
    }
    for vs in &traffic.virtual_services {
        for (gi, reference) in vs.gateways.iter().enumerate() {
            if reference == MESH_GATEWAY {
                continue;
            }
            let Some(gw) = traffic
                .gateways
                .iter()
                .find(|g| &g.reference() == reference)
            else {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0101",
                    &vs.key,
                    &format!("spec.gateways[{gi}]"),
                    format!("referenced gateway not found: {reference:?}"),
                ));
                continue;
            };
            for (hi, host) in vs.hosts.iter().enumerate() {
                let served = gw.servers.iter().flat_map(|s| s.hosts.iter()).any(|sh| {
                    let (ns, pattern) = sh.split_once('/').unwrap_or(("*", sh));
                    (ns == "*" || ns == "." || ns == vs.key.namespace)
                        && (host_matches(pattern, host) || host_matches(host, pattern))
                });
                if !served {
                    findings.push(Finding::new(
                        Severity::Warning,
                        "IST0132",
                        &vs.key,
                        &format!("spec.hosts[{hi}]"),
                        format!("host {host:?} is not served by gateway {reference}"),
                    ));
                }
            }
        }
    }
}

pub(crate) fn key_of(kind: Kind, meta: &crate::input::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hosts_resolve_in_the_rule_namespace() {
        assert_eq!(
            resolve_host("reviews", "bookinfo"),
            "reviews.bookinfo.svc.cluster.local"
        );
        assert_eq!(
            resolve_host("reviews.other.svc.cluster.local", "bookinfo"),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(resolve_host("*.example.com", "bookinfo"), "*.example.com");
    }

    #[test]
    fn wildcard_hosts_match_suffixes() {
        assert!(host_matches("*", "a.b"));
        assert!(host_matches("*.example.com", "api.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("Bookinfo.com", "bookinfo.com"));
    }

    fn build(yaml: &str) -> Vec<Finding> {
        let (objects, errors) = crate::documents::parse(yaml, false);
        assert!(errors.is_empty(), "{errors:?}");
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let mut findings = Vec::new();
        let registry = Registry::default();
        Traffic::build(&objects, &registry, &mut findings);
        findings
    }

    #[test]
    fn match_level_gateway_short_names_mean_the_gateway_in_the_virtual_service_namespace() {
        let (objects, errors) = crate::documents::parse(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: default}\nspec:\n  hosts: [edition.cnn.com]\n  gateways: [istio-egressgateway, mesh]\n  http: [{match: [{gateways: [mesh]}], route: [{destination: {host: edition.cnn.com}}]}]\n",
            false,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let traffic = Traffic::build(&objects, &Registry::default(), &mut Vec::new());
        let vs = &traffic.virtual_services[0];
        let short = ["istio-egressgateway".to_string()];
        assert!(vs.match_applies_to_gateway(&short, "default/istio-egressgateway"));
        assert!(!vs.match_applies_to_gateway(&short, "istio-system/istio-egressgateway"));
        assert!(!vs.match_applies_to_gateway(&short, MESH_GATEWAY));
        let mesh = [MESH_GATEWAY.to_string()];
        assert!(vs.match_applies_to_gateway(&mesh, MESH_GATEWAY));
        assert!(!vs.match_applies_to_gateway(&mesh, "default/istio-egressgateway"));
        // No match-level gateways: the VirtualService's own.
        assert!(vs.match_applies_to_gateway(&[], "default/istio-egressgateway"));
        assert!(!vs.match_applies_to_gateway(&[], "default/other"));
    }

    #[test]
    fn gateways_claiming_the_same_port_and_host_conflict() {
        let findings = build(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: a, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*.example.com']}]\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: b, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]\n",
        );
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].code, "IST0145");
        assert_eq!(findings[0].object.name, "b");
    }

    #[test]
    fn a_virtual_service_host_outside_its_gateway_is_reported() {
        let findings = build(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: shop}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [shop.example.com]}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: shop}\nspec:\n  hosts: [shop.example.com, blog.example.com]\n  gateways: [gw, missing]\n  http: [{directResponse: {status: 200}}]\n",
        );
        let codes: Vec<(&str, &str)> = findings
            .iter()
            .map(|f| (f.code, f.field.as_str()))
            .collect();
        assert!(
            codes.contains(&("IST0132", "spec.hosts[1]")),
            "{findings:?}"
        );
        assert!(
            codes.contains(&("IST0101", "spec.gateways[1]")),
            "{findings:?}"
        );
    }
}
