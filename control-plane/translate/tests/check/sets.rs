//! Rules across one response, judged by Envoy serving the set from a file subscription
//! (`cds_api_helper.cc`, `lds_api.cc`, `listener_manager_impl.cc`, `eds.cc`,
//! `rds_route_config_subscription.cc`).

use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use serde_json::{Value, json};

use super::case::Case;

fn cluster(name: &str) -> Value {
    json!({"name": name, "type": "STATIC", "connect_timeout": "1s"})
}

/// A listener that binds nothing (so runs never fight over ports) on 127.0.0.1:`port`.
fn listener(name: &str, port: u32) -> Value {
    json!({"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "bind_to_port": false,
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": "t", "cluster": "c"}}]}]})
}

fn assignment(name: &str) -> Value {
    json!({"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}}}}]}]})
}

fn table(name: &str) -> Value {
    json!({"name": name, "virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]})
}

pub fn cases() -> Vec<Case> {
    vec![
        Case::set(
            "cluster names are unique in a response",
            CLUSTER,
            vec![cluster("x"), cluster("x")],
            vec![cluster("x"), cluster("y")],
            "duplicate CDS x",
        ),
        Case::set(
            "listener names are unique in a response",
            LISTENER,
            vec![listener("x", 38101), listener("x", 38102)],
            vec![listener("x", 38101), listener("y", 38102)],
            "duplicate LDS x",
        ),
        Case::set(
            "two listeners never share an address, bound or not",
            LISTENER,
            vec![listener("x", 38101), listener("y", 38101)],
            vec![listener("x", 38101), listener("y", 38102)],
            "has duplicate address '127.0.0.1:38101'",
        ),
        Case::set(
            "an endpoint subscription gets one assignment per name",
            ENDPOINT,
            vec![assignment("e"), assignment("e")],
            vec![assignment("e")],
            "duplicate EDS e",
        ),
        Case::set(
            "a route subscription gets one table per name",
            ROUTE,
            vec![table("r"), table("r")],
            vec![table("r")],
            "duplicate RDS r",
        ),
    ]
}
