use super::*;
use crate::object::Kind;
use crate::registry::Registry;
use serde_json::json;

/// Telemetries as a snapshot builds them, findings about references left out.
fn build(docs: Vec<serde_json::Value>) -> (Telemetries, Vec<Finding>) {
    let objects = crate::object::objects_of(docs);
    let mut findings = Vec::new();
    let telemetries = Telemetries::build(
        &objects,
        &MeshConfig::default(),
        &Registry::default(),
        &mut findings,
    );
    findings.retain(|f| f.code != crate::finding::REFERENCED_NOT_FOUND);
    (telemetries, findings)
}

fn telemetry(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn mesh(yaml: &str) -> MeshConfig {
    MeshConfig::from_yaml(yaml).unwrap()
}

fn providers(choices: &[LoggingChoice]) -> Vec<(&str, bool)> {
    choices
        .iter()
        .map(|c| (c.provider.as_str(), c.disabled))
        .collect()
}

#[test]
fn the_workload_telemetry_wins_over_namespace_and_mesh() {
    let (telemetries, findings) = build(vec![
        telemetry(
            "istio-system",
            "mesh-default",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        telemetry(
            "shop",
            "namespace",
            json!({"accessLogging": [{"providers": [{"name": "json-file"}]}]}),
        ),
        telemetry(
            "shop",
            "quiet-cart",
            json!({"selector": {"matchLabels": {"app": "cart"}}, "accessLogging": [{"providers": [{"name": "json-file"}], "disabled": true}]}),
        ),
    ]);
    assert!(findings.is_empty(), "{findings:?}");
    let mesh = mesh(
        "extensionProviders:\n- name: json-file\n  envoyFileAccessLog: {path: /var/log/mesh/a.json}\n",
    );
    let cart = labels(&[("app", "cart")]);
    let web = labels(&[("app", "web")]);

    let blog = telemetries.for_workload("blog", &web);
    assert_eq!(
        providers(&blog.access_logging(&mesh, WorkloadMode::Server).unwrap()),
        [("envoy", false)]
    );
    let shop_web = telemetries.for_workload("shop", &web);
    assert_eq!(
        providers(
            &shop_web
                .access_logging(&mesh, WorkloadMode::Client)
                .unwrap()
        ),
        [("json-file", false)]
    );
    let shop_cart = telemetries.for_workload("shop", &cart);
    assert_eq!(
        providers(
            &shop_cart
                .access_logging(&mesh, WorkloadMode::Client)
                .unwrap()
        ),
        [("json-file", true)]
    );
    assert_eq!(
        telemetries.workload_keys("shop", &cart),
        [ObjectKey::new(Kind::Telemetry, "shop", "quiet-cart")]
    );
    assert!(telemetries.workload_keys("shop", &web).is_empty());
}

#[test]
fn without_telemetry_or_default_providers_the_mesh_config_decides() {
    let (telemetries, _) = build(vec![]);
    let applied = telemetries.for_workload("shop", &labels(&[]));
    assert_eq!(
        applied.access_logging(&MeshConfig::default(), WorkloadMode::Client),
        None
    );
    assert_eq!(applied.tracing(&MeshConfig::default()), None);
    // A default provider applies everywhere a Telemetry does not say otherwise.
    let with_default = mesh("defaultProviders:\n  accessLogging: [envoy]\n");
    assert_eq!(
        providers(
            &applied
                .access_logging(&with_default, WorkloadMode::Server)
                .unwrap()
        ),
        [("envoy", false)]
    );
}

#[test]
fn match_mode_limits_a_rule_to_client_or_server_traffic() {
    let (telemetries, _) = build(vec![telemetry(
        "shop",
        "server-only",
        json!({"accessLogging": [{"match": {"mode": "SERVER"}, "providers": [{"name": "envoy"}]}]}),
    )]);
    let applied = telemetries.for_workload("shop", &labels(&[]));
    let mesh = MeshConfig::default();
    assert_eq!(
        providers(&applied.access_logging(&mesh, WorkloadMode::Server).unwrap()),
        [("envoy", false)]
    );
    assert!(
        applied
            .access_logging(&mesh, WorkloadMode::Client)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn disabling_without_a_provider_disables_the_inherited_ones() {
    let (telemetries, _) = build(vec![
        telemetry(
            "istio-system",
            "mesh-default",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}], "filter": {"expression": "response.code >= 400"}}]}),
        ),
        telemetry(
            "shop",
            "off",
            json!({"accessLogging": [{"disabled": true}]}),
        ),
    ]);
    let mesh = MeshConfig::default();
    let blog = telemetries.for_workload("blog", &labels(&[]));
    let choice = blog.access_logging(&mesh, WorkloadMode::Client).unwrap();
    assert_eq!(choice[0].filter.as_deref(), Some("response.code >= 400"));
    let shop = telemetries.for_workload("shop", &labels(&[]));
    assert_eq!(
        providers(&shop.access_logging(&mesh, WorkloadMode::Client).unwrap()),
        [("envoy", true)]
    );
}

#[test]
fn unknown_providers_are_left_out() {
    let (telemetries, _) = build(vec![telemetry(
        "shop",
        "typo",
        json!({"accessLogging": [{"providers": [{"name": "envoi"}]}]}),
    )]);
    let applied = telemetries.for_workload("shop", &labels(&[]));
    assert!(
        applied
            .access_logging(&MeshConfig::default(), WorkloadMode::Client)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn tracing_takes_the_most_specific_sampling_and_provider() {
    let (telemetries, findings) = build(vec![
        telemetry(
            "istio-system",
            "mesh-default",
            json!({"tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 10.0}]}),
        ),
        telemetry(
            "shop",
            "all",
            json!({"selector": {"matchLabels": {"app": "cart"}}, "tracing": [{"randomSamplingPercentage": 100.0, "customTags": {"team": {"literal": {"value": "shop"}}}}]}),
        ),
        telemetry(
            "shop",
            "client-off",
            json!({"selector": {"matchLabels": {"app": "web"}}, "tracing": [{"match": {"mode": "CLIENT"}, "disableSpanReporting": true}]}),
        ),
    ]);
    assert!(findings.is_empty(), "{findings:?}");
    let mesh = mesh(
        "extensionProviders:\n- name: zipkin\n  zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}\n",
    );
    let blog = telemetries
        .for_workload("blog", &labels(&[]))
        .tracing(&mesh)
        .unwrap();
    assert_eq!(blog.client.provider.as_deref(), Some("zipkin"));
    assert_eq!(blog.server.random_sampling_percentage, Some(10.0));
    let cart = telemetries
        .for_workload("shop", &labels(&[("app", "cart")]))
        .tracing(&mesh)
        .unwrap();
    assert_eq!(cart.client.random_sampling_percentage, Some(100.0));
    assert_eq!(cart.client.provider.as_deref(), Some("zipkin"));
    assert!(
        cart.server
            .custom_tags
            .as_ref()
            .unwrap()
            .contains_key("team")
    );
    let web = telemetries
        .for_workload("shop", &labels(&[("app", "web")]))
        .tracing(&mesh)
        .unwrap();
    assert!(web.client.disabled);
    assert!(!web.server.disabled);
    // A provider the mesh config does not define: nothing to report to, so no tracing.
    let none = telemetries
        .for_workload("blog", &labels(&[]))
        .tracing(&MeshConfig::default())
        .unwrap();
    assert!(none.client.disabled && none.server.disabled);
}

#[test]
fn bad_input_is_refused_with_istiods_words() {
    let (telemetries, findings) = build(vec![
        telemetry(
            "shop",
            "bad",
            json!({
                "selector": {"matchLabels": {"app": "*"}},
                "accessLogging": [{"providers": [{"name": ""}], "filter": {"expression": "response.code >="}}],
                "tracing": [{"randomSamplingPercentage": 120.0, "customTags": {"t": {"literal": {"value": ""}}}}],
            }),
        ),
        telemetry("shop", "typo", json!({"acessLogging": []})),
    ]);
    assert!(telemetries.is_empty());
    let at: Vec<(&str, &str)> = findings
        .iter()
        .map(|f| (f.object.name.as_str(), f.field.as_str()))
        .collect();
    for expected in [
        ("bad", "spec.selector.matchLabels"),
        ("bad", "spec.accessLogging[0].providers[0].name"),
        ("bad", "spec.accessLogging[0].filter.expression"),
        ("bad", "spec.tracing[0].randomSamplingPercentage"),
        ("bad", "spec.tracing[0].customTags.t.literal.value"),
        ("typo", "spec.acessLogging"),
    ] {
        assert!(at.contains(&expected), "{expected:?} not in {findings:#?}");
    }
}

#[test]
fn two_namespace_wide_telemetries_are_an_error_and_the_first_by_name_applies() {
    let (telemetries, findings) = build(vec![
        telemetry(
            "shop",
            "b",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}], "disabled": true}]}),
        ),
        telemetry(
            "shop",
            "a",
            json!({"accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
    ]);
    assert_eq!(findings.len(), 2, "{findings:?}");
    assert!(
        findings
            .iter()
            .all(|f| f.code == validate::MULTIPLE_WITHOUT_SELECTOR)
    );
    let applied = telemetries.for_workload("shop", &labels(&[]));
    assert_eq!(
        providers(
            &applied
                .access_logging(&MeshConfig::default(), WorkloadMode::Client)
                .unwrap()
        ),
        [("envoy", false)]
    );
}

#[test]
fn analyzers_report_selectors_without_pods_empty_providers_and_unknown_ones() {
    let objects = crate::object::objects_of(vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}}, "status": {"podIP": "10.0.0.1"}}),
        telemetry(
            "shop",
            "web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        telemetry(
            "shop",
            "nobody",
            json!({"selector": {"matchLabels": {"app": "gone"}}, "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        telemetry("shop", "no-provider", json!({"accessLogging": [{}]})),
        telemetry(
            "shop",
            "typo",
            json!({"selector": {"matchLabels": {"app": "web"}}, "tracing": [{"providers": [{"name": "zipkn"}]}]}),
        ),
    ]);
    let mut findings = Vec::new();
    let mut registry_findings = Vec::new();
    let registry = Registry::build(&objects, &mut registry_findings);
    Telemetries::build(&objects, &MeshConfig::default(), &registry, &mut findings);
    let codes: Vec<(&str, &str, &str)> = findings
        .iter()
        .map(|f| (f.object.name.as_str(), f.code, f.field.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (
                "no-provider",
                validate::INVALID_PROVIDER,
                "spec.accessLogging"
            ),
            ("nobody", "IST0101", "spec.selector"),
            ("typo", "IST0101", "spec.tracing[0].providers"),
        ],
        "{findings:#?}"
    );
}

#[test]
fn a_telemetry_targeting_a_gateway_api_gateway_applies_to_its_routers_only() {
    let (telemetries, findings) = build(vec![
        telemetry(
            "infra",
            "web-logs",
            json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "web"}],
                   "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
        telemetry(
            "infra",
            "waypoint",
            json!({"targetRefs": [{"kind": "Service", "group": "", "name": "waypoint"}],
                   "accessLogging": [{"providers": [{"name": "envoy"}]}]}),
        ),
    ]);
    let router = labels(&[("gateway.networking.k8s.io/gateway-name", "web")]);
    let keys = |ns: &str, l: &BTreeMap<String, String>| -> Vec<String> {
        telemetries
            .workload_keys(ns, l)
            .into_iter()
            .map(|k| k.name)
            .collect()
    };
    assert_eq!(keys("infra", &router), ["web-logs"]);
    let applied = telemetries.for_workload("infra", &router);
    assert_eq!(
        applied
            .access_logging(&MeshConfig::default(), WorkloadMode::Client)
            .as_deref()
            .map(providers),
        Some(vec![("envoy", false)])
    );
    // Another Gateway's routers, the same name elsewhere, and sidecars: not targeted.
    let other = labels(&[("gateway.networking.k8s.io/gateway-name", "other")]);
    assert!(keys("infra", &other).is_empty());
    assert!(keys("apps", &router).is_empty());
    assert!(keys("infra", &labels(&[("app", "web")])).is_empty());
    // A waypoint target is reported: meshd serves none.
    assert!(
        findings
            .iter()
            .any(|f| f.object.name == "waypoint" && f.field == "spec.targetRefs[0]"),
        "{findings:?}"
    );
    assert!(
        !findings.iter().any(|f| f.object.name == "web-logs"),
        "{findings:?}"
    );
}
