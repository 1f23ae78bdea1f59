//! Kubernetes kinds meshd reads: Namespace, Service, Endpoints, EndpointSlice, Pod and the mesh
//! config ConfigMap. They also fill the [`World`](super::world::World) the Istio kinds refer to.

use serde_json::{Value, json};

use super::world::{Gen, PodRef, ROOT_NAMESPACE, ServiceRef};

pub fn namespace(g: &mut Gen, name: &str) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if g.chance(30) {
        ns["metadata"]["labels"] = json!({"istio-injection": "enabled"});
    }
    ns
}

/// A Pod with an IP and labels; recorded so selectors and proxies can find it.
pub fn pod(g: &mut Gen, app: &str) -> Value {
    let namespace = g.namespace();
    let meta = g.meta(&namespace, app);
    let ip = g.a.ip();
    let mut labels = json!({"app": app});
    labels["version"] = json!(*g.a.rng.pick(&["v1", "v2", "canary"]));
    if g.chance(20) {
        let k = g.a.label_key();
        labels[k] = json!(g.a.label_value());
    }
    let ports: Vec<Value> = g.list(3, |g| {
        let mut p = json!({"containerPort": g.port()});
        if g.chance(50) {
            p["name"] = json!(g.port_name());
        }
        p
    });
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": meta,
        "spec": {"containers": [{"name": "app", "ports": ports}]},
        "status": {"podIP": ip},
    });
    pod["metadata"]["labels"] = labels.clone();
    if g.chance(70) {
        pod["spec"]["serviceAccountName"] = json!(g.a.name());
    }
    if let (Some(name), Ok(labels)) = (
        pod["metadata"]["name"].as_str(),
        serde_json::from_value(labels),
    ) {
        g.world.pods.push(PodRef {
            name: name.to_string(),
            namespace,
            ip,
            labels,
        });
    }
    pod
}

/// A Service selecting pods of `app`, with ports of every protocol flavour.
pub fn service(g: &mut Gen, app: &str) -> Value {
    let namespace = g.namespace();
    let name = if g.hostile() && g.chance(20) {
        g.a.name()
    } else {
        app.to_string()
    };
    let ports: Vec<Value> = g.some(3, |g| {
        let mut p = json!({"port": g.a.port()});
        if g.chance(80) {
            p["name"] = json!(g.port_name());
        }
        match g.below(4) {
            0 => p["targetPort"] = g.a.port(),
            1 => p["targetPort"] = json!(g.port_name()),
            _ => {}
        }
        if g.chance(20) {
            p["protocol"] = json!(*g.a.rng.pick(&["TCP", "UDP", "SCTP", "tcp"]));
        }
        if g.chance(20) {
            p["appProtocol"] = json!(*g.a.rng.pick(&[
                "http",
                "http2",
                "grpc",
                "kubernetes.io/h2c",
                "tcp",
                "tls",
                "https",
                "mongo",
                "weird"
            ]));
        }
        p
    });
    let mut spec = json!({"ports": ports});
    match g.below(6) {
        0 => spec["clusterIP"] = json!("None"),
        1 => {}
        _ => spec["clusterIP"] = json!(g.a.ip()),
    }
    if g.chance(10) {
        spec["type"] = json!("ExternalName");
        spec["externalName"] = json!(g.a.host());
    } else if g.chance(10) {
        spec["type"] = json!(*g.a.rng.pick(&["NodePort", "LoadBalancer", "Bogus"]));
    }
    let selector = if g.chance(85) {
        let mut s = super::world::Labels::new();
        s.insert("app".to_string(), app.to_string());
        s
    } else {
        g.labels()
    };
    spec["selector"] = json!(selector);
    let ports: Vec<u64> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["port"].as_u64())
        .collect();
    g.world.services.push(ServiceRef {
        name: name.clone(),
        namespace: namespace.clone(),
        ports,
        selector,
    });
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

/// Endpoints (v1) of the last service, from the pods it selects and some strangers.
pub fn endpoints(g: &mut Gen, service: &ServiceRef) -> Value {
    let addresses = endpoint_ips(g, service);
    let address = |ip: &String| json!({"ip": ip});
    let (ready, not_ready): (Vec<&String>, Vec<&String>) =
        addresses.iter().partition(|_| g.a.rng.chance(85));
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|p| json!({"port": p}))
        .chain(g.list(1, |g| json!({"port": g.a.port(), "name": g.port_name()})))
        .collect();
    json!({"apiVersion": "v1", "kind": "Endpoints",
    "metadata": {"name": service.name, "namespace": service.namespace},
    "subsets": [{
        "addresses": ready.into_iter().map(address).collect::<Vec<_>>(),
        "notReadyAddresses": not_ready.into_iter().map(address).collect::<Vec<_>>(),
        "ports": ports,
    }]})
}

/// An EndpointSlice (discovery/v1) of `service`.
pub fn endpoint_slice(g: &mut Gen, service: &ServiceRef) -> Value {
    let addresses = endpoint_ips(g, service);
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|ip| {
            let mut e = json!({"addresses": [ip]});
            if g.chance(30) {
                e["conditions"] = json!({"ready": g.chance(70)});
            }
            e
        })
        .collect();
    let ports: Vec<Value> = service
        .ports
        .iter()
        .map(|p| json!({"port": p, "name": g.port_name()}))
        .collect();
    let address_type = if g.hostile() {
        *g.a.rng.pick(&["IPv6", "FQDN", "", "ipv4"])
    } else {
        "IPv4"
    };
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{}-{}", service.name, g.below(100)), "namespace": service.namespace,
            "labels": {"kubernetes.io/service-name": service.name}},
        "addressType": address_type, "endpoints": endpoints, "ports": ports})
}

fn endpoint_ips(g: &mut Gen, service: &ServiceRef) -> Vec<String> {
    let mut ips: Vec<String> = g
        .world
        .pods
        .iter()
        .filter(|p| {
            p.namespace == service.namespace
                && service
                    .selector
                    .iter()
                    .all(|(k, v)| p.labels.get(k) == Some(v))
        })
        .map(|p| p.ip.clone())
        .collect();
    ips.extend(g.list(2, |g| g.a.ip()));
    ips
}

/// ConfigMap `istio` in the root namespace: the mesh config, sometimes broken.
pub fn mesh_config(g: &mut Gen) -> Value {
    let mut mesh = String::new();
    if g.chance(50) {
        let mode = if g.hostile() {
            "SOMETIMES"
        } else {
            *g.a.rng.pick(&["ALLOW_ANY", "REGISTRY_ONLY"])
        };
        mesh.push_str(&format!("outboundTrafficPolicy:\n  mode: {mode}\n"));
    }
    if g.chance(50) {
        mesh.push_str(&format!("connectTimeout: {}\n", g.a.duration()));
    }
    if g.chance(30) {
        mesh.push_str(&format!("trustDomain: {}\n", json!(g.a.host())));
    }
    if g.chance(20) {
        mesh.push_str(&format!("trustDomainAliases: [{}]\n", json!(g.a.host())));
    }
    if g.chance(20) {
        mesh.push_str(&format!("enableAutoMtls: {}\n", g.chance(50)));
    }
    mesh.push_str(&observability(g));
    if g.hostile() && g.chance(20) {
        mesh.push_str(": not yaml [\n");
    }
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": ROOT_NAMESPACE}, "data": {"mesh": mesh}})
}

/// Access-log and tracing settings: a log file and its format (now and then one Envoy refuses),
/// a Zipkin address, extension providers on services of the batch.
fn observability(g: &mut Gen) -> String {
    let mut mesh = String::new();
    if g.chance(40) {
        mesh.push_str("accessLogFile: /dev/stdout\n");
        if g.chance(40) {
            mesh.push_str("accessLogEncoding: JSON\n");
        } else if g.chance(30) {
            let format = if g.hostile() {
                "%NOT_A_COMMAND%"
            } else {
                "[%START_TIME%] %REQ(:METHOD)% %RESPONSE_CODE%"
            };
            mesh.push_str(&format!("accessLogFormat: {}\n", json!(format)));
        }
    }
    if g.chance(30) {
        mesh.push_str(&format!(
            "defaultConfig:\n  tracing:\n    sampling: {}\n    zipkin:\n      address: zipkin.istio-system:9411\n",
            g.a.rng.range(0, 100)
        ));
    }
    if g.chance(40) {
        let host = g
            .world
            .services
            .first()
            .map(|s| format!("{}.{}.svc.cluster.local", s.name, s.namespace))
            .unwrap_or_else(|| "zipkin.istio-system.svc.cluster.local".to_string());
        let port = g
            .world
            .services
            .first()
            .and_then(|s| s.ports.first().copied())
            .unwrap_or(9411);
        mesh.push_str(&format!(
            "extensionProviders:\n- name: zipkin\n  zipkin: {{service: {host}, port: {port}}}\n\
             - name: otel\n  opentelemetry: {{service: {host}, port: {port}}}\n\
             - name: json-file\n  envoyFileAccessLog: {{path: /dev/stdout, logFormat: {{labels: {{code: \"%RESPONSE_CODE%\"}}}}}}\n"
        ));
        if g.chance(50) {
            mesh.push_str("defaultProviders:\n  tracing: [zipkin]\n");
        }
    }
    mesh
}
