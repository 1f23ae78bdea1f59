//! Golden tests: Istio/Kubernetes YAML in, Envoy JSON out, for every case under `tests/golden/`.
//! Each output is also loaded by the real Envoy in validate mode, so a config Envoy would reject
//! fails here before any proxy could see it. `UPDATE_GOLDEN=1` rewrites the expected files.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use meshd_model::{Kind, MeshConfig, Object, ObjectKey, Proxy, Snapshot};
use meshd_translate::EnvoyConfig;
use serde_json::{Value, json};

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Mesh config as the server derives it: ConfigMap `istio` in the root namespace, else defaults.
fn mesh_of(objects: &std::collections::BTreeMap<ObjectKey, Object>) -> MeshConfig {
    match objects.get(&ObjectKey::new(Kind::ConfigMap, "istio-system", "istio")) {
        Some(Object::ConfigMap(cm)) => {
            let v: Value = serde_saphyr::from_str(&cm.data["mesh"]).unwrap();
            MeshConfig::from_value(v).unwrap()
        }
        _ => MeshConfig::default(),
    }
}

pub fn load_case(name: &str) -> (Snapshot, Vec<Proxy>) {
    let dir = case_dir(name);
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (objects, errors) = meshd_model::documents::parse(&text, false);
    assert!(errors.is_empty(), "{name}: {errors:?}");
    let objects: std::collections::BTreeMap<_, _> =
        objects.into_iter().map(|o| (o.key(), o)).collect();
    let mesh = mesh_of(&objects);
    let snapshot = Snapshot::build(1, Arc::new(objects), Arc::new(mesh));
    let proxies = std::fs::read_to_string(dir.join("proxies.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            // `<node id> [k=v,k=v|-] [mtls]`: the labels a router's node metadata would carry, and
            // whether the proxy holds a mesh certificate (it came over the TLS port).
            let mut parts = line.split_whitespace();
            let mut proxy = Proxy::from_node_id(parts.next().unwrap()).unwrap();
            let labels = parts.next().unwrap_or_default();
            proxy.mtls = parts.next() == Some("mtls");
            for pair in labels.split(',').filter(|p| !p.is_empty() && *p != "-") {
                let (k, v) = pair.split_once('=').unwrap();
                proxy.labels.insert(k.to_string(), v.to_string());
            }
            proxy
        })
        .collect();
    (snapshot, proxies)
}

fn envoy_binary() -> PathBuf {
    let candidates = [
        std::env::var_os("MESHD_ENVOY").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/meshd/bin/envoy")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("Envoy 1.40 not found (MESHD_ENVOY or ~/.cache/meshd/bin/envoy): run `make test-deps`"))
}

/// A bootstrap holding everything a proxy was given, as static config Envoy can validate: clusters
/// and listeners as they are, each assignment as a static cluster, each route table inside a listener.
fn validation_bootstrap(config: &EnvoyConfig, json: &Value) -> Value {
    let mut clusters: Vec<Value> = json["clusters"].as_array().unwrap().clone();
    clusters.push(json!({
        "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    }));
    for (i, cla) in json["endpoints"].as_array().unwrap().iter().enumerate() {
        clusters.push(json!({"name": format!("eds-check-{i}"), "type": "STATIC", "connect_timeout": "1s", "load_assignment": cla}));
    }
    let mut listeners: Vec<Value> = json["listeners"].as_array().unwrap().clone();
    for (i, route) in json["routes"].as_array().unwrap().iter().enumerate() {
        listeners.push(json!({
            "name": format!("rds-check-{i}"),
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": 30000 + i}},
            "bind_to_port": false,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "check", "route_config": route,
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
            }}]}]
        }));
    }
    assert_eq!(
        listeners.len(),
        config.listeners.len() + config.routes.len()
    );
    json!({
        "node": {"id": "validate~127.0.0.1~check.default~default.svc.cluster.local", "cluster": "check"},
        "static_resources": {"clusters": clusters, "listeners": listeners},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}
    })
}

pub fn envoy_validate(config: &EnvoyConfig, label: &str) {
    let json = config.to_json();
    let bootstrap = validation_bootstrap(config, &json);
    let dir = std::env::temp_dir().join(format!("meshd-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.json", label.replace(['/', '~'], "_")));
    std::fs::write(&file, serde_json::to_vec_pretty(&bootstrap).unwrap()).unwrap();
    let out = Command::new(envoy_binary())
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "error",
            "-c",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Envoy rejected the config for {label} ({}):\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check_case(name: &str) {
    let (snapshot, proxies) = load_case(name);
    // Expected findings, one per line; a case without the file must have none.
    let findings: String = snapshot
        .findings
        .iter()
        .map(|f| {
            format!(
                "{f}
"
            )
        })
        .collect();
    let findings_file = case_dir(name).join("findings.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() && !findings.is_empty() {
        std::fs::write(&findings_file, &findings).unwrap();
    }
    let expected_findings = std::fs::read_to_string(&findings_file).unwrap_or_default();
    assert_eq!(
        findings,
        expected_findings,
        "{name}: findings differ from {}",
        findings_file.display()
    );
    for proxy in proxies {
        let config = meshd_translate::generate(&snapshot, &proxy);
        let actual = serde_json::to_string_pretty(&config.to_json()).unwrap() + "\n";
        let file = case_dir(name).join(format!("{}.json", proxy.short_id()));
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&file, &actual).unwrap();
        }
        let expected = std::fs::read_to_string(&file).unwrap_or_else(|_| {
            panic!(
                "{} missing: run with UPDATE_GOLDEN=1 and review it",
                file.display()
            )
        });
        assert!(
            actual == expected,
            "{name}/{}: output differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff",
            proxy.short_id(),
            file.display()
        );
        envoy_validate(&config, &format!("{name}-{}", proxy.short_id()));
    }
}

#[test]
fn sidecar_basic_matches_golden_and_envoy_accepts_it() {
    check_case("sidecar-basic");
}

#[test]
fn registry_only_matches_golden_and_envoy_accepts_it() {
    check_case("registry-only");
}

#[test]
fn traffic_basic_matches_golden_and_envoy_accepts_it() {
    check_case("traffic-basic");
}

#[test]
fn invalid_objects_are_reported_left_out_and_the_rest_is_served() {
    check_case("invalid-isolated");
    let (snapshot, proxies) = load_case("invalid-isolated");
    let config = meshd_translate::generate(&snapshot, &proxies[0]);
    let names: Vec<&str> = config.clusters.iter().map(|c| c.name.as_str()).collect();
    assert!(
        names.contains(&"outbound|6379||cache.external"),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with("db.external")),
        "{names:?}"
    );
    // The web service keeps its default route: neither broken VirtualService took it over.
    let route = config.routes.iter().find(|r| r.name == "80").unwrap();
    let vhost = route
        .virtual_hosts
        .iter()
        .find(|v| v.name == "web.default.svc.cluster.local:80")
        .unwrap();
    assert_eq!(vhost.routes.len(), 1);
    assert_eq!(vhost.routes[0].name, "default");
}

#[test]
fn mtls_matches_golden_and_envoy_accepts_it() {
    check_case("mtls");
}

#[test]
fn authz_http_matches_golden_and_envoy_accepts_it() {
    check_case("authz-http");
}

#[test]
fn authz_jwt_matches_golden_and_envoy_accepts_it() {
    check_case("authz-jwt");
}

#[test]
fn authz_tcp_matches_golden_and_envoy_accepts_it() {
    check_case("authz-tcp");
}

#[test]
fn invalid_security_policies_are_reported_and_fail_closed() {
    check_case("authz-invalid");
}

#[test]
fn security_filters_encode_to_the_same_bytes_every_time() {
    // Resource versions are hashes of the encoded bytes: multi-entry maps (RBAC policies, JWT
    // providers) must not follow HashMap order.
    for name in ["authz-http", "authz-jwt"] {
        let (snapshot, proxies) = load_case(name);
        let encode = || -> Vec<Vec<u8>> {
            meshd_translate::generate(&snapshot, &proxies[0])
                .listeners
                .iter()
                .map(prost::Message::encode_to_vec)
                .collect()
        };
        let first = encode();
        for _ in 0..10 {
            assert_eq!(encode(), first, "{name}");
        }
    }
}
