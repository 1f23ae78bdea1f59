//! What one batch's objects know of each other: namespaces, services and their ports, pods and
//! their labels, gateways. Generators draw references from here, so VirtualServices route to
//! services that exist, subsets select pods that exist and Gateways select the router — mostly.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::atoms::Atoms;

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug)]
pub struct ServiceRef {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<u64>,
    pub selector: Labels,
}

#[derive(Clone, Debug)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    pub labels: Labels,
}

/// The labels of the router every batch has; Gateways mostly select it.
pub fn router_labels() -> Labels {
    Labels::from([("istio".to_string(), "ingressgateway".to_string())])
}

pub const ROOT_NAMESPACE: &str = "istio-system";

#[derive(Debug, Default)]
pub struct World {
    pub namespaces: Vec<String>,
    pub services: Vec<ServiceRef>,
    pub pods: Vec<PodRef>,
    /// `namespace/name` of each Gateway.
    pub gateways: Vec<String>,
    /// Hosts ServiceEntries declare.
    pub external_hosts: Vec<String>,
    /// Subset names DestinationRules declare.
    pub subsets: Vec<String>,
}

/// Generators share the atoms and the world.
pub struct Gen {
    pub a: Atoms,
    pub world: World,
}

impl Gen {
    pub fn new(a: Atoms) -> Gen {
        Gen {
            a,
            world: World::default(),
        }
    }

    pub fn chance(&mut self, percent: u32) -> bool {
        self.a.rng.chance(percent)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.a.rng.below(n)
    }

    pub fn hostile(&mut self) -> bool {
        self.a.hostile()
    }

    /// One of the batch's namespaces.
    pub fn namespace(&mut self) -> String {
        if self.world.namespaces.is_empty() || (self.hostile() && self.chance(20)) {
            return self.a.name();
        }
        self.a.rng.pick(&self.world.namespaces).clone()
    }

    /// `metadata` with a fresh name in `namespace`.
    pub fn meta(&mut self, namespace: &str, prefix: &str) -> Value {
        let name = if self.hostile() && self.chance(20) {
            self.a.name()
        } else {
            format!("{prefix}-{}", self.a.rng.below(1000))
        };
        json!({"name": name, "namespace": namespace})
    }

    /// A label set, usually one a pod carries.
    pub fn labels(&mut self) -> Labels {
        if !self.world.pods.is_empty() && self.chance(70) {
            let pod = self.a.rng.pick(&self.world.pods).labels.clone();
            // A subset of the pod's labels still selects it.
            return pod.into_iter().filter(|_| self.a.rng.chance(70)).collect();
        }
        let mut labels = Labels::new();
        for _ in 0..self.a.rng.range(0, 3) {
            let k = self.a.label_key();
            let v = self.a.label_value();
            labels.insert(k, v);
        }
        labels
    }

    /// `{labels: {...}}`, Istio's workload selector.
    pub fn workload_selector(&mut self) -> Value {
        json!({"labels": self.labels()})
    }

    /// A destination host: a service by short, namespaced or full name, a ServiceEntry host, or
    /// whatever the atoms draw.
    pub fn service_host(&mut self) -> String {
        if self.world.services.is_empty() || self.chance(15) {
            if !self.world.external_hosts.is_empty() && self.chance(50) {
                return self.a.rng.pick(&self.world.external_hosts).clone();
            }
            return self.a.host();
        }
        let svc = self.a.rng.pick(&self.world.services).clone();
        match self.below(3) {
            0 => svc.name,
            1 => format!("{}.{}", svc.name, svc.namespace),
            _ => format!("{}.{}.svc.cluster.local", svc.name, svc.namespace),
        }
    }

    /// Ports the services of the batch declare.
    pub fn known_ports(&self) -> Vec<u64> {
        self.world
            .services
            .iter()
            .flat_map(|s| s.ports.iter().copied())
            .collect()
    }

    pub fn port(&mut self) -> Value {
        let known = self.known_ports();
        self.a.port_from(&known)
    }

    /// A port name with one of Istio's protocol prefixes, or none.
    pub fn port_name(&mut self) -> String {
        let prefix = *self.a.rng.pick(&[
            "http", "http2", "grpc", "grpc-web", "tcp", "tls", "https", "mongo", "redis", "mysql",
            "udp", "", "HTTP", "h2c",
        ]);
        match self.below(3) {
            0 => prefix.to_string(),
            1 => format!("{prefix}-{}", self.a.name()),
            _ => self.a.name(),
        }
    }

    /// An Istio protocol name as Gateways, ServiceEntries and Sidecars spell them.
    pub fn protocol(&mut self) -> String {
        if self.hostile() {
            return (*self
                .a
                .rng
                .pick(&["", "http", "FTP", "UDP", "HTTP3", "TCP "]))
            .to_string();
        }
        (*self.a.rng.pick(&[
            "HTTP", "HTTPS", "GRPC", "HTTP2", "TCP", "TLS", "MONGO", "REDIS", "MYSQL", "GRPC-WEB",
        ]))
        .to_string()
    }

    pub fn list<T>(&mut self, max: u64, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
        let n = self.a.rng.range(0, max);
        (0..n).map(|_| item(self)).collect()
    }

    pub fn some<T>(&mut self, max: u64, mut item: impl FnMut(&mut Gen) -> T) -> Vec<T> {
        let n = self.a.rng.range(1, max.max(1));
        (0..n).map(|_| item(self)).collect()
    }
}
