//! RequestAuthentications, validated, and the JWT rules that apply to a workload (same scope as
//! AuthorizationPolicy: root namespace, then the workload's namespace, narrowed by `selector`).
//!
//! Keys are never fetched by proxies: a rule's JWKS is inline (`jwks`), or fetched by meshd from
//! `jwksUri` and handed in with [`RequestAuthentications::apply_fetched_jwks`]. A rule whose keys
//! are unknown still configures its issuer, with keys that verify nothing: tokens from it are
//! refused (401), as istiod does when it cannot fetch a JWKS.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::authz::in_scope;
use crate::finding::Report;
use crate::finding::{Finding, REFERENCED_NOT_FOUND, Severity};
use crate::input::security::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthentication};
use crate::object::{Kind, Object, ObjectKey};
use crate::source::JwksState;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum JwksSource {
    /// A JWKS document, checked to be JSON with a `keys` list.
    Inline(String),
    /// Fetched by meshd.
    Uri(String),
    /// Nothing usable: tokens from this issuer are refused.
    Unusable,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JwtRuleModel {
    /// Where the rule is in its RequestAuthentication (`spec.jwtRules[<i>]`), for findings.
    #[serde(skip)]
    pub field: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    /// Where the token is looked for; all empty means Envoy's defaults (`Authorization: Bearer`,
    /// `access_token` query parameter), as in Istio.
    pub from_headers: Vec<JwtHeader>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    pub output_payload_to_header: String,
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    pub forward_original_token: bool,
    /// Claims split at spaces into lists before matching: `permission`, `scope` and any named.
    pub space_delimited_claims: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestAuthnModel {
    pub key: ObjectKey,
    pub selector: Option<BTreeMap<String, String>>,
    pub jwt_rules: Vec<JwtRuleModel>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestAuthentications {
    policies: Vec<Arc<RequestAuthnModel>>,
    root_namespace: String,
    /// JWKS documents meshd fetched, by `jwksUri`.
    #[serde(skip)]
    fetched: BTreeMap<String, String>,
}

impl RequestAuthentications {
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        root_namespace: &str,
        findings: &mut Vec<Finding>,
    ) -> Self {
        let mut policies = Vec::new();
        for obj in objects.values() {
            let Object::RequestAuthentication(ra) = obj else {
                continue;
            };
            if let Some(model) = validate(ra, findings) {
                policies.push(Arc::new(model));
            }
        }
        super::sort_mesh_wide_first(&mut policies, root_namespace, |p| &p.key);
        RequestAuthentications {
            policies,
            root_namespace: root_namespace.to_string(),
            fetched: BTreeMap::new(),
        }
    }

    /// The accepted policy of that key, if it is one.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<RequestAuthnModel>> {
        self.policies.iter().find(|p| &p.key == key)
    }

    /// The JWT rules for a workload with `labels` in `namespace`, mesh-wide ones first.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&JwtRuleModel> {
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
            .flat_map(|p| p.jwt_rules.iter())
            .collect()
    }

    /// Every `jwksUri` in use: what meshd must fetch.
    pub fn jwks_uris(&self) -> BTreeSet<String> {
        self.policies
            .iter()
            .flat_map(|p| p.jwt_rules.iter())
            .filter_map(|r| match &r.jwks {
                JwksSource::Uri(u) => Some(u.clone()),
                _ => None,
            })
            .collect()
    }

    /// Hands in what meshd fetched for [`Self::jwks_uris`], by URI; returns a finding for each
    /// rule whose `jwksUri` has no keys because fetching failed. (Not fetched yet is no finding:
    /// `meshd analyze` never fetches, and must judge like the server.)
    pub fn apply_fetched_jwks(&mut self, jwks: &BTreeMap<String, JwksState>) -> Vec<Finding> {
        self.fetched = jwks
            .iter()
            .filter_map(|(uri, state)| Some((uri.clone(), state.keys.clone()?)))
            .collect();
        let mut findings = Vec::new();
        for policy in &self.policies {
            for rule in &policy.jwt_rules {
                let JwksSource::Uri(uri) = &rule.jwks else {
                    continue;
                };
                let Some(JwksState {
                    keys: None,
                    error: Some(error),
                }) = jwks.get(uri)
                else {
                    continue;
                };
                findings.push(Finding::new(
                    Severity::Warning,
                    REFERENCED_NOT_FOUND,
                    &policy.key,
                    &format!("{}.jwksUri", rule.field),
                    format!(
                        "the JWKS at {uri:?} could not be fetched ({error}); tokens from {:?} \
                         are refused until it can be",
                        rule.issuer
                    ),
                ));
            }
        }
        findings
    }

    /// The keys to verify `rule`'s tokens with; `None` if they are not known.
    pub fn jwks<'a>(&'a self, rule: &'a JwtRuleModel) -> Option<&'a str> {
        match &rule.jwks {
            JwksSource::Inline(doc) => Some(doc),
            JwksSource::Uri(uri) => self.fetched.get(uri).map(String::as_str),
            JwksSource::Unusable => None,
        }
    }
}

fn validate(ra: &RequestAuthentication, findings: &mut Vec<Finding>) -> Option<RequestAuthnModel> {
    let key = ObjectKey::new(
        Kind::RequestAuthentication,
        ra.metadata.namespace.clone().unwrap_or_default(),
        ra.metadata.name.clone(),
    );
    let mut report = Report::new(&key);
    report.unknown_fields("spec", &ra.spec.unknown);
    super::check_selector(
        ra.spec.selector.as_ref(),
        ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty(),
        &mut report,
    );
    let mut jwt_rules = Vec::new();
    for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
        if let Some(r) = validate_rule(rule, &format!("spec.jwtRules[{i}]"), &mut report) {
            jwt_rules.push(r);
        }
    }
    let targeted = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
    if targeted {
        report.warning(
            "spec.targetRef",
            "targetRef attaches the policy to waypoints or gateways, which meshd does not serve; \
             it applies to no sidecar"
                .to_string(),
        );
    }
    report.finish(findings);
    if targeted {
        return None;
    }
    Some(RequestAuthnModel {
        selector: ra
            .spec
            .selector
            .as_ref()
            .map(|s| s.labels.clone())
            .filter(|l| !l.is_empty()),
        key,
        jwt_rules,
    })
}

fn validate_rule(rule: &JwtRule, field: &str, report: &mut Report<'_>) -> Option<JwtRuleModel> {
    report.unknown_fields(field, &rule.unknown);
    if rule.issuer.is_empty() {
        // Without an issuer Envoy would accept any issuer's token signed by these keys.
        report.error(
            &format!("{field}.issuer"),
            "issuer must be set; the rule is ignored".to_string(),
        );
        return None;
    }
    let jwks = if !rule.jwks.is_empty() {
        match check_jwks(&rule.jwks) {
            Ok(()) => JwksSource::Inline(rule.jwks.clone()),
            Err(e) => {
                report.error(
                    &format!("{field}.jwks"),
                    format!("{e}; tokens from {:?} are refused", rule.issuer),
                );
                JwksSource::Unusable
            }
        }
    } else if !rule.jwks_uri.is_empty() {
        match check_uri(&rule.jwks_uri) {
            Ok(()) => JwksSource::Uri(rule.jwks_uri.clone()),
            Err(e) => {
                report.error(
                    &format!("{field}.jwksUri"),
                    format!("{e}; tokens from {:?} are refused", rule.issuer),
                );
                JwksSource::Unusable
            }
        }
    } else {
        report.warning(
            field,
            format!(
                "neither jwks nor jwksUri is set, and meshd does not read OpenID discovery \
                 documents; tokens from {:?} are refused",
                rule.issuer
            ),
        );
        JwksSource::Unusable
    };
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            report.error(
                &format!("{field}.audiences[{i}]"),
                "empty value".to_string(),
            );
        }
    }
    let from_headers: Vec<JwtHeader> = rule
        .from_headers
        .iter()
        .enumerate()
        .filter(|(i, h)| {
            let ok = !h.name.is_empty();
            if !ok {
                report.error(
                    &format!("{field}.fromHeaders[{i}].name"),
                    "header name must be set".to_string(),
                );
            }
            ok
        })
        .map(|(_, h)| h.clone())
        .collect();
    let non_empty = |list: &[String], name: &str, report: &mut Report<'_>| -> Vec<String> {
        list.iter()
            .enumerate()
            .filter(|(i, v)| {
                if v.is_empty() {
                    report.error(&format!("{field}.{name}[{i}]"), "empty value".to_string());
                }
                !v.is_empty()
            })
            .map(|(_, v)| v.clone())
            .collect()
    };
    if let Some(t) = &rule.timeout
        && let Err(e) = crate::syntax::duration_ms(t)
    {
        report.error(&format!("{field}.timeout"), e);
    }
    let from_params = non_empty(&rule.from_params, "fromParams", report);
    let from_cookies = non_empty(&rule.from_cookies, "fromCookies", report);
    let output_claim_to_headers: Vec<ClaimToHeader> = rule
        .output_claim_to_headers
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            if c.header.is_empty() || c.claim.is_empty() {
                report.error(
                    &format!("{field}.outputClaimToHeaders[{i}]"),
                    "header and claim must be set".to_string(),
                );
                return false;
            }
            match crate::syntax::header::strict_name(&c.header) {
                Ok(()) => true,
                Err(e) => {
                    report.error(&format!("{field}.outputClaimToHeaders[{i}].header"), e);
                    false
                }
            }
        })
        .map(|(_, c)| c.clone())
        .collect();
    Some(JwtRuleModel {
        field: field.to_string(),
        issuer: rule.issuer.clone(),
        audiences: rule
            .audiences
            .iter()
            .filter(|a| !a.is_empty())
            .cloned()
            .collect(),
        jwks,
        from_headers,
        from_params,
        from_cookies,
        output_payload_to_header: rule.output_payload_to_header.clone(),
        output_claim_to_headers,
        forward_original_token: rule.forward_original_token,
        space_delimited_claims: ["permission", "scope"]
            .iter()
            .map(|c| c.to_string())
            .chain(
                rule.space_delimited_claims
                    .iter()
                    .filter(|c| !c.is_empty())
                    .cloned(),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    })
}

/// A JWKS is a JSON object with a `keys` list holding at least one key Envoy can use: Envoy's
/// JWT library skips keys it cannot read, and refuses the whole filter when none is left.
pub fn check_jwks(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("jwks is not valid JSON: {e}"))?;
    match value.get("keys") {
        Some(serde_json::Value::Array(keys)) if keys.iter().any(usable_key) => Ok(()),
        Some(serde_json::Value::Array(_)) => {
            Err("jwks holds no usable key (RSA, EC, oct or OKP with its members)".to_string())
        }
        _ => Err("jwks is not a JWKS: no \"keys\" list".to_string()),
    }
}

/// A key with a type Envoy's JWT library knows and the members that type needs, each a
/// non-empty base64url string (jwt_verify_lib's `Jwks::createFrom`).
fn usable_key(key: &serde_json::Value) -> bool {
    let member = |name: &str| {
        key.get(name)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|v| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
            })
    };
    let curve = |allowed: &[&str]| {
        key.get("crv")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|c| allowed.contains(&c))
    };
    match key.get("kty").and_then(serde_json::Value::as_str) {
        Some("RSA") => member("n") && member("e"),
        Some("EC") => curve(&["P-256", "P-384", "P-521"]) && member("x") && member("y"),
        Some("oct") => member("k"),
        Some("OKP") => curve(&["Ed25519"]) && member("x"),
        _ => false,
    }
}

fn check_uri(uri: &str) -> Result<(), String> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))
        .ok_or_else(|| format!("{uri:?} is not an http(s) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{uri:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"xyz","kid":"k1"}]}"#;

    fn build(docs: Vec<serde_json::Value>) -> (RequestAuthentications, Vec<Finding>) {
        let objects = crate::object::objects_of(docs);
        let mut findings = Vec::new();
        (
            RequestAuthentications::build(&objects, "istio-system", &mut findings),
            findings,
        )
    }

    fn ra(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "security.istio.io/v1beta1", "kind": "RequestAuthentication", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    #[test]
    fn rules_apply_by_scope_and_keep_their_token_locations() {
        let (ras, findings) = build(vec![
            ra(
                "shop",
                "cart",
                json!({"selector": {"matchLabels": {"app": "cart"}}, "jwtRules": [{
                    "issuer": "https://issuer.example", "jwks": JWKS,
                    "fromHeaders": [{"name": "x-jwt", "prefix": "Token "}], "fromParams": ["t"],
                    "outputPayloadToHeader": "x-payload", "forwardOriginalToken": true
                }]}),
            ),
            ra(
                "istio-system",
                "mesh",
                json!({"jwtRules": [{"issuer": "mesh-issuer", "jwksUri": "https://keys.example/jwks.json"}]}),
            ),
        ]);
        assert!(findings.is_empty(), "{findings:?}");
        let cart = BTreeMap::from([("app".to_string(), "cart".to_string())]);
        let rules = ras.for_workload("shop", &cart);
        let issuers: Vec<&str> = rules.iter().map(|r| r.issuer.as_str()).collect();
        assert_eq!(issuers, ["mesh-issuer", "https://issuer.example"]);
        assert_eq!(rules[1].from_headers[0].prefix, "Token ");
        assert!(rules[1].forward_original_token);
        assert_eq!(ras.for_workload("shop", &BTreeMap::new()).len(), 1);
        assert_eq!(
            ras.jwks_uris().into_iter().collect::<Vec<_>>(),
            ["https://keys.example/jwks.json"]
        );
    }

    #[test]
    fn fetched_keys_are_used_for_their_uri() {
        let (mut ras, _) = build(vec![ra(
            "shop",
            "r",
            json!({"jwtRules": [{"issuer": "i", "jwksUri": "https://keys.example/jwks.json"}]}),
        )]);
        let rule = ras.for_workload("shop", &BTreeMap::new())[0].clone();
        assert_eq!(ras.jwks(&rule), None);
        let findings = ras.apply_fetched_jwks(&BTreeMap::from([(
            "https://keys.example/jwks.json".to_string(),
            JwksState {
                keys: Some(JWKS.to_string()),
                error: Some("a later refresh failed".to_string()),
            },
        )]));
        assert!(
            findings.is_empty(),
            "keys fetched once are kept: {findings:?}"
        );
        assert_eq!(ras.jwks(&rule), Some(JWKS));
    }

    #[test]
    fn an_unfetchable_jwks_uri_is_a_warning_on_its_rule() {
        let (mut ras, _) = build(vec![ra(
            "shop",
            "r",
            json!({"jwtRules": [{"jwks": JWKS}, {"issuer": "i", "jwks": JWKS}, {"issuer": "j", "jwksUri": "http://keys.example/jwks.json"}]}),
        )]);
        let findings = ras.apply_fetched_jwks(&BTreeMap::from([(
            "http://keys.example/jwks.json".to_string(),
            JwksState {
                keys: None,
                error: Some("connection refused".to_string()),
            },
        )]));
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert_eq!(findings[0].severity, Severity::Warning);
        assert_eq!(findings[0].field, "spec.jwtRules[2].jwksUri");
        assert!(
            findings[0].message.contains("connection refused"),
            "{}",
            findings[0].message
        );
        assert!(
            ras.apply_fetched_jwks(&BTreeMap::new()).is_empty(),
            "not fetched yet is no finding"
        );
    }

    #[test]
    fn a_rule_without_issuer_or_with_bad_jwks_is_an_error() {
        let (ras, findings) = build(vec![ra(
            "shop",
            "bad",
            json!({"jwtRules": [{"jwks": JWKS}, {"issuer": "i", "jwks": "{not json"}, {"issuer": "j", "jwks": "{}"}]}),
        )]);
        let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.jwtRules[0].issuer",
                "spec.jwtRules[1].jwks",
                "spec.jwtRules[2].jwks"
            ]
        );
        assert!(findings.iter().all(|f| f.severity == Severity::Error));
        assert!(
            findings[1].message.contains("not valid JSON"),
            "{}",
            findings[1].message
        );
        let rules = ras.for_workload("shop", &BTreeMap::new());
        assert_eq!(rules.len(), 2);
        assert!(rules.iter().all(|r| r.jwks == JwksSource::Unusable));
    }

    #[test]
    fn a_jwks_needs_one_key_envoy_can_read() {
        assert!(check_jwks(JWKS).is_ok());
        for bad in [
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#,
            r#"{"keys":[{"kty":"EC","crv":"P-999","x":"AA","y":"AA"}]}"#,
            r#"{"keys":[{"kty":"RSA","n":"not base64!","e":"AQAB"}]}"#,
            r#"{"keys":["x", 1]}"#,
        ] {
            let err = check_jwks(bad).unwrap_err();
            assert!(err.contains("no usable key"), "{bad}: {err}");
        }
        // Envoy skips the keys it cannot read as long as one is left.
        assert!(check_jwks(r#"{"keys":[{"kty":"XYZ"},{"kty":"oct","k":"c2VjcmV0"}]}"#).is_ok());
    }

    #[test]
    fn a_rule_without_keys_warns_and_refuses_its_tokens() {
        let (ras, findings) = build(vec![ra(
            "shop",
            "r",
            json!({"jwtRules": [{"issuer": "i"}]}),
        )]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].severity, Severity::Warning);
        let rule = ras.for_workload("shop", &BTreeMap::new())[0];
        assert_eq!(ras.jwks(rule), None);
    }
}
