//! Endpoint cases (`source/extensions/clusters/eds/eds.cc` through the IP resolver, and
//! protoc-gen-validate).

use meshd_proto::type_url::ENDPOINT;
use serde_json::{Value, json};

use super::case::Case;

fn assignment(lb_endpoints: Value) -> Value {
    json!({"cluster_name": "e", "endpoints": [{"locality": {"zone": "a"}, "lb_endpoints": lb_endpoints}]})
}

fn host(address: &str, port: u32) -> Value {
    json!({"endpoint": {"address": {"socket_address": {"address": address, "port_value": port}}}})
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::one(
            "endpoints are IP addresses",
            ENDPOINT,
            assignment(json!([host("10.0.0.1", 80), host("pod.example", 80)])),
            assignment(json!([host("10.0.0.1", 80), host("fd00::1", 80)])),
            "malformed IP address: pod.example",
        ),
        Case::one(
            "endpoint weights are at least 1",
            ENDPOINT,
            assignment(
                json!([{"load_balancing_weight": 0, "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}}}]),
            ),
            assignment(
                json!([{"load_balancing_weight": 1, "endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}}}]),
            ),
            "greater than or equal to 1",
        ),
        Case::one(
            "endpoint ports fit 16 bits",
            ENDPOINT,
            assignment(json!([host("10.0.0.1", 70000)])),
            assignment(json!([host("10.0.0.1", 0)])),
            "less than or equal to 65535",
        ),
    ]
}
