//! Bootstrap goldens: each variant of what `meshd bootstrap` prints, reviewed in
//! `golden/bootstrap/<variant>.json` and loaded by the real Envoy. Files the bootstrap names are
//! fixtures relative to the crate's directory, where Envoy runs; the binary hands Envoy absolute
//! paths instead.

use std::collections::BTreeMap;
use std::path::Path;

use meshd_model::NodeType;
use meshd_translate::bootstrap::{
    self, AppProbe, BootstrapParams, ProbeScheme, XdsAddr, XdsAddrs, XdsHost, XdsTls,
};
use serde_json::{Value, json};

use super::{envoy_accepts, matches_golden};

pub(crate) fn params() -> BootstrapParams {
    BootstrapParams {
        node_type: NodeType::Sidecar,
        pod: "reviews-v1-5d4b8c7f9-x2k4p".to_string(),
        namespace: "bookinfo".to_string(),
        ip: "10.1.2.3".parse().unwrap(),
        labels: BTreeMap::from([
            ("app".to_string(), "reviews".to_string()),
            ("version".to_string(), "v1".to_string()),
            ("pod-template-hash".to_string(), "5d4b8c7f9".to_string()),
        ]),
        service_account: "bookinfo-reviews".to_string(),
        cluster_id: "Kubernetes".to_string(),
        version: "meshd-test".to_string(),
        xds_addr: "127.0.0.1:15010".parse().unwrap(),
        xds_tls: None,
        delta: false,
        admin_port: 15000,
        app_probes: BTreeMap::new(),
    }
}

fn tls(token: bool) -> Option<XdsTls> {
    Some(XdsTls {
        root_cert: "tests/golden/pki/root-cert.pem".to_string(),
        server_name: "istiod.istio-system.svc".to_string(),
        token_file: token.then(|| "tests/golden/pki/token".to_string()),
    })
}

fn json_of(params: &BootstrapParams) -> Value {
    meshd_proto::json::to_json(&bootstrap::bootstrap(params)).unwrap()
}

/// The variant's JSON, checked against its golden file and by Envoy.
fn check(name: &str, params: &BootstrapParams) -> Value {
    let json = json_of(params);
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/bootstrap")
        .join(format!("{name}.json"));
    matches_golden(&json, &file);
    envoy_accepts(&json, &format!("bootstrap-{name}"));
    json
}

fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
    bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn endpoint_address(cluster: &Value) -> &Value {
    &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
}

#[test]
fn sidecar_bootstrap_matches_golden_and_envoy_accepts_it() {
    let bootstrap = check("sidecar-sotw", &params());
    let node = &bootstrap["node"];
    assert_eq!(
        node["id"],
        "sidecar~10.1.2.3~reviews-v1-5d4b8c7f9-x2k4p.bookinfo~bookinfo.svc.cluster.local"
    );
    assert_eq!(node["cluster"], "reviews.bookinfo");
    assert_eq!(
        node["metadata"],
        json!({
            "NAMESPACE": "bookinfo",
            "LABELS": {
                "app": "reviews",
                "version": "v1",
                "pod-template-hash": "5d4b8c7f9",
                "service.istio.io/canonical-name": "reviews",
                "service.istio.io/canonical-revision": "v1",
            },
            "SERVICE_ACCOUNT": "bookinfo-reviews",
            "INSTANCE_IPS": "10.1.2.3",
            "CLUSTER_ID": "Kubernetes",
            "ISTIO_VERSION": "meshd-test",
            "INTERCEPTION_MODE": "REDIRECT",
            "NAME": "reviews-v1-5d4b8c7f9-x2k4p",
            "WORKLOAD_NAME": "reviews-v1",
        })
    );
    let dynamic = &bootstrap["dynamic_resources"];
    let ads = &dynamic["ads_config"];
    assert_eq!(ads["api_type"], "GRPC");
    assert_eq!(ads["transport_api_version"], "V3");
    assert_eq!(ads["set_node_on_first_message_only"], true);
    assert_eq!(
        ads["grpc_services"],
        json!([{ "envoy_grpc": { "cluster_name": "xds-grpc" } }])
    );
    for source in ["cds_config", "lds_config"] {
        assert_eq!(
            dynamic[source],
            json!({ "ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "5s" })
        );
    }
    assert_eq!(
        bootstrap["layered_runtime"],
        json!({ "layers": [
            { "name": "global config", "static_layer": {
                "re2.max_program_size.error_level": "32768",
                "re2.max_program_size.warn_level": "32768",
            } },
            { "name": "admin", "admin_layer": {} },
        ] })
    );
}

#[test]
fn the_xds_cluster_is_plaintext_http2_to_an_ip_with_keepalives_and_high_limits() {
    let bootstrap = json_of(&params());
    let xds = cluster(&bootstrap, "xds-grpc");
    assert_eq!(xds["type"], "STATIC");
    assert_eq!(xds["connect_timeout"], "1s");
    assert_eq!(
        endpoint_address(xds),
        &json!({ "socket_address": { "address": "127.0.0.1", "port_value": 15010 } })
    );
    let options = &xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"],
        json!({ "interval": "30s", "timeout": "10s" })
    );
    assert_eq!(
        xds["upstream_connection_options"],
        json!({ "tcp_keepalive": { "keepalive_time": 300 } })
    );
    let thresholds = xds["circuit_breakers"]["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 2);
    assert_eq!(thresholds[1]["priority"], "HIGH");
    assert!(thresholds.iter().all(|t| t["max_requests"] == 100_000));
    assert!(xds.get("transport_socket").is_none());
}

#[test]
fn delta_bootstrap_matches_golden_and_envoy_accepts_it() {
    let bootstrap = check(
        "sidecar-delta",
        &BootstrapParams {
            delta: true,
            ..params()
        },
    );
    assert_eq!(
        bootstrap["dynamic_resources"]["ads_config"]["api_type"],
        "DELTA_GRPC"
    );
}

#[test]
fn tls_bootstrap_verifies_meshd_by_root_and_name() {
    let bootstrap = check(
        "sidecar-tls",
        &BootstrapParams {
            xds_addr: "127.0.0.1:15012".parse().unwrap(),
            xds_tls: tls(false),
            ..params()
        },
    );
    let socket = &cluster(&bootstrap, "xds-grpc")["transport_socket"];
    assert_eq!(socket["name"], "envoy.transport_sockets.tls");
    let context = &socket["typed_config"];
    assert_eq!(
        context["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    assert_eq!(context["sni"], "istiod.istio-system.svc");
    let common = &context["common_tls_context"];
    assert_eq!(common["alpn_protocols"], json!(["h2"]));
    assert_eq!(
        common["validation_context"],
        json!({
            "trusted_ca": { "filename": "tests/golden/pki/root-cert.pem" },
            "match_typed_subject_alt_names": [
                { "san_type": "DNS", "matcher": { "exact": "istiod.istio-system.svc" } }
            ],
        })
    );
}

#[test]
fn token_bootstrap_sends_the_token_with_every_stream_over_google_grpc() {
    let bootstrap = check(
        "sidecar-token",
        &BootstrapParams {
            xds_addr: "[fd00::9]:15012".parse().unwrap(),
            xds_tls: tls(true),
            ..params()
        },
    );
    let service = &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0];
    assert!(service.get("envoy_grpc").is_none());
    let google = &service["google_grpc"];
    assert_eq!(google["target_uri"], "[fd00::9]:15012");
    assert_eq!(google["stat_prefix"], "xds-grpc");
    assert_eq!(
        google["credentials_factory_name"],
        "envoy.grpc_credentials.file_based_metadata"
    );
    assert_eq!(
        google["channel_credentials"],
        json!({ "ssl_credentials": { "root_certs": { "filename": "tests/golden/pki/root-cert.pem" } } })
    );
    assert_eq!(
        google["call_credentials"],
        json!([{ "from_plugin": {
            "name": "envoy.grpc_credentials.file_based_metadata",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                "secret_data": { "filename": "tests/golden/pki/token" },
                "header_key": "authorization",
                "header_prefix": "Bearer ",
            },
        } }])
    );
    // Proto3 JSON prints 64-bit integers as strings; Envoy reads either.
    assert_eq!(
        google["channel_args"]["args"],
        json!({
            "grpc.ssl_target_name_override": { "string_value": "istiod.istio-system.svc" },
            "grpc.default_authority": { "string_value": "istiod.istio-system.svc" },
            "grpc.keepalive_time_ms": { "int_value": "30000" },
            "grpc.keepalive_timeout_ms": { "int_value": "10000" },
            "grpc.max_receive_message_length": { "int_value": "-1" },
        })
    );
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap();
    assert!(clusters.iter().all(|c| c["name"] != "xds-grpc"));
}

#[test]
fn router_bootstrap_names_the_router_in_its_node_id() {
    let bootstrap = check(
        "router",
        &BootstrapParams {
            node_type: NodeType::Router,
            pod: "ingress-7c9d8-abcde".to_string(),
            namespace: "istio-system".to_string(),
            labels: BTreeMap::from([("istio".to_string(), "ingressgateway".to_string())]),
            service_account: "ingress".to_string(),
            ..params()
        },
    );
    assert_eq!(
        bootstrap["node"]["id"],
        "router~10.1.2.3~ingress-7c9d8-abcde.istio-system~istio-system.svc.cluster.local"
    );
    assert_eq!(
        bootstrap["node"]["cluster"],
        "ingress-7c9d8-abcde.istio-system"
    );
}

#[test]
fn a_dns_xds_host_is_resolved_preferring_ipv4() {
    let bootstrap = check(
        "dns-xds-addr",
        &BootstrapParams {
            xds_addr: "istiod.istio-system.svc:15010".parse().unwrap(),
            ..params()
        },
    );
    let xds = cluster(&bootstrap, "xds-grpc");
    assert_eq!(xds["type"], "STRICT_DNS");
    assert_eq!(xds["dns_lookup_family"], "V4_PREFERRED");
    assert_eq!(
        endpoint_address(xds)["socket_address"]["address"],
        "istiod.istio-system.svc"
    );
}

#[test]
fn an_ipv6_xds_address_is_written_unbracketed_in_the_cluster() {
    let bootstrap = check(
        "ipv6-xds-addr",
        &BootstrapParams {
            xds_addr: "[::1]:15012".parse().unwrap(),
            xds_tls: tls(false),
            delta: true,
            ..params()
        },
    );
    assert_eq!(
        endpoint_address(cluster(&bootstrap, "xds-grpc")),
        &json!({ "socket_address": { "address": "::1", "port_value": 15012 } })
    );
}

#[test]
fn several_xds_addresses_become_one_endpoint_each_in_the_xds_cluster() {
    let bootstrap = check(
        "xds-replicas",
        &BootstrapParams {
            xds_addr: "10.77.0.1:15012,10.77.0.2:15012".parse().unwrap(),
            xds_tls: tls(false),
            ..params()
        },
    );
    let xds = cluster(&bootstrap, "xds-grpc");
    assert_eq!(xds["type"], "STATIC");
    // Round robin (Envoy's default, not written out): a reconnect tries the next replica.
    assert_eq!(xds.get("lb_policy"), None);
    assert_eq!(xds["connect_timeout"], "1s");
    let endpoints: Vec<&Value> = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["endpoint"]["address"]["socket_address"])
        .collect();
    assert_eq!(
        endpoints,
        [
            &json!({ "address": "10.77.0.1", "port_value": 15012 }),
            &json!({ "address": "10.77.0.2", "port_value": 15012 }),
        ]
    );
}

#[test]
fn a_name_among_the_xds_addresses_makes_the_cluster_resolve_them() {
    let bootstrap = json_of(&BootstrapParams {
        xds_addr: "meshd-0.meshd.istio-system.svc:15010,10.77.0.2:15010"
            .parse()
            .unwrap(),
        ..params()
    });
    let xds = cluster(&bootstrap, "xds-grpc");
    assert_eq!(xds["type"], "STRICT_DNS");
    assert_eq!(
        xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn one_xds_address_in_list_syntax_is_the_single_address_bootstrap() {
    let single = params();
    let listed = BootstrapParams {
        xds_addr: XdsAddrs::from("127.0.0.1:15010".parse::<XdsAddr>().unwrap()),
        ..params()
    };
    assert_eq!(json_of(&single), json_of(&listed));
}

#[test]
fn xds_address_lists_reject_empty_entries_and_repeats() {
    let parse = |s: &str| s.parse::<XdsAddrs>();
    assert_eq!(parse(" 10.0.0.1:1 , 10.0.0.2:1 ").unwrap().len(), 2);
    for bad in [
        "",
        ",",
        "10.0.0.1:1,",
        "10.0.0.1:1,,10.0.0.2:1",
        "10.0.0.1:1,10.0.0.1:1",
        "a:1,b",
    ] {
        assert!(parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

fn probe(port: u16, path: &str, scheme: ProbeScheme) -> AppProbe {
    AppProbe {
        port,
        path: path.to_string(),
        scheme,
        host: None,
        headers: Vec::new(),
        timeout_seconds: 1,
    }
}

#[test]
fn app_probes_are_forwarded_from_15020_to_the_app_on_loopback() {
    let app_probes = BTreeMap::from([
        (
            "/app-health/web/readyz".to_string(),
            AppProbe {
                timeout_seconds: 3,
                ..probe(8080, "/ready", ProbeScheme::Http)
            },
        ),
        (
            "/app-health/web/livez".to_string(),
            AppProbe {
                host: Some("web.local".to_string()),
                headers: vec![("x-probe".to_string(), "1".to_string())],
                ..probe(8080, "/live", ProbeScheme::Http)
            },
        ),
        (
            "/app-health/admin/readyz".to_string(),
            AppProbe {
                host: Some("admin.local".to_string()),
                ..probe(8443, "/", ProbeScheme::Https)
            },
        ),
    ]);
    let bootstrap = check(
        "app-probes",
        &BootstrapParams {
            app_probes,
            ..params()
        },
    );
    let listener = &bootstrap["static_resources"]["listeners"][2];
    assert_eq!(listener["name"], "app_health");
    assert_eq!(
        listener["address"],
        json!({ "socket_address": { "address": "0.0.0.0", "port_value": 15020 } })
    );
    let routes =
        listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"]
            .as_array()
            .unwrap();
    let find = |path: &str| {
        routes
            .iter()
            .find(|r| r["match"]["path"] == path)
            .unwrap_or_else(|| panic!("no route for {path}"))
    };
    assert_eq!(
        find("/app-health/web/readyz")["route"],
        json!({ "cluster": "app_health|8080", "prefix_rewrite": "/ready", "timeout": "3s" })
    );
    let live = find("/app-health/web/livez");
    assert_eq!(live["route"]["host_rewrite_literal"], "web.local");
    assert_eq!(
        live["request_headers_to_add"],
        json!([{
            "header": { "key": "x-probe", "value": "1" },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }])
    );
    assert_eq!(
        find("/app-health/admin/readyz")["route"]["cluster"],
        "app_health|8443|tls"
    );
    let plain = cluster(&bootstrap, "app_health|8080");
    assert_eq!(
        endpoint_address(plain),
        &json!({ "socket_address": { "address": "127.0.0.1", "port_value": 8080 } })
    );
    assert!(plain.get("transport_socket").is_none());
    let tls = &cluster(&bootstrap, "app_health|8443|tls")["transport_socket"]["typed_config"];
    assert_eq!(
        tls,
        &json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "admin.local",
        })
    );
}

#[test]
fn without_probes_there_is_no_app_health_listener() {
    let bootstrap = json_of(&params());
    let names: Vec<&Value> = bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["name"])
        .collect();
    assert_eq!(names, [&json!("prometheus_stats"), &json!("health")]);
}

#[test]
fn admin_and_its_two_listeners_use_istio_ports() {
    let bootstrap = json_of(&BootstrapParams {
        admin_port: 16000,
        ..params()
    });
    assert_eq!(
        bootstrap["admin"]["address"],
        json!({ "socket_address": { "address": "127.0.0.1", "port_value": 16000 } })
    );
    for name in [bootstrap::PROMETHEUS_CLUSTER, bootstrap::ADMIN_CLUSTER] {
        let admin = cluster(&bootstrap, name);
        assert_eq!(admin["connect_timeout"], "0.250s");
        assert_eq!(
            endpoint_address(admin)["socket_address"]["port_value"],
            16000
        );
    }
    let listeners = bootstrap["static_resources"]["listeners"]
        .as_array()
        .unwrap();
    let port = |i: usize| listeners[i]["address"]["socket_address"]["port_value"].clone();
    assert_eq!((port(0), port(1)), (json!(15090), json!(15021)));
    let route = |i: usize| {
        listeners[i]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
            ["virtual_hosts"][0]["routes"][0]
            .clone()
    };
    assert_eq!(route(0)["match"]["prefix"], "/stats/prometheus");
    assert_eq!(route(0)["route"]["cluster"], bootstrap::PROMETHEUS_CLUSTER);
    // Readiness goes through the cluster meshd fills over EDS, then on to admin `/ready`.
    assert_eq!(route(1)["match"]["path"], "/healthz/ready");
    assert_eq!(
        route(1)["route"],
        json!({ "cluster": bootstrap::READINESS_CLUSTER, "prefix_rewrite": "/healthz/envoy" })
    );
    let envoy = &listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
        [0]["routes"][1];
    assert_eq!(envoy["match"]["path"], "/healthz/envoy");
    assert_eq!(
        envoy["route"],
        json!({ "cluster": bootstrap::ADMIN_CLUSTER, "prefix_rewrite": "/ready" })
    );
    let readiness = cluster(&bootstrap, bootstrap::READINESS_CLUSTER);
    assert_eq!(readiness["type"], "EDS");
    assert_eq!(
        readiness["eds_cluster_config"]["eds_config"]["ads"],
        json!({})
    );
    // Envoy starts its own listeners after 5 s without meshd (the app's probes then answer).
    let lds = &bootstrap["dynamic_resources"]["lds_config"];
    assert_eq!(lds["initial_fetch_timeout"], "5s");
    let assignment = meshd_translate::bootstrap::readiness_assignment();
    assert_eq!(assignment.cluster_name, bootstrap::READINESS_CLUSTER);
}

#[test]
fn an_unlabelled_pod_names_its_own_cluster_and_workload() {
    let bootstrap = json_of(&BootstrapParams {
        labels: BTreeMap::new(),
        namespace: "default".to_string(),
        ..params()
    });
    let node = &bootstrap["node"];
    assert_eq!(node["cluster"], "reviews-v1-5d4b8c7f9-x2k4p.default");
    assert_eq!(
        node["metadata"]["WORKLOAD_NAME"],
        "reviews-v1-5d4b8c7f9-x2k4p"
    );
    // The canonical labels Istio's injector would have added.
    assert_eq!(
        node["metadata"]["LABELS"],
        json!({
            "service.istio.io/canonical-name": "reviews-v1-5d4b8c7f9-x2k4p",
            "service.istio.io/canonical-revision": "latest",
        })
    );
}

/// pilot-agent names the node cluster (the service name of spans) by `app` first, then
/// `app.kubernetes.io/name`, then the canonical-name label (`serviceClusterOrDefault`, kept so for
/// users with both labels); the canonical name is what span tags carry.
#[test]
fn app_wins_over_the_canonical_name_label_for_the_node_cluster() {
    let mut params = params();
    params.labels.insert(
        "service.istio.io/canonical-name".to_string(),
        "ratings".to_string(),
    );
    assert_eq!(json_of(&params)["node"]["cluster"], "reviews.bookinfo");
    params.labels.remove("app");
    assert_eq!(json_of(&params)["node"]["cluster"], "ratings.bookinfo");
}

#[test]
fn an_ipv6_pod_keeps_its_address_in_the_node_id() {
    let bootstrap = json_of(&BootstrapParams {
        pod: "p".to_string(),
        namespace: "default".to_string(),
        ip: "fd00::7".parse().unwrap(),
        ..params()
    });
    assert_eq!(
        bootstrap["node"]["id"],
        "sidecar~fd00::7~p.default~default.svc.cluster.local"
    );
    assert_eq!(bootstrap["node"]["metadata"]["INSTANCE_IPS"], "fd00::7");
}

#[test]
fn xds_addresses_are_ipv4_bracketed_ipv6_or_dns_names() {
    let parse = |s: &str| s.parse::<XdsAddr>();
    assert_eq!(
        parse("127.0.0.1:15010").unwrap(),
        XdsAddr {
            host: XdsHost::Ip("127.0.0.1".parse().unwrap()),
            port: 15010
        }
    );
    assert_eq!(
        parse("[::1]:15012").unwrap(),
        XdsAddr {
            host: XdsHost::Ip("::1".parse().unwrap()),
            port: 15012
        }
    );
    assert_eq!(
        parse("meshd.mesh-system.svc:15010").unwrap(),
        XdsAddr {
            host: XdsHost::Dns("meshd.mesh-system.svc".into()),
            port: 15010
        }
    );
    for bad in [
        "localhost",
        "::1:15010",
        "host:0",
        "host:http",
        ":15010",
        "bad_host:1",
        "[::1]15010",
    ] {
        assert!(parse(bad).is_err(), "{bad} should be rejected");
    }
}
