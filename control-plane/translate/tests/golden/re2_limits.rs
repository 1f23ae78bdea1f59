//! The RE2 program-size limit in the bootstrap: a regex istiod accepts compiles to a program
//! larger than Envoy's default limit (100), so Envoy refuses the route unless the bootstrap's
//! runtime raises the limit as istiod's does.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::{MeshConfig, Proxy, Snapshot};
use meshd_translate::bootstrap;
use serde_json::Value;

use super::{validate_bootstrap, validation_bootstrap};

/// A VirtualService routing on a tenant header, with the regex of a DNS label under a domain.
const INPUT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: tenants, namespace: shop}
spec:
  clusterIP: 10.96.7.1
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tenants, namespace: shop}
spec:
  hosts: [tenants]
  http:
  - match: [{headers: {x-tenant-host: {regex: '[a-z0-9-]{1,63}\.example\.com'}}}]
    route: [{destination: {host: tenants}}]
"#;

/// The route configuration meshd sends a sidecar for `INPUT`, inside a static validation
/// bootstrap, with the runtime layers of meshd's bootstrap when `runtime` is set.
fn validation_config(runtime: bool) -> Value {
    let (objects, errors) = meshd_model::documents::parse(INPUT, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let snapshot = Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    );
    let errors: Vec<_> = snapshot
        .findings
        .iter()
        .filter(|f| f.severity == meshd_model::Severity::Error)
        .collect();
    assert!(
        errors.is_empty(),
        "meshd refuses the VirtualService: {errors:?}"
    );
    let proxy =
        Proxy::from_node_id("sidecar~10.2.7.9~client-0.shop~shop.svc.cluster.local").unwrap();
    let config = meshd_translate::generate(&snapshot, &proxy);
    let json = config.to_json();
    assert!(
        json.to_string()
            .contains(r"[a-z0-9-]{1,63}\\.example\\.com"),
        "the route carries the regex"
    );
    let mut validation = validation_bootstrap(&config, &json);
    if runtime {
        let ours =
            meshd_proto::json::to_json(&bootstrap::bootstrap(&super::bootstrap::params())).unwrap();
        validation["layered_runtime"] = ours["layered_runtime"].clone();
    }
    validation
}

/// Envoy's verdict in validate mode: `Ok` or its complaint.
fn envoy_validate(config: &Value, label: &str) -> Result<(), String> {
    validate_bootstrap(config, label, None)
}

#[test]
fn the_bootstrap_raises_the_re2_limits_to_istiods() {
    let ours =
        meshd_proto::json::to_json(&bootstrap::bootstrap(&super::bootstrap::params())).unwrap();
    let layers = ours["layered_runtime"]["layers"].as_array().unwrap();
    let limit = meshd_translate::names::RE2_MAX_PROGRAM_SIZE.to_string();
    assert_eq!(layers[0]["name"], "global config");
    assert_eq!(
        layers[0]["static_layer"]["re2.max_program_size.error_level"],
        limit.as_str()
    );
    assert_eq!(
        layers[0]["static_layer"]["re2.max_program_size.warn_level"],
        limit.as_str()
    );
    assert_eq!(
        layers.last().unwrap()["name"],
        "admin",
        "the admin layer overrides"
    );
}

#[test]
fn envoy_takes_a_regex_istiod_accepts_only_with_the_bootstraps_runtime() {
    envoy_validate(&validation_config(true), "with-runtime")
        .unwrap_or_else(|e| panic!("Envoy refused the route with meshd's runtime:\n{e}"));
    let refusal = envoy_validate(&validation_config(false), "without-runtime")
        .expect_err("Envoy's default RE2 limit should refuse the regex");
    assert!(
        refusal.contains("RE2 program size"),
        "Envoy refused it for another reason:\n{refusal}"
    );
}
