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
    let (a, _) =
        rule("host: a\nsubsets: [{name: v1}]\ntrafficPolicy: {loadBalancer: {simple: RANDOM}}\n");
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
