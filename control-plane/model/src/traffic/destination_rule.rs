//! DestinationRules, validated into typed traffic policies, and the index that answers "which rule
//! does this proxy use for this host" the way istiod does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::input::labels_match;
use crate::input::networking::{
    ClientTls, ConnectionPool, ConsistentHash, DestinationRule, LoadBalancer, LocalityLbSetting,
    OutlierDetection, PortTrafficPolicy, TrafficPolicy,
};
use crate::object::{Kind, ObjectKey};
use crate::registry::{Registry, parse_duration};
use crate::snapshot::{Finding, Severity};

use super::{host_matches, key_of, resolve_host};

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
#[derive(Clone, Debug, Default, Serialize)]
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
            .any(|e| super::locality::endpoint_locality(e).is_some());
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

/// Collects a rule's findings while its parts are converted.
struct Check<'a> {
    key: &'a ObjectKey,
    errors: Vec<Finding>,
    warnings: Vec<Finding>,
}

impl Check<'_> {
    fn error(&mut self, field: &str, message: String) {
        self.errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            self.key,
            field,
            message,
        ));
    }

    /// A count where 0 means "unset" (as in Istio) and negatives are wrong.
    fn count(&mut self, field: &str, value: Option<i64>) -> Option<u32> {
        let v = value?;
        match u32::try_from(v) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) if v < 0 => {
                self.error(field, format!("{v} is negative"));
                None
            }
            Err(_) => {
                self.error(field, format!("{v} is too large"));
                None
            }
        }
    }

    fn percent(&mut self, field: &str, value: Option<i64>) -> Option<u32> {
        let v = value?;
        if !(0..=100).contains(&v) {
            self.error(field, format!("{v} is not a percentage (0 to 100)"));
            return None;
        }
        u32::try_from(v).ok()
    }

    /// A duration Envoy takes as a timeout or interval: at least 1ms, whole milliseconds.
    fn duration(&mut self, field: &str, value: Option<&String>) -> Option<Duration> {
        let d = self.any_duration(field, value)?;
        if d < Duration::from_millis(1) {
            self.error(field, format!("{:?} must be at least 1ms", value?));
            return None;
        }
        if d.subsec_nanos() % 1_000_000 != 0 {
            self.error(
                field,
                format!("{:?}: only millisecond precision is supported", value?),
            );
            return None;
        }
        Some(d)
    }

    /// Any non-negative duration (0 allowed).
    fn any_duration(&mut self, field: &str, value: Option<&String>) -> Option<Duration> {
        let text = value?;
        match parse_duration(text) {
            Ok((s, n)) => Some(Duration::new(
                u64::try_from(s).unwrap_or_default(),
                u32::try_from(n).unwrap_or_default(),
            )),
            Err(e) => {
                self.error(field, e);
                None
            }
        }
    }
}

pub(crate) fn validate_destination_rule(
    dr: &DestinationRule,
    findings: &mut Vec<Finding>,
) -> Option<DestinationRuleModel> {
    let key = key_of(Kind::DestinationRule, &dr.metadata);
    let mut check = Check {
        key: &key,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    if dr.spec.host.is_empty() {
        check.error("spec.host", "host is required".to_string());
    }
    let mut seen = BTreeSet::new();
    let mut subsets = Vec::new();
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if s.name.is_empty() || !seen.insert(s.name.clone()) {
            check.error(
                &format!("spec.subsets[{i}].name"),
                format!("subset name {:?} is empty or repeated", s.name),
            );
        }
        let traffic_policy = s
            .traffic_policy
            .as_ref()
            .map(|p| traffic_policy(&mut check, &format!("spec.subsets[{i}].trafficPolicy"), p));
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
    for (i, e) in dr.spec.export_to.iter().enumerate() {
        let valid = matches!(e.as_str(), "." | "*" | "~") || is_dns_label(e);
        if !valid {
            check.error(
                &format!("spec.exportTo[{i}]"),
                format!("{e:?} is not `.`, `*`, `~` or a namespace name"),
            );
        }
    }
    if dr.spec.export_to.iter().any(|e| e == "~") && dr.spec.export_to.len() > 1 {
        check.error(
            "spec.exportTo",
            "`~` (export nowhere) cannot be combined with other entries".to_string(),
        );
    }
    let Check {
        errors, warnings, ..
    } = check;
    findings.extend(warnings);
    if !errors.is_empty() {
        findings.extend(errors);
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

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn traffic_policy(check: &mut Check<'_>, at: &str, p: &TrafficPolicy) -> TrafficPolicyModel {
    let settings = policy_settings(
        check,
        at,
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
    );
    let mut port_level = Vec::new();
    let mut ports = BTreeSet::new();
    for (i, pls) in p.port_level_settings.iter().enumerate() {
        let field = format!("{at}.portLevelSettings[{i}]");
        let PortTrafficPolicy {
            port,
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
        } = pls;
        let number = match port {
            None => {
                check.error(&format!("{field}.port"), "port is required".to_string());
                None
            }
            Some(p) if p.number == 0 || p.number > 65535 => {
                check.error(
                    &format!("{field}.port.number"),
                    format!("port {} is out of range", p.number),
                );
                None
            }
            Some(p) if !ports.insert(p.number) => {
                check.error(
                    &format!("{field}.port.number"),
                    format!("port {} has settings already", p.number),
                );
                None
            }
            Some(p) => Some(p.number),
        };
        if load_balancer.is_none()
            && connection_pool.is_none()
            && outlier_detection.is_none()
            && tls.is_none()
        {
            check.error(
                &field,
                "port settings must set loadBalancer, connectionPool, outlierDetection or tls"
                    .to_string(),
            );
        }
        let settings = policy_settings(
            check,
            &field,
            load_balancer.as_ref(),
            connection_pool.as_ref(),
            outlier_detection.as_ref(),
            tls.as_ref(),
        );
        if let Some(port) = number {
            port_level.push(PortPolicy { port, settings });
        }
    }
    TrafficPolicyModel {
        settings,
        port_level,
    }
}

fn policy_settings(
    check: &mut Check<'_>,
    at: &str,
    lb: Option<&LoadBalancer>,
    pool: Option<&ConnectionPool>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTls>,
) -> PolicySettings {
    let load_balancer = lb.map(|lb| load_balancer(check, &format!("{at}.loadBalancer"), lb));
    let outlier_detection =
        outlier.map(|o| outlier_detection(check, &format!("{at}.outlierDetection"), o));
    if let Some(locality) = load_balancer.as_ref().and_then(|l| l.locality.as_ref())
        && (!locality.failover.is_empty() || !locality.failover_priority.is_empty())
        && outlier_detection.is_none()
    {
        check.warnings.push(Finding::new(
            Severity::Warning,
            "IST0106",
            check.key,
            &format!("{at}.loadBalancer.localityLbSetting"),
            "locality failover needs outlierDetection to notice unhealthy endpoints; it is off"
                .to_string(),
        ));
    }
    PolicySettings {
        load_balancer,
        connection_pool: pool.map(|p| connection_pool(check, &format!("{at}.connectionPool"), p)),
        outlier_detection,
        tls: tls.and_then(|t| client_tls(check, &format!("{at}.tls"), t)),
    }
}

fn load_balancer(check: &mut Check<'_>, at: &str, lb: &LoadBalancer) -> LoadBalancerModel {
    let mut policy = match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") => LbPolicy::Unspecified,
        Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("LEAST_REQUEST" | "LEAST_CONN") => LbPolicy::LeastRequest,
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => LbPolicy::Passthrough,
        Some(other) => {
            check.error(
                &format!("{at}.simple"),
                format!("unknown load balancer {other:?}"),
            );
            LbPolicy::Unspecified
        }
    };
    if let Some(ch) = &lb.consistent_hash {
        if lb.simple.is_some() {
            check.error(
                at,
                "only one of simple and consistentHash may be set".to_string(),
            );
        }
        policy =
            LbPolicy::ConsistentHash(consistent_hash(check, &format!("{at}.consistentHash"), ch));
    }
    LoadBalancerModel {
        policy,
        locality: lb
            .locality_lb_setting
            .as_ref()
            .map(|l| locality(check, &format!("{at}.localityLbSetting"), l)),
        warmup: check.duration(
            &format!("{at}.warmupDurationSecs"),
            lb.warmup_duration_secs.as_ref(),
        ),
    }
}

/// Envoy's largest Maglev table.
const MAX_MAGLEV_TABLE: i64 = 5_000_011;
/// Envoy's largest hash ring (its default `maximum_ring_size`).
const MAX_RING_SIZE: i64 = 8 * 1024 * 1024;

fn is_prime(n: i64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn consistent_hash(check: &mut Check<'_>, at: &str, ch: &ConsistentHash) -> ConsistentHashModel {
    let mut keys = Vec::new();
    if let Some(h) = &ch.http_header_name {
        if h.is_empty() {
            check.error(
                &format!("{at}.httpHeaderName"),
                "empty header name".to_string(),
            );
        }
        keys.push(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        if c.name.is_empty() {
            check.error(
                &format!("{at}.httpCookie.name"),
                "cookie name is required".to_string(),
            );
        }
        keys.push(HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone().filter(|p| !p.is_empty()),
            ttl: check.any_duration(&format!("{at}.httpCookie.ttl"), c.ttl.as_ref()),
        });
    }
    if ch.use_source_ip == Some(true) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        if q.is_empty() {
            check.error(
                &format!("{at}.httpQueryParameterName"),
                "empty query parameter name".to_string(),
            );
        }
        keys.push(HashKey::QueryParameter(q.clone()));
    }
    if keys.len() > 1 {
        check.error(
            at,
            "only one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName may be set"
                .to_string(),
        );
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        check.error(at, "only one of ringHash and maglev may be set".to_string());
    }
    if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
        check.error(
            &format!("{at}.minimumRingSize"),
            "cannot be combined with ringHash or maglev".to_string(),
        );
    }
    let ring_size = |check: &mut Check<'_>, field: &str, v: Option<i64>| -> Option<u64> {
        let v = v?;
        if !(0..=MAX_RING_SIZE).contains(&v) {
            check.error(
                field,
                format!("{v} is not a ring size (0 to {MAX_RING_SIZE})"),
            );
            return None;
        }
        u64::try_from(v).ok().filter(|n| *n > 0)
    };
    let ring = ch.ring_hash.as_ref().map(|r| {
        ring_size(
            check,
            &format!("{at}.ringHash.minimumRingSize"),
            r.minimum_ring_size,
        )
    });
    let table = if let Some(m) = &ch.maglev {
        let field = format!("{at}.maglev.tableSize");
        let table_size = match m.table_size {
            Some(n) if !(1..=MAX_MAGLEV_TABLE).contains(&n) || !is_prime(n) => {
                check.error(
                    &field,
                    format!("{n} is not a prime number between 2 and {MAX_MAGLEV_TABLE}"),
                );
                None
            }
            other => other.and_then(|n| u64::try_from(n).ok()),
        };
        HashTable::Maglev { table_size }
    } else if let Some(minimum_ring_size) = ring {
        HashTable::RingHash { minimum_ring_size }
    } else {
        HashTable::RingHash {
            minimum_ring_size: Some(
                ring_size(
                    check,
                    &format!("{at}.minimumRingSize"),
                    ch.minimum_ring_size,
                )
                .unwrap_or(DEFAULT_MINIMUM_RING_SIZE),
            ),
        }
    };
    ConsistentHashModel {
        key: keys.into_iter().next(),
        table,
    }
}

fn locality(check: &mut Check<'_>, at: &str, l: &LocalityLbSetting) -> LocalityLbModel {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        check.error(
            at,
            "only one of distribute and failover may be set".to_string(),
        );
    }
    let mut distribute = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let field = format!("{at}.distribute[{i}]");
        if d.from.is_empty() {
            check.error(
                &format!("{field}.from"),
                "source locality is required".to_string(),
            );
        }
        let mut to = BTreeMap::new();
        let mut total: i64 = 0;
        for (locality, weight) in &d.to {
            if *weight <= 0 {
                check.error(
                    &format!("{field}.to.{locality}"),
                    format!("weight {weight} must be greater than 0"),
                );
            }
            total = total.saturating_add(*weight);
            to.insert(locality.clone(), u32::try_from(*weight).unwrap_or_default());
        }
        if total != 100 {
            check.error(
                &format!("{field}.to"),
                format!("weights add up to {total}, not 100"),
            );
        }
        distribute.push((d.from.clone(), to));
    }
    if !l.failover_priority.is_empty() {
        check.warnings.push(Finding::new(
            Severity::Warning,
            "IST0106",
            check.key,
            &format!("{at}.failoverPriority"),
            "failoverPriority is not supported by meshd yet; it is ignored".to_string(),
        ));
    }
    let mut failover = Vec::new();
    for (i, f) in l.failover.iter().enumerate() {
        let field = format!("{at}.failover[{i}]");
        if f.from.is_empty() || f.to.is_empty() {
            check.error(&field, "from and to regions are required".to_string());
        } else if f.from == f.to {
            check.error(&field, "from and to must be different regions".to_string());
        } else if [&f.from, &f.to]
            .iter()
            .any(|r| r.contains('/') || r.contains('*'))
        {
            check.error(
                &field,
                "failover names regions only (no `/` zones, no `*`)".to_string(),
            );
        }
        failover.push((f.from.clone(), f.to.clone()));
    }
    LocalityLbModel {
        enabled: l.enabled.unwrap_or(true),
        distribute,
        failover,
        failover_priority: l.failover_priority.clone(),
    }
}

fn connection_pool(check: &mut Check<'_>, at: &str, p: &ConnectionPool) -> ConnectionPoolModel {
    let mut out = ConnectionPoolModel::default();
    if p.tcp.is_none() && p.http.is_none() {
        check.error(at, "at least one of tcp and http must be set".to_string());
    }
    if let Some(tcp) = &p.tcp {
        let at = format!("{at}.tcp");
        out.max_connections = check.count(&format!("{at}.maxConnections"), tcp.max_connections);
        out.connect_timeout = check.duration(
            &format!("{at}.connectTimeout"),
            tcp.connect_timeout.as_ref(),
        );
        out.max_connection_duration = check.duration(
            &format!("{at}.maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        out.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| TcpKeepaliveModel {
            probes: check.count(&format!("{at}.tcpKeepalive.probes"), k.probes),
            time: check.duration(&format!("{at}.tcpKeepalive.time"), k.time.as_ref()),
            interval: check.duration(&format!("{at}.tcpKeepalive.interval"), k.interval.as_ref()),
        });
    }
    if let Some(http) = &p.http {
        let at = format!("{at}.http");
        out.http1_max_pending_requests = check.count(
            &format!("{at}.http1MaxPendingRequests"),
            http.http1_max_pending_requests,
        );
        out.http2_max_requests =
            check.count(&format!("{at}.http2MaxRequests"), http.http2_max_requests);
        out.max_requests_per_connection = check.count(
            &format!("{at}.maxRequestsPerConnection"),
            http.max_requests_per_connection,
        );
        out.max_retries = check.count(&format!("{at}.maxRetries"), http.max_retries);
        out.max_concurrent_streams = check.count(
            &format!("{at}.maxConcurrentStreams"),
            http.max_concurrent_streams,
        );
        out.idle_timeout = check.duration(&format!("{at}.idleTimeout"), http.idle_timeout.as_ref());
        out.h2_upgrade = match http.h2_upgrade_policy.as_deref() {
            None | Some("DEFAULT") => H2Upgrade::Default,
            Some("DO_NOT_UPGRADE") => H2Upgrade::DoNotUpgrade,
            Some("UPGRADE") => H2Upgrade::Upgrade,
            Some(other) => {
                check.error(
                    &format!("{at}.h2UpgradePolicy"),
                    format!("unknown policy {other:?} (DEFAULT, DO_NOT_UPGRADE, UPGRADE)"),
                );
                H2Upgrade::Default
            }
        };
        out.use_client_protocol = http.use_client_protocol.unwrap_or(false);
        if out.use_client_protocol && out.h2_upgrade == H2Upgrade::Upgrade {
            check.error(
                &format!("{at}.useClientProtocol"),
                "cannot be true when h2UpgradePolicy is UPGRADE".to_string(),
            );
        }
    }
    out
}

fn outlier_detection(
    check: &mut Check<'_>,
    at: &str,
    o: &OutlierDetection,
) -> OutlierDetectionModel {
    let consecutive_5xx = match o.consecutive_5xx_errors {
        Some(v) => non_negative(check, &format!("{at}.consecutive5xxErrors"), v),
        None => o
            .consecutive_errors
            .and_then(|v| non_negative(check, &format!("{at}.consecutiveErrors"), v)),
    };
    OutlierDetectionModel {
        consecutive_5xx,
        consecutive_gateway: o
            .consecutive_gateway_errors
            .and_then(|v| non_negative(check, &format!("{at}.consecutiveGatewayErrors"), v)),
        split_external_local_origin_errors: o.split_external_local_origin_errors == Some(true),
        consecutive_local_origin_failures: check.count(
            &format!("{at}.consecutiveLocalOriginFailures"),
            o.consecutive_local_origin_failures,
        ),
        interval: check.duration(&format!("{at}.interval"), o.interval.as_ref()),
        base_ejection_time: check.duration(
            &format!("{at}.baseEjectionTime"),
            o.base_ejection_time.as_ref(),
        ),
        max_ejection_percent: check
            .percent(&format!("{at}.maxEjectionPercent"), o.max_ejection_percent)
            .filter(|p| *p > 0),
        min_health_percent: check
            .percent(&format!("{at}.minHealthPercent"), o.min_health_percent)
            .unwrap_or(0),
    }
}

/// A count where 0 is meaningful (e.g. `consecutive5xxErrors: 0` turns that check off).
fn non_negative(check: &mut Check<'_>, field: &str, v: i64) -> Option<u32> {
    match u32::try_from(v) {
        Ok(n) => Some(n),
        Err(_) => {
            check.error(field, format!("{v} is not a count (0 or more)"));
            None
        }
    }
}

fn client_tls(check: &mut Check<'_>, at: &str, t: &ClientTls) -> Option<ClientTlsModel> {
    let mode = match t.mode.as_str() {
        "DISABLE" => TlsMode::Disable,
        "SIMPLE" => TlsMode::Simple,
        "MUTUAL" => TlsMode::Mutual,
        "ISTIO_MUTUAL" => TlsMode::IstioMutual,
        other => {
            check.error(
                &format!("{at}.mode"),
                format!("unknown TLS mode {other:?} (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)"),
            );
            return None;
        }
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let model = ClientTlsModel {
        mode,
        client_certificate: nonempty(&t.client_certificate),
        private_key: nonempty(&t.private_key),
        ca_certificates: nonempty(&t.ca_certificates),
        credential_name: nonempty(&t.credential_name),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: nonempty(&t.sni),
        insecure_skip_verify: t.insecure_skip_verify == Some(true),
    };
    let files = model.client_certificate.is_some()
        || model.private_key.is_some()
        || model.ca_certificates.is_some();
    if matches!(mode, TlsMode::Simple | TlsMode::Mutual) {
        if model.credential_name.is_some() && files {
            check.error(
                &format!("{at}.credentialName"),
                "cannot be combined with clientCertificate, privateKey or caCertificates"
                    .to_string(),
            );
        }
        if mode == TlsMode::Mutual && model.credential_name.is_none() {
            if model.client_certificate.is_none() {
                check.error(
                    &format!("{at}.clientCertificate"),
                    "MUTUAL needs a client certificate (or credentialName)".to_string(),
                );
            }
            if model.private_key.is_none() {
                check.error(
                    &format!("{at}.privateKey"),
                    "MUTUAL needs a private key (or credentialName)".to_string(),
                );
            }
        }
        if model.insecure_skip_verify
            && (model.ca_certificates.is_some() || !model.subject_alt_names.is_empty())
        {
            check.error(
                &format!("{at}.insecureSkipVerify"),
                "cannot be combined with caCertificates or subjectAltNames".to_string(),
            );
        }
        if model.ca_certificates.is_none()
            && model.credential_name.is_none()
            && !model.insecure_skip_verify
        {
            check.warnings.push(Finding::new(
                Severity::Warning,
                "IST0128",
                check.key,
                &format!("{at}.caCertificates"),
                "no caCertificates: the server's certificate is not verified".to_string(),
            ));
        }
    }
    Some(model)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::networking::DestinationRuleSpec;

    fn rule(yaml: &str) -> (Option<DestinationRuleModel>, Vec<Finding>) {
        let spec: DestinationRuleSpec = serde_saphyr::from_str(yaml).unwrap();
        let dr = DestinationRule {
            metadata: crate::input::ObjectMeta {
                name: "r".into(),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec,
        };
        let mut findings = Vec::new();
        let model = validate_destination_rule(&dr, &mut findings);
        (model, findings)
    }

    fn fields(findings: &[Finding]) -> Vec<String> {
        findings.iter().map(|f| f.field.clone()).collect()
    }

    #[test]
    fn port_level_settings_replace_the_rule_and_subsets_override_parts() {
        let (model, findings) = rule(
            "host: a\n\
             trafficPolicy:\n  \
               loadBalancer: {simple: RANDOM}\n  \
               connectionPool: {tcp: {maxConnections: 7}}\n  \
               portLevelSettings:\n  \
               - port: {number: 81}\n    \
                 outlierDetection: {consecutive5xxErrors: 3}\n\
             subsets:\n\
             - name: v1\n  \
               labels: {v: '1'}\n  \
               trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}\n",
        );
        assert!(findings.is_empty(), "{findings:?}");
        let model = model.unwrap();
        let base = model.settings("", 80);
        assert_eq!(base.load_balancer.unwrap().policy, LbPolicy::Random);
        assert_eq!(base.connection_pool.unwrap().max_connections, Some(7));
        let port81 = model.settings("", 81);
        assert!(port81.load_balancer.is_none() && port81.connection_pool.is_none());
        assert_eq!(port81.outlier_detection.unwrap().consecutive_5xx, Some(3));
        let v1 = model.settings("v1", 80);
        assert_eq!(v1.load_balancer.unwrap().policy, LbPolicy::RoundRobin);
        assert_eq!(v1.connection_pool.unwrap().max_connections, Some(7));
        let v1_81 = model.settings("v1", 81);
        assert_eq!(v1_81.load_balancer.unwrap().policy, LbPolicy::RoundRobin);
        assert!(v1_81.connection_pool.is_none());
    }

    #[test]
    fn invalid_values_name_their_fields() {
        let (model, findings) = rule(
            "host: a\n\
             trafficPolicy:\n  \
               loadBalancer:\n    \
                 consistentHash: {httpHeaderName: x-user, useSourceIp: true, maglev: {tableSize: 1000}}\n  \
               connectionPool:\n    \
                 tcp: {maxConnections: -1, connectTimeout: 10}\n    \
                 http: {h2UpgradePolicy: SOMETIMES}\n  \
               outlierDetection: {maxEjectionPercent: 101, interval: 0s}\n  \
               tls: {mode: MUTUAL}\n  \
               portLevelSettings: [{loadBalancer: {simple: RANDOM}}]\n",
        );
        assert!(model.is_none());
        let fields = fields(&findings);
        for expected in [
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
            "spec.trafficPolicy.connectionPool.http.h2UpgradePolicy",
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "spec.trafficPolicy.outlierDetection.interval",
            "spec.trafficPolicy.tls.clientCertificate",
            "spec.trafficPolicy.tls.privateKey",
            "spec.trafficPolicy.portLevelSettings[0].port",
        ] {
            assert!(
                fields.iter().any(|f| f == expected),
                "{expected} in {fields:?}"
            );
        }
    }

    #[test]
    fn a_matching_selector_rule_in_the_proxy_namespace_wins_else_the_exported_one() {
        let mk = |ns: &str, name: &str, selector: Option<(&str, &str)>, export: &[&str]| {
            DestinationRuleModel {
                key: ObjectKey::new(Kind::DestinationRule, ns, name),
                host: "svc.b.svc.cluster.local".into(),
                subsets: vec![SubsetModel {
                    name: name.into(),
                    labels: BTreeMap::new(),
                    traffic_policy: None,
                }],
                traffic_policy: None,
                export_to: export.iter().map(|s| s.to_string()).collect(),
                workload_selector: selector
                    .map(|(k, v)| BTreeMap::from([(k.to_string(), v.to_string())])),
            }
        };
        let mut rules = DestinationRules::default();
        let mut findings = Vec::new();
        rules.insert(mk("a", "selected", Some(("app", "x")), &[]), &mut findings);
        rules.insert(mk("b", "owner", None, &[]), &mut findings);
        rules.insert(mk("c", "private", None, &["."]), &mut findings);
        assert!(findings.is_empty());
        let x = BTreeMap::from([("app".to_string(), "x".to_string())]);
        let none = BTreeMap::new();
        let view = |ns, labels| RuleView {
            proxy_namespace: ns,
            proxy_labels: labels,
            service_namespace: "b",
            root_namespace: "istio-system",
        };
        let host = "svc.b.svc.cluster.local";
        let name = |v: RuleView<'_>| rules.lookup(host, &v).map(|r| r.key.name.clone());
        assert_eq!(name(view("a", &x)).as_deref(), Some("selected"));
        assert_eq!(name(view("a", &none)).as_deref(), Some("owner"));
        assert_eq!(name(view("c", &none)).as_deref(), Some("private"));
        assert_eq!(name(view("d", &none)).as_deref(), Some("owner"));
        assert!(rules.get(host).unwrap().subset("owner").is_some());
    }

    #[test]
    fn rules_of_one_namespace_for_one_host_merge_their_subsets() {
        let (a, _) = rule(
            "host: a\nsubsets: [{name: v1}]\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}\n",
        );
        let (b, _) = rule("host: a\nsubsets: [{name: v2}, {name: v1}]\n");
        let mut rules = DestinationRules::default();
        let mut findings = Vec::new();
        rules.insert(a.unwrap(), &mut findings);
        let mut b = b.unwrap();
        b.key.name = "s".into();
        rules.insert(b, &mut findings);
        assert_eq!(fields(&findings), vec!["spec.subsets[1].name"]);
        let merged: Vec<_> = rules.iter().collect();
        assert_eq!(merged.len(), 1);
        let names: Vec<_> = merged[0].subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["v1", "v2"]);
    }
}
