//! Cluster cases (`source/extensions/clusters/*`, `source/common/upstream/`, the load
//! balancers' configs, and protoc-gen-validate, also inside typed protocol options).

use meshd_proto::type_url::CLUSTER;
use serde_json::{Value, json};

use super::case::Case;

/// A cluster named `x` of `kind`, with `more` fields.
fn cluster(kind: &str, more: Value) -> Value {
    let mut c = json!({"name": "x", "type": kind, "connect_timeout": "1s"});
    if let (Value::Object(base), Value::Object(extra)) = (&mut c, more) {
        base.extend(extra);
    }
    c
}

fn endpoints(hosts: &[&str]) -> Value {
    json!({"cluster_name": "x", "endpoints": [{"lb_endpoints": hosts.iter().map(|h| json!(
        {"endpoint": {"address": {"socket_address": {"address": h, "port_value": 80}}}})).collect::<Vec<_>>()}]})
}

fn ads() -> Value {
    json!({"eds_config": {"ads": {}, "resource_api_version": "V3"}})
}

fn http2(key: &str, options: Value) -> Value {
    let mut o = json!({"@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"});
    if let (Value::Object(base), Value::Object(extra)) = (&mut o, options) {
        base.extend(extra);
    }
    cluster(
        "STATIC",
        json!({"typed_extension_protocol_options": {key: o}}),
    )
}

const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// A cluster that originates TLS with `params` (no SDS, so Envoy builds the context at once).
fn tls(params: Value) -> Value {
    cluster(
        "STATIC",
        json!({"transport_socket": {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
        "common_tls_context": {"tls_params": params}}}}),
    )
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::one(
            "EDS clusters say where their endpoints come from",
            CLUSTER,
            cluster("EDS", json!({})),
            cluster("EDS", json!({"eds_cluster_config": ads()})),
            "without an EDS config",
        ),
        Case::one(
            "an EDS config names its config source",
            CLUSTER,
            cluster("EDS", json!({"eds_cluster_config": {"service_name": "s"}})),
            cluster(
                "EDS",
                json!({"eds_cluster_config": {"service_name": "s", "eds_config": {"ads": {}}}}),
            ),
            "Missing config source specifier",
        ),
        Case::one(
            "static clusters hold IP addresses",
            CLUSTER,
            cluster(
                "STATIC",
                json!({"load_assignment": endpoints(&["db.example"])}),
            ),
            cluster(
                "STATIC",
                json!({"load_assignment": endpoints(&["10.0.0.1", "::1"])}),
            ),
            "malformed IP address: db.example",
        ),
        Case::one(
            "logical DNS clusters resolve one host",
            CLUSTER,
            cluster(
                "LOGICAL_DNS",
                json!({"load_assignment": endpoints(&["a.example", "b.example"])}),
            ),
            cluster(
                "LOGICAL_DNS",
                json!({"load_assignment": endpoints(&["a.example"])}),
            ),
            "LOGICAL_DNS clusters must have a single",
        ),
        Case::one(
            "original destination clusters balance by themselves",
            CLUSTER,
            cluster("ORIGINAL_DST", json!({"lb_policy": "ROUND_ROBIN"})),
            cluster("ORIGINAL_DST", json!({"lb_policy": "CLUSTER_PROVIDED"})),
            "Only 'CLUSTER_PROVIDED' is allowed",
        ),
        Case::one(
            "original destination clusters have no endpoints",
            CLUSTER,
            cluster(
                "ORIGINAL_DST",
                json!({"lb_policy": "CLUSTER_PROVIDED", "load_assignment": endpoints(&["10.0.0.1"])}),
            ),
            cluster("ORIGINAL_DST", json!({"lb_policy": "CLUSTER_PROVIDED"})),
            "must have no load assignment",
        ),
        Case::one(
            "only original destination clusters provide their balancer",
            CLUSTER,
            cluster("STRICT_DNS", json!({"lb_policy": "CLUSTER_PROVIDED"})),
            cluster("STRICT_DNS", json!({"lb_policy": "LEAST_REQUEST"})),
            "does not provide one",
        ),
        Case::one(
            "a ring's minimum size is at most its maximum",
            CLUSTER,
            cluster(
                "STATIC",
                json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 2048, "maximum_ring_size": 1024}}),
            ),
            cluster(
                "STATIC",
                json!({"lb_policy": "RING_HASH", "ring_hash_lb_config": {"minimum_ring_size": 1024, "maximum_ring_size": 1024}}),
            ),
            "minimum_ring_size (2048) > maximum_ring_size (1024)",
        ),
        Case::one(
            "a Maglev table size is prime",
            CLUSTER,
            cluster(
                "STATIC",
                json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1000}}),
            ),
            cluster(
                "STATIC",
                json!({"lb_policy": "MAGLEV", "maglev_lb_config": {"table_size": 1009}}),
            ),
            "must be prime",
        ),
        Case::one(
            "protocol options are keyed by a registered name",
            CLUSTER,
            http2(
                "http",
                json!({"explicit_http_config": {"http2_protocol_options": {}}}),
            ),
            http2(
                HTTP_OPTIONS,
                json!({"explicit_http_config": {"http2_protocol_options": {}}}),
            ),
            "no protocol options implementation",
        ),
        Case::one(
            "protocol options say which protocol",
            CLUSTER,
            http2(
                HTTP_OPTIONS,
                json!({"common_http_protocol_options": {"idle_timeout": "5s"}}),
            ),
            http2(HTTP_OPTIONS, json!({"use_downstream_protocol_config": {}})),
            "exactly one of",
        ),
        Case::one(
            "cipher suites are ones BoringSSL knows",
            CLUSTER,
            tls(json!({"cipher_suites": ["ECDHE-RSA-AES128-GCM-SHA256", "AES128-SHA256"]})),
            tls(
                json!({"cipher_suites": ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "AES"]}),
            ),
            "does not take \"AES128-SHA256\"",
        ),
        Case::one(
            "cipher suites select a TLS 1.2 cipher",
            CLUSTER,
            tls(json!({"cipher_suites": ["TLS_AES_128_GCM_SHA256", "!3DES"]})),
            tls(
                json!({"cipher_suites": ["TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"]}),
            ),
            "selects no TLS 1.2 cipher",
        ),
        Case::one(
            "cipher suite edits stay away from equal-preference groups",
            CLUSTER,
            tls(
                json!({"cipher_suites": ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]", "AES", "-AES128"]}),
            ),
            tls(json!({"cipher_suites": ["HIGH", "!3DES"]})),
            "edits a list with an equal-preference group",
        ),
        Case::one(
            "curves are ones BoringSSL knows",
            CLUSTER,
            tls(json!({"ecdh_curves": ["X25519", "secp256r1"]})),
            tls(json!({"ecdh_curves": ["X25519MLKEM768", "X25519", "P-256"]})),
            "does not take \"secp256r1\"",
        ),
        Case::one(
            "transport sockets carry a typed config",
            CLUSTER,
            cluster(
                "STATIC",
                json!({"transport_socket": {"name": "envoy.transport_sockets.raw_buffer"}}),
            ),
            cluster(
                "STATIC",
                json!({"transport_socket": {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}}),
            ),
            "transport socket has no typed_config",
        ),
        Case::one(
            "an ejection lasts at most its maximum, which is no shorter than its base",
            CLUSTER,
            cluster(
                "STATIC",
                json!({"outlier_detection": {"max_ejection_time": "10s"}}),
            ),
            cluster(
                "STATIC",
                json!({"outlier_detection": {"base_ejection_time": "600s"}}),
            ),
            "max_ejection_time cannot be smaller than base_ejection_time",
        ),
        Case::one(
            "connections time out after some time",
            CLUSTER,
            cluster("STATIC", json!({"connect_timeout": "0s"})),
            cluster("STATIC", json!({"connect_timeout": "0.001s"})),
            "greater than 0s",
        ),
        Case::one(
            "endpoint ports fit 16 bits",
            CLUSTER,
            cluster(
                "STRICT_DNS",
                json!({"load_assignment": {"cluster_name": "x", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "a.example", "port_value": 65536}}}}]}]}}),
            ),
            cluster(
                "STRICT_DNS",
                json!({"load_assignment": {"cluster_name": "x", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "a.example", "port_value": 65535}}}}]}]}}),
            ),
            "less than or equal to 65535",
        ),
    ]
}
