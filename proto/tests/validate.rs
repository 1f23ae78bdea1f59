//! protoc-gen-validate's rules over Envoy's API: each rule kind Envoy's protos use, read from the
//! embedded pool, with the path of the offending value.

#![allow(clippy::unwrap_used)]

use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::validate::{Violation, validate, validate_any, validate_dynamic};
use prost_reflect::DynamicMessage;
use serde_json::{Value, json};

/// Violations of `value`, a `type_name` written as Envoy JSON, as `path: message` lines.
fn violations(type_name: &str, value: Value) -> Vec<String> {
    let descriptor = meshd_proto::json::pool()
        .get_message_by_name(type_name)
        .unwrap();
    let message = DynamicMessage::deserialize(descriptor, value).unwrap();
    validate_dynamic(&message)
        .iter()
        .map(Violation::to_string)
        .collect()
}

fn paths(type_name: &str, value: Value) -> Vec<String> {
    violations(type_name, value)
        .into_iter()
        .map(|v| v.split(": ").next().unwrap().to_string())
        .collect()
}

const ROUTES: &str = "envoy.config.route.v3.RouteConfiguration";
const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";

fn route(matcher: Value) -> Value {
    json!({"match": matcher, "route": {"cluster": "c"}})
}

#[test]
fn a_complete_route_table_has_no_violations() {
    let table = json!({"name": "80", "virtual_hosts": [
        {"name": "a", "domains": ["a.example"], "routes": [route(json!({"prefix": "/"}))]}
    ]});
    assert_eq!(violations(ROUTES, table), Vec::<String>::new());
}

#[test]
fn string_lengths_and_repeated_minimums_are_reported_with_their_paths() {
    let table = json!({"virtual_hosts": [
        {"name": "ok", "domains": ["a"]},
        {"name": "", "domains": []}
    ]});
    assert_eq!(
        paths(ROUTES, table),
        ["virtual_hosts[1].name", "virtual_hosts[1].domains"]
    );
}

#[test]
fn a_required_oneof_left_empty_is_reported() {
    let table = json!({"virtual_hosts": [
        {"name": "a", "domains": ["a"], "routes": [route(json!({}))]}
    ]});
    let found = violations(ROUTES, table);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("virtual_hosts[0].routes[0].match.path_specifier: exactly one of"),
        "{found:?}"
    );
}

#[test]
fn header_names_follow_the_well_known_expressions() {
    let with_header = |name: &str, value: &str| json!({"request_headers_to_add": [{"header": {"key": name, "value": value}}]});
    assert_eq!(
        violations(ROUTES, with_header("x-ok", "v")),
        Vec::<String>::new()
    );
    // Both are checked loosely here: only NUL, CR and LF are refused.
    assert_eq!(
        violations(ROUTES, with_header("a name", "v")),
        Vec::<String>::new()
    );
    assert_eq!(
        violations(ROUTES, with_header("a\rname", "v")),
        ["request_headers_to_add[0].header.key: value must be a valid HTTP header name"]
    );
    assert_eq!(
        paths(ROUTES, with_header("x-ok", "a\nb")),
        ["request_headers_to_add[0].header.value"]
    );
    assert_eq!(
        violations(ROUTES, with_header("x-ok", "a\tb")),
        Vec::<String>::new()
    );
}

#[test]
fn numeric_enum_and_duration_rules_apply() {
    let cluster = json!({
        "name": "c",
        "connect_timeout": "0s",
        "per_connection_buffer_limit_bytes": 1,
        "common_lb_config": {"healthy_panic_threshold": {"value": 101}},
    });
    let mut found = violations(CLUSTER, cluster);
    found.sort();
    assert_eq!(
        found,
        [
            "common_lb_config.healthy_panic_threshold.value: value must be greater than or equal to 0 and less than or equal to 100",
            "connect_timeout: value must be greater than 0s",
        ]
    );
    let descriptor = meshd_proto::json::pool()
        .get_message_by_name(CLUSTER)
        .unwrap();
    let mut message =
        DynamicMessage::deserialize(descriptor, json!({"name": "c", "lb_policy": "RANDOM"}))
            .unwrap();
    message.set_field_by_name("lb_policy", prost_reflect::Value::EnumNumber(77));
    let found: Vec<String> = validate_dynamic(&message)
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("lb_policy: value 77 must be one of the defined values"));
}

#[test]
fn typed_configs_are_opened_and_checked_by_their_type() {
    let listener = json!({
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "",
                "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route(json!({"safe_regex": {"regex": ""}}))]}]},
            }
        }]}]
    });
    let mut found = paths("envoy.config.listener.v3.Listener", listener);
    found.sort();
    assert_eq!(
        found,
        [
            "filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex",
            "filter_chains[0].filters[0].typed_config.stat_prefix",
        ]
    );
}

#[test]
fn an_any_of_a_type_outside_the_pool_is_reported_as_unknown() {
    let any = Any {
        type_url: "type.googleapis.com/example.Unknown".into(),
        value: vec![],
    };
    assert_eq!(
        validate_any(&any),
        [Violation::new(
            "",
            "type example.Unknown is unknown: its rules cannot be checked"
        )]
    );
}

#[test]
fn typed_messages_are_checked_through_their_type_url() {
    let table = RouteConfiguration {
        name: "80".into(),
        virtual_hosts: vec![Default::default()],
        ..Default::default()
    };
    let found: Vec<String> = validate(&table).into_iter().map(|v| v.path).collect();
    assert_eq!(found, ["virtual_hosts[0].name", "virtual_hosts[0].domains"]);
}

#[test]
fn map_keys_and_unset_optional_messages_follow_their_rules() {
    // `typed_extension_protocol_options` keys are not constrained; an unset message with no
    // `required` rule is not reported.
    let cluster = json!({"name": "c", "typed_extension_protocol_options": {}});
    assert_eq!(violations(CLUSTER, cluster), Vec::<String>::new());
    // Metadata's filter_metadata is a map of Struct: entries are walked (nothing to break).
    let cluster = json!({"name": "c", "metadata": {"filter_metadata": {"istio": {"a": 1}}}});
    assert_eq!(violations(CLUSTER, cluster), Vec::<String>::new());
}

#[test]
fn repeated_items_must_be_unique_where_the_rules_say_so() {
    let table = with_internal_redirect(json!(["x-a", "x-b", "x-a"]));
    assert_eq!(
        violations(ROUTES, table),
        [
            "virtual_hosts[0].routes[0].route.internal_redirect_policy.response_headers_to_copy[2]: \
             repeated value must contain unique items"
        ]
    );
    assert_eq!(
        violations(ROUTES, with_internal_redirect(json!(["x-a", "x-b"]))),
        Vec::<String>::new()
    );
}

fn with_internal_redirect(headers: Value) -> Value {
    json!({"virtual_hosts": [{"name": "a", "domains": ["a"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "c",
            "internal_redirect_policy": {"response_headers_to_copy": headers}}}]}]})
}

#[test]
fn map_keys_follow_their_rules() {
    let cluster = json!({"name": "c", "metadata": {"filter_metadata": {"": {}, "istio": {}}}});
    assert_eq!(
        violations(CLUSTER, cluster),
        ["metadata.filter_metadata[\"\"]: value length must be at least 1 characters"]
    );
}

#[test]
fn a_required_any_left_unset_is_reported() {
    assert_eq!(
        violations(
            "envoy.config.core.v3.TypedExtensionConfig",
            json!({"name": "x"})
        ),
        ["typed_config: value is required"]
    );
}
