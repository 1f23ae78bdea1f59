//! DestinationRules, validated into typed traffic policies, and the index that answers "which rule
//! does this proxy use for this host" the way istiod does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::input::labels_match;
use crate::input::networking::DestinationRule;
use crate::object::{Kind, ObjectKey};
use crate::registry::Registry;
use crate::syntax;

use super::{host_matches, key_of, resolve_host};

mod policy;

use policy::{Check, traffic_policy};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DestinationRuleModel {
    pub key: ObjectKey,
    /// FQDN (short names resolved in the rule's namespace) or wildcard.
    pub host: String,
    pub subsets: Vec<SubsetModel>,
    pub traffic_policy: Option<TrafficPolicyModel>,
    /// As written; empty means every namespace.
    pub export_to: Vec<String>,
    /// Only the sidecars of these workloads (in the rule's namespace) use the rule.
    pub workload_selector: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SubsetModel {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub traffic_policy: Option<TrafficPolicyModel>,
}

/// A traffic policy: settings for every port, and whole replacements for some ports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficPolicyModel {
    pub settings: PolicySettings,
    pub port_level: Vec<PortPolicy>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PortPolicy {
    pub port: u32,
    pub settings: PolicySettings,
}

/// The four parts of a policy that Istio merges (each one whole) between rule, subset and port.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PolicySettings {
    pub load_balancer: Option<LoadBalancerModel>,
    pub connection_pool: Option<ConnectionPoolModel>,
    pub outlier_detection: Option<OutlierDetectionModel>,
    pub tls: Option<ClientTlsModel>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LoadBalancerModel {
    pub policy: LbPolicy,
    pub locality: Option<LocalityLbModel>,
    pub warmup: Option<Duration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub enum LbPolicy {
    /// Istio's default, LEAST_REQUEST.
    #[default]
    Unspecified,
    RoundRobin,
    LeastRequest,
    Random,
    /// Connect to the address the caller asked for (Envoy ORIGINAL_DST).
    Passthrough,
    ConsistentHash(ConsistentHashModel),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConsistentHashModel {
    /// None: nothing to hash on, so every request hashes differently.
    pub key: Option<HashKey>,
    pub table: HashTable,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HashKey {
    Header(String),
    Cookie {
        name: String,
        path: Option<String>,
        ttl: Option<Duration>,
    },
    SourceIp,
    QueryParameter(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum HashTable {
    RingHash { minimum_ring_size: Option<u64> },
    Maglev { table_size: Option<u64> },
}

/// Istio's ring size when neither `ringHash` nor `maglev` is given (Envoy's default too).
pub const DEFAULT_MINIMUM_RING_SIZE: u64 = 1024;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LocalityLbModel {
    pub enabled: bool,
    pub distribute: Vec<(String, BTreeMap<String, u32>)>,
    /// Region `from` fails over to region `to`.
    pub failover: Vec<(String, String)>,
    pub failover_priority: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectionPoolModel {
    pub max_connections: Option<u32>,
    pub connect_timeout: Option<Duration>,
    pub tcp_keepalive: Option<TcpKeepaliveModel>,
    pub max_connection_duration: Option<Duration>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    pub idle_timeout: Option<Duration>,
    pub h2_upgrade: H2Upgrade,
    pub use_client_protocol: bool,
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TcpKeepaliveModel {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum H2Upgrade {
    #[default]
    Default,
    DoNotUpgrade,
    Upgrade,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutlierDetectionModel {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway: Option<u32>,
    pub split_external_local_origin_errors: bool,
    pub consecutive_local_origin_failures: Option<u32>,
    pub interval: Option<Duration>,
    pub base_ejection_time: Option<Duration>,
    pub max_ejection_percent: Option<u32>,
    /// Istio always sets Envoy's panic threshold from this, 0 when unset.
    pub min_health_percent: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum TlsMode {
    Disable,
    Simple,
    Mutual,
    IstioMutual,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClientTlsModel {
    pub mode: TlsMode,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub credential_name: Option<String>,
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: bool,
}

impl DestinationRuleModel {
    pub fn subset(&self, name: &str) -> Option<&SubsetModel> {
        self.subsets.iter().find(|s| s.name == name)
    }

    /// The settings for `port` of `subset` (`""`: the service's own cluster), merged as istiod
    /// merges them: the rule's port-level entry replaces the rule's settings for that port; a
    /// subset's settings then replace those parts it sets; a subset's port-level entry replaces all.
    pub fn settings(&self, subset: &str, port: u32) -> PolicySettings {
        let mut merged = self
            .traffic_policy
            .as_ref()
            .map(|p| p.for_port(port))
            .unwrap_or_default();
        let Some(own) = self.subset(subset).and_then(|s| s.traffic_policy.as_ref()) else {
            return merged;
        };
        if let Some(p) = own.port_level.iter().find(|p| p.port == port) {
            return p.settings.clone();
        }
        let s = &own.settings;
        if s.load_balancer.is_some() {
            merged.load_balancer = s.load_balancer.clone();
        }
        if s.connection_pool.is_some() {
            merged.connection_pool = s.connection_pool.clone();
        }
        if s.outlier_detection.is_some() {
            merged.outlier_detection = s.outlier_detection.clone();
        }
        if s.tls.is_some() {
            merged.tls = s.tls.clone();
        }
        merged
    }

    /// Whether a proxy in `namespace` may see this rule (`exportTo`; unset means everywhere).
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self.export_to.iter().any(|e| match e.as_str() {
                "*" => true,
                "." => namespace == self.key.namespace,
                other => other == namespace,
            })
    }
}

impl TrafficPolicyModel {
    /// Port-level settings replace the others whole, unset parts falling back to defaults.
    pub fn for_port(&self, port: u32) -> PolicySettings {
        self.port_level
            .iter()
            .find(|p| p.port == port)
            .map(|p| p.settings.clone())
            .unwrap_or_else(|| self.settings.clone())
    }
}

/// Who is asking for a rule: the proxy's namespace and labels, and the destination's namespace.
#[derive(Clone, Copy, Debug)]
pub struct RuleView<'a> {
    pub proxy_namespace: &'a str,
    /// Empty when the proxy's scope does not carry its labels (no selector can match then).
    pub proxy_labels: &'a BTreeMap<String, String>,
    pub service_namespace: &'a str,
    pub root_namespace: &'a str,
}

/// Every valid DestinationRule, by host.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DestinationRules {
    /// Rules per host as written (FQDN or wildcard), in (namespace, name) order; rules of one
    /// namespace for the same host and selector are merged into the first.
    by_host: BTreeMap<String, Vec<Arc<DestinationRuleModel>>>,
    /// Some rule balances by locality and some endpoint has one: then endpoints depend on the
    /// calling proxy's locality.
    pub locality_aware: bool,
}

/// The locality-aware load balancing a policy asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LocalityLbUse<'a> {
    /// Traffic from a matching locality (`from`) shared over localities (`to`) by weight.
    Distribute(&'a [(String, BTreeMap<String, u32>)]),
    /// Nearest healthy locality first; region `from` continues in region `to`.
    Failover(&'a [(String, String)]),
}

impl PolicySettings {
    /// As Istio decides it: `distribute` when given; otherwise failover, on by default once outlier
    /// detection can notice failing endpoints; nothing when `enabled: false`.
    pub fn locality_lb(&self) -> Option<LocalityLbUse<'_>> {
        let setting = self
            .load_balancer
            .as_ref()
            .and_then(|lb| lb.locality.as_ref());
        if setting.is_some_and(|l| !l.enabled) {
            return None;
        }
        if let Some(l) = setting
            && !l.distribute.is_empty()
        {
            return Some(LocalityLbUse::Distribute(&l.distribute));
        }
        self.outlier_detection.as_ref()?;
        Some(LocalityLbUse::Failover(
            setting.map(|l| l.failover.as_slice()).unwrap_or_default(),
        ))
    }
}

impl TrafficPolicyModel {
    fn all_settings(&self) -> impl Iterator<Item = &PolicySettings> {
        std::iter::once(&self.settings).chain(self.port_level.iter().map(|p| &p.settings))
    }
}

impl DestinationRuleModel {
    /// Some part of the rule balances by locality.
    pub fn uses_locality(&self) -> bool {
        let top = self.traffic_policy.iter();
        let subsets = self
            .subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref());
        top.chain(subsets)
            .flat_map(|p| p.all_settings())
            .any(|s| s.locality_lb().is_some())
    }
}

/// The rules for one host, as VirtualService validation asks about them.
#[derive(Clone, Copy, Debug)]
pub struct HostRules<'a>(&'a [Arc<DestinationRuleModel>]);

impl<'a> HostRules<'a> {
    /// The subset of that name in any of the host's rules.
    pub fn subset(&self, name: &str) -> Option<&'a SubsetModel> {
        self.0.iter().find_map(|r| r.subset(name))
    }
}

impl DestinationRules {
    /// Adds a validated rule. Another rule of the same namespace, host and selector absorbs it as
    /// istiod merges them: new subsets are appended; the first traffic policy wins.
    pub fn insert(&mut self, model: DestinationRuleModel, findings: &mut Vec<Finding>) {
        let rules = self.by_host.entry(model.host.clone()).or_default();
        let same = rules.iter_mut().find(|r| {
            r.key.namespace == model.key.namespace && r.workload_selector == model.workload_selector
        });
        let Some(existing) = same else {
            rules.push(Arc::new(model));
            return;
        };
        let merged = Arc::make_mut(existing);
        if model.traffic_policy.is_some() && merged.traffic_policy.is_some() {
            findings.push(Finding::new(
                Severity::Warning,
                "IST0171",
                &model.key,
                "spec.trafficPolicy",
                format!(
                    "host {} already has a traffic policy from {}; this one is ignored",
                    model.host, merged.key
                ),
            ));
        } else if merged.traffic_policy.is_none() {
            merged.traffic_policy = model.traffic_policy;
        }
        for (i, s) in model.subsets.into_iter().enumerate() {
            if merged.subset(&s.name).is_some() {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0171",
                    &model.key,
                    &format!("spec.subsets[{i}].name"),
                    format!(
                        "subset {:?} of host {} is already defined by {}; this one is ignored",
                        s.name, model.host, merged.key
                    ),
                ));
            } else {
                merged.subsets.push(s);
            }
        }
    }

    /// Rules whose host covers `host`, in (host, namespace, name) order.
    pub fn for_host<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Arc<DestinationRuleModel>> + 'a {
        self.by_host
            .iter()
            .filter(move |(pattern, _)| host_matches(pattern, host))
            .flat_map(|(_, rules)| rules.iter())
    }

    /// The rules written for exactly `host` (VirtualService validation looks up subsets here).
    pub fn get(&self, host: &str) -> Option<HostRules<'_>> {
        match self.by_host.get(host) {
            Some(rules) => Some(HostRules(rules)),
            None => self
                .by_host
                .iter()
                .filter(|(pattern, _)| host_matches(pattern, host))
                .max_by_key(|(pattern, _)| pattern.len())
                .map(|(_, rules)| HostRules(rules)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// Every rule, in (host, namespace, name) order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<DestinationRuleModel>> {
        self.by_host.values().flatten()
    }

    /// The label keys that workload selectors of rules in `namespace` read: the part of a proxy's
    /// labels its outbound config depends on.
    pub fn selector_keys_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = &'a String> {
        self.iter()
            .filter(move |r| r.key.namespace == namespace)
            .filter_map(|r| r.workload_selector.as_ref())
            .flat_map(|s| s.keys())
    }

    /// The rule a proxy uses for `host`, as istiod picks it: a rule in the proxy's own namespace
    /// (one whose selector matches the proxy first, else one without a selector); else one
    /// exported by the destination's namespace; else one exported by the root namespace. Within a
    /// namespace the exact host beats the most specific wildcard.
    pub fn lookup(&self, host: &str, view: &RuleView<'_>) -> Option<&Arc<DestinationRuleModel>> {
        let in_namespace = |ns: &str, local: bool| -> Option<&Arc<DestinationRuleModel>> {
            let mut best: Option<(&str, &Arc<DestinationRuleModel>)> = None;
            for (pattern, rules) in &self.by_host {
                if !host_matches(pattern, host) {
                    continue;
                }
                let candidates = rules.iter().filter(|r| {
                    r.key.namespace == ns && (local || r.visible_to(view.proxy_namespace))
                });
                let mut chosen = None;
                for r in candidates {
                    match &r.workload_selector {
                        Some(sel) if local && labels_match(sel, view.proxy_labels) => {
                            chosen = Some(r);
                            break;
                        }
                        Some(_) => {}
                        None => {
                            chosen.get_or_insert(r);
                        }
                    }
                }
                let Some(r) = chosen else { continue };
                let better = match best {
                    None => true,
                    Some((p, _)) => specificity(pattern, host) > specificity(p, host),
                };
                if better {
                    best = Some((pattern, r));
                }
            }
            best.map(|(_, r)| r)
        };
        in_namespace(view.proxy_namespace, true)
            .or_else(|| in_namespace(view.service_namespace, false))
            .or_else(|| in_namespace(view.root_namespace, false))
    }
}

/// Exact hosts beat wildcards; longer wildcards beat shorter ones.
fn specificity(pattern: &str, host: &str) -> usize {
    if pattern.eq_ignore_ascii_case(host) {
        usize::MAX
    } else {
        pattern.len()
    }
}

/// What needs the registry: IST0173 for a subset whose labels select none of the host's endpoints
/// (its traffic goes nowhere), and whether endpoints depend on the proxy's locality.
pub(crate) fn check_against_registry(
    rules: &mut DestinationRules,
    registry: &Registry,
    findings: &mut Vec<Finding>,
) {
    rules.locality_aware = rules.iter().any(|r| r.uses_locality())
        && registry
            .endpoints
            .values()
            .flat_map(|eps| eps.iter())
            .any(|e| e.locality().is_some());
    for rule in rules.iter() {
        let Some(svc) = registry.services.get(&rule.host) else {
            continue;
        };
        if svc.resolution != crate::registry::Resolution::ClientSideLb {
            continue;
        }
        for (i, subset) in rule.subsets.iter().enumerate() {
            let selects = svc.ports.iter().any(|p| {
                registry
                    .endpoints(&svc.hostname, p.port)
                    .iter()
                    .any(|e| labels_match(&subset.labels, &e.labels))
            });
            if !selects {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0173",
                    &rule.key,
                    &format!("spec.subsets[{i}]"),
                    format!("subset {:?} selects no pods of {}", subset.name, rule.host),
                ));
            }
        }
    }
}

pub(crate) fn validate_destination_rule(
    dr: &DestinationRule,
    findings: &mut Vec<Finding>,
) -> Option<DestinationRuleModel> {
    let key = key_of(Kind::DestinationRule, &dr.metadata);
    let mut check = Check::new(&key);
    if let Err(e) = syntax::wildcard_domain(&dr.spec.host) {
        check.error("spec.host", e);
    }
    let mut seen = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            check.error(
                &format!("{at}.name"),
                "subset name cannot be empty".to_string(),
            );
        } else if !syntax::is_dns1123_label(&s.name) {
            check.error(
                &format!("{at}.name"),
                format!("subset name is invalid: {:?}", s.name),
            );
        }
        if !seen.insert(s.name.clone()) {
            check.error(
                &format!("{at}.name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        if let Err(e) = syntax::labels(&s.labels) {
            check.error(&format!("{at}.labels"), e);
        }
        let traffic_policy = s
            .traffic_policy
            .as_ref()
            .map(|p| traffic_policy(&mut check, &format!("{at}.trafficPolicy"), p));
        subsets.push(SubsetModel {
            name: s.name.clone(),
            labels: s.labels.clone(),
            traffic_policy,
        });
    }
    let traffic_policy = dr
        .spec
        .traffic_policy
        .as_ref()
        .map(|p| traffic_policy(&mut check, "spec.trafficPolicy", p));
    let selector = dr.spec.workload_selector.as_ref();
    if let Some(Err(e)) = selector.map(|s| syntax::selector(&s.labels)) {
        check.error("spec.workloadSelector.matchLabels", e);
    }
    let export = if selector.is_some() {
        syntax::ExportKind::SelectorRule
    } else {
        syntax::ExportKind::Plain
    };
    for (i, message) in syntax::export_to(&key.namespace, &dr.spec.export_to, export) {
        let field = i.map_or("spec.exportTo".to_string(), |i| {
            format!("spec.exportTo[{i}]")
        });
        check.error(&field, message);
    }
    if !check.finish(findings) {
        return None;
    }
    Some(DestinationRuleModel {
        host: resolve_host(&dr.spec.host, &key.namespace),
        subsets,
        traffic_policy,
        export_to: dr.spec.export_to.clone(),
        workload_selector: dr.spec.workload_selector.as_ref().map(|s| s.labels.clone()),
        key,
    })
}

#[cfg(test)]
mod tests;
