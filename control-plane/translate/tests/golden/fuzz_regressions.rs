//! Gaps the differential fuzzer (`meshd-tests`' `fuzz` module) found between what meshd produced
//! and what Envoy takes, each as the small input that showed it, translated and loaded by Envoy.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::{MeshConfig, Proxy, Snapshot};

use super::envoy_validate;

fn snapshot(yaml: &str) -> Snapshot {
    let (objects, errors) = meshd_model::documents::parse(yaml, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    )
}

fn router() -> Proxy {
    let mut proxy =
        Proxy::from_node_id("router~10.9.0.9~gw-0.istio-system~istio-system.svc.cluster.local")
            .unwrap();
    proxy
        .labels
        .insert("istio".to_string(), "ingressgateway".to_string());
    proxy
}

#[test]
fn a_passthrough_server_that_no_tls_route_matches_gets_no_listener() {
    let snapshot = snapshot(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 18095, name: tls, protocol: HTTPS}
    hosts: ["*.svc.cluster.local"]
    tls: {mode: PASSTHROUGH}
"#,
    );
    let config = meshd_translate::generate(&snapshot, &router());
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert!(!names.contains(&"0.0.0.0_18095"), "{names:?}");
    envoy_validate(&config, "passthrough-without-routes");
}

#[test]
fn a_mesh_connect_timeout_of_zero_is_refused_and_clusters_keep_the_default() {
    let snapshot = snapshot(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    connectTimeout: "0"
"#,
    );
    assert_eq!(snapshot.findings.len(), 1, "{:?}", snapshot.findings);
    assert_eq!(snapshot.findings[0].field, "data.mesh");
    let config = meshd_translate::generate(&snapshot, &router());
    for cluster in &config.clusters {
        let timeout = cluster.connect_timeout.as_ref().unwrap();
        assert!(timeout.seconds > 0 || timeout.nanos > 0, "{}", cluster.name);
    }
    envoy_validate(&config, "mesh-connect-timeout-zero");
}

#[test]
fn endpoints_that_are_not_ip_addresses_never_reach_an_assignment() {
    let snapshot = snapshot(
        r#"
apiVersion: v1
kind: Service
metadata: {name: search, namespace: other}
spec:
  selector: {app: search}
  ports: [{name: grpc, port: 8443}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: search-1, namespace: other, labels: {kubernetes.io/service-name: search}}
addressType: IPv4
endpoints: [{addresses: ["10.0.0"]}]
ports: [{name: grpc, port: 8443}]
"#,
    );
    let proxy =
        Proxy::from_node_id("sidecar~10.1.0.1~client-0.other~other.svc.cluster.local").unwrap();
    let config = meshd_translate::generate(&snapshot, &proxy);
    let addresses = serde_json::to_string(&config.to_json()["endpoints"]).unwrap();
    assert!(!addresses.contains("\"10.0.0\""), "{addresses}");
    envoy_validate(&config, "endpoint-not-an-ip");
}

#[test]
fn a_gateway_server_on_a_port_the_bootstrap_listens_on_gets_no_listener() {
    let snapshot = snapshot(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 15090, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 15021, name: http2, protocol: HTTP2}
    hosts: ["*"]
  - port: {number: 8080, name: http-web, protocol: HTTP}
    hosts: ["*"]
"#,
    );
    let config = meshd_translate::generate(&snapshot, &router());
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["0.0.0.0_8080"]);
    // Loaded with meshd's own bootstrap, whose listeners hold 15090 and 15021.
    let mut bootstrap = meshd_proto::json::to_json(&meshd_translate::bootstrap::bootstrap(
        &super::bootstrap::params(),
    ))
    .unwrap();
    let json = config.to_json();
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap();
    listeners.extend(json["listeners"].as_array().unwrap().iter().cloned());
    super::envoy_accepts(&bootstrap, "gateway-on-bootstrap-ports");
}
