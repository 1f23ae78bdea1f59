use std::collections::BTreeMap;

use serde_json::json;

use crate::finding::{Finding, Severity};
use crate::mesh_config::MeshConfig;
use crate::registry::Registry;
use crate::telemetry::{IstioMetric, MetricsChoice, SideMetrics, Telemetries};

fn build_with(docs: Vec<serde_json::Value>, mesh: &MeshConfig) -> (Telemetries, Vec<Finding>) {
    let objects = crate::object::objects_of(docs);
    let mut findings = Vec::new();
    let telemetries = Telemetries::build(&objects, mesh, &Registry::default(), &mut findings);
    // Selectors match no pod here.
    findings.retain(|f| f.field != "spec.selector");
    (telemetries, findings)
}

fn build(docs: Vec<serde_json::Value>) -> Telemetries {
    let (telemetries, findings) = build_with(docs, &MeshConfig::default());
    assert!(findings.is_empty(), "{findings:?}");
    telemetries
}

fn telemetry(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

fn app(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), name.to_string())])
}

fn choice(t: &Telemetries, ns: &str, name: &str, mesh: &MeshConfig) -> MetricsChoice {
    t.for_workload(ns, &app(name)).metrics(mesh)
}

fn without(metrics: &[IstioMetric]) -> SideMetrics {
    let mut side = SideMetrics::all();
    for m in metrics {
        side.metrics.remove(m);
    }
    side
}

fn disable_all(mode: &str) -> serde_json::Value {
    json!([{"providers": [{"name": "prometheus"}], "overrides": [{"match": {"metric": "ALL_METRICS", "mode": mode}, "disabled": true}]}])
}

#[test]
fn without_telemetry_every_metric_is_reported_on_both_sides() {
    let t = build(vec![]);
    let c = choice(&t, "shop", "web", &MeshConfig::default());
    assert_eq!(c.client, SideMetrics::all());
    assert_eq!(c.server, SideMetrics::all());
}

#[test]
fn default_providers_decide_where_no_telemetry_speaks() {
    let t = build(vec![]);
    let none = MeshConfig::from_yaml("defaultProviders: {metrics: []}").unwrap();
    assert_eq!(choice(&t, "shop", "web", &none), MetricsChoice::default());
    // Another default (a tracer) leaves metrics on.
    let tracing = MeshConfig::from_yaml("defaultProviders: {tracing: [zipkin]}").unwrap();
    assert_eq!(tracing.default_providers.metrics, ["prometheus"]);
    // A provider of kind prometheus under another name reports them too; one of another kind
    // does not.
    let own = MeshConfig::from_yaml(
        "extensionProviders: [{name: prom, prometheus: {}}]\ndefaultProviders: {metrics: [prom]}",
    )
    .unwrap();
    assert_eq!(choice(&t, "shop", "web", &own).server, SideMetrics::all());
    let other = MeshConfig::from_yaml("defaultProviders: {metrics: [stackdriver]}").unwrap();
    assert_eq!(choice(&t, "shop", "web", &other), MetricsChoice::default());
    // With no default provider, a Telemetry naming prometheus turns them on.
    let t = build(vec![telemetry(
        "istio-system",
        "mesh",
        json!({"metrics": [{"providers": [{"name": "prometheus"}]}]}),
    )]);
    assert_eq!(choice(&t, "shop", "web", &none).client, SideMetrics::all());
}

#[test]
fn the_workload_telemetry_wins_over_namespace_and_mesh() {
    let t = build(vec![
        telemetry(
            "istio-system",
            "mesh",
            json!({"metrics": disable_all("CLIENT_AND_SERVER")}),
        ),
        // The namespace brings them back: an override of any metric re-enables a side.
        telemetry(
            "shop",
            "shop",
            json!({"metrics": [{"overrides": [{"match": {"metric": "REQUEST_SIZE"}, "disabled": true}]}]}),
        ),
        telemetry(
            "shop",
            "quiet-web",
            json!({"selector": {"matchLabels": {"app": "web"}}, "metrics": disable_all("CLIENT_AND_SERVER")}),
        ),
    ]);
    let mesh = MeshConfig::default();
    assert_eq!(choice(&t, "blog", "web", &mesh), MetricsChoice::default());
    let cart = choice(&t, "shop", "cart", &mesh);
    assert_eq!(cart.client, without(&[IstioMetric::RequestSize]));
    assert_eq!(cart.server, without(&[IstioMetric::RequestSize]));
    assert_eq!(choice(&t, "shop", "web", &mesh), MetricsChoice::default());
}

#[test]
fn a_mode_limits_an_override_to_its_side() {
    let t = build(vec![
        telemetry(
            "shop",
            "client-off",
            json!({"selector": {"matchLabels": {"app": "web"}}, "metrics": disable_all("CLIENT")}),
        ),
        telemetry(
            "shop",
            "server-tcp-off",
            json!({"selector": {"matchLabels": {"app": "cart"}}, "metrics": [{"overrides": [
                {"match": {"metric": "TCP_SENT_BYTES", "mode": "SERVER"}, "disabled": true},
                {"match": {"metric": "TCP_RECEIVED_BYTES"}, "disabled": true},
                {"match": {"metric": "TCP_RECEIVED_BYTES", "mode": "CLIENT"}, "disabled": false}
            ]}]}),
        ),
    ]);
    let mesh = MeshConfig::default();
    let web = choice(&t, "shop", "web", &mesh);
    assert!(web.client.is_off());
    assert_eq!(web.server, SideMetrics::all());
    let cart = choice(&t, "shop", "cart", &mesh);
    assert_eq!(cart.client, SideMetrics::all());
    assert_eq!(
        cart.server,
        without(&[IstioMetric::TcpSentBytes, IstioMetric::TcpReceivedBytes])
    );
}

#[test]
fn providers_out_of_scope_are_ignored() {
    // The workload names another provider: prometheus is no longer in scope there.
    let (t, _) = build_with(
        vec![
            telemetry(
                "istio-system",
                "mesh",
                json!({"metrics": [{"providers": [{"name": "prometheus"}]}]}),
            ),
            telemetry(
                "shop",
                "sd",
                json!({"selector": {"matchLabels": {"app": "web"}}, "metrics": [{"providers": [{"name": "stackdriver"}]}]}),
            ),
        ],
        &MeshConfig::default(),
    );
    let mesh = MeshConfig::default();
    assert_eq!(choice(&t, "shop", "web", &mesh), MetricsChoice::default());
    assert_eq!(choice(&t, "shop", "cart", &mesh).client, SideMetrics::all());
}

#[test]
fn removed_labels_are_kept_per_metric_and_a_later_override_replaces_an_earlier_one() {
    let t = build(vec![telemetry(
        "shop",
        "shop",
        json!({"metrics": [{"overrides": [
            {"tagOverrides": {"response_flags": {"operation": "REMOVE"}}},
            {"match": {"metric": "REQUEST_COUNT", "mode": "SERVER"}, "tagOverrides": {"source_principal": {"operation": "REMOVE"}}}
        ]}]}),
    )]);
    let c = choice(&t, "shop", "web", &MeshConfig::default());
    let count = c.server.labels(IstioMetric::RequestCount).unwrap();
    assert_eq!(
        count.removed.iter().collect::<Vec<_>>(),
        ["response_flags", "source_principal"]
    );
    let client_count = c.client.labels(IstioMetric::RequestCount).unwrap();
    assert_eq!(
        client_count.removed.iter().collect::<Vec<_>>(),
        ["response_flags"]
    );
    assert!(c.server.reports(IstioMetric::TcpSentBytes));
}

#[test]
fn unknown_metrics_modes_and_operations_are_refused_and_what_meshd_skips_is_said() {
    let (t, findings) = build_with(
        vec![
            telemetry(
                "shop",
                "bad",
                json!({"metrics": [{"overrides": [
                    {"match": {"metric": "REQUEST_COUNTS"}},
                    {"match": {"metric": "REQUEST_COUNT", "mode": "client"}},
                    {"tagOverrides": {"a": {"operation": "DELETE"}}}
                ]}]}),
            ),
            telemetry(
                "shop",
                "skipped",
                json!({"selector": {"matchLabels": {"app": "web"}}, "metrics": [{
                    "providers": [{"name": "nope"}, {"name": "stackdriver"}],
                    "reportingInterval": "15s",
                    "overrides": [
                        {"match": {"customMetric": "my_metric"}},
                        {"tagOverrides": {"host": {"value": "request.host"}}}
                    ]
                }]}),
            ),
        ],
        &MeshConfig::default(),
    );
    let about = |name: &str, severity: Severity| -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.object.name == name && f.severity == severity)
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect()
    };
    let errors = about("bad", Severity::Error);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("unknown metric \"REQUEST_COUNTS\""),
        "{errors:#?}"
    );
    assert!(errors[1].contains("match.mode"), "{errors:#?}");
    assert!(errors[2].contains("unknown operation"), "{errors:#?}");
    assert!(t.iter().all(|t| t.key.name != "bad"));
    let warnings = about("skipped", Severity::Warning).join("\n");
    for expected in [
        "reportingInterval is not applied",
        "custom metric \"my_metric\" is not reported",
        "UPSERT is not applied",
        "provider \"nope\" is not among",
        "\"stackdriver\" is not a prometheus provider",
    ] {
        assert!(warnings.contains(expected), "{expected}: {warnings}");
    }
    assert!(about("skipped", Severity::Error).is_empty());
}
