//! `meshd proxy-config clusters|listeners|routes|endpoints|secrets|all|bootstrap|log PROXY_ID`:
//! what meshd sent a proxy (its debug API), or with `--from envoy` what the proxy applied (its
//! Envoy admin port), in the same tables.

use serde_json::Value;

use super::envoy_admin::{self, AdminAddr};
use super::{DebugAddr, get_json, print_table};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// clusters, listeners, routes, endpoints, secrets, all; bootstrap and log (from Envoy).
    #[arg(value_parser = ["clusters", "cluster", "listeners", "listener", "routes", "route", "endpoints", "endpoint", "secrets", "secret", "all", "bootstrap", "log"])]
    pub what: String,
    /// `POD.NAMESPACE` or the full Envoy node id.
    pub proxy_id: String,
    #[command(flatten)]
    pub debug: DebugAddr,
    /// Whose account: `meshd` (what it sent) or `envoy` (what the proxy applied, from its admin
    /// port).
    #[arg(long = "from", default_value = "meshd", value_parser = ["meshd", "envoy"])]
    pub from: String,
    #[command(flatten)]
    pub admin: AdminAddr,
    /// `log`: set every Envoy logger to this level first (trace, debug, info, warning, error,
    /// critical, off).
    #[arg(long = "level")]
    pub level: Option<String>,
    /// Output format: table or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // The proxy's own admin port, reached when asked for (a port-forward lives as long as it).
    let envoy = || args.admin.reach(&args.proxy_id, &args.debug.kubectl);
    match args.what.as_str() {
        "log" => {
            print!(
                "{}",
                envoy_admin::logging(&envoy()?.addr, args.level.as_deref())?
            );
            return Ok(());
        }
        "bootstrap" => {
            let dump = envoy_admin::config_dump(&envoy()?.addr)?;
            println!("{}", serde_json::to_string_pretty(&dump["bootstrap"])?);
            return Ok(());
        }
        _ => {}
    }
    let dump = if args.from == "envoy" {
        envoy_admin::config_dump(&envoy()?.addr)?
    } else {
        let path = format!("/debug/config_dump?proxyID={}", url_encode(&args.proxy_id));
        get_json(&args.debug.reach()?.addr, &path)?
    };
    let kinds: Vec<&str> = match args.what.trim_end_matches('s') {
        "cluster" => vec!["clusters"],
        "listener" => vec!["listeners"],
        "route" => vec!["routes"],
        "endpoint" => vec!["endpoints"],
        "secret" => vec!["secrets"],
        _ => vec!["clusters", "listeners", "routes", "endpoints", "secrets"],
    };
    if args.output == "json" {
        let mut out = serde_json::Map::new();
        for k in &kinds {
            let list: Vec<Value> = dump[*k]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| r["resource"].clone())
                .collect();
            out.insert(k.to_string(), Value::Array(list));
        }
        let value = if kinds.len() == 1 {
            out.remove(kinds[0]).unwrap_or_default()
        } else {
            Value::Object(out)
        };
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let list: Vec<&Value> = dump[*k]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| &r["resource"])
            .collect();
        match *k {
            "clusters" => clusters_table(&list),
            "listeners" => listeners_table(&list),
            "routes" => routes_table(&list),
            "endpoints" => endpoints_table(&list),
            _ => secrets_table(&list),
        }
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn clusters_table(list: &[&Value]) {
    let rows = list
        .iter()
        .map(|c| {
            let name = str_of(&c["name"]);
            let parts: Vec<&str> = name.split('|').collect();
            let (fqdn, port, subset, direction) = if parts.len() == 4 {
                (
                    parts[3].to_string(),
                    parts[1].to_string(),
                    parts[2].to_string(),
                    parts[0].to_string(),
                )
            } else {
                (name.clone(), "-".into(), "-".into(), "-".into())
            };
            let dr = c["metadata"]["filter_metadata"]["istio"]["config"]
                .as_str()
                .filter(|p| p.contains("destinationrules"))
                .unwrap_or("")
                .to_string();
            let t = c["type"].as_str().unwrap_or("STATIC").to_string();
            vec![fqdn, port, subset, direction, t, dr]
        })
        .collect::<Vec<_>>();
    print_table(
        &[
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE",
        ],
        &rows,
    );
}

fn address_of(v: &Value) -> (String, String) {
    let sa = &v["socket_address"];
    (str_of(&sa["address"]), str_of(&sa["port_value"]))
}

fn listeners_table(list: &[&Value]) {
    let mut rows = Vec::new();
    for l in list {
        let (addr, port) = address_of(&l["address"]);
        for chain in l["filter_chains"].as_array().into_iter().flatten() {
            let m = &chain["filter_chain_match"];
            let matched = if let Some(p) = m["destination_port"].as_u64() {
                format!("dst port {p}")
            } else {
                "ALL".to_string()
            };
            let filter = &chain["filters"][0]["typed_config"];
            let dest = if let Some(rds) = filter["rds"]["route_config_name"].as_str() {
                format!("Route: {rds}")
            } else if let Some(c) = filter["cluster"].as_str() {
                format!("Cluster: {c}")
            } else if filter["route_config"].is_object() {
                format!("Inline Route: {}", str_of(&filter["route_config"]["name"]))
            } else {
                String::new()
            };
            rows.push(vec![addr.clone(), port.clone(), matched, dest]);
        }
    }
    print_table(&["ADDRESSES", "PORT", "MATCH", "DESTINATION"], &rows);
}

fn routes_table(list: &[&Value]) {
    let mut rows = Vec::new();
    for r in list {
        for vh in r["virtual_hosts"].as_array().into_iter().flatten() {
            let domains: Vec<String> = vh["domains"]
                .as_array()
                .into_iter()
                .flatten()
                .map(str_of)
                .collect();
            let shown = if domains.len() > 3 {
                format!(
                    "{} + {} more...",
                    domains[..2].join(", "),
                    domains.len() - 2
                )
            } else {
                domains.join(", ")
            };
            for route in vh["routes"].as_array().into_iter().flatten() {
                let m = &route["match"];
                let matched = ["prefix", "path_separated_prefix", "path", "safe_regex"]
                    .iter()
                    .find_map(|k| {
                        m.get(*k).map(|v| {
                            if k.ends_with("prefix") {
                                format!("{}*", str_of(v))
                            } else {
                                str_of(v)
                            }
                        })
                    })
                    .unwrap_or_default();
                let vs = route["metadata"]["filter_metadata"]["istio"]["config"]
                    .as_str()
                    .map(route_source)
                    .unwrap_or_default();
                rows.push(vec![
                    str_of(&r["name"]),
                    str_of(&vh["name"]),
                    shown.clone(),
                    matched,
                    vs,
                ]);
            }
        }
    }
    print_table(
        &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
        &rows,
    );
}

/// The object a route came from, as istioctl names it: `NAME.NAMESPACE` for a VirtualService,
/// `KIND/NAME.NAMESPACE` for a Gateway API route (`HTTPRoute/shop.apps`); a config path meshd does
/// not know as it is.
fn route_source(config_path: &str) -> String {
    match meshd_translate::blame::object_of_config_path(config_path) {
        Some(key) if key.kind == meshd_model::Kind::VirtualService => {
            format!("{}.{}", key.name, key.namespace)
        }
        Some(key) => format!("{}/{}.{}", key.kind, key.name, key.namespace),
        None => config_path.to_string(),
    }
}

fn endpoints_table(list: &[&Value]) {
    let mut rows = Vec::new();
    for cla in list {
        for group in cla["endpoints"].as_array().into_iter().flatten() {
            for ep in group["lb_endpoints"].as_array().into_iter().flatten() {
                let (addr, port) = address_of(&ep["endpoint"]["address"]);
                let health = ep["health_status"]
                    .as_str()
                    .unwrap_or("HEALTHY")
                    .to_string();
                rows.push(vec![
                    format!("{addr}:{port}"),
                    health,
                    str_of(&cla["cluster_name"]),
                ]);
            }
        }
    }
    print_table(&["ENDPOINT", "STATUS", "CLUSTER"], &rows);
}

fn secrets_table(list: &[&Value]) {
    let mut rows = Vec::new();
    for s in list {
        let kind = if s["tls_certificate"].is_object() {
            "Cert Chain"
        } else {
            "CA"
        };
        for c in s["certificates"]
            .as_array()
            .into_iter()
            .flatten()
            .take(if kind == "CA" { usize::MAX } else { 1 })
        {
            rows.push(vec![
                str_of(&s["name"]),
                kind.to_string(),
                "ACTIVE".to_string(),
                c["valid"].as_bool().unwrap_or(false).to_string(),
                str_of(&c["serial"]),
                str_of(&c["not_after"]),
                str_of(&c["not_before"]),
            ]);
        }
    }
    print_table(
        &[
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use super::route_source;

    #[test]
    fn routes_name_the_virtual_service_or_gateway_api_route_they_came_from() {
        assert_eq!(
            route_source("/apis/networking.istio.io/v1/namespaces/shop/virtualservices/cart"),
            "cart.shop"
        );
        assert_eq!(
            route_source("/apis/gateway.networking.k8s.io/v1/namespaces/apps/httproutes/split"),
            "HTTPRoute/split.apps"
        );
        assert_eq!(
            route_source("/apis/gateway.networking.k8s.io/v1/namespaces/apps/grpcroutes/echo"),
            "GRPCRoute/echo.apps"
        );
        assert_eq!(route_source("/somewhere/else"), "/somewhere/else");
    }
}
