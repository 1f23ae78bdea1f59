//! VirtualServices, DestinationRules and Gateways, validated. An object with an error is reported and
//! left out whole (its hosts keep their default routing); warnings keep the object.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::input::networking::{
    DestinationRule, Gateway, HttpRoute, StringMatch, Subset, VirtualService,
};
use crate::object::{Kind, Object, ObjectKey};
use crate::registry::{Registry, parse_duration};
use crate::snapshot::{Finding, Severity};

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
}

impl VirtualServiceModel {
    pub fn applies_to_gateway(&self, gateway: &str) -> bool {
        self.gateways.iter().any(|g| g == gateway)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationRuleModel {
    pub key: ObjectKey,
    pub host: String,
    pub subsets: Vec<Subset>,
    /// `ROUND_ROBIN`, `LEAST_REQUEST`, `RANDOM`, `PASSTHROUGH`.
    pub load_balancer: Option<String>,
}

impl DestinationRuleModel {
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.subsets.iter().find(|s| s.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayModel {
    pub key: ObjectKey,
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<crate::input::networking::Server>,
}

impl GatewayModel {
    /// `namespace/name`, as VirtualServices refer to it.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.key.namespace, self.key.name)
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Traffic {
    pub virtual_services: Vec<Arc<VirtualServiceModel>>,
    /// By host FQDN; the first by (namespace, name) wins.
    pub destination_rules: BTreeMap<String, Arc<DestinationRuleModel>>,
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
            let Some(model) = validate_destination_rule(dr, findings) else {
                continue;
            };
            if let Some(existing) = traffic.destination_rules.get(&model.host) {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0171",
                    &model.key,
                    "spec.host",
                    format!(
                        "host {} already has {}; this rule is ignored",
                        model.host, existing.key
                    ),
                ));
                continue;
            }
            traffic
                .destination_rules
                .insert(model.host.clone(), Arc::new(model));
        }
        for obj in objects.values() {
            match obj {
                Object::Gateway(gw) => {
                    if let Some(model) = validate_gateway(gw, findings) {
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
        traffic
    }

    pub fn destination_rule(&self, host: &str) -> Option<&Arc<DestinationRuleModel>> {
        self.destination_rules.get(host)
    }
}

fn key_of(kind: Kind, meta: &crate::input::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone(),
    )
}

fn validate_string_match(m: &StringMatch, key: &ObjectKey, field: &str, errors: &mut Vec<Finding>) {
    let set = [m.exact.is_some(), m.prefix.is_some(), m.regex.is_some()]
        .iter()
        .filter(|b| **b)
        .count();
    if set != 1 {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            key,
            field,
            "exactly one of exact, prefix or regex must be set".to_string(),
        ));
    }
    if let Some(re) = &m.regex {
        // Envoy compiles RE2; Rust's regex accepts the same syntax and rejects what RE2 rejects
        // (look-around, back-references).
        if let Err(e) = regex::Regex::new(re) {
            let first = e
                .to_string()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                key,
                &format!("{field}.regex"),
                format!("invalid regex {re:?}: {first}"),
            ));
        }
    }
}

fn validate_virtual_service(
    vs: &VirtualService,
    registry: &Registry,
    rules: &BTreeMap<String, Arc<DestinationRuleModel>>,
    findings: &mut Vec<Finding>,
) -> Option<VirtualServiceModel> {
    let key = key_of(Kind::VirtualService, &vs.metadata);
    let ns = key.namespace.clone();
    let mut errors = Vec::new();
    if vs.spec.hosts.is_empty() {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            &key,
            "spec.hosts",
            "at least one host is required".to_string(),
        ));
    }
    for (i, h) in vs.spec.hosts.iter().enumerate() {
        if h.is_empty() || h.contains('/') || h.contains(' ') {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("spec.hosts[{i}]"),
                format!("invalid host {h:?}"),
            ));
        }
    }
    for (i, route) in vs.spec.http.iter().enumerate() {
        let at = format!("spec.http[{i}]");
        for (j, m) in route.matches.iter().enumerate() {
            let mat = format!("{at}.match[{j}]");
            for (name, sm) in [
                ("uri", &m.uri),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                if let Some(sm) = sm {
                    validate_string_match(sm, &key, &format!("{mat}.{name}"), &mut errors);
                }
            }
            for (h, sm) in &m.headers {
                validate_string_match(sm, &key, &format!("{mat}.headers.{h}"), &mut errors);
            }
            for (q, sm) in &m.query_params {
                validate_string_match(sm, &key, &format!("{mat}.queryParams.{q}"), &mut errors);
            }
        }
        let actions = [
            !route.route.is_empty(),
            route.redirect.is_some(),
            route.direct_response.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if actions != 1 {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &at,
                "exactly one of route, redirect or directResponse must be set".to_string(),
            ));
        }
        if let Some(code) = route.redirect.as_ref().and_then(|r| r.redirect_code)
            && !matches!(code, 301 | 302 | 303 | 307 | 308)
        {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("{at}.redirect.redirectCode"),
                format!("{code} is not a redirect code (301, 302, 303, 307, 308)"),
            ));
        }
        if let Some(d) = &route.direct_response
            && !(200..=599).contains(&d.status)
        {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("{at}.directResponse.status"),
                format!("{} is not an HTTP status", d.status),
            ));
        }
        for (field, value) in [
            ("timeout", route.timeout.as_ref()),
            (
                "retries.perTryTimeout",
                route
                    .retries
                    .as_ref()
                    .and_then(|r| r.per_try_timeout.as_ref()),
            ),
        ] {
            if let Some(v) = value
                && let Err(e) = parse_duration(v)
            {
                errors.push(Finding::new(
                    Severity::Error,
                    "IST0106",
                    &key,
                    &format!("{at}.{field}"),
                    e,
                ));
            }
        }
        if route.route.len() > 1 || route.route.iter().any(|d| d.weight.is_some()) {
            let total: u32 = route.route.iter().map(|d| d.weight.unwrap_or(0)).sum();
            if total != 100 {
                errors.push(Finding::new(
                    Severity::Error,
                    "IST0106",
                    &key,
                    &format!("{at}.route"),
                    format!("destination weights add up to {total}, not 100"),
                ));
            }
        }
        for (j, d) in route.route.iter().enumerate() {
            let field = format!("{at}.route[{j}].destination");
            if d.destination.host.is_empty() {
                errors.push(Finding::new(
                    Severity::Error,
                    "IST0106",
                    &key,
                    &format!("{field}.host"),
                    "host is required".to_string(),
                ));
                continue;
            }
            let host = resolve_host(&d.destination.host, &ns);
            if !registry.services.contains_key(&host) {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0101",
                    &key,
                    &format!("{field}.host"),
                    format!("referenced host not found: {host:?}"),
                ));
            }
            if let Some(subset) = &d.destination.subset
                && rules.get(&host).and_then(|r| r.subset(subset)).is_none()
            {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0101",
                    &key,
                    &format!("{field}.subset"),
                    format!(
                        "referenced host+subset in destinationrule not found: {host:?}+{subset:?}"
                    ),
                ));
            }
        }
    }
    if !errors.is_empty() {
        findings.extend(errors);
        return None;
    }
    let gateways = if vs.spec.gateways.is_empty() {
        vec![MESH_GATEWAY.to_string()]
    } else {
        vs.spec
            .gateways
            .iter()
            .map(|g| {
                if g == MESH_GATEWAY || g.contains('/') {
                    g.clone()
                } else {
                    format!("{ns}/{g}")
                }
            })
            .collect()
    };
    Some(VirtualServiceModel {
        hosts: vs.spec.hosts.iter().map(|h| resolve_host(h, &ns)).collect(),
        gateways,
        http: vs.spec.http.clone(),
        key,
    })
}

fn validate_destination_rule(
    dr: &DestinationRule,
    findings: &mut Vec<Finding>,
) -> Option<DestinationRuleModel> {
    let key = key_of(Kind::DestinationRule, &dr.metadata);
    let mut errors = Vec::new();
    if dr.spec.host.is_empty() {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            &key,
            "spec.host",
            "host is required".to_string(),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if s.name.is_empty() || !seen.insert(s.name.clone()) {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("spec.subsets[{i}].name"),
                format!("subset name {:?} is empty or repeated", s.name),
            ));
        }
    }
    let lb = dr
        .spec
        .traffic_policy
        .as_ref()
        .and_then(|t| t.load_balancer.as_ref())
        .and_then(|l| l.simple.clone());
    if let Some(simple) = &lb
        && !matches!(
            simple.as_str(),
            "ROUND_ROBIN"
                | "LEAST_REQUEST"
                | "LEAST_CONN"
                | "RANDOM"
                | "PASSTHROUGH"
                | "UNSPECIFIED"
        )
    {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            &key,
            "spec.trafficPolicy.loadBalancer.simple",
            format!("unknown load balancer {simple:?}"),
        ));
    }
    if !errors.is_empty() {
        findings.extend(errors);
        return None;
    }
    Some(DestinationRuleModel {
        host: resolve_host(&dr.spec.host, &key.namespace),
        subsets: dr.spec.subsets.clone(),
        load_balancer: lb,
        key,
    })
}

fn validate_gateway(gw: &Gateway, findings: &mut Vec<Finding>) -> Option<GatewayModel> {
    let key = key_of(Kind::Gateway, &gw.metadata);
    let mut errors = Vec::new();
    for (i, s) in gw.spec.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        if s.port.number == 0 || s.port.number > 65535 {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("{at}.port.number"),
                format!("port {} is out of range", s.port.number),
            ));
        }
        if !matches!(
            s.port.protocol.to_ascii_uppercase().as_str(),
            "HTTP" | "HTTP2" | "GRPC" | "HTTPS" | "TLS" | "TCP" | "MONGO"
        ) {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("{at}.port.protocol"),
                format!("unknown protocol {:?}", s.port.protocol),
            ));
        }
        if s.hosts.is_empty() {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &format!("{at}.hosts"),
                "at least one host is required".to_string(),
            ));
        }
    }
    if !errors.is_empty() {
        findings.extend(errors);
        return None;
    }
    Some(GatewayModel {
        key,
        selector: gw.spec.selector.clone(),
        servers: gw.spec.servers.clone(),
    })
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
}
