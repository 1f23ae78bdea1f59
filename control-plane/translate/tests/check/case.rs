//! One rule, twice: a resource set Envoy refuses, which the checker must catch with a message
//! naming the rule, and a near miss Envoy takes, where the checker must find nothing.

use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::type_url;
use meshd_translate::check::{check_resource, check_set};
use prost::Message;
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};

use super::envoy;

pub struct Case {
    pub rule: &'static str,
    pub type_url: &'static str,
    pub bad: Vec<Value>,
    pub good: Vec<Value>,
    /// Part of the checker's message for `bad`.
    pub expect: &'static str,
    /// Judged by serving the set through xDS (rules across a response), not by validate mode.
    pub xds: bool,
}

impl Case {
    pub fn one(
        rule: &'static str,
        url: &'static str,
        bad: Value,
        good: Value,
        expect: &'static str,
    ) -> Case {
        Case {
            rule,
            type_url: url,
            bad: vec![bad],
            good: vec![good],
            expect,
            xds: false,
        }
    }

    pub fn set(
        rule: &'static str,
        url: &'static str,
        bad: Vec<Value>,
        good: Vec<Value>,
        expect: &'static str,
    ) -> Case {
        Case {
            rule,
            type_url: url,
            bad,
            good,
            expect,
            xds: true,
        }
    }
}

/// Runs every case; fails listing each one where Envoy or the checker disagreed.
pub fn run(cases: Vec<Case>) {
    let mut wrong = Vec::new();
    for case in &cases {
        if judge_envoy(case, &case.bad, "bad").is_ok() {
            wrong.push(format!("{}: Envoy accepted the bad set", case.rule));
        }
        if let Err(e) = judge_envoy(case, &case.good, "good") {
            wrong.push(format!("{}: Envoy refused the near miss: {e}", case.rule));
        }
        let bad = checker(case.type_url, &case.bad);
        if !bad.iter().any(|v| v.contains(case.expect)) {
            wrong.push(format!(
                "{}: the checker did not say {:?} of the bad set, it said {bad:?}",
                case.rule, case.expect
            ));
        }
        let good = checker(case.type_url, &case.good);
        if !good.is_empty() {
            wrong.push(format!(
                "{}: the checker refused the near miss: {good:?}",
                case.rule
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

pub fn to_any(url: &str, value: &Value) -> Any {
    let name = url.rsplit('/').next().unwrap();
    let descriptor = meshd_proto::json::pool().get_message_by_name(name).unwrap();
    let mut value = value.clone();
    if let Value::Object(map) = &mut value {
        map.remove("@type");
    }
    let message = DynamicMessage::deserialize(descriptor, value).unwrap();
    Any {
        type_url: url.to_string(),
        value: message.encode_to_vec(),
    }
}

fn checker(url: &str, resources: &[Value]) -> Vec<String> {
    let anys: Vec<Any> = resources.iter().map(|r| to_any(url, r)).collect();
    let mut out: Vec<String> = anys
        .iter()
        .flat_map(|a| check_resource(url, a))
        .map(|v| v.to_string())
        .collect();
    out.extend(
        check_set(url, &anys)
            .into_iter()
            .map(|(n, v)| format!("{n}: {v}")),
    );
    out
}

fn judge_envoy(case: &Case, resources: &[Value], which: &str) -> Result<(), String> {
    let label = format!("{}-{which}", case.rule);
    if case.xds {
        return serve(case.type_url, resources, &label);
    }
    let mut clusters = vec![json!({
        "name": "xds-grpc", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "xds-grpc", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}}}]}]},
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}}
    })];
    clusters.extend(envoy::named_clusters());
    let mut listeners = Vec::new();
    let mut secrets = Vec::new();
    match case.type_url {
        type_url::CLUSTER => clusters.extend(resources.iter().cloned()),
        type_url::ENDPOINT => {
            for (i, cla) in resources.iter().enumerate() {
                clusters.push(json!({"name": format!("eds-check-{i}"), "type": "STATIC", "connect_timeout": "1s", "load_assignment": cla}));
            }
        }
        type_url::LISTENER => listeners.extend(resources.iter().cloned()),
        type_url::ROUTE => {
            for (i, table) in resources.iter().enumerate() {
                listeners.push(hcm_listener(
                    &format!("rds-check-{i}"),
                    30000 + i,
                    json!({"route_config": table}),
                ));
            }
        }
        type_url::SECRET => secrets.extend(resources.iter().cloned()),
        other => panic!("no bootstrap for {other}"),
    }
    envoy::validate(
        json!({
            "static_resources": {"clusters": clusters, "listeners": listeners, "secrets": secrets},
            "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3", "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]}}
        }),
        &label,
    )
}

/// A listener whose one chain is an HTTP connection manager with `routes` (`route_config` or
/// `rds`) and the router.
pub fn hcm_listener(name: &str, port: usize, routes: Value) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "check",
        "http_filters": [envoy::router()]
    });
    if let (Value::Object(h), Value::Object(r)) = (&mut hcm, routes) {
        h.extend(r);
    }
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "bind_to_port": false,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]
    })
}

/// One response of `url` served from a file to the subscription that type has in Envoy.
fn serve(url: &str, resources: &[Value], label: &str) -> Result<(), String> {
    let typed: Vec<Value> = resources
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r["@type"] = json!(url);
            r
        })
        .collect();
    let response = json!({"version_info": "1", "resources": typed});
    let source = json!({"path_config_source": {"path": "{dir}/resources.json"}, "resource_api_version": "V3"});
    let bootstrap = match url {
        type_url::CLUSTER => json!({
            "static_resources": {"clusters": envoy::named_clusters()},
            "dynamic_resources": {"cds_config": source}
        }),
        type_url::LISTENER => json!({
            "static_resources": {"clusters": envoy::named_clusters()},
            "dynamic_resources": {"lds_config": source}
        }),
        type_url::ENDPOINT => json!({
            "static_resources": {"clusters": [{"name": "e", "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": source}}]}
        }),
        type_url::ROUTE => json!({
            "static_resources": {
                "clusters": envoy::named_clusters(),
                "listeners": [hcm_listener("rds", 30999, json!({"rds": {"route_config_name": "r", "config_source": source}}))]
            }
        }),
        other => panic!("no subscription for {other}"),
    };
    envoy::serve(bootstrap, &[("resources.json", response)], label)
}
