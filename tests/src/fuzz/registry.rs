//! ServiceEntry and WorkloadEntry: hosts, addresses, ports, resolution, inline endpoints.

use serde_json::{Value, json};

use super::world::Gen;

const NETWORKING: &str = "networking.istio.io/v1";

fn workload(g: &mut Gen, port_names: &[String]) -> Value {
    let address = if g.chance(20) { g.a.host() } else { g.a.ip() };
    let mut w = json!({"address": address});
    if g.chance(50) && !port_names.is_empty() {
        let name = g.a.rng.pick(port_names).clone();
        w["ports"] = json!({ name: g.a.port() });
    }
    if g.chance(50) {
        w["labels"] = json!(g.labels());
    }
    if g.chance(30) {
        let locality = if g.hostile() {
            (*g.a.rng.pick(&["a/b/c/d", "/", "", "us east"])).to_string()
        } else {
            (*g.a
                .rng
                .pick(&["us-east", "us-east/zone-a", "eu/zone-b/sub"]))
            .to_string()
        };
        w["locality"] = json!(locality);
    }
    if g.chance(30) {
        w["weight"] = g.a.weight();
    }
    if g.chance(20) {
        w["network"] = json!(g.a.name());
    }
    if g.chance(30) {
        w["serviceAccount"] = json!(g.a.name());
    }
    w
}

pub fn service_entry(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "se");
    let hosts: Vec<String> = g.some(2, |g| g.a.host());
    g.world.external_hosts.extend(hosts.iter().cloned());
    let ports: Vec<Value> = g.some(3, |g| {
        let mut p = json!({"number": g.a.port(), "name": g.port_name()});
        if g.chance(80) {
            p["protocol"] = json!(g.protocol());
        }
        if g.chance(20) {
            p["targetPort"] = g.a.port();
        }
        p
    });
    let port_names: Vec<String> = ports
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let resolution = if g.hostile() {
        *g.a.rng.pick(&["", "dns", "SOMETIMES"])
    } else {
        *g.a.rng.pick(&["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"])
    };
    let mut spec = json!({"hosts": hosts, "ports": ports, "resolution": resolution});
    if g.chance(60) {
        spec["location"] = json!(*g.a.rng.pick(&["MESH_EXTERNAL", "MESH_INTERNAL"]));
    }
    if g.chance(30) {
        spec["addresses"] = json!(g.some(2, |g| g.a.cidr()));
    }
    if g.chance(20) {
        spec["workloadSelector"] = g.workload_selector();
    } else if g.chance(60) {
        spec["endpoints"] = json!(g.some(3, |g| workload(g, &port_names)));
    }
    if g.chance(20) {
        spec["exportTo"] = export_to(g);
    }
    json!({"apiVersion": NETWORKING, "kind": "ServiceEntry", "metadata": meta, "spec": spec})
}

pub fn workload_entry(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "we");
    let names = vec![g.port_name()];
    json!({"apiVersion": NETWORKING, "kind": "WorkloadEntry", "metadata": meta,
        "spec": workload(g, &names)})
}

/// `exportTo`: `.`, `*`, `~` or namespaces.
pub fn export_to(g: &mut Gen) -> Value {
    json!(g.some(2, |g| {
        if g.hostile() {
            (*g.a.rng.pick(&["", "~", "*.x", "Bad_NS"])).to_string()
        } else {
            match g.below(3) {
                0 => ".".to_string(),
                1 => "*".to_string(),
                _ => g.namespace(),
            }
        }
    }))
}
