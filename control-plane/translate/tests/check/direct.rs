//! What the checker says where no JSON Envoy reads can say it (values JSON cannot spell, types
//! outside the pool) or no Envoy run is needed to know.

use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::listener::v3::{Listener, filter};
use meshd_proto::pb::google::protobuf::{Any, Duration};
use meshd_proto::type_url::{CLUSTER, LISTENER, ROUTE};
use meshd_translate::check::{AddressIndex, check_resource, check_set};
use serde_json::json;

use super::case::to_any;

fn messages(url: &str, any: &Any) -> Vec<String> {
    check_resource(url, any)
        .iter()
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn durations_past_ten_thousand_years_are_refused() {
    let cluster = Cluster {
        name: "x".into(),
        connect_timeout: Some(Duration {
            seconds: 315_576_000_001,
            nanos: 0,
        }),
        ..Default::default()
    };
    let found = messages(CLUSTER, &meshd_proto::pack(&cluster));
    assert!(
        found
            .iter()
            .any(|m| m.starts_with("connect_timeout: Duration out-of-range")),
        "{found:?}"
    );
}

#[test]
fn a_resource_of_another_type_than_announced_is_refused() {
    let cluster = meshd_proto::pack(&Cluster {
        name: "x".into(),
        ..Default::default()
    });
    let found = messages(LISTENER, &cluster);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("not a type.googleapis.com/envoy.config.listener.v3.Listener"));
}

#[test]
fn a_typed_config_of_a_type_meshd_does_not_know_is_reported_not_passed() {
    let listener = json!({"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": [{"filters": [{"name": "tcp", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "t", "cluster": "c"}}]}]});
    let any = to_any(LISTENER, &listener);
    assert_eq!(messages(LISTENER, &any), Vec::<String>::new());
    // The same listener with the filter's config relabelled as a type outside the pool.
    let mut typed: Listener = meshd_proto::unpack(&any).unwrap();
    if let Some(filter::ConfigType::TypedConfig(config)) =
        &mut typed.filter_chains[0].filters[0].config_type
    {
        config.type_url = "type.googleapis.com/example.v1.Unknown".into();
    }
    let any = meshd_proto::pack(&typed);
    let found = messages(LISTENER, &any);
    assert!(
        found.iter().any(|m| m == "filter_chains[0].filters[0].typed_config: type example.v1.Unknown is unknown: its rules cannot be checked"),
        "{found:?}"
    );
}

#[test]
fn regexes_too_large_to_build_are_refused() {
    let regex = "(?:x{1000})".repeat(1100);
    let table = json!({"name": "80", "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
        {"match": {"safe_regex": {"regex": regex}}, "route": {"cluster": "c"}}]}]});
    let found = messages(ROUTE, &to_any(ROUTE, &table));
    assert!(
        found
            .iter()
            .any(|m| m.contains("far over the limit of 32768")),
        "{found:?}"
    );
}

#[test]
fn listeners_clash_by_address_not_by_spelling_and_never_on_port_zero() {
    let listener = |name: &str, address: &str, port: u32, protocol: &str| {
        to_any(
            LISTENER,
            &json!({"name": name, "address": {"socket_address": {"address": address, "port_value": port, "protocol": protocol}},
                "filter_chains": [{"filters": []}]}),
        )
    };
    let clash = check_set(
        LISTENER,
        &[
            listener("a", "::", 80, "TCP"),
            listener("b", "0::0", 80, "TCP"),
        ],
    );
    assert_eq!(clash.len(), 1, "{clash:?}");
    assert_eq!(clash[0].0, "b");
    let apart = check_set(
        LISTENER,
        &[
            listener("a", "0.0.0.0", 0, "TCP"),
            listener("b", "0.0.0.0", 0, "TCP"),
            listener("c", "0.0.0.0", 53, "TCP"),
            listener("d", "0.0.0.0", 53, "UDP"),
        ],
    );
    assert_eq!(apart, Vec::new());
}

#[test]
fn listeners_added_to_an_indexed_set_clash_as_in_one_set() {
    let listener = |name: &str, port: u32| {
        to_any(
            LISTENER,
            &json!({"name": name, "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
                "filter_chains": [{"filters": []}]}),
        )
    };
    let shared = [listener("a", 80), listener("b", 81)];
    let added = [listener("c", 81), listener("d", 82), listener("e", 82)];
    let index = AddressIndex::of(&shared);
    let split: Vec<String> = index.clashes(&added).into_iter().map(|c| c.0).collect();
    let whole: Vec<String> = check_set(LISTENER, &[shared.to_vec(), added.to_vec()].concat())
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(split, ["c", "e"]);
    assert_eq!(split, whole);
}
