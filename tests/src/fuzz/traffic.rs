//! VirtualService, DestinationRule, Gateway and Sidecar: routes with every match and action,
//! traffic policies with every setting, gateway servers with every TLS mode, egress scopes.

use serde_json::{Map, Value, json};

use super::atoms::{CA_FILE, CERT_FILE, KEY_FILE};
use super::registry::export_to;
use super::world::{Gen, ROOT_NAMESPACE, router_labels};

const NETWORKING: &str = "networking.istio.io/v1";

/// A string match: exact, prefix or regex — or, hostile, none or two of them.
fn string_match(g: &mut Gen, value: impl Fn(&mut Gen) -> String) -> Value {
    if g.hostile() && g.chance(30) {
        return match g.below(2) {
            0 => json!({}),
            _ => json!({"exact": value(g), "prefix": value(g)}),
        };
    }
    match g.below(3) {
        0 => json!({"exact": value(g)}),
        1 => json!({"prefix": value(g)}),
        _ => json!({"regex": g.a.regex()}),
    }
}

fn path(g: &mut Gen) -> String {
    if g.hostile() {
        return (*g
            .a
            .rng
            .pick(&["", "no-slash", "/a b", "/%zz", "/\u{0}", "//", "/?q"]))
        .to_string();
    }
    (*g.a
        .rng
        .pick(&["/", "/api", "/api/v1/", "/users", "/static/"]))
    .to_string()
}

fn header_map(g: &mut Gen) -> Value {
    let mut m = Map::new();
    for _ in 0..g.a.rng.range(1, 2) {
        let name = g.a.header_name();
        let value = string_match(g, |g| g.a.header_value());
        m.insert(name, value);
    }
    Value::Object(m)
}

fn header_operations(g: &mut Gen) -> Value {
    let mut ops = json!({});
    for op in ["set", "add"] {
        if g.chance(50) {
            let mut m = Map::new();
            let name = g.a.header_name();
            m.insert(name, json!(g.a.header_value()));
            ops[op] = Value::Object(m);
        }
    }
    if g.chance(30) {
        ops["remove"] = json!(g.some(2, |g| g.a.header_name()));
    }
    ops
}

fn headers(g: &mut Gen) -> Value {
    let mut h = json!({});
    if g.chance(60) {
        h["request"] = header_operations(g);
    }
    if g.chance(60) {
        h["response"] = header_operations(g);
    }
    h
}

fn destination(g: &mut Gen) -> Value {
    let mut d = json!({"host": g.service_host()});
    if g.chance(30) {
        let subset = if !g.world.subsets.is_empty() && g.chance(70) {
            g.a.rng.pick(&g.world.subsets).clone()
        } else {
            g.a.name()
        };
        d["subset"] = json!(subset);
    }
    if g.chance(40) {
        d["port"] = json!({"number": g.port()});
    }
    d
}

fn http_match(g: &mut Gen) -> Value {
    let mut m = json!({});
    if g.chance(60) {
        m["uri"] = string_match(g, path);
    }
    if g.chance(20) {
        m["method"] = string_match(g, |g| {
            (*g.a.rng.pick(&["GET", "POST", "PUT", "get", ""])).to_string()
        });
    }
    if g.chance(20) {
        m["authority"] = string_match(g, |g| g.a.host());
    }
    if g.chance(30) {
        m["headers"] = header_map(g);
    }
    if g.chance(15) {
        m["queryParams"] = header_map(g);
    }
    if g.chance(10) {
        m["withoutHeaders"] = header_map(g);
    }
    if g.chance(15) {
        m["port"] = g.port();
    }
    if g.chance(10) {
        m["ignoreUriCase"] = json!(true);
    }
    if g.chance(10) {
        m["sourceLabels"] = json!(g.labels());
    }
    if g.chance(10) {
        m["sourceNamespace"] = json!(g.namespace());
    }
    if g.chance(10) {
        m["name"] = json!(g.a.name());
    }
    m
}

fn http_route(g: &mut Gen) -> Value {
    let mut r = json!({});
    if g.chance(60) {
        r["match"] = json!(g.some(2, http_match));
    }
    match g.below(10) {
        0 => {
            let mut redirect = json!({});
            if g.chance(60) {
                redirect["uri"] = json!(path(g));
            }
            if g.chance(40) {
                redirect["authority"] = json!(g.a.host());
            }
            if g.chance(20) {
                redirect["scheme"] = json!(*g.a.rng.pick(&["https", "http", "ftp", ""]));
            }
            if g.chance(20) {
                redirect["port"] = g.a.port();
            }
            if g.chance(30) {
                redirect["redirectCode"] = json!(*g.a.rng.pick(&[301u32, 302, 307, 308, 200, 0]));
            }
            r["redirect"] = redirect;
        }
        1 => {
            let status = if g.hostile() {
                *g.a.rng.pick(&[0u32, 99, 600, 1000])
            } else {
                *g.a.rng.pick(&[200u32, 404, 503, 418])
            };
            let mut dr = json!({"status": status});
            if g.chance(50) {
                dr["body"] = json!({"string": g.a.header_value()});
            }
            r["directResponse"] = dr;
        }
        _ => {
            let weighted = g.chance(40);
            let dests: Vec<Value> = g.some(3, |g| {
                let mut d = json!({"destination": destination(g)});
                if weighted {
                    d["weight"] = g.a.weight();
                }
                if g.chance(15) {
                    d["headers"] = headers(g);
                }
                d
            });
            r["route"] = json!(dests);
        }
    }
    if g.chance(20) {
        let mut rw = json!({});
        match g.below(3) {
            0 => rw["uri"] = json!(path(g)),
            1 => rw["uriRegexRewrite"] = json!({"match": g.a.regex(), "rewrite": "/\\1"}),
            _ => {}
        }
        if g.chance(40) {
            rw["authority"] = json!(g.a.host());
        }
        r["rewrite"] = rw;
    }
    if g.chance(25) {
        r["timeout"] = g.a.duration();
    }
    if g.chance(20) {
        let mut retries = json!({"attempts": g.a.count()});
        if g.chance(50) {
            retries["perTryTimeout"] = g.a.duration();
        }
        if g.chance(50) {
            let on = if g.hostile() {
                *g.a.rng
                    .pick(&["bogus", "5xx,,", "", "retriable-status-codes,999"])
            } else {
                *g.a.rng
                    .pick(&["5xx", "gateway-error,connect-failure", "reset,503"])
            };
            retries["retryOn"] = json!(on);
        }
        if g.chance(20) {
            retries["retryRemoteLocalities"] = json!(true);
        }
        r["retries"] = retries;
    }
    if g.chance(15) {
        let mut fault = json!({});
        if g.chance(50) {
            fault["delay"] =
                json!({"fixedDelay": g.a.duration(), "percentage": {"value": g.a.percent()}});
        }
        if g.chance(50) {
            let mut abort = json!({"percentage": {"value": g.a.percent()}});
            if g.chance(70) {
                abort["httpStatus"] = json!(*g.a.rng.pick(&[503u32, 500, 404, 0, 600, 99]));
            } else {
                abort["grpcStatus"] = json!(*g.a.rng.pick(&["UNAVAILABLE", "NOT_FOUND", "BOGUS"]));
            }
            fault["abort"] = abort;
        }
        r["fault"] = fault;
    }
    if g.chance(10) {
        r["mirror"] = destination(g);
        if g.chance(50) {
            r["mirrorPercentage"] = json!({"value": g.a.percent()});
        }
    } else if g.chance(10) {
        r["mirrors"] = json!(g.some(2, |g| json!({"destination": destination(g),
            "percentage": {"value": g.a.percent()}})));
    }
    if g.chance(10) {
        r["corsPolicy"] = json!({
            "allowOrigins": g.some(2, |g| string_match(g, |g| format!("https://{}", g.a.host()))),
            "allowMethods": ["GET", "POST"],
            "allowHeaders": g.list(2, |g| g.a.header_name()),
            "exposeHeaders": g.list(2, |g| g.a.header_name()),
            "maxAge": g.a.duration(),
            "allowCredentials": g.chance(50),
        });
    }
    if g.chance(20) {
        r["headers"] = headers(g);
    }
    if g.chance(30) {
        r["name"] = json!(g.a.name());
    }
    r
}

fn l4_destinations(g: &mut Gen) -> Value {
    let weighted = g.chance(40);
    json!(g.some(2, |g| {
        let mut d = json!({"destination": destination(g)});
        if weighted {
            d["weight"] = g.a.weight();
        }
        d
    }))
}

fn gateway_refs(g: &mut Gen) -> Vec<String> {
    g.some(2, |g| {
        if !g.world.gateways.is_empty() && g.chance(60) {
            let gw = g.a.rng.pick(&g.world.gateways).clone();
            if g.chance(50) {
                return gw;
            }
            return gw.rsplit('/').next().unwrap_or_default().to_string();
        }
        if g.chance(60) {
            return "mesh".to_string();
        }
        g.a.name()
    })
}

pub fn virtual_service(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "vs");
    let hosts: Vec<String> = g.some(2, |g| {
        if g.chance(70) {
            g.service_host()
        } else {
            g.a.host()
        }
    });
    let mut spec = json!({"hosts": hosts});
    if g.chance(40) {
        spec["gateways"] = json!(gateway_refs(g));
    }
    match g.below(6) {
        0 => {
            spec["tcp"] = json!(g.some(2, |g| {
                let mut r = json!({"route": l4_destinations(g)});
                if g.chance(40) {
                    let mut m = json!({});
                    if g.chance(50) {
                        m["port"] = g.port();
                    }
                    if g.chance(30) {
                        m["destinationSubnets"] = json!(g.some(2, |g| g.a.cidr()));
                    }
                    if g.chance(20) {
                        m["sourceLabels"] = json!(g.labels());
                    }
                    r["match"] = json!([m]);
                }
                r
            }));
        }
        1 => {
            spec["tls"] = json!(g.some(2, |g| {
                let mut m = json!({"sniHosts": g.some(2, |g| g.a.host())});
                if g.chance(30) {
                    m["port"] = g.port();
                }
                if g.chance(20) {
                    m["destinationSubnets"] = json!(g.some(1, |g| g.a.cidr()));
                }
                json!({"match": [m], "route": l4_destinations(g)})
            }));
        }
        _ => spec["http"] = json!(g.some(3, http_route)),
    }
    if g.chance(15) {
        spec["exportTo"] = export_to(g);
    }
    json!({"apiVersion": NETWORKING, "kind": "VirtualService", "metadata": meta, "spec": spec})
}

fn load_balancer(g: &mut Gen) -> Value {
    let mut lb = json!({});
    if g.chance(50) {
        let simple = if g.hostile() {
            *g.a.rng.pick(&["", "FASTEST", "least_request"])
        } else {
            *g.a.rng.pick(&[
                "ROUND_ROBIN",
                "LEAST_REQUEST",
                "LEAST_CONN",
                "RANDOM",
                "PASSTHROUGH",
                "UNSPECIFIED",
            ])
        };
        lb["simple"] = json!(simple);
    }
    if g.chance(30) {
        let mut ch = json!({});
        match g.below(4) {
            0 => ch["httpHeaderName"] = json!(g.a.header_name()),
            1 => {
                ch["httpCookie"] =
                    json!({"name": g.a.name(), "path": path(g), "ttl": g.a.duration()})
            }
            2 => ch["useSourceIp"] = json!(true),
            _ => ch["httpQueryParameterName"] = json!(g.a.name()),
        }
        match g.below(4) {
            0 => ch["ringHash"] = json!({"minimumRingSize": g.a.count()}),
            1 => ch["maglev"] = json!({"tableSize": g.a.count()}),
            2 => ch["minimumRingSize"] = g.a.count(),
            _ => {}
        }
        lb["consistentHash"] = ch;
    }
    if g.chance(20) {
        let locality = |g: &mut Gen| -> String {
            if g.hostile() {
                (*g.a.rng.pick(&["", "a/b/c/d", "*/x", "us east"])).to_string()
            } else {
                (*g.a.rng.pick(&["us-east", "us-east/zone-a", "eu/*", "*"])).to_string()
            }
        };
        let mut setting = json!({"enabled": g.chance(80)});
        match g.below(3) {
            0 => {
                let from = locality(g);
                let to = locality(g);
                setting["distribute"] = json!([{"from": from, "to": {to: g.a.weight()}}]);
            }
            1 => setting["failover"] = json!([{"from": locality(g), "to": locality(g)}]),
            _ => {
                setting["failoverPriority"] = json!(g.some(2, |g| {
                    (*g.a
                        .rng
                        .pick(&["topology.kubernetes.io/region", "app", "", "=x"]))
                    .to_string()
                }))
            }
        }
        lb["localityLbSetting"] = setting;
    }
    if g.chance(15) {
        lb["warmupDurationSecs"] = g.a.duration();
    }
    lb
}

fn traffic_policy(g: &mut Gen, port_level: bool) -> Value {
    let mut tp = json!({});
    if g.chance(40) {
        tp["loadBalancer"] = load_balancer(g);
    }
    if g.chance(30) {
        let mut tcp = json!({});
        if g.chance(50) {
            tcp["maxConnections"] = g.a.count();
        }
        if g.chance(50) {
            tcp["connectTimeout"] = g.a.duration();
        }
        if g.chance(20) {
            tcp["tcpKeepalive"] =
                json!({"probes": g.a.count(), "time": g.a.duration(), "interval": g.a.duration()});
        }
        if g.chance(20) {
            tcp["maxConnectionDuration"] = g.a.duration();
        }
        let mut http = json!({});
        for field in [
            "http1MaxPendingRequests",
            "http2MaxRequests",
            "maxRequestsPerConnection",
            "maxRetries",
            "maxConcurrentStreams",
        ] {
            if g.chance(25) {
                http[field] = g.a.count();
            }
        }
        if g.chance(30) {
            http["idleTimeout"] = g.a.duration();
        }
        if g.chance(20) {
            http["h2UpgradePolicy"] =
                json!(
                    *g.a.rng
                        .pick(&["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE", "MAYBE"])
                );
        }
        if g.chance(15) {
            http["useClientProtocol"] = json!(g.chance(50));
        }
        tp["connectionPool"] = json!({"tcp": tcp, "http": http});
    }
    if g.chance(30) {
        let mut od = json!({});
        for field in [
            "consecutive5xxErrors",
            "consecutiveGatewayErrors",
            "consecutiveErrors",
            "consecutiveLocalOriginFailures",
            "maxEjectionPercent",
            "minHealthPercent",
        ] {
            if g.chance(30) {
                od[field] = g.a.count();
            }
        }
        for field in ["interval", "baseEjectionTime"] {
            if g.chance(40) {
                od[field] = g.a.duration();
            }
        }
        if g.chance(20) {
            od["splitExternalLocalOriginErrors"] = json!(g.chance(50));
        }
        tp["outlierDetection"] = od;
    }
    if g.chance(30) {
        let mode = if g.hostile() {
            *g.a.rng.pick(&["", "PERMISSIVE", "simple"])
        } else {
            *g.a.rng
                .pick(&["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"])
        };
        let mut tls = json!({"mode": mode});
        if g.chance(40) {
            tls["sni"] = json!(g.a.host());
        }
        if g.chance(30) {
            tls["subjectAltNames"] = json!(g.some(2, |g| g.a.host()));
        }
        match g.below(4) {
            0 => tls["credentialName"] = json!(g.a.name()),
            1 => {
                tls["clientCertificate"] = json!(g.a.cert_path(CERT_FILE));
                tls["privateKey"] = json!(g.a.cert_path(KEY_FILE));
            }
            2 => tls["caCertificates"] = json!(g.a.cert_path(CA_FILE)),
            _ => {}
        }
        if g.chance(30)
            && tls.get("caCertificates").is_none()
            && tls.get("credentialName").is_none()
        {
            tls["caCertificates"] = json!(g.a.cert_path(CA_FILE));
        }
        if g.chance(15) {
            tls["insecureSkipVerify"] = json!(g.chance(50));
        }
        tp["tls"] = tls;
    }
    if !port_level && g.chance(20) {
        tp["portLevelSettings"] = json!(g.some(2, |g| {
            let mut p = traffic_policy(g, true);
            p["port"] = json!({"number": g.port()});
            p
        }));
    }
    if g.chance(5) {
        tp["tunnel"] = json!({"protocol": "CONNECT", "targetHost": "x", "targetPort": 80});
    }
    tp
}

pub fn destination_rule(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "dr");
    let mut spec = json!({"host": g.service_host()});
    if g.chance(60) {
        spec["subsets"] = json!(g.some(3, |g| {
            let name = if g.hostile() {
                g.a.name()
            } else {
                (*g.a.rng.pick(&["v1", "v2", "canary", "stable"])).to_string()
            };
            g.world.subsets.push(name.clone());
            let mut s = json!({"name": name, "labels": g.labels()});
            if g.chance(30) {
                s["trafficPolicy"] = traffic_policy(g, false);
            }
            s
        }));
    }
    if g.chance(70) {
        spec["trafficPolicy"] = traffic_policy(g, false);
    }
    if g.chance(15) {
        spec["exportTo"] = export_to(g);
    }
    if g.chance(15) {
        spec["workloadSelector"] = g.workload_selector();
    }
    json!({"apiVersion": NETWORKING, "kind": "DestinationRule", "metadata": meta, "spec": spec})
}

pub fn gateway(g: &mut Gen) -> Value {
    let namespace = if g.chance(60) {
        ROOT_NAMESPACE.to_string()
    } else {
        g.namespace()
    };
    let meta = g.meta(&namespace, "gw");
    if let Some(name) = meta["name"].as_str() {
        g.world.gateways.push(format!("{namespace}/{name}"));
    }
    let selector = if g.chance(85) {
        json!(router_labels())
    } else {
        json!(g.labels())
    };
    let servers: Vec<Value> = g.some(3, |g| {
        let protocol = g.protocol();
        let hosts: Vec<String> = g.some(2, |g| match g.below(4) {
            0 => format!("{}/{}", g.namespace(), g.a.host()),
            1 => format!("./{}", g.a.host()),
            _ => g.a.host(),
        });
        let mut s = json!({"port": {"number": g.a.port(), "protocol": protocol, "name": g.port_name()},
            "hosts": hosts});
        if g.chance(50) || protocol == "HTTPS" {
            let mode = if g.hostile() {
                *g.a.rng.pick(&["", "OPTIONAL_MUTUAL", "simple"])
            } else {
                *g.a.rng.pick(&[
                    "SIMPLE",
                    "MUTUAL",
                    "PASSTHROUGH",
                    "AUTO_PASSTHROUGH",
                    "ISTIO_MUTUAL",
                ])
            };
            let mut tls = json!({"mode": mode});
            match g.below(3) {
                0 => tls["credentialName"] = json!(g.a.name()),
                1 => {
                    tls["serverCertificate"] = json!(g.a.cert_path(CERT_FILE));
                    tls["privateKey"] = json!(g.a.cert_path(KEY_FILE));
                    if g.chance(50) {
                        tls["caCertificates"] = json!(g.a.cert_path(CA_FILE));
                    }
                }
                _ => {}
            }
            if g.chance(20) {
                tls["httpsRedirect"] = json!(true);
            }
            s["tls"] = tls;
        }
        if g.chance(30) {
            s["name"] = json!(g.a.name());
        }
        s
    });
    json!({"apiVersion": NETWORKING, "kind": "Gateway", "metadata": meta,
        "spec": {"selector": selector, "servers": servers}})
}

pub fn sidecar(g: &mut Gen) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, "sidecar");
    let mut spec = json!({});
    if g.chance(50) {
        spec["workloadSelector"] = g.workload_selector();
    }
    spec["egress"] = json!(g.some(2, |g| {
        let hosts: Vec<String> = g.some(3, |g| {
            let ns = match g.below(5) {
                0 => "*".to_string(),
                1 => ".".to_string(),
                2 => "~".to_string(),
                _ => g.namespace(),
            };
            let host = match g.below(3) {
                0 => "*".to_string(),
                1 => g.service_host(),
                _ => g.a.host(),
            };
            if g.hostile() && g.chance(30) {
                host
            } else {
                format!("{ns}/{host}")
            }
        });
        let mut e = json!({"hosts": hosts});
        if g.chance(30) {
            e["port"] =
                json!({"number": g.port(), "protocol": g.protocol(), "name": g.port_name()});
        }
        if g.chance(15) {
            e["bind"] = json!(g.a.ip());
        }
        e
    }));
    if g.chance(20) {
        spec["ingress"] =
            json!(g.some(1, |g| {
            let endpoint = if g.hostile() {
                (*g.a.rng.pick(&["localhost:80", "unix://", "127.0.0.1", "[::1]:x"])).to_string()
            } else {
                format!("127.0.0.1:{}", g.port())
            };
            json!({"port": {"number": g.port(), "protocol": g.protocol(), "name": g.port_name()},
                "defaultEndpoint": endpoint})
        }));
    }
    if g.chance(30) {
        spec["outboundTrafficPolicy"] =
            json!({"mode": *g.a.rng.pick(&["ALLOW_ANY", "REGISTRY_ONLY"])});
    }
    json!({"apiVersion": NETWORKING, "kind": "Sidecar", "metadata": meta, "spec": spec})
}
