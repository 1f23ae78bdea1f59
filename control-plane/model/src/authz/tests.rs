use super::*;
use serde_json::json;

fn build(docs: Vec<serde_json::Value>) -> (AuthorizationPolicies, Vec<Finding>) {
    let objects = crate::object::objects_of(docs);
    let mut findings = Vec::new();
    (
        AuthorizationPolicies::build(&objects, "istio-system", &mut findings),
        findings,
    )
}

fn ap(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn scope_is_mesh_then_namespace_narrowed_by_selector() {
    let (aps, findings) = build(vec![
        ap(
            "shop",
            "cart-only",
            json!({"selector": {"matchLabels": {"app": "cart"}}}),
        ),
        ap("shop", "all-shop", json!({"action": "DENY", "rules": [{}]})),
        ap("istio-system", "mesh", json!({"action": "AUDIT"})),
        ap("other", "elsewhere", json!({})),
    ]);
    assert!(findings.is_empty(), "{findings:?}");
    let names = |ns: &str, l: &BTreeMap<String, String>| -> Vec<String> {
        aps.for_workload(ns, l)
            .iter()
            .map(|p| p.key.name.clone())
            .collect()
    };
    assert_eq!(
        names("shop", &labels(&[("app", "cart")])),
        ["mesh", "all-shop", "cart-only"]
    );
    assert_eq!(
        names("shop", &labels(&[("app", "web")])),
        ["mesh", "all-shop"]
    );
    assert_eq!(names("bank", &BTreeMap::new()), ["mesh"]);
}

#[test]
fn fields_become_conditions_in_istio_order() {
    let (aps, findings) = build(vec![ap(
        "shop",
        "p",
        json!({"rules": [{
            "from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "principals": ["cluster.local/ns/a/sa/b"], "notNamespaces": ["x"]}}],
            "to": [{"operation": {"ports": [8080], "paths": ["/api/*"]}}],
            "when": [{"key": "request.headers[x-user]", "values": ["alice"]}, {"key": "request.auth.claims[groups][0]", "notValues": ["guest"]}]
        }]}),
    )]);
    assert!(findings.is_empty(), "{findings:?}");
    let p = &aps.for_workload("shop", &BTreeMap::new())[0];
    let rule = &p.rules[0];
    let attrs: Vec<&Attribute> = rule.from[0].iter().map(|c| &c.attribute).collect();
    assert_eq!(
        attrs,
        [
            &Attribute::SourcePrincipal,
            &Attribute::SourceNamespace,
            &Attribute::SourceIp
        ]
    );
    assert_eq!(rule.to[0][0].attribute, Attribute::Path);
    assert_eq!(rule.to[0][1].values, ["8080"]);
    assert_eq!(
        rule.when[0].attribute,
        Attribute::RequestHeader("x-user".to_string())
    );
    assert_eq!(
        rule.when[1].attribute,
        Attribute::RequestClaim(vec!["groups".to_string(), "0".to_string()])
    );
    assert_eq!(p.rule_name(0), "ns[shop]-policy[p]-rule[0]");
}

#[test]
fn invalid_values_are_reported_with_their_field_and_dropped() {
    let (aps, findings) = build(vec![ap(
        "shop",
        "bad",
        json!({"rules": [{
            "from": [{"source": {"ipBlocks": ["10.0.0.0/8", "10.0.0.0/40", "nope"]}}],
            "to": [{"operation": {"ports": ["http"]}}],
            "when": [{"key": "request.header[x]", "values": ["1"]}, {"key": "source.ip"}]
        }]}),
    )]);
    let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.rules[0].from[0].source.ipBlocks[1]",
            "spec.rules[0].from[0].source.ipBlocks[2]",
            "spec.rules[0].to[0].operation.ports[0]",
            "spec.rules[0].when[0].key",
            "spec.rules[0].when[1]",
        ]
    );
    assert!(findings.iter().all(|f| f.severity == Severity::Error));
    let p = &aps.for_workload("shop", &BTreeMap::new())[0];
    let ip = &p.rules[0].from[0][0];
    assert!(ip.invalid);
    assert_eq!(ip.values, ["10.0.0.0/8"]);
    assert!(p.rules[0].when.iter().all(|c| c.invalid));
}

#[test]
fn custom_without_a_provider_is_an_error_and_denies_what_it_matches() {
    let (aps, findings) = build(vec![ap(
        "shop",
        "ext",
        json!({"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{"to": [{"operation": {"paths": ["/admin"]}}]}]}),
    )]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].field, "spec.provider");
    assert!(
        findings[0]
            .message
            .starts_with("CUSTOM requires an extension provider; none is configured"),
        "{}",
        findings[0].message
    );
    assert_eq!(
        aps.for_workload("shop", &BTreeMap::new())[0].action,
        AuthzAction::Custom
    );
}

#[test]
fn unknown_action_and_misspelt_fields_are_errors() {
    let (_, findings) = build(vec![ap(
        "shop",
        "typo",
        json!({"action": "ALLOWED", "rules": [{"to": [{"operation": {"path": ["/x"]}}]}]}),
    )]);
    let fields: Vec<&str> = findings.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(
        fields,
        ["spec.action", "spec.rules[0].to[0].operation.path"],
        "{findings:?}"
    );
}

#[test]
fn target_ref_policies_select_no_sidecar() {
    let (aps, findings) = build(vec![ap(
        "shop",
        "waypoint",
        json!({"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "w"}]}),
    )]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Warning);
    assert!(aps.for_workload("shop", &BTreeMap::new()).is_empty());
}

#[test]
fn dry_run_annotation_is_read() {
    let mut doc = ap("shop", "try", json!({"action": "DENY", "rules": [{}]}));
    doc["metadata"]["annotations"] = json!({"istio.io/dry-run": "true"});
    let (aps, findings) = build(vec![doc]);
    assert!(findings.is_empty());
    assert!(aps.for_workload("shop", &BTreeMap::new())[0].dry_run);
}

#[test]
fn invalid_security_policies_are_findings_of_the_snapshot_analyze_prints() {
    let text = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec:
  rules: [{when: [{key: source.ip, values: [300.1.1.1]}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: shop}
spec:
  jwtRules: [{issuer: i, jwks: "nope"}, {jwksUri: https://keys.example/jwks}]
"#;
    let (objects, errors) = crate::documents::parse(text, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects = objects.into_iter().map(|o| (o.key(), o)).collect();
    let snapshot =
        crate::Snapshot::build(1, Arc::new(objects), Arc::new(crate::MeshConfig::default()));
    let lines: Vec<String> = snapshot.findings.iter().map(|f| f.to_string()).collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with(
        "Error [IST0106] (AuthorizationPolicy shop/bad) spec.rules[0].when[0].values[0]:"
    ));
    assert!(lines[1].starts_with(
        "Error [IST0106] (AuthorizationPolicy shop/ext) spec.provider: CUSTOM requires an \
         extension provider; none is configured"
    ));
    assert!(
        lines[2]
            .starts_with("Error [IST0106] (RequestAuthentication shop/jwt) spec.jwtRules[0].jwks:")
    );
    assert!(
        lines[3].starts_with(
            "Error [IST0106] (RequestAuthentication shop/jwt) spec.jwtRules[1].issuer:"
        )
    );
    // Both models are on the snapshot, errors and all, so translation can fail closed.
    assert_eq!(
        snapshot
            .authorization_policies
            .for_workload("shop", &BTreeMap::new())
            .len(),
        2
    );
}

#[test]
fn a_wrongly_typed_field_is_a_parse_error_naming_it() {
    let err = Object::parse(ap(
        "shop",
        "p",
        json!({"rules": [{"from": [{"source": {"principals": "cluster.local/ns/a/sa/b"}}]}]}),
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("AuthorizationPolicy shop/p"), "{err}");
    assert!(err.contains("spec.rules[0].from[0].source"), "{err}");
}

#[test]
fn cidrs_and_ports_parse() {
    assert_eq!(
        parse_cidr("10.1.0.0/16").unwrap(),
        ("10.1.0.0".parse().unwrap(), 16)
    );
    assert_eq!(parse_cidr("::1").unwrap().1, 128);
    assert!(parse_cidr("10.0.0.1/33").is_err());
    assert_eq!(parse_port("65535"), Ok(65535));
    assert!(parse_port("65536").is_err());
}
