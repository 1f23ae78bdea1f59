//! AuthorizationPolicies, validated, and which of them apply to a workload: those in the root
//! namespace (mesh-wide) and in the workload's namespace, narrowed by `selector` when one is set.
//!
//! Invalid policies are reported and still kept, made to fail closed: a condition with an invalid
//! value makes an ALLOW rule match nothing, and is ignored by a DENY or AUDIT rule (which then
//! matches more) — the way istiod treats a rule it cannot build. A CUSTOM policy cannot be
//! delegated (meshd configures no extension providers), so what its rules match is denied, as
//! istiod does when a CUSTOM policy's provider is missing.

pub mod jwt;
pub mod token_required;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::finding::{Finding, Report, Severity};
use crate::input::labels_match;
use crate::input::security::{
    AuthorizationPolicy, AuthorizationRule, Operation, RuleCondition, Source, UnknownFields,
};
use crate::object::{Kind, Object, ObjectKey};

/// Annotation that makes a policy evaluated and counted but never enforced.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Matching requests are logged (Envoy RBAC `LOG`), never refused.
    Audit,
    /// CUSTOM, or an action meshd does not know: nothing can decide it, so requests its rules match
    /// are denied.
    Custom,
}

/// What a condition looks at, as Istio names it in `when` keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Attribute {
    /// `source.principal` / `principals`: the peer's mTLS identity, `<trust domain>/ns/<ns>/sa/<sa>`.
    SourcePrincipal,
    /// `source.namespace` / `namespaces`.
    SourceNamespace,
    /// `source.serviceAccount` / `serviceAccounts`: `<sa>` (in the policy's namespace) or `<ns>/<sa>`.
    SourceServiceAccount { policy_namespace: String },
    /// `source.ip` / `ipBlocks`: the connection's peer address.
    SourceIp,
    /// `remote.ip` / `remoteIpBlocks`: the original client (X-Forwarded-For, PROXY protocol).
    RemoteIp,
    /// `request.auth.principal` / `requestPrincipals`: `<iss>/<sub>` of a validated JWT.
    RequestPrincipal,
    /// `request.auth.audiences`: the JWT's `aud` claim.
    RequestAudiences,
    /// `request.auth.presenter`: the JWT's `azp` claim.
    RequestPresenter,
    /// `request.auth.claims[a][b]`: a claim of a validated JWT, by its path.
    RequestClaim(Vec<String>),
    /// `request.headers[name]`.
    RequestHeader(String),
    /// `hosts`: the `:authority`.
    Host,
    /// `methods`.
    Method,
    /// `paths`: the path without query.
    Path,
    /// `destination.port` / `ports`.
    DestinationPort,
    /// `destination.ip`.
    DestinationIp,
    /// `connection.sni`.
    ConnectionSni,
    /// A key or field meshd cannot evaluate.
    Invalid,
}

impl Attribute {
    /// Needs an HTTP request: on a TCP port such a condition cannot be evaluated.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            Attribute::RequestPrincipal
                | Attribute::RequestAudiences
                | Attribute::RequestPresenter
                | Attribute::RequestClaim(_)
                | Attribute::RequestHeader(_)
                | Attribute::Host
                | Attribute::Method
                | Attribute::Path
        )
    }

    /// Envoy RBAC matches it on the permission (request/destination) side rather than the
    /// principal (caller) side.
    pub fn on_permission(&self) -> bool {
        matches!(
            self,
            Attribute::Host
                | Attribute::Method
                | Attribute::Path
                | Attribute::DestinationPort
                | Attribute::DestinationIp
                | Attribute::ConnectionSni
        )
    }
}

/// One field or `when` entry: any of `values`, and none of `not_values`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Condition {
    pub attribute: Attribute,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
    /// A value (or the key itself) was invalid and has been left out of `values`/`not_values`.
    pub invalid: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuthzRule {
    /// One entry per `from`; each holds conditions that must all be met. Empty: any source.
    pub from: Vec<Vec<Condition>>,
    /// One entry per `to`, likewise. Empty: any operation.
    pub to: Vec<Vec<Condition>>,
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuthzPolicyModel {
    pub key: ObjectKey,
    pub selector: Option<BTreeMap<String, String>>,
    pub action: AuthzAction,
    pub dry_run: bool,
    /// No rules: the policy matches nothing (an ALLOW policy without rules allows nothing).
    pub rules: Vec<AuthzRule>,
}

impl AuthzPolicyModel {
    /// Istio's RBAC policy name for rule `index`: `ns[<ns>]-policy[<name>]-rule[<i>]`.
    pub fn rule_name(&self, index: usize) -> String {
        format!(
            "ns[{}]-policy[{}]-rule[{index}]",
            self.key.namespace, self.key.name
        )
    }
}

/// Mesh-wide (root namespace) policies first, then by namespace and name: a stable order, so
/// equal inputs build equal config.
pub(crate) fn sort_mesh_wide_first<T>(
    policies: &mut [Arc<T>],
    root_namespace: &str,
    key: impl Fn(&T) -> &ObjectKey,
) {
    policies.sort_by(|a, b| {
        let rank = |k: &ObjectKey| {
            (
                k.namespace != root_namespace,
                k.namespace.clone(),
                k.name.clone(),
            )
        };
        rank(key(a)).cmp(&rank(key(b)))
    });
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AuthorizationPolicies {
    policies: Vec<Arc<AuthzPolicyModel>>,
    root_namespace: String,
}

impl AuthorizationPolicies {
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        root_namespace: &str,
        findings: &mut Vec<Finding>,
    ) -> Self {
        let mut policies = Vec::new();
        for obj in objects.values() {
            let Object::AuthorizationPolicy(ap) = obj else {
                continue;
            };
            if let Some(model) = validate(ap, findings) {
                policies.push(Arc::new(model));
            }
        }
        sort_mesh_wide_first(&mut policies, root_namespace, |p| &p.key);
        AuthorizationPolicies {
            policies,
            root_namespace: root_namespace.to_string(),
        }
    }

    /// The accepted policy of that key, if it is one.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<AuthzPolicyModel>> {
        self.policies.iter().find(|p| &p.key == key)
    }

    /// The policies that apply to a workload with `labels` in `namespace`.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<Arc<AuthzPolicyModel>> {
        self.policies
            .iter()
            .filter(|p| {
                in_scope(
                    &p.key.namespace,
                    p.selector.as_ref(),
                    &self.root_namespace,
                    namespace,
                    labels,
                )
            })
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Istio's scope rule, shared by both security kinds: the root namespace's policies reach every
/// namespace, the others only their own; a selector narrows to matching labels.
pub(crate) fn in_scope(
    policy_namespace: &str,
    selector: Option<&BTreeMap<String, String>>,
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    (policy_namespace == root_namespace || policy_namespace == namespace)
        && selector.is_none_or(|s| labels_match(s, labels))
}

fn validate(ap: &AuthorizationPolicy, findings: &mut Vec<Finding>) -> Option<AuthzPolicyModel> {
    let key = ObjectKey::new(
        Kind::AuthorizationPolicy,
        ap.metadata.namespace.clone().unwrap_or_default(),
        ap.metadata.name.clone(),
    );
    let mut report = Report::new(&key);
    let spec = &ap.spec;
    report.unknown_fields("spec", &spec.unknown);
    // The schema's enum: names as written, upper case.
    let action = match spec.action.as_str() {
        "" | "ALLOW" => AuthzAction::Allow,
        "DENY" => AuthzAction::Deny,
        "AUDIT" => AuthzAction::Audit,
        "CUSTOM" => {
            report.error(
                "spec.provider",
                "CUSTOM requires an extension provider; none is configured, so requests matching \
                 its rules are denied"
                    .to_string(),
            );
            AuthzAction::Custom
        }
        other => {
            report.error(
                "spec.action",
                format!(
                    "unknown action {other:?} (ALLOW, DENY, AUDIT, CUSTOM); requests matching its \
                     rules are denied"
                ),
            );
            AuthzAction::Custom
        }
    };
    if spec.provider.is_some() && action != AuthzAction::Custom {
        report.error(
            "spec.provider",
            "`provider` must not be with non CUSTOM action".to_string(),
        );
    }
    if action == AuthzAction::Deny && spec.rules.is_empty() {
        report.error(
            "spec.rules",
            "DENY action without `rules` is meaningless as it will never be triggered, add an \
             empty rule `{}` if you want it be triggered for every request"
                .to_string(),
        );
    }
    check_selector(
        spec.selector.as_ref(),
        spec.target_ref.is_some() || !spec.target_refs.is_empty(),
        &mut report,
    );
    let dry_run = match ap.metadata.annotations.get(DRY_RUN_ANNOTATION) {
        None => false,
        Some(_) if !matches!(action, AuthzAction::Allow | AuthzAction::Deny) => {
            report.error(
                &format!("metadata.annotations.{DRY_RUN_ANNOTATION}"),
                format!(
                    "the annotation {DRY_RUN_ANNOTATION} currently only supports action \
                     ALLOW/DENY; the policy is enforced"
                ),
            );
            false
        }
        // Go's strconv.ParseBool.
        Some(v) => match v.as_str() {
            "true" | "1" | "t" | "T" | "TRUE" | "True" => true,
            "false" | "0" | "f" | "F" | "FALSE" | "False" => false,
            _ => {
                report.error(
                    &format!("metadata.annotations.{DRY_RUN_ANNOTATION}"),
                    format!("{v:?} is not a boolean; the policy is enforced"),
                );
                false
            }
        },
    };
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    let rules = spec
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| validate_rule(r, &format!("spec.rules[{i}]"), &key, &mut report))
        .collect();
    let selector = spec
        .selector
        .as_ref()
        .map(|s| s.labels.clone())
        .filter(|l| !l.is_empty());
    report.finish(findings);
    if targeted {
        // Waypoints and gateways are what targetRef attaches to; sidecars only honour selectors.
        findings.push(Finding::new(
            Severity::Warning,
            "IST0106",
            &key,
            "spec.targetRef",
            "targetRef attaches the policy to waypoints or gateways, which meshd does not serve; \
             it applies to no sidecar"
                .to_string(),
        ));
        return None;
    }
    Some(AuthzPolicyModel {
        key,
        selector,
        action,
        dry_run,
        rules,
    })
}

/// Both security kinds: selector labels without wildcards, and a selector or targetRefs, not both.
pub(crate) fn check_selector(
    selector: Option<&crate::input::WorkloadSelector>,
    targeted: bool,
    report: &mut Report<'_>,
) {
    let Some(sel) = selector else { return };
    if let Err(e) = crate::syntax::selector(&sel.labels) {
        report.error("spec.selector.matchLabels", e);
    }
    if sel.labels.is_empty() {
        report.warning(
            "spec.selector",
            "workload selector specified without labels".to_string(),
        );
    }
    if targeted {
        report.error(
            "spec.selector",
            "only one of targetRefs or workloadSelector can be set".to_string(),
        );
    }
}

fn validate_rule(
    rule: &AuthorizationRule,
    field: &str,
    key: &ObjectKey,
    report: &mut Report<'_>,
) -> AuthzRule {
    let mut out = AuthzRule::default();
    if report.unknown_fields(field, &rule.unknown) {
        out.when.push(invalid_condition());
    }
    for (i, from) in rule.from.iter().enumerate() {
        let at = format!("{field}.from[{i}]");
        let mut conditions = Vec::new();
        if report.unknown_fields(&at, &from.unknown) {
            conditions.push(invalid_condition());
        }
        match &from.source {
            None => {
                report.error(&at, "`source` must be set".to_string());
                conditions.push(invalid_condition());
            }
            Some(s) => {
                let identities = [
                    &s.principals,
                    &s.not_principals,
                    &s.namespaces,
                    &s.not_namespaces,
                ];
                if identities.iter().any(|v| !v.is_empty())
                    && !(s.service_accounts.is_empty() && s.not_service_accounts.is_empty())
                {
                    report.error(
                        &format!("{at}.source"),
                        "cannot set serviceAccounts with namespaces or principals".to_string(),
                    );
                }
                conditions.extend(source_conditions(s, &format!("{at}.source"), key, report))
            }
        }
        out.from.push(conditions);
    }
    for (i, to) in rule.to.iter().enumerate() {
        let at = format!("{field}.to[{i}]");
        let mut conditions = Vec::new();
        if report.unknown_fields(&at, &to.unknown) {
            conditions.push(invalid_condition());
        }
        match &to.operation {
            None => {
                report.error(&at, "`operation` must be set".to_string());
                conditions.push(invalid_condition());
            }
            Some(o) => {
                conditions.extend(operation_conditions(o, &format!("{at}.operation"), report))
            }
        }
        out.to.push(conditions);
    }
    for (i, when) in rule.when.iter().enumerate() {
        out.when.push(when_condition(
            when,
            &format!("{field}.when[{i}]"),
            key,
            report,
        ));
    }
    out
}

fn invalid_condition() -> Condition {
    Condition {
        attribute: Attribute::Invalid,
        values: Vec::new(),
        not_values: Vec::new(),
        invalid: true,
    }
}

/// A field and its `not*` twin: names (for findings), what they match, their values.
type FieldPair<'a> = (&'a str, Attribute, &'a [String], &'a str, &'a [String]);

/// Source fields in Istio's order (principals first), each present only when it has values.
fn source_conditions(
    s: &Source,
    field: &str,
    key: &ObjectKey,
    report: &mut Report<'_>,
) -> Vec<Condition> {
    let sa = Attribute::SourceServiceAccount {
        policy_namespace: key.namespace.clone(),
    };
    let fields: [FieldPair<'_>; 6] = [
        (
            "principals",
            Attribute::SourcePrincipal,
            &s.principals,
            "notPrincipals",
            &s.not_principals,
        ),
        (
            "requestPrincipals",
            Attribute::RequestPrincipal,
            &s.request_principals,
            "notRequestPrincipals",
            &s.not_request_principals,
        ),
        (
            "serviceAccounts",
            sa,
            &s.service_accounts,
            "notServiceAccounts",
            &s.not_service_accounts,
        ),
        (
            "namespaces",
            Attribute::SourceNamespace,
            &s.namespaces,
            "notNamespaces",
            &s.not_namespaces,
        ),
        (
            "remoteIpBlocks",
            Attribute::RemoteIp,
            &s.remote_ip_blocks,
            "notRemoteIpBlocks",
            &s.not_remote_ip_blocks,
        ),
        (
            "ipBlocks",
            Attribute::SourceIp,
            &s.ip_blocks,
            "notIpBlocks",
            &s.not_ip_blocks,
        ),
    ];
    pair_conditions(fields, &s.unknown, "source", field, report)
}

/// Conditions for a `source` or `operation`: each field and its `not` twin; an unknown field, or
/// nothing set at all, yields a condition that never matches (so an ALLOW fails closed).
fn pair_conditions<'a>(
    fields: impl IntoIterator<Item = FieldPair<'a>>,
    unknown: &UnknownFields,
    what: &str,
    field: &str,
    report: &mut Report<'_>,
) -> Vec<Condition> {
    let mut out = Vec::new();
    if report.unknown_fields(field, unknown) {
        out.push(invalid_condition());
    }
    let mut any = false;
    for (name, attribute, values, not_name, not_values) in fields {
        any |= !values.is_empty() || !not_values.is_empty();
        if let Some(c) = condition(
            attribute,
            values,
            not_values,
            &format!("{field}.{name}"),
            &format!("{field}.{not_name}"),
            report,
        ) {
            out.push(c);
        }
    }
    if !any && unknown.is_empty() {
        report.error(field, format!("`{what}` must not be empty"));
        out.push(invalid_condition());
    }
    out
}

/// Operation fields in Istio's order (hosts first).
fn operation_conditions(o: &Operation, field: &str, report: &mut Report<'_>) -> Vec<Condition> {
    let fields: [FieldPair<'_>; 4] = [
        ("hosts", Attribute::Host, &o.hosts, "notHosts", &o.not_hosts),
        (
            "methods",
            Attribute::Method,
            &o.methods,
            "notMethods",
            &o.not_methods,
        ),
        ("paths", Attribute::Path, &o.paths, "notPaths", &o.not_paths),
        (
            "ports",
            Attribute::DestinationPort,
            &o.ports,
            "notPorts",
            &o.not_ports,
        ),
    ];
    pair_conditions(fields, &o.unknown, "operation", field, report)
}

fn when_condition(
    when: &RuleCondition,
    field: &str,
    key: &ObjectKey,
    report: &mut Report<'_>,
) -> Condition {
    let unknown = report.unknown_fields(field, &when.unknown);
    let attribute = match parse_key(&when.key, &key.namespace) {
        Ok(a) => a,
        Err(e) => {
            report.error(&format!("{field}.key"), e);
            return invalid_condition();
        }
    };
    if when.values.is_empty() && when.not_values.is_empty() {
        report.error(field, "`values` or `notValues` must be set".to_string());
        return invalid_condition();
    }
    let mut c = condition(
        attribute,
        &when.values,
        &when.not_values,
        &format!("{field}.values"),
        &format!("{field}.notValues"),
        report,
    )
    .unwrap_or_else(invalid_condition);
    c.invalid |= unknown;
    c
}

/// `when` keys Istio defines for sidecars.
fn parse_key(key: &str, policy_namespace: &str) -> Result<Attribute, String> {
    let bracketed = |rest: &str| -> Result<Vec<String>, String> {
        // `[a]` or `[a][b]...`; names are non-empty and hold no brackets.
        let mut names = Vec::new();
        let mut rest = rest;
        while !rest.is_empty() {
            let inner = rest
                .strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .filter(|(name, _)| !name.is_empty() && !name.contains('['));
            let Some((name, tail)) = inner else {
                return Err(format!(
                    "{key:?}: expected a name in brackets, as in [name]"
                ));
            };
            names.push(name.to_string());
            rest = tail;
        }
        if names.is_empty() {
            return Err(format!(
                "{key:?}: expected a name in brackets, as in [name]"
            ));
        }
        Ok(names)
    };
    Ok(match key {
        "" => return Err("`key` must be set".to_string()),
        "source.ip" => Attribute::SourceIp,
        "remote.ip" => Attribute::RemoteIp,
        "source.namespace" => Attribute::SourceNamespace,
        "source.principal" => Attribute::SourcePrincipal,
        "source.serviceAccount" => Attribute::SourceServiceAccount {
            policy_namespace: policy_namespace.to_string(),
        },
        "request.auth.principal" => Attribute::RequestPrincipal,
        "request.auth.audiences" => Attribute::RequestAudiences,
        "request.auth.presenter" => Attribute::RequestPresenter,
        "destination.ip" => Attribute::DestinationIp,
        "destination.port" => Attribute::DestinationPort,
        "connection.sni" => Attribute::ConnectionSni,
        k => {
            if let Some(rest) = k.strip_prefix("request.headers") {
                let names = bracketed(rest)?;
                if names.len() != 1 {
                    return Err(format!("{key:?}: one header name expected"));
                }
                Attribute::RequestHeader(names[0].clone())
            } else if let Some(rest) = k.strip_prefix("request.auth.claims") {
                Attribute::RequestClaim(bracketed(rest)?)
            } else {
                return Err(format!(
                    "unknown key {key:?} (request.headers[...], source.ip, remote.ip, \
                     source.namespace, source.principal, source.serviceAccount, \
                     request.auth.principal, request.auth.audiences, request.auth.presenter, \
                     request.auth.claims[...], destination.ip, destination.port, connection.sni)"
                ));
            }
        }
    })
}

/// Checks every value against what the attribute accepts; invalid ones are reported and dropped.
/// `None` when there is nothing left to state (no values were given).
fn condition(
    attribute: Attribute,
    values: &[String],
    not_values: &[String],
    field: &str,
    not_field: &str,
    report: &mut Report<'_>,
) -> Option<Condition> {
    if values.is_empty() && not_values.is_empty() {
        return None;
    }
    let mut invalid = false;
    let mut keep = |list: &[String], at: &str| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter(|(i, v)| match check_value(&attribute, v) {
                Ok(()) => true,
                Err(e) => {
                    report.error(&format!("{at}[{i}]"), e);
                    invalid = true;
                    false
                }
            })
            .map(|(_, v)| v.clone())
            .collect()
    };
    let values = keep(values, field);
    let not_values = keep(not_values, not_field);
    Some(Condition {
        attribute,
        values,
        not_values,
        invalid,
    })
}

fn check_value(attribute: &Attribute, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("empty value".to_string());
    }
    match attribute {
        Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => {
            parse_cidr(value).map(|_| ())
        }
        Attribute::DestinationPort => parse_port(value).map(|_| ()),
        Attribute::SourceServiceAccount { .. } => service_account(value),
        Attribute::SourcePrincipal if value.starts_with("spiffe://") => Err(format!(
            "{value:?}: principals are written without \"spiffe://\" (<trust domain>/ns/<ns>/sa/<sa>)"
        )),
        Attribute::Path if value.contains('{') => Err(format!(
            "{value:?}: path templates ({{*}}, {{**}}) are not supported by meshd"
        )),
        _ => Ok(()),
    }
}

/// `serviceAccount` or `namespace/serviceAccount`, without wildcards.
fn service_account(value: &str) -> Result<(), String> {
    if value.contains('*') {
        return Err(format!("{value:?}: wildcard not allowed"));
    }
    let valid = match value.split_once('/') {
        Some((ns, sa)) => !ns.is_empty() && !sa.is_empty() && !sa.contains('/'),
        None => true,
    };
    if !valid || value.len() > 320 {
        return Err(format!(
            "expected format 'serviceAccount' or 'namespace/serviceAccount', found {value:?}"
        ));
    }
    Ok(())
}

/// An address or CIDR block: the address and the prefix length (a bare address is a /32 or /128).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u32), String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{text:?}: prefix length must be 0..={max}"))?,
    };
    Ok((ip, len))
}

/// A port, `0..=65535`.
pub fn parse_port(text: &str) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535)
        .ok_or_else(|| format!("{text:?} is not a port number"))
}

#[cfg(test)]
mod tests;
