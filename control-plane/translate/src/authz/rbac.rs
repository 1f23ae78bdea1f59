//! One AuthorizationPolicy rule → one Envoy RBAC `Policy`, the way istiod builds it: each `to`
//! becomes a permission and each `from` a principal (both `and` of their conditions, `when`
//! conditions appended to every one of them); a field's values are `or`ed, its `not*` values
//! negated.
//!
//! A condition that cannot be built (an invalid value, or an HTTP-only field on a TCP port) drops
//! an ALLOW rule entirely — the ALLOW matches less, failing closed — and is left out of a DENY or
//! AUDIT rule, which then matches more.

use meshd_model::{Attribute, AuthzRule, Condition};
use meshd_proto::pb::envoy::config::core::v3::CidrRange;
use meshd_proto::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Policy, Principal, SourcedMetadata, permission, principal,
};
use meshd_proto::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use meshd_proto::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, OrMatcher, PathMatcher, RegexMatcher, StringMatcher,
    ValueMatcher, list_matcher, metadata_matcher, path_matcher, string_matcher, value_matcher,
};

use crate::util::u32_value;

/// The dynamic-metadata namespace jwt_authn writes validated payloads to.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// jwt_authn `payload_in_metadata`: the key the validated payload is stored under, for every
/// issuer (as istiod does), so claims can be matched without knowing which issuer signed.
pub const JWT_PAYLOAD_KEY: &str = "payload";

const SPIFFE_PREFIX: &str = "spiffe://";
/// Principals written with this trust domain mean "this mesh's trust domain".
const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The mesh's trust domain and MeshConfig's `trustDomainAliases`.
#[derive(Clone, Copy, Debug)]
pub struct TrustDomains<'a> {
    pub local: &'a str,
    pub aliases: &'a [String],
}

/// What a policy is built for.
pub struct Context<'a> {
    pub trust: TrustDomains<'a>,
    /// A TCP filter chain: HTTP-only conditions cannot be evaluated.
    pub tcp: bool,
    /// An ALLOW policy: anything unbuildable drops the rule instead of being left out.
    pub strict: bool,
}

/// The rule as an RBAC policy; `None` when an ALLOW rule cannot be built.
pub fn rule_policy(rule: &AuthzRule, ctx: &Context<'_>) -> Option<Policy> {
    let (when_permission, when_principal): (Vec<&Condition>, Vec<&Condition>) =
        rule.when.iter().partition(|c| c.attribute.on_permission());
    let mut permissions = Vec::new();
    if rule.to.is_empty() {
        permissions.push(permission_and(&when_permission, ctx)?);
    }
    for to in &rule.to {
        let conditions: Vec<&Condition> =
            to.iter().chain(when_permission.iter().copied()).collect();
        permissions.push(permission_and(&conditions, ctx)?);
    }
    let mut principals = Vec::new();
    if rule.from.is_empty() {
        principals.push(principal_and(&when_principal, ctx)?);
    }
    for from in &rule.from {
        let conditions: Vec<&Condition> =
            from.iter().chain(when_principal.iter().copied()).collect();
        principals.push(principal_and(&conditions, ctx)?);
    }
    Some(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

/// A policy no request matches: what an AuthorizationPolicy without rules becomes.
pub fn never_policy() -> Policy {
    Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::NotRule(Box::new(permission_any()))),
        }],
        principals: vec![principal_never()],
        ..Default::default()
    }
}

/// The values of a condition that can be built here; `None` if an ALLOW rule must be dropped.
fn usable<'c>(c: &'c Condition, ctx: &Context<'_>) -> Option<(&'c [String], &'c [String])> {
    let unbuildable = c.attribute == Attribute::Invalid || (ctx.tcp && c.attribute.http_only());
    if ctx.strict && (unbuildable || c.invalid) {
        return None;
    }
    if unbuildable {
        return Some((&[], &[]));
    }
    Some((&c.values, &c.not_values))
}

fn permission_and(conditions: &[&Condition], ctx: &Context<'_>) -> Option<Permission> {
    let mut and = Vec::new();
    for c in conditions {
        let (values, not_values) = usable(c, ctx)?;
        if !values.is_empty() {
            and.push(permission_or(
                values.iter().map(|v| permission(&c.attribute, v)).collect(),
            ));
        }
        if !not_values.is_empty() {
            let or = permission_or(
                not_values
                    .iter()
                    .map(|v| permission(&c.attribute, v))
                    .collect(),
            );
            and.push(Permission {
                rule: Some(permission::Rule::NotRule(Box::new(or))),
            });
        }
    }
    if and.is_empty() {
        and.push(permission_any());
    }
    Some(Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules: and })),
    })
}

fn principal_and(conditions: &[&Condition], ctx: &Context<'_>) -> Option<Principal> {
    let mut and = Vec::new();
    for c in conditions {
        let (values, not_values) = usable(c, ctx)?;
        if !values.is_empty() {
            and.push(principal_group(&c.attribute, values, ctx));
        }
        if !not_values.is_empty() {
            and.push(Principal {
                identifier: Some(principal::Identifier::NotId(Box::new(principal_group(
                    &c.attribute,
                    not_values,
                    ctx,
                )))),
            });
        }
    }
    if and.is_empty() {
        and.push(Principal {
            identifier: Some(principal::Identifier::Any(true)),
        });
    }
    Some(Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set { ids: and })),
    })
}

fn permission_any() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn permission_or(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn principal_never() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::NotId(Box::new(Principal {
            identifier: Some(principal::Identifier::Any(true)),
        }))),
    }
}

fn principal_or(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

/// One value on the permission (request/destination) side. Only permission attributes get here.
fn permission(attribute: &Attribute, value: &str) -> Permission {
    let rule = match attribute {
        Attribute::Host => permission::Rule::Header(header(":authority", value, true)),
        Attribute::Method => permission::Rule::Header(header(":method", value, false)),
        Attribute::Path => permission::Rule::UrlPath(PathMatcher {
            rule: Some(path_matcher::Rule::Path(string(value))),
        }),
        // Values were checked when the policy was validated.
        Attribute::DestinationPort => {
            permission::Rule::DestinationPort(meshd_model::authz::parse_port(value).unwrap_or(0))
        }
        Attribute::DestinationIp => permission::Rule::DestinationIp(cidr(value)),
        Attribute::ConnectionSni => permission::Rule::RequestedServerName(string(value)),
        _ => return permission_any(),
    };
    Permission { rule: Some(rule) }
}

/// All values of one principal-side condition, `or`ed.
fn principal_group(attribute: &Attribute, values: &[String], ctx: &Context<'_>) -> Principal {
    match attribute {
        // Claims are matched as a whole list of values, as istiod does.
        Attribute::RequestPrincipal => {
            let mut ids: Vec<Principal> = values.iter().map(|v| request_principal(v)).collect();
            if ids.len() == 1 {
                ids.remove(0)
            } else {
                principal_or(ids)
            }
        }
        Attribute::RequestAudiences => claim(&["aud".to_string()], values),
        Attribute::RequestPresenter => claim(&["azp".to_string()], values),
        Attribute::RequestClaim(path) => claim(path, values),
        Attribute::SourcePrincipal => principal_or(
            values
                .iter()
                .flat_map(|v| with_trust_domains(v, ctx.trust))
                .map(|v| principal_value(attribute, &v))
                .collect(),
        ),
        _ => principal_or(
            values
                .iter()
                .map(|v| principal_value(attribute, v))
                .collect(),
        ),
    }
}

fn principal_value(attribute: &Attribute, value: &str) -> Principal {
    let identifier = match attribute {
        // Trust domains were substituted by the caller.
        Attribute::SourcePrincipal => authenticated(string_with_prefix(value, SPIFFE_PREFIX)),
        Attribute::SourceNamespace => authenticated(regex(&format!(
            ".*/ns/{}/.*",
            quote_meta(value).replace("\\*", ".*")
        ))),
        Attribute::SourceServiceAccount { policy_namespace } => {
            let (ns, sa) = value
                .split_once('/')
                .unwrap_or((policy_namespace.as_str(), value));
            authenticated(regex(&format!(
                "spiffe://.+/ns/{}/(.+/|)sa/{}(/.+)?",
                quote_meta(ns),
                quote_meta(sa)
            )))
        }
        Attribute::SourceIp => principal::Identifier::DirectRemoteIp(cidr(value)),
        Attribute::RemoteIp => principal::Identifier::RemoteIp(cidr(value)),
        Attribute::RequestHeader(name) => principal::Identifier::Header(header(name, value, false)),
        _ => principal::Identifier::Any(true),
    };
    Principal {
        identifier: Some(identifier),
    }
}

fn authenticated(name: StringMatcher) -> principal::Identifier {
    principal::Identifier::Authenticated(principal::Authenticated {
        principal_name: Some(name),
    })
}

/// As istiod does: a principal written with the mesh's trust domain, one of its aliases, or
/// `cluster.local` matches the mesh's trust domain and every alias; other trust domains stay as
/// written, and wildcard-prefixed principals do not pin a trust domain.
fn with_trust_domains(principal: &str, trust: TrustDomains<'_>) -> Vec<String> {
    if principal.starts_with('*') {
        return vec![principal.to_string()];
    }
    match principal.split_once('/') {
        Some((td, rest))
            if td == trust.local
                || td == DEFAULT_TRUST_DOMAIN
                || trust.aliases.iter().any(|a| a == td) =>
        {
            let mut out: Vec<String> = Vec::new();
            for domain in
                std::iter::once(trust.local).chain(trust.aliases.iter().map(String::as_str))
            {
                let p = format!("{domain}/{rest}");
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            out
        }
        _ => vec![principal.to_string()],
    }
}

/// `<iss>/<sub>` (split at the last `/`, as issuers are URLs), both claims of the validated JWT;
/// `*` and a leading or trailing `*` work as in Istio.
fn request_principal(value: &str) -> Principal {
    let any = || regex(".+");
    let (iss, sub) = match value.rsplit_once('/') {
        Some((iss, sub)) => (iss, Some(sub)),
        None => (value, None),
    };
    let (match_iss, match_sub) = if value == "*" {
        (any(), any())
    } else if let Some(rest) = value.strip_prefix('*') {
        match sub {
            Some(sub) if iss == "*" => (any(), exact(sub)),
            Some(sub) => (suffix(iss.trim_start_matches('*')), exact(sub)),
            None => (any(), suffix(rest)),
        }
    } else if let Some(rest) = value.strip_suffix('*') {
        match sub {
            Some("*") => (exact(iss), any()),
            Some(sub) => (exact(iss), prefix(sub.trim_end_matches('*'))),
            None => (prefix(rest), any()),
        }
    } else {
        (exact(iss), exact(sub.unwrap_or_default()))
    };
    let claim_is = |name: &str, m: StringMatcher| Principal {
        identifier: Some(principal::Identifier::SourcedMetadata(SourcedMetadata {
            metadata_matcher: Some(metadata(
                &[name.to_string()],
                ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
                },
            )),
            metadata_source: MetadataSource::Dynamic as i32,
        })),
    };
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set {
            ids: vec![claim_is("iss", match_iss), claim_is("sub", match_sub)],
        })),
    }
}

/// A claim (by its path in the payload) equal to any of `values`, whether the claim is a string
/// or a list of strings.
fn claim(path: &[String], values: &[String]) -> Principal {
    let mut strings: Vec<ValueMatcher> = values
        .iter()
        .map(|v| ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(string(v))),
        })
        .collect();
    let one = if strings.len() == 1 {
        strings.remove(0)
    } else {
        ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
                value_matchers: strings,
            })),
        }
    };
    let list = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(one.clone()))),
            },
        ))),
    };
    let either = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::OrMatch(OrMatcher {
            value_matchers: vec![list, one],
        })),
    };
    Principal {
        identifier: Some(principal::Identifier::SourcedMetadata(SourcedMetadata {
            metadata_matcher: Some(metadata(path, either)),
            metadata_source: MetadataSource::Dynamic as i32,
        })),
    }
}

fn metadata(claim_path: &[String], value: ValueMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: JWT_FILTER.to_string(),
        path: std::iter::once(JWT_PAYLOAD_KEY)
            .chain(claim_path.iter().map(String::as_str))
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(value),
        invert: false,
    }
}

fn cidr(value: &str) -> CidrRange {
    // Values were checked when the policy was validated.
    let (ip, len) = meshd_model::authz::parse_cidr(value)
        .unwrap_or((std::net::IpAddr::from([255, 255, 255, 255]), 32));
    CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: u32_value(len),
    }
}

/// Istio's header matcher: `*` means present, a leading/trailing `*` a suffix/prefix match.
fn header(name: &str, value: &str, ignore_case: bool) -> HeaderMatcher {
    let specifier = if value == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        let mut m = if let Some(s) = value.strip_prefix('*') {
            suffix(s)
        } else if let Some(p) = value.strip_suffix('*') {
            prefix(p)
        } else {
            exact(value)
        };
        m.ignore_case = ignore_case;
        header_matcher::HeaderMatchSpecifier::StringMatch(m)
    };
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(specifier),
        ..Default::default()
    }
}

fn string(value: &str) -> StringMatcher {
    string_with_prefix(value, "")
}

/// Istio's string matcher: `*` is "non-empty", `*x` a suffix, `x*` a prefix, else exact; `prefix`
/// is put in front of what is matched (and the suffix form becomes a regex).
fn string_with_prefix(value: &str, pre: &str) -> StringMatcher {
    if value == "*" {
        regex(".+")
    } else if let Some(s) = value.strip_prefix('*') {
        if pre.is_empty() {
            suffix(s)
        } else {
            regex(&format!("{}.*{}", quote_meta(pre), quote_meta(s)))
        }
    } else if let Some(p) = value.strip_suffix('*') {
        prefix(&format!("{pre}{p}"))
    } else {
        exact(&format!("{pre}{value}"))
    }
}

fn pattern(p: string_matcher::MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    }
}

fn exact(v: &str) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Exact(v.to_string()))
}

fn prefix(v: &str) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Prefix(v.to_string()))
}

fn suffix(v: &str) -> StringMatcher {
    pattern(string_matcher::MatchPattern::Suffix(v.to_string()))
}

fn regex(r: &str) -> StringMatcher {
    pattern(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }))
}

/// Escapes RE2 metacharacters.
fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cond(attribute: Attribute, values: &[&str]) -> Condition {
        Condition {
            attribute,
            values: values.iter().map(|v| v.to_string()).collect(),
            not_values: Vec::new(),
            invalid: false,
        }
    }

    fn ctx(tcp: bool, strict: bool) -> Context<'static> {
        Context {
            trust: TrustDomains {
                local: "example.org",
                aliases: &[],
            },
            tcp,
            strict,
        }
    }

    #[test]
    fn principals_take_the_mesh_trust_domain_and_wildcards() {
        let trust = ctx(false, false).trust;
        assert_eq!(
            with_trust_domains("cluster.local/ns/a/sa/b", trust),
            ["example.org/ns/a/sa/b"]
        );
        assert_eq!(
            with_trust_domains("other.td/ns/a/sa/b", trust),
            ["other.td/ns/a/sa/b"]
        );
        assert_eq!(
            string_with_prefix("example.org/ns/a/*", SPIFFE_PREFIX),
            prefix("spiffe://example.org/ns/a/")
        );
        assert_eq!(
            string_with_prefix("*/sa/b", SPIFFE_PREFIX),
            regex("spiffe://.*/sa/b")
        );
        assert_eq!(string_with_prefix("*", SPIFFE_PREFIX), regex(".+"));
    }

    #[test]
    fn principals_match_every_trust_domain_alias() {
        let aliases = ["old.org".to_string(), "cluster.local".to_string()];
        let trust = TrustDomains {
            local: "example.org",
            aliases: &aliases,
        };
        let all = [
            "example.org/ns/a/sa/b",
            "old.org/ns/a/sa/b",
            "cluster.local/ns/a/sa/b",
        ];
        for written in all {
            assert_eq!(with_trust_domains(written, trust), all, "{written}");
        }
        assert_eq!(
            with_trust_domains("other.td/ns/a/sa/b", trust),
            ["other.td/ns/a/sa/b"]
        );
        assert_eq!(with_trust_domains("*/sa/b", trust), ["*/sa/b"]);
    }

    #[test]
    fn paths_follow_istio_wildcards() {
        assert_eq!(string("/api/*"), prefix("/api/"));
        assert_eq!(string("*.png"), suffix(".png"));
        assert_eq!(string("/exact"), exact("/exact"));
    }

    #[test]
    fn request_principals_match_issuer_and_subject() {
        let p = request_principal("https://issuer.example/alice");
        let Some(principal::Identifier::AndIds(set)) = p.identifier else {
            panic!("{p:?}")
        };
        let matchers: Vec<StringMatcher> = set
            .ids
            .into_iter()
            .map(|id| match id.identifier {
                Some(principal::Identifier::SourcedMetadata(s)) => {
                    match s.metadata_matcher.unwrap().value.unwrap().match_pattern {
                        Some(value_matcher::MatchPattern::StringMatch(m)) => m,
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(matchers, [exact("https://issuer.example"), exact("alice")]);
    }

    #[test]
    fn http_fields_on_tcp_drop_an_allow_rule_and_widen_a_deny_rule() {
        let rule = AuthzRule {
            from: vec![vec![cond(Attribute::SourceNamespace, &["ops"])]],
            to: vec![vec![cond(Attribute::Path, &["/admin"])]],
            when: Vec::new(),
        };
        assert!(rule_policy(&rule, &ctx(true, true)).is_none());
        let deny = rule_policy(&rule, &ctx(true, false)).unwrap();
        assert_eq!(
            deny.permissions,
            [Permission {
                rule: Some(permission::Rule::AndRules(permission::Set {
                    rules: vec![permission_any()]
                }))
            }]
        );
        let http = rule_policy(&rule, &ctx(false, true)).unwrap();
        assert_ne!(http.permissions, deny.permissions);
    }

    #[test]
    fn an_invalid_condition_drops_an_allow_rule_only() {
        let mut ip = cond(Attribute::SourceIp, &["10.0.0.0/8"]);
        ip.invalid = true;
        let rule = AuthzRule {
            from: vec![vec![ip]],
            ..Default::default()
        };
        assert!(rule_policy(&rule, &ctx(false, true)).is_none());
        let deny = rule_policy(&rule, &ctx(false, false)).unwrap();
        let Some(principal::Identifier::AndIds(set)) = &deny.principals[0].identifier else {
            panic!()
        };
        assert_eq!(set.ids.len(), 1, "the valid block is kept: {set:?}");
    }
}
