//! Where a workload's requests must carry a JWT at all: the paths its ALLOW policies can only
//! allow for a request principal (`requestPrincipals`), so that jwt_authn refuses a request
//! without a token there with 401 and RBAC is left to refuse wrong claims with 403.
//!
//! **A deliberate difference from istiod**, which never makes jwt_authn require a token: there a
//! request without one passes authentication and is denied by RBAC with 403. meshd answers 401
//! (`Jwt is missing`), telling the caller to authenticate, but only where that cannot change
//! what is allowed: a path requires a token when an enforced ALLOW rule needing a request
//! principal names it (exact or `prefix*` in `to.operation.paths`) and no enforced ALLOW rule
//! without one could match it. A rule needing a request principal on every path makes every path
//! require a token only when every enforced ALLOW rule of the workload needs a request
//! principal. Everywhere else istiod's behaviour stands: a missing token is allowed through and
//! RBAC decides.
//!
//! The analysis ignores every other condition (ports, methods, hosts, sources): an ALLOW rule
//! without request principals that could match a path for any request keeps that path open,
//! and a request refused here is one no ALLOW rule could have allowed without a token.

use std::sync::Arc;

use serde::Serialize;

use super::{Attribute, AuthzAction, AuthzPolicyModel, AuthzRule, Condition};

/// A path as Envoy's route matching states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum PathPattern {
    Exact(String),
    Prefix(String),
}

/// Which requests jwt_authn must refuse without a token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub enum TokenRequired {
    /// None: a missing token is allowed through, as istiod configures it.
    #[default]
    Nowhere,
    /// Every request.
    Everywhere,
    /// Requests to these paths.
    Paths(Vec<PathPattern>),
}

/// Where the workload governed by `policies` requires a token (see the module documentation).
pub fn token_required(policies: &[Arc<AuthzPolicyModel>]) -> TokenRequired {
    let enforced: Vec<&AuthzPolicyModel> = policies
        .iter()
        .filter(|p| p.action == AuthzAction::Allow && !p.dry_run)
        .map(|p| p.as_ref())
        .collect();
    if enforced.is_empty() {
        // No ALLOW policy: everything not denied is allowed, with or without a token.
        return TokenRequired::Nowhere;
    }
    let (gated, open): (Vec<&AuthzRule>, Vec<&AuthzRule>) = enforced
        .iter()
        .flat_map(|p| p.rules.iter())
        .partition(|r| needs_request_principal(r));
    let mut candidates = Vec::new();
    for rule in &gated {
        match rule_paths(rule) {
            None if open.is_empty() => return TokenRequired::Everywhere,
            None => {}
            Some(paths) => candidates.extend(paths.iter().filter_map(|p| pattern(p))),
        }
    }
    let mut required: Vec<PathPattern> = Vec::new();
    for candidate in candidates {
        let reachable_without_token = open.iter().any(|rule| match rule_paths(rule) {
            None => true,
            Some(paths) => paths.iter().any(|p| overlaps(&candidate, p)),
        });
        if !reachable_without_token && !required.contains(&candidate) {
            required.push(candidate);
        }
    }
    if required.is_empty() {
        TokenRequired::Nowhere
    } else {
        TokenRequired::Paths(required)
    }
}

/// The rule matches only requests with a validated JWT: every `from` names request principals,
/// or a `when` does.
fn needs_request_principal(rule: &AuthzRule) -> bool {
    let names_one =
        |c: &Condition| c.attribute == Attribute::RequestPrincipal && !c.values.is_empty();
    rule.when.iter().any(names_one)
        || (!rule.from.is_empty() && rule.from.iter().all(|f| f.iter().any(names_one)))
}

/// The path patterns a rule is limited to; `None` when it can match any path (no `to`, a `to`
/// without paths, or a `*` path). `notPaths` are ignored: they only narrow a rule.
fn rule_paths(rule: &AuthzRule) -> Option<Vec<&str>> {
    if rule.to.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for to in &rule.to {
        let paths: Vec<&str> = to
            .iter()
            .filter(|c| c.attribute == Attribute::Path)
            .flat_map(|c| c.values.iter().map(String::as_str))
            .collect();
        if paths.is_empty() || paths.contains(&"*") {
            return None;
        }
        out.extend(paths);
    }
    Some(out)
}

/// An Istio path value as a pattern route matching can state; suffix patterns (`*.png`) cannot
/// be, and require nothing.
fn pattern(path: &str) -> Option<PathPattern> {
    if path.starts_with('*') {
        None
    } else if let Some(prefix) = path.strip_suffix('*') {
        Some(PathPattern::Prefix(prefix.to_string()))
    } else {
        Some(PathPattern::Exact(path.to_string()))
    }
}

/// Whether some request path matches both `candidate` and the Istio path value `path`.
fn overlaps(candidate: &PathPattern, path: &str) -> bool {
    if let Some(suffix) = path.strip_prefix('*') {
        match candidate {
            PathPattern::Exact(a) => a.ends_with(suffix),
            PathPattern::Prefix(_) => true,
        }
    } else if let Some(prefix) = path.strip_suffix('*') {
        match candidate {
            PathPattern::Exact(a) => a.starts_with(prefix),
            PathPattern::Prefix(p) => p.starts_with(prefix) || prefix.starts_with(p.as_str()),
        }
    } else {
        match candidate {
            PathPattern::Exact(a) => a == path,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Kind, ObjectKey};

    fn cond(attribute: Attribute, values: &[&str]) -> Condition {
        Condition {
            attribute,
            values: values.iter().map(|v| v.to_string()).collect(),
            not_values: Vec::new(),
            invalid: false,
        }
    }

    /// A rule: request principals (if any) in one `from`, paths (if any) in one `to`.
    fn rule(principals: &[&str], paths: &[&str]) -> AuthzRule {
        let from = if principals.is_empty() {
            Vec::new()
        } else {
            vec![vec![cond(Attribute::RequestPrincipal, principals)]]
        };
        let to = if paths.is_empty() {
            Vec::new()
        } else {
            vec![vec![cond(Attribute::Path, paths)]]
        };
        AuthzRule {
            from,
            to,
            when: Vec::new(),
        }
    }

    fn policy(action: AuthzAction, rules: Vec<AuthzRule>) -> Arc<AuthzPolicyModel> {
        Arc::new(AuthzPolicyModel {
            key: ObjectKey::new(Kind::AuthorizationPolicy, "shop", "p"),
            selector: None,
            action,
            dry_run: false,
            rules,
        })
    }

    fn allow(rules: Vec<AuthzRule>) -> Arc<AuthzPolicyModel> {
        policy(AuthzAction::Allow, rules)
    }

    fn exact(p: &str) -> PathPattern {
        PathPattern::Exact(p.to_string())
    }

    fn prefix(p: &str) -> PathPattern {
        PathPattern::Prefix(p.to_string())
    }

    #[test]
    fn gated_paths_require_a_token_where_no_open_rule_reaches() {
        let required = token_required(&[allow(vec![
            rule(&[], &["/public/*", "/health"]),
            rule(&["https://issuer.example/alice"], &["/orders/*", "/me"]),
        ])]);
        assert_eq!(
            required,
            TokenRequired::Paths(vec![prefix("/orders/"), exact("/me")])
        );
    }

    #[test]
    fn a_path_an_open_rule_could_match_keeps_istios_allow_missing() {
        let gated = rule(&["*"], &["/api/admin", "/api/orders/*", "/img/logo.png"]);
        let logo = || exact("/img/logo.png");
        for (open, still_required) in [
            (vec!["/api/*"], vec![logo()]),
            (vec!["/api/admin"], vec![prefix("/api/orders/"), logo()]),
            (vec!["/api/orders/list"], vec![exact("/api/admin"), logo()]),
            (
                vec!["/api/orders"],
                vec![exact("/api/admin"), prefix("/api/orders/"), logo()],
            ),
            (vec!["*.png"], vec![exact("/api/admin")]),
            (vec!["*"], vec![]),
        ] {
            let required = token_required(&[allow(vec![gated.clone(), rule(&[], &open)])]);
            let expected = if still_required.is_empty() {
                TokenRequired::Nowhere
            } else {
                TokenRequired::Paths(still_required)
            };
            assert_eq!(required, expected, "open rule on {open:?}");
        }
    }

    #[test]
    fn a_gated_rule_on_every_path_requires_a_token_only_if_every_allow_rule_is_gated() {
        let everywhere = rule(&["https://issuer.example/*"], &[]);
        assert_eq!(
            token_required(&[
                allow(vec![everywhere.clone()]),
                allow(vec![rule(&["*"], &["/x"])])
            ]),
            TokenRequired::Everywhere
        );
        // An open rule anywhere keeps the gated-everywhere rule from requiring anything.
        assert_eq!(
            token_required(&[allow(vec![everywhere, rule(&[], &["/healthz"])])]),
            TokenRequired::Nowhere
        );
    }

    #[test]
    fn deny_dry_run_and_not_request_principals_require_nothing() {
        assert_eq!(
            token_required(&[policy(AuthzAction::Deny, vec![rule(&["*"], &["/a"])])]),
            TokenRequired::Nowhere
        );
        let mut dry = (*allow(vec![rule(&["*"], &["/a"])])).clone();
        dry.dry_run = true;
        assert_eq!(token_required(&[Arc::new(dry)]), TokenRequired::Nowhere);
        let mut not_principal = rule(&[], &["/a"]);
        not_principal.from = vec![vec![Condition {
            attribute: Attribute::RequestPrincipal,
            values: Vec::new(),
            not_values: vec!["*".to_string()],
            invalid: false,
        }]];
        assert_eq!(
            token_required(&[allow(vec![not_principal])]),
            TokenRequired::Nowhere
        );
    }

    #[test]
    fn every_from_must_name_request_principals_or_a_when_must() {
        let mut either = rule(&["*"], &["/a"]);
        either
            .from
            .push(vec![cond(Attribute::SourceNamespace, &["ops"])]);
        assert_eq!(
            token_required(&[allow(vec![either])]),
            TokenRequired::Nowhere
        );
        let mut when = rule(&[], &["/a"]);
        when.from = vec![vec![cond(Attribute::SourceNamespace, &["ops"])]];
        when.when = vec![cond(Attribute::RequestPrincipal, &["i/s"])];
        assert_eq!(
            token_required(&[allow(vec![when])]),
            TokenRequired::Paths(vec![exact("/a")])
        );
    }
}
