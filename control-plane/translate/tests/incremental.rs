//! Incremental rebuilds equal full ones. For every golden mesh, a sequence of random-ish edits
//! (objects removed and restored, endpoints added and removed, Pod labels changed, any field of
//! any object changed); after each, whatever `SnapshotDiff` says a change leaves alone must build
//! to exactly what it built before, so a control plane that keeps those and rebuilds the rest
//! serves what a full rebuild would:
//! - outbound clusters, listeners and routes of a type the diff does not touch, for the scopes
//!   proxies have before and after the change;
//! - each service's assignments outside the diff's EDS hosts (per-locality ones too, unless the
//!   diff says they all change);
//! - each proxy's whole set of a type the push would not announce.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use meshd_model::{MeshConfig, NodeType, Object, Proxy, Snapshot};
use meshd_proto::type_url;
use meshd_translate::changes::SnapshotDiff;
use meshd_translate::{EnvoyConfig, Scope};
use serde_json::Value;

/// Edits per mesh.
const STEPS: usize = 24;

/// xorshift64*: reproducible, seeded per case.
struct Rng(u64);

impl Rng {
    fn seeded(name: &str) -> Rng {
        Rng(name.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// The documents of a golden case's input, as JSON values to edit.
fn documents(case: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(case.join("input.yaml")).unwrap();
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if current
                .lines()
                .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                docs.push(serde_saphyr::from_str::<Value>(&current).unwrap());
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// What the index would hold: every document that parses (later ones win a shared key).
fn assemble(docs: &[Value]) -> Snapshot {
    let objects: BTreeMap<_, _> = docs
        .iter()
        .filter_map(|d| Object::parse(d.clone()).ok().flatten())
        .map(|o| (o.key(), o))
        .collect();
    Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    )
}

/// The case's proxies, and a sidecar (with a mesh certificate) for every Pod of the mesh and for
/// an address only edits add to endpoints.
fn proxies(case: &Path, docs: &[Value]) -> Vec<Proxy> {
    let mut out: Vec<Proxy> = std::fs::read_to_string(case.join("proxies.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split_whitespace();
            let mut proxy = Proxy::from_node_id(parts.next().unwrap()).unwrap();
            let labels = parts.next().unwrap_or_default();
            proxy.mtls = parts.next() == Some("mtls");
            for pair in labels.split(',').filter(|p| !p.is_empty() && *p != "-") {
                let (k, v) = pair.split_once('=').unwrap();
                proxy.labels.insert(k.to_string(), v.to_string());
            }
            proxy
        })
        .collect();
    let pods = docs.iter().filter(|d| d["kind"] == "Pod").filter_map(|d| {
        let ip = d.pointer("/status/podIP")?.as_str()?;
        let name = d.pointer("/metadata/name")?.as_str()?;
        let ns = d
            .pointer("/metadata/namespace")?
            .as_str()
            .unwrap_or("default");
        Some((ip.to_string(), name.to_string(), ns.to_string()))
    });
    let extra = std::iter::once((
        "10.250.0.1".to_string(),
        "vm".to_string(),
        "default".to_string(),
    ));
    for (ip, name, ns) in pods.chain(extra) {
        let mut proxy =
            Proxy::from_node_id(&format!("sidecar~{ip}~{name}.{ns}~{ns}.svc.cluster.local"))
                .unwrap();
        proxy.mtls = true;
        out.push(proxy);
    }
    out
}

/// Every string in the mesh, for edits to draw replacements from.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Pointers to every leaf of a document that is not its identity (kind, version, name, namespace).
fn leaves(value: &Value, path: String, out: &mut Vec<String>) {
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                leaves(v, format!("{path}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                if !matches!(
                    p.as_str(),
                    "/kind" | "/apiVersion" | "/metadata/name" | "/metadata/namespace"
                ) {
                    leaves(v, p, out);
                }
            }
        }
        _ => out.push(path),
    }
}

/// One random edit of the mesh; `removed` holds documents taken out, to put back later.
fn edit(rng: &mut Rng, docs: &mut Vec<Value>, removed: &mut Vec<Value>, pool: &[String]) {
    let pod_ips: Vec<(String, String)> = docs
        .iter()
        .filter(|d| d["kind"] == "Pod")
        .filter_map(|d| {
            let ip = d.pointer("/status/podIP")?.as_str()?.to_string();
            let name = d.pointer("/metadata/name")?.as_str()?.to_string();
            Some((ip, name))
        })
        .collect();
    match rng.below(8) {
        0 if !docs.is_empty() => {
            let i = rng.below(docs.len());
            removed.push(docs.remove(i));
        }
        1 if !removed.is_empty() => {
            let i = rng.below(removed.len());
            docs.push(removed.remove(i));
        }
        2 | 3 => {
            // An address more or less behind some Endpoints: a Pod's (with its proxy's inbound
            // config) or one with no Pod.
            let endpoints: Vec<usize> = (0..docs.len())
                .filter(|i| docs[*i]["kind"] == "Endpoints")
                .collect();
            let Some(&i) = rng.pick(&endpoints) else {
                return;
            };
            let Some(addresses) = docs[i]
                .pointer_mut("/subsets/0/addresses")
                .and_then(Value::as_array_mut)
            else {
                return;
            };
            if !addresses.is_empty() && rng.below(3) == 0 {
                let j = rng.below(addresses.len());
                addresses.remove(j);
            } else if let Some((ip, name)) = rng.pick(&pod_ips).filter(|_| rng.below(2) == 0) {
                addresses.push(
                    serde_json::json!({"ip": ip, "targetRef": {"kind": "Pod", "name": name}}),
                );
            } else {
                let ip = ["10.250.0.1", "10.250.0.2"][rng.below(2)];
                addresses.push(serde_json::json!({ "ip": ip }));
            }
        }
        4 => {
            // A Pod label: what subsets, selectors, scopes and locality read.
            let pods: Vec<usize> = (0..docs.len())
                .filter(|i| docs[*i]["kind"] == "Pod")
                .collect();
            let Some(&i) = rng.pick(&pods) else { return };
            let key = ["version", "app", "tier", "topology.kubernetes.io/zone"][rng.below(4)];
            let value = ["v1", "v2", "front", "zone-b"][rng.below(4)];
            let labels = docs[i]
                .pointer_mut("/metadata")
                .and_then(Value::as_object_mut)
                .map(|m| m.entry("labels").or_insert_with(|| serde_json::json!({})));
            if let Some(Value::Object(labels)) = labels {
                labels.insert(key.to_string(), Value::String(value.to_string()));
            }
        }
        _ => {
            // Any field of any object: numbers move, flags flip, strings become another string
            // of the mesh (hosts, names, labels). Objects that stop validating drop out.
            let Some(i) = (!docs.is_empty()).then(|| rng.below(docs.len())) else {
                return;
            };
            let mut paths = Vec::new();
            leaves(&docs[i], String::new(), &mut paths);
            let Some(path) = rng.pick(&paths).cloned() else {
                return;
            };
            let replacement = rng.pick(pool).cloned();
            let Some(leaf) = docs[i].pointer_mut(&path) else {
                return;
            };
            *leaf = match leaf {
                Value::Number(n) => Value::from(n.as_u64().unwrap_or(1) + 1),
                Value::Bool(b) => Value::Bool(!*b),
                _ => Value::String(replacement.unwrap_or_default()),
            };
        }
    }
}

/// Outbound resources of one type for a scope.
fn outbound(snapshot: &Snapshot, type_url: &str, scope: &Scope) -> EnvoyConfig {
    match type_url {
        type_url::CLUSTER => EnvoyConfig {
            clusters: meshd_translate::outbound_clusters(snapshot, scope),
            ..Default::default()
        },
        type_url::LISTENER => EnvoyConfig {
            listeners: meshd_translate::outbound_listeners(snapshot, scope),
            ..Default::default()
        },
        _ => EnvoyConfig {
            routes: meshd_translate::outbound_routes(snapshot, scope),
            ..Default::default()
        },
    }
}

/// What a proxy holds of one type.
fn of_type(all: &EnvoyConfig, type_url: &str) -> EnvoyConfig {
    let mut one = EnvoyConfig::default();
    match type_url {
        type_url::CLUSTER => one.clusters = all.clusters.clone(),
        type_url::ENDPOINT => one.endpoints = all.endpoints.clone(),
        type_url::LISTENER => one.listeners = all.listeners.clone(),
        _ => one.routes = all.routes.clone(),
    }
    one
}

/// Everything the diff from `old` to `new` claims unchanged is unchanged.
fn check(old: &Snapshot, new: &Snapshot, proxies: &[Proxy], context: &str) {
    let diff = SnapshotDiff::between(old, new);
    for proxy in proxies {
        let scopes = [Scope::for_proxy(old, proxy), Scope::for_proxy(new, proxy)];
        for ty in [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE] {
            if diff.outbound(ty) {
                continue;
            }
            for scope in &scopes {
                assert!(
                    outbound(old, ty, scope) == outbound(new, ty, scope),
                    "{context}: {} for {scope:?} changed, yet the diff keeps it\n{diff:#?}",
                    type_url::short(ty)
                );
            }
        }
    }
    let callers = (
        meshd_translate::caller_localities(old),
        meshd_translate::caller_localities(new),
    );
    for (host, svc) in &new.registry.services {
        let Some(before) = old.registry.services.get(host) else {
            assert!(diff.eds_hosts.contains(host), "{context}: new {host}");
            continue;
        };
        if !diff.all_endpoints() && !diff.eds_hosts.contains(host) {
            assert!(
                meshd_translate::service_endpoints(old, before)
                    == meshd_translate::service_endpoints(new, svc),
                "{context}: the assignments of {host} changed, yet the diff keeps them\n{diff:#?}"
            );
            if !diff.all_locality_endpoints() {
                assert!(
                    meshd_translate::service_locality_endpoints(old, before, &callers.0)
                        == meshd_translate::service_locality_endpoints(new, svc, &callers.1),
                    "{context}: the per-locality assignments of {host} changed\n{diff:#?}"
                );
            }
        }
    }
    // A type the push leaves out is one no connected proxy would see change.
    let connected = |ip: &str| proxies.iter().any(|p| p.ip == ip);
    let endpoints_changed = meshd_translate::endpoints(old) != meshd_translate::endpoints(new);
    let pushed = diff.pushed_types(endpoints_changed, connected);
    for proxy in proxies {
        let before = meshd_translate::generate(old, proxy);
        let after = meshd_translate::generate(new, proxy);
        for ty in [
            type_url::CLUSTER,
            type_url::ENDPOINT,
            type_url::LISTENER,
            type_url::ROUTE,
        ] {
            if pushed.contains(&ty) {
                continue;
            }
            assert!(
                of_type(&before, ty) == of_type(&after, ty),
                "{context}: {} of {} changed, yet it is not pushed\n{diff:#?}",
                type_url::short(ty),
                proxy.id
            );
        }
    }
}

#[test]
fn what_a_change_leaves_alone_builds_as_before_in_every_golden_mesh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists() && p.join("proxies.txt").exists())
        .collect();
    cases.sort();
    assert!(cases.len() > 10, "golden cases under {}", root.display());
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let mut docs = documents(&case);
        let proxies = proxies(&case, &docs);
        assert!(
            proxies.iter().any(|p| p.node_type == NodeType::Sidecar),
            "{name}"
        );
        let mut pool = Vec::new();
        docs.iter().for_each(|d| strings(d, &mut pool));
        let mut rng = Rng::seeded(&name);
        let mut removed = Vec::new();
        let mut old = assemble(&docs);
        for step in 0..STEPS {
            edit(&mut rng, &mut docs, &mut removed, &pool);
            let new = assemble(&docs);
            check(&old, &new, &proxies, &format!("{name}, edit {step}"));
            old = new;
        }
    }
}
