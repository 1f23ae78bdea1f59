//! One batch: a seeded set of objects of every kind that refer to each other, some mutated, and
//! the proxies to translate them for (a sidecar per pod namespace, the router Gateways select).

use serde_json::Value;

use super::atoms::Atoms;
use super::mutate::mutate;
use super::rng::Rng;
use super::world::{Gen, Labels, ROOT_NAMESPACE, router_labels};
use super::{kube, registry, security, telemetry, traffic};

/// A proxy as its node would describe it.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub node_id: String,
    pub labels: Labels,
    pub mtls: bool,
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub seed: u64,
    /// Percentage of field draws from the hostile lists.
    pub hostility: u32,
    pub objects: Vec<Value>,
    pub proxies: Vec<ProxySpec>,
    /// Fed to the parser as one JSON `List` instead of YAML documents.
    pub as_json_list: bool,
}

const APPS: [&str; 6] = ["web", "api", "reviews", "cart", "db", "search"];
const EXTRA_NAMESPACES: [&str; 3] = ["shop", "web", "other"];

impl Batch {
    pub fn generate(seed: u64) -> Batch {
        let mut rng = Rng::new(seed);
        let hostility = *rng.pick(&[0, 2, 5, 5, 10, 20]);
        let mut g = Gen::new(Atoms::new(rng.fork(), hostility));
        let mut objects = Vec::new();

        g.world.namespaces = vec!["default".to_string(), ROOT_NAMESPACE.to_string()];
        for _ in 0..g.a.rng.range(0, 2) {
            let ns = (*g.a.rng.pick(&EXTRA_NAMESPACES)).to_string();
            if !g.world.namespaces.contains(&ns) {
                g.world.namespaces.push(ns);
            }
        }
        for ns in g.world.namespaces.clone() {
            if g.chance(60) {
                objects.push(kube::namespace(&mut g, &ns));
            }
        }
        for _ in 0..g.a.rng.range(1, 4) {
            let app = *g.a.rng.pick(&APPS);
            for _ in 0..g.a.rng.range(1, 2) {
                objects.push(kube::pod(&mut g, app));
            }
            objects.push(kube::service(&mut g, app));
            let Some(svc) = g.world.services.last().cloned() else {
                continue;
            };
            match g.below(3) {
                0 => objects.push(kube::endpoints(&mut g, &svc)),
                1 => objects.push(kube::endpoint_slice(&mut g, &svc)),
                // The file source derives endpoints from the pods the selector picks.
                _ => {}
            }
        }
        for _ in 0..g.a.rng.range(0, 2) {
            objects.push(registry::service_entry(&mut g));
        }
        if g.chance(30) {
            objects.push(registry::workload_entry(&mut g));
        }
        for _ in 0..g.a.rng.range(0, 2) {
            objects.push(traffic::gateway(&mut g));
        }
        for _ in 0..g.a.rng.range(0, 2) {
            objects.push(traffic::destination_rule(&mut g));
        }
        for _ in 0..g.a.rng.range(1, 3) {
            objects.push(traffic::virtual_service(&mut g));
        }
        if g.chance(30) {
            objects.push(traffic::sidecar(&mut g));
        }
        if g.chance(40) {
            objects.push(security::peer_authentication(&mut g));
        }
        for _ in 0..g.a.rng.range(0, 2) {
            objects.push(security::authorization_policy(&mut g));
        }
        if g.chance(30) {
            objects.push(security::request_authentication(&mut g));
        }
        for _ in 0..g.a.rng.range(0, 2) {
            objects.push(telemetry::telemetry(&mut g));
        }
        if g.chance(20) {
            objects.push(kube::mesh_config(&mut g));
        }

        // Mostly-valid objects with something wrong: a few mutations on some of them.
        let mut mutator = Atoms::new(rng.fork(), 60);
        let mutation_rate = *rng.pick(&[0, 10, 30]);
        for object in &mut objects {
            if rng.chance(mutation_rate) {
                for _ in 0..rng.range(1, 3) {
                    mutate(&mut mutator, object);
                }
            }
        }
        // Now and then, noise where a spec should be.
        if rng.chance(5) && !objects.is_empty() {
            let i = rng.below(objects.len());
            objects[i]["spec"] = mutator.garbage();
        }

        let proxies = proxies(&mut rng, &g);
        Batch {
            seed,
            hostility,
            objects,
            proxies,
            as_json_list: rng.chance(15),
        }
    }

    /// The text meshd's file source would read.
    pub fn text(&self) -> String {
        if self.as_json_list {
            return serde_json::json!({"apiVersion": "v1", "kind": "List", "items": self.objects})
                .to_string();
        }
        self.objects
            .iter()
            .map(to_yaml)
            .collect::<Vec<_>>()
            .join("---\n")
    }

    pub fn with_objects(&self, objects: Vec<Value>) -> Batch {
        Batch {
            objects,
            ..self.clone()
        }
    }
}

/// One object as a YAML document (JSON, which YAML reads, if the YAML writer refuses it).
pub fn to_yaml(object: &Value) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|_| format!("{object}\n"))
}

/// A sidecar for a pod in each namespace that has pods, and the router.
fn proxies(rng: &mut Rng, g: &Gen) -> Vec<ProxySpec> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for pod in &g.world.pods {
        if seen.contains(&pod.namespace) || pod.ip.is_empty() || pod.ip.contains('~') {
            continue;
        }
        seen.push(pod.namespace.clone());
        out.push(ProxySpec {
            node_id: format!(
                "sidecar~{}~{}.{}~{}.svc.cluster.local",
                pod.ip, pod.name, pod.namespace, pod.namespace
            ),
            labels: pod.labels.clone(),
            mtls: rng.chance(70),
        });
    }
    out.push(ProxySpec {
        node_id: format!(
            "router~10.255.0.1~istio-ingressgateway-0.{ROOT_NAMESPACE}~{ROOT_NAMESPACE}.svc.cluster.local"
        ),
        labels: router_labels(),
        mtls: rng.chance(70),
    });
    out
}
