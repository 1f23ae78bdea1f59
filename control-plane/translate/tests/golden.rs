//! Golden tests: Istio/Kubernetes YAML in, Envoy JSON out, for every case under `tests/golden/`;
//! the bootstrap and the SDS secrets have theirs in the modules below.
//! Each output is also loaded by the real Envoy in validate mode, so a config Envoy would reject
//! fails here before any proxy could see it. `UPDATE_GOLDEN=1` rewrites the expected files.

#![allow(clippy::unwrap_used)]

// The crate root is `golden.rs`, so its modules are found by path.
#[path = "golden/bootstrap.rs"]
mod bootstrap;
#[path = "golden/fuzz_regressions.rs"]
mod fuzz_regressions;
#[path = "golden/re2_limits.rs"]
mod re2_limits;
#[path = "golden/secret.rs"]
mod secret;
#[path = "support/envoy.rs"]
mod support_envoy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshd_model::{MeshConfig, Proxy, Snapshot};
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::{pack, type_url};
use meshd_translate::EnvoyConfig;
use meshd_translate::check::{check_resource, check_set};
use serde_json::{Value, json};
use support_envoy::validate_bootstrap;

fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

pub fn load_case(name: &str) -> (Snapshot, Vec<Proxy>) {
    let dir = case_dir(name);
    let text = std::fs::read_to_string(dir.join("input.yaml")).unwrap();
    let (objects, errors) = meshd_model::documents::parse(&text, false);
    assert!(errors.is_empty(), "{name}: {errors:?}");
    let objects: std::collections::BTreeMap<_, _> =
        objects.into_iter().map(|o| (o.key(), o)).collect();
    // As `meshd serve` and `meshd analyze` assemble it: ConfigMap `istio` included.
    let snapshot = Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &Default::default(),
    );
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
    envoy_accepts(&validation_bootstrap(config, &json), label);
    checker_accepts(
        &[
            (
                type_url::CLUSTER,
                config.clusters.iter().map(pack).collect(),
            ),
            (
                type_url::ENDPOINT,
                config.endpoints.iter().map(pack).collect(),
            ),
            (
                type_url::LISTENER,
                config.listeners.iter().map(pack).collect(),
            ),
            (type_url::ROUTE, config.routes.iter().map(pack).collect()),
        ],
        label,
    );
}

/// meshd's own checker finds nothing to refuse in what Envoy accepted: each resource, and each
/// type's resources as one response.
pub fn checker_accepts(sets: &[(&str, Vec<Any>)], label: &str) {
    let mut found = Vec::new();
    for (url, resources) in sets {
        for resource in resources {
            for v in check_resource(url, resource) {
                found.push(format!(
                    "{} {}: {v}",
                    type_url::short(url),
                    resource_json_name(resource)
                ));
            }
        }
        for (name, v) in check_set(url, resources) {
            found.push(format!("{} {name}: {v}", type_url::short(url)));
        }
    }
    assert!(
        found.is_empty(),
        "the checker refuses what Envoy accepted for {label}:\n{}",
        found.join("\n")
    );
}

/// A resource's name for messages: the first string field Envoy names it by.
fn resource_json_name(resource: &Any) -> String {
    let json = meshd_proto::json::any_to_json(resource).unwrap();
    ["name", "cluster_name"]
        .iter()
        .find_map(|k| json[*k].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Runs Envoy in validate mode on `bootstrap`, from the crate's directory so fixture paths
/// (`tests/golden/...`) resolve, and fails the test with Envoy's words if it refuses.
pub fn envoy_accepts(bootstrap: &Value, label: &str) {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Err(refusal) = validate_bootstrap(bootstrap, label, Some(crate_dir)) {
        panic!("Envoy rejected the config for {refusal}");
    }
}

/// `actual` against the golden file, which `UPDATE_GOLDEN=1` rewrites instead.
pub fn matches_golden(actual: &Value, file: &Path) {
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(file, &text).unwrap();
    }
    let expected = std::fs::read_to_string(file).unwrap_or_else(|_| {
        panic!(
            "{} missing: run with UPDATE_GOLDEN=1 and review it",
            file.display()
        )
    });
    assert!(
        text == expected,
        "output differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff",
        file.display()
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
    // Gateway API cases: the status each object should carry, and the deployments.
    if !snapshot.gateway_api.statuses.is_empty() {
        let statuses: serde_json::Map<String, Value> = snapshot
            .gateway_api
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let actual = json!({
            "statuses": statuses,
            "deployments": snapshot.gateway_api.deployments,
        });
        matches_golden(&actual, &case_dir(name).join("gateway-api-status.json"));
    }
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
fn trust_domain_aliases_widen_principals_and_san_checks() {
    check_case("authz-trust-domain-aliases");
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

#[test]
fn vs_http_features_match_golden_and_envoy_accepts_them() {
    check_case("vs-http-features");
}

#[test]
fn vs_tcp_and_tls_routes_match_golden_and_envoy_accepts_them() {
    check_case("vs-tcp-tls");
}

#[test]
fn invalid_virtual_services_are_reported_by_field_and_left_out() {
    check_case("vs-invalid");
    let (snapshot, proxies) = load_case("vs-invalid");
    let served: Vec<&str> = snapshot
        .traffic
        .virtual_services
        .iter()
        .map(|vs| vs.key.name.as_str())
        .collect();
    assert_eq!(
        served,
        ["warned"],
        "only the object with warnings alone is served"
    );
    let config = meshd_translate::generate(&snapshot, &proxies[0]);
    let json = serde_json::to_string(&config.to_json()).unwrap();
    assert!(
        json.contains("x-kept"),
        "the valid header change is applied"
    );
    assert!(
        !json.contains("\":path\""),
        "the pseudo-header change is dropped"
    );
}

/// The routes of one virtual host, by route name, from a proxy's generated config.
fn vhost_routes(config: &meshd_translate::EnvoyConfig, vhost: &str) -> Vec<Value> {
    let json = config.to_json();
    json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|rc| rc["virtual_hosts"].as_array().unwrap().clone())
        .find(|vh| vh["name"] == vhost)
        .unwrap_or_else(|| panic!("no virtual host {vhost}"))["routes"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn source_labels_and_namespaces_pick_routes_per_calling_workload() {
    let (snapshot, proxies) = load_case("vs-http-features");
    let names = |i: usize, service: &str| -> Vec<String> {
        let config = meshd_translate::generate(&snapshot, &proxies[i]);
        vhost_routes(&config, &format!("{service}.shop.svc.cluster.local:8080"))
            .iter()
            .map(|r| r["name"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(names(0, "web"), ["from-canary", ""], "canary caller");
    assert_eq!(names(1, "web"), [""], "stable caller");
    assert_eq!(
        names(2, "web"),
        ["from-other", ""],
        "caller in namespace other"
    );
    // A VirtualService with no route for the caller leaves the host its default route.
    assert_eq!(names(0, "ratings"), ["canary-only"]);
    assert_eq!(names(1, "ratings"), ["default"]);
    // Sidecars share outbound config per namespace unless a sourceLabels match tells them apart,
    // and then only by the labels it selects on.
    let canary = meshd_translate::Scope::for_proxy(&snapshot, &proxies[0]);
    assert_eq!(
        canary.labels.into_iter().collect::<Vec<_>>(),
        [("track".to_string(), "canary".to_string())]
    );
    let (basic, basic_proxies) = load_case("traffic-basic");
    assert!(
        meshd_translate::Scope::for_proxy(&basic, &basic_proxies[0])
            .labels
            .is_empty()
    );
}

#[test]
fn export_to_dot_hides_a_virtual_service_from_other_namespaces() {
    let (snapshot, proxies) = load_case("vs-http-features");
    let timeout = |i: usize| {
        let config = meshd_translate::generate(&snapshot, &proxies[i]);
        vhost_routes(&config, "search.shop.svc.cluster.local:8080")[0]["route"]["timeout"].clone()
    };
    assert_eq!(timeout(0), "7s");
    assert_eq!(timeout(2), "0s", "other namespace keeps the default route");
}

#[test]
fn a_route_with_fault_and_cors_keeps_one_filter_config_per_map() {
    let (snapshot, proxies) = load_case("vs-http-features");
    let config = meshd_translate::generate(&snapshot, &proxies[0]);
    let routes = vhost_routes(&config, "cart.shop.svc.cluster.local:8080");
    let route = routes
        .iter()
        .find(|r| r["name"] == "cors-and-fault")
        .unwrap();
    let route_filters: Vec<&String> = route["typed_per_filter_config"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(route_filters, ["envoy.filters.http.fault"]);
    let clusters = route["route"]["weighted_clusters"]["clusters"]
        .as_array()
        .unwrap();
    assert_eq!(clusters.len(), 1);
    assert_eq!(
        clusters[0]["name"],
        "outbound|8080|v2|cart.shop.svc.cluster.local"
    );
    assert!(clusters[0]["typed_per_filter_config"]["envoy.filters.http.cors"].is_object());
}

#[test]
fn virtual_service_routes_and_listeners_encode_to_the_same_bytes_every_time() {
    for name in ["vs-http-features", "vs-tcp-tls"] {
        let (snapshot, proxies) = load_case(name);
        for proxy in &proxies {
            let encode = || -> Vec<Vec<u8>> {
                let config = meshd_translate::generate(&snapshot, proxy);
                let routes = config.routes.iter().map(prost::Message::encode_to_vec);
                let listeners = config.listeners.iter().map(prost::Message::encode_to_vec);
                routes.chain(listeners).collect()
            };
            let first = encode();
            for _ in 0..10 {
                assert_eq!(encode(), first, "{name}");
            }
        }
    }
}

#[test]
fn dr_load_balancing_matches_golden_and_envoy_accepts_it() {
    check_case("dr-load-balancing");
}

#[test]
fn dr_connection_pool_and_outlier_detection_match_golden_and_envoy_accepts_them() {
    check_case("dr-connection-pool");
}

#[test]
fn dr_tls_matches_golden_and_envoy_accepts_it() {
    check_case("dr-tls");
}

#[test]
fn dr_scope_matches_golden_and_envoy_accepts_it() {
    check_case("dr-scope");
    // Only the proxy a selector picks gets different clusters; its namespace peers keep sharing.
    let (snapshot, proxies) = load_case("dr-scope");
    let scopes: Vec<meshd_translate::Scope> = proxies
        .iter()
        .map(|p| meshd_translate::Scope::for_proxy(&snapshot, p))
        .collect();
    assert!(scopes[0].labels.contains_key("app"), "{:?}", scopes[0]);
    assert_eq!(
        scopes[1].labels.keys().collect::<Vec<_>>(),
        ["role"],
        "{:?}",
        scopes[1]
    );
    assert_ne!(scopes[1], scopes[2]);
}

#[test]
fn invalid_destination_rules_are_reported_by_field_and_left_out() {
    check_case("dr-invalid");
}

#[test]
fn localities_come_from_nodes_and_slice_zones_and_match_golden() {
    check_case("locality-from-nodes");
    let (snapshot, proxies) = load_case("locality-from-nodes");
    // The proxy on node-a reads the assignment for its Node's locality; the one on a Node
    // without topology labels reads the plain one.
    let eds_name = |proxy| {
        let config = meshd_translate::generate(&snapshot, proxy);
        let cluster = config
            .clusters
            .iter()
            .find(|c| c.name == "outbound|80||ratings.shop.svc.cluster.local")
            .unwrap()
            .clone();
        cluster.eds_cluster_config.unwrap().service_name
    };
    assert!(
        eds_name(&proxies[0]).contains(";eu-west/eu-west-1a/rack-1;"),
        "{}",
        eds_name(&proxies[0])
    );
    assert_eq!(
        eds_name(&proxies[1]),
        "outbound|80||ratings.shop.svc.cluster.local"
    );
}

#[test]
fn dr_locality_matches_golden_and_envoy_accepts_it() {
    check_case("dr-locality");
    let (snapshot, proxies) = load_case("dr-locality");
    let config = meshd_translate::generate(&snapshot, &proxies[0]);
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == "outbound|80||catalog.shop.svc.cluster.local")
        .unwrap();
    let eds_name = &cluster.eds_cluster_config.as_ref().unwrap().service_name;
    assert_eq!(
        eds_name,
        "outbound|80||catalog.shop.svc.cluster.local;us-east/zone-a/;shop/catalog"
    );
    // From us-east/zone-a: zone-a, then zone-b, then eu-central (failover), then us-west.
    let cla = config
        .endpoints
        .iter()
        .find(|e| &e.cluster_name == eds_name)
        .unwrap();
    let priorities: Vec<(String, u32)> = cla
        .endpoints
        .iter()
        .map(|l| (l.locality.as_ref().unwrap().zone.clone(), l.priority))
        .collect();
    assert_eq!(
        priorities,
        [
            ("zone-d".to_string(), 2),
            ("zone-a".to_string(), 0),
            ("zone-b".to_string(), 1),
            ("zone-c".to_string(), 3)
        ]
    );
}

#[test]
fn gateway_https_matches_golden_and_envoy_accepts_it() {
    check_case("gateway-https");
}

#[test]
fn gateway_tcp_matches_golden_and_envoy_accepts_it() {
    check_case("gateway-tcp");
}

#[test]
fn egress_gateway_with_istio_mutual_matches_golden_and_envoy_accepts_it() {
    check_case("egress-gateway");
}

#[test]
fn sniffed_ports_match_golden_and_envoy_accepts_them() {
    check_case("sniffing");
}

#[test]
fn destination_rule_clusters_and_endpoints_encode_to_the_same_bytes_every_time() {
    for name in [
        "dr-load-balancing",
        "dr-connection-pool",
        "dr-tls",
        "dr-scope",
        "dr-locality",
    ] {
        let (snapshot, proxies) = load_case(name);
        for proxy in &proxies {
            let encode = || -> Vec<Vec<u8>> {
                let config = meshd_translate::generate(&snapshot, proxy);
                // Protobuf maps encode in hash order: one entry each keeps the bytes stable.
                for c in &config.clusters {
                    assert!(c.typed_extension_protocol_options.len() <= 1, "{}", c.name);
                }
                let clusters = config.clusters.iter().map(prost::Message::encode_to_vec);
                let endpoints = config.endpoints.iter().map(prost::Message::encode_to_vec);
                let routes = config.routes.iter().map(prost::Message::encode_to_vec);
                clusters.chain(endpoints).chain(routes).collect()
            };
            let first = encode();
            for _ in 0..10 {
                assert_eq!(encode(), first, "{name}");
            }
        }
    }
}

#[test]
fn sidecar_scope_matches_golden_and_envoy_accepts_it() {
    check_case("sidecar-scope");
    let (snapshot, proxies) = load_case("sidecar-scope");
    let outbound = |i: usize| -> Vec<String> {
        meshd_translate::generate(&snapshot, &proxies[i])
            .clusters
            .into_iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with("outbound|"))
            .collect()
    };
    // web (namespace default): its own namespace and istio-system; cart: one host; reader: all.
    assert_eq!(outbound(0).len(), 4, "{:?}", outbound(0));
    assert_eq!(
        outbound(1),
        vec!["outbound|8080||payments.shop.svc.cluster.local"]
    );
    assert_eq!(outbound(2).len(), 5, "{:?}", outbound(2));
}

#[test]
fn gateway_passthrough_matches_golden_and_envoy_accepts_it() {
    check_case("gateway-passthrough");
}

#[test]
fn telemetry_access_log_matches_golden_and_envoy_accepts_it() {
    check_case("telemetry-access-log");
    // A Telemetry selecting one workload sets it apart; the rest of its namespace keeps sharing.
    let (snapshot, proxies) = load_case("telemetry-access-log");
    let web = meshd_translate::Scope::for_proxy(&snapshot, &proxies[0]);
    let quiet = meshd_translate::Scope::for_proxy(&snapshot, &proxies[1]);
    assert!(web.telemetry.is_empty(), "{web:?}");
    assert_eq!(quiet.telemetry.len(), 1, "{quiet:?}");
    assert_ne!(web, quiet);
    assert!(
        web.names.is_none(),
        "no tracing, no per-workload names: {web:?}"
    );
}

#[test]
fn telemetry_tracing_matches_golden_and_envoy_accepts_it() {
    check_case("telemetry-tracing");
    // Traced workloads carry their span names in the scope (their tags differ).
    let (snapshot, proxies) = load_case("telemetry-tracing");
    let web = meshd_translate::Scope::for_proxy(&snapshot, &proxies[0]);
    let names = web.names.expect("web traces");
    assert_eq!(names.service_cluster, "web.shop");
    assert_eq!(names.canonical_revision, "v2");
}

#[test]
fn telemetry_legacy_zipkin_matches_golden_and_envoy_accepts_it() {
    check_case("telemetry-legacy-zipkin");
}

#[test]
fn invalid_telemetry_is_reported_and_the_rest_is_served() {
    check_case("telemetry-invalid");
}

#[test]
fn telemetry_metrics_matches_golden_and_envoy_accepts_it() {
    check_case("telemetry-metrics");
    let (snapshot, proxies) = load_case("telemetry-metrics");
    // Each listener of a proxy as JSON text, inbound (`virtualInbound`) apart from the rest.
    let sides = |i: usize| -> (String, String, String) {
        let json = meshd_translate::generate(&snapshot, &proxies[i]).to_json();
        let listeners = json["listeners"].as_array().unwrap();
        let of = |inbound: bool| -> String {
            listeners
                .iter()
                .filter(|l| (l["name"] == "virtualInbound") == inbound)
                .map(Value::to_string)
                .collect()
        };
        (of(false), of(true), json["routes"].to_string())
    };
    // A Telemetry with only `metrics` sets its workload apart like any other.
    let scope = |i: usize| meshd_translate::Scope::for_proxy(&snapshot, &proxies[i]);
    assert_eq!(scope(0).telemetry.len(), 1);
    assert!(scope(2).telemetry.is_empty());
    const STATS: &str = "envoy.access_loggers.stats";
    const DROPPED: &str = r#""request_headers_to_remove":["x-meshd-peer"]"#;

    // web reports nothing: no stats logger, no peer filter; it still names itself to servers.
    let (outbound, inbound, routes) = sides(0);
    assert!(!outbound.contains(STATS) && !inbound.contains(STATS));
    assert!(!inbound.contains("header_to_metadata"));
    assert!(inbound.contains(DROPPED), "{inbound}");
    assert!(outbound.contains("envoy.filters.network.set_filter_state"));
    assert!(routes.contains("x-meshd-peer"));

    // cart reports as a server only: requests without response_flags, nothing counted on
    // connect.
    let (outbound, inbound, _) = sides(1);
    assert!(!outbound.contains(STATS));
    assert!(inbound.contains(STATS) && inbound.contains("header_to_metadata"));
    assert!(!inbound.contains(DROPPED));
    assert!(!inbound.contains("istio_tcp_connections_opened_total"));
    assert!(!inbound.contains("flush_access_log_on_connected"));
    assert!(inbound.contains("istio_tcp_connections_closed_total"));

    // batch: everything, on both sides (no Service selects it: its inbound side is TCP
    // passthrough only).
    let (outbound, inbound, _) = sides(2);
    assert!(outbound.contains("istio_requests_total"));
    for side in [&outbound, &inbound] {
        assert!(side.contains("istio_tcp_connections_opened_total"));
    }
}

#[test]
fn gateway_api_routes_match_golden_and_envoy_accepts_them() {
    check_case("gateway-api");
}
