//! The service registry: Kubernetes Services and ServiceEntries as one list of [`ServiceModel`]s,
//! each with the endpoints behind its ports.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::input::istio::{ServiceEntry, WorkloadEntrySpec};
use crate::input::kube::{IntOrString, Pod, Service};
use crate::input::labels_match;
use crate::locality::Locality;
use crate::object::{Kind, Object, ObjectKey};
use crate::protocol::Protocol;

mod validate;

/// How a cluster finds its endpoints, from ServiceEntry `resolution` (Kubernetes Services are EDS).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Resolution {
    /// EDS: meshd sends the endpoints.
    ClientSideLb,
    /// NONE: connect to the original destination.
    Passthrough,
    /// DNS: STRICT_DNS over the endpoint addresses (or the host itself).
    DnsLb,
    /// DNS_ROUND_ROBIN: LOGICAL_DNS.
    DnsRoundRobin,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TargetPort {
    Number(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub name: String,
    pub port: u32,
    pub protocol: Protocol,
    pub target_port: Option<TargetPort>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceModel {
    /// FQDN: `name.ns.svc.cluster.local` or the ServiceEntry host.
    pub hostname: String,
    pub namespace: String,
    /// Kubernetes name (or the ServiceEntry host).
    pub name: String,
    pub source: ObjectKey,
    /// Virtual IPs: ClusterIP, or ServiceEntry `addresses`.
    pub addresses: Vec<String>,
    pub ports: Vec<ServicePort>,
    pub resolution: Resolution,
    pub mesh_external: bool,
    /// Workload labels this service selects (Kubernetes selector or ServiceEntry workloadSelector).
    pub selector: Option<BTreeMap<String, String>>,
}

impl ServiceModel {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }

    /// A Kubernetes Service (not a ServiceEntry).
    pub fn is_kubernetes(&self) -> bool {
        self.source.kind == Kind::Service
    }
}

/// One address:port behind a service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub address: String,
    pub port: u32,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// `name` of the Pod (or WorkloadEntry) behind it, in `namespace`.
    pub workload: Option<String>,
    pub namespace: String,
    pub locality: Option<String>,
    pub weight: u32,
}

impl Endpoint {
    /// Where the endpoint is: its WorkloadEntry's `locality`, or its pod's (the `istio-locality`
    /// label, else its Node's topology labels), or its EndpointSlice zone; else its own
    /// `istio-locality` label.
    pub fn locality(&self) -> Option<Locality> {
        self.locality
            .as_deref()
            .and_then(Locality::parse)
            .or_else(|| Locality::of_labels(&self.labels))
    }
}

/// What the registry knows of a Pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodInfo {
    pub name: String,
    pub namespace: String,
    pub ip: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Its `istio-locality` label, else its Node's topology labels.
    pub locality: Option<Locality>,
}

impl PodInfo {
    /// `nodes`: where each Node with topology labels is.
    fn from_pod(pod: &Pod, nodes: &HashMap<String, Locality>) -> PodInfo {
        let node = pod.spec.node_name.as_ref().and_then(|n| nodes.get(n));
        PodInfo {
            locality: Locality::of_pod(&pod.metadata.labels, node),
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            ip: pod.status.pod_ip.clone().filter(|ip| !ip.is_empty()),
            labels: pod.metadata.labels.clone(),
            service_account: pod
                .spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".to_string()),
        }
    }
}

/// A port a workload serves because some service port routes there: the endpoint's port, and
/// the protocol of the service port that sends to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedPort {
    pub port: u32,
    pub protocol: Protocol,
}

/// Services, their endpoints and the pods they run on, derived from a set of objects.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Registry {
    /// By hostname; one service per hostname (conflicts are findings).
    pub services: BTreeMap<String, Arc<ServiceModel>>,
    /// By `(hostname, service port)`.
    #[serde(skip)]
    pub endpoints: HashMap<(String, u32), Arc<Vec<Endpoint>>>,
    pub pods: BTreeMap<(String, String), Arc<PodInfo>>,
    #[serde(skip)]
    pub pods_by_ip: HashMap<String, Arc<PodInfo>>,
    /// WorkloadEntries with errors: no ServiceEntry selects them.
    #[serde(skip)]
    pub invalid_workload_entries: std::collections::BTreeSet<ObjectKey>,
    /// By endpoint address: every (endpoint port, service port protocol) some service routes
    /// there, in (hostname, service port, endpoint) order. What a workload at that address serves
    /// (its proxy's inbound config) is looked up here instead of scanning every service's
    /// endpoints for each proxy.
    #[serde(skip)]
    pub served_ports: HashMap<String, Vec<ServedPort>>,
    /// Nodes with topology labels, by name: where their pods (and slice endpoints) are.
    #[serde(skip)]
    node_localities: HashMap<String, Locality>,
}

pub fn cluster_domain_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

impl Registry {
    pub fn build(objects: &BTreeMap<ObjectKey, Object>, findings: &mut Vec<Finding>) -> Registry {
        let node_localities = objects
            .range(ObjectKey::new(Kind::Node, "", "")..)
            .take_while(|(k, _)| k.kind == Kind::Node)
            .filter_map(|(k, o)| {
                Some((
                    k.name.clone(),
                    Locality::of_node_labels(&o.metadata().labels)?,
                ))
            })
            .collect();
        let mut reg = Registry {
            node_localities,
            ..Registry::default()
        };
        for obj in objects.values() {
            if let Object::Pod(pod) = obj {
                let info = Arc::new(PodInfo::from_pod(pod, &reg.node_localities));
                if let Some(ip) = &info.ip {
                    reg.pods_by_ip.insert(ip.clone(), info.clone());
                }
                reg.pods
                    .insert((info.namespace.clone(), info.name.clone()), info);
            }
        }
        for obj in objects.values() {
            if let Object::WorkloadEntry(we) = obj {
                let key = obj.key();
                if !validate::workload_entry(&key, we, findings) {
                    reg.invalid_workload_entries.insert(key);
                }
            }
        }
        // Kubernetes Services first: their hostnames are authoritative.
        for obj in objects.values() {
            if let Object::Service(svc) = obj {
                reg.add_kubernetes_service(svc, objects, findings);
            }
        }
        for obj in objects.values() {
            if let Object::ServiceEntry(se) = obj {
                reg.add_service_entry(se, objects, findings);
            }
        }
        reg.served_ports = reg.index_served_ports();
        reg
    }

    /// [`Registry::served_ports`], from the services and endpoints.
    fn index_served_ports(&self) -> HashMap<String, Vec<ServedPort>> {
        let mut by_address: HashMap<String, Vec<ServedPort>> = HashMap::new();
        for svc in self.services.values() {
            for sp in &svc.ports {
                for ep in self.endpoints(&svc.hostname, sp.port) {
                    by_address
                        .entry(ep.address.clone())
                        .or_default()
                        .push(ServedPort {
                            port: ep.port,
                            protocol: sp.protocol,
                        });
                }
            }
        }
        by_address
    }

    pub fn endpoints(&self, hostname: &str, port: u32) -> &[Endpoint] {
        self.endpoints
            .get(&(hostname.to_string(), port))
            .map(|e| e.as_slice())
            .unwrap_or(&[])
    }

    fn insert_service(&mut self, svc: ServiceModel, findings: &mut Vec<Finding>) -> bool {
        if let Some(existing) = self.services.get(&svc.hostname) {
            findings.push(Finding::new(
                Severity::Warning,
                "IST0109",
                &svc.source,
                "spec.hosts",
                format!(
                    "host {} is already defined by {}; this definition is ignored",
                    svc.hostname, existing.source
                ),
            ));
            return false;
        }
        self.services.insert(svc.hostname.clone(), Arc::new(svc));
        true
    }

    fn add_kubernetes_service(
        &mut self,
        svc: &Service,
        objects: &BTreeMap<ObjectKey, Object>,
        findings: &mut Vec<Finding>,
    ) {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let key = ObjectKey::new(Kind::Service, ns.clone(), svc.metadata.name.clone());
        if svc.spec.type_.as_deref() == Some("ExternalName") {
            return;
        }
        let mut ports = Vec::new();
        for (i, p) in svc.spec.ports.iter().enumerate() {
            if p.protocol
                .as_deref()
                .is_some_and(|proto| !proto.eq_ignore_ascii_case("tcp"))
            {
                continue; // UDP/SCTP ports are not proxied.
            }
            if p.port == 0 || p.port > 65535 {
                findings.push(Finding::new(
                    Severity::Error,
                    "IST0106",
                    &key,
                    &format!("spec.ports[{i}].port"),
                    format!("port {} is out of range", p.port),
                ));
                continue;
            }
            // The API server refuses a repeated port; from files it would become two clusters
            // (and listeners) of one name, so only the first is served.
            if ports.iter().any(|sp: &ServicePort| sp.port == p.port) {
                findings.push(Finding::new(
                    Severity::Error,
                    "IST0106",
                    &key,
                    &format!("spec.ports[{i}].port"),
                    format!("port {} is already defined", p.port),
                ));
                continue;
            }
            ports.push(ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: p.port,
                protocol: Protocol::detect(p.app_protocol.as_deref(), p.name.as_deref()),
                target_port: p.target_port.as_ref().map(|t| match t {
                    IntOrString::Int(n) => TargetPort::Number(*n),
                    IntOrString::String(s) => s
                        .parse()
                        .map(TargetPort::Number)
                        .unwrap_or_else(|_| TargetPort::Name(s.clone())),
                }),
            });
        }
        let headless = svc.spec.cluster_ip.as_deref() == Some("None");
        let addresses: Vec<String> = svc
            .spec
            .cluster_ip
            .iter()
            .filter(|ip| ip.parse::<IpAddr>().is_ok())
            .cloned()
            .collect();
        let model = ServiceModel {
            hostname: cluster_domain_host(&svc.metadata.name, &ns),
            namespace: ns.clone(),
            name: svc.metadata.name.clone(),
            source: key,
            addresses,
            ports,
            resolution: if headless {
                Resolution::Passthrough
            } else {
                Resolution::ClientSideLb
            },
            mesh_external: false,
            selector: svc.spec.selector.clone(),
        };
        let mut endpoints = self.kubernetes_endpoints(&model, objects);
        drop_unusable_endpoints(&model.source, &mut endpoints, findings);
        let hostname = model.hostname.clone();
        if self.insert_service(model, findings) {
            for (port, eps) in endpoints {
                self.endpoints
                    .insert((hostname.clone(), port), Arc::new(eps));
            }
        }
    }

    /// EndpointSlices if there are any for the service, else Endpoints, else — for file-based meshes
    /// with no endpoints controller — the Pods the selector matches, as that controller would list them.
    fn kubernetes_endpoints(
        &self,
        svc: &ServiceModel,
        objects: &BTreeMap<ObjectKey, Object>,
    ) -> HashMap<u32, Vec<Endpoint>> {
        let mut out: HashMap<u32, Vec<Endpoint>> = HashMap::new();
        let slices: Vec<_> = objects
            .range(ObjectKey::new(Kind::EndpointSlice, svc.namespace.clone(), String::new())..)
            .take_while(|(k, _)| k.kind == Kind::EndpointSlice && k.namespace == svc.namespace)
            .filter_map(|(_, o)| match o {
                Object::EndpointSlice(s)
                    if s.metadata.labels.get("kubernetes.io/service-name") == Some(&svc.name) =>
                {
                    Some(s.clone())
                }
                _ => None,
            })
            .collect();
        if !slices.is_empty() {
            for slice in slices {
                if !slice.address_type.is_empty() && slice.address_type != "IPv4" {
                    continue;
                }
                for sp in &svc.ports {
                    let Some(ep_port) = match_endpoint_port(sp, &slice.ports) else {
                        continue;
                    };
                    for ep in &slice.endpoints {
                        if ep.conditions.ready == Some(false) {
                            continue;
                        }
                        for addr in &ep.addresses {
                            let pod = self.pod_for(addr, ep.target_ref.as_ref(), &svc.namespace);
                            let mut endpoint = self.endpoint(addr, ep_port, pod, &svc.namespace);
                            // Without its pod, the slice's Node, or else its zone, still
                            // places the endpoint.
                            if endpoint.locality.is_none() {
                                let node = ep
                                    .node_name
                                    .as_ref()
                                    .and_then(|n| self.node_localities.get(n));
                                let zone = ep.zone.as_deref().filter(|z| !z.is_empty());
                                endpoint.locality = node
                                    .map(ToString::to_string)
                                    .or_else(|| zone.map(|z| format!("/{z}/")));
                            }
                            out.entry(sp.port).or_default().push(endpoint);
                        }
                    }
                }
            }
            return sort_endpoints(out);
        }
        let key = ObjectKey::new(Kind::Endpoints, svc.namespace.clone(), svc.name.clone());
        if let Some(Object::Endpoints(eps)) = objects.get(&key) {
            for subset in &eps.subsets {
                for sp in &svc.ports {
                    let Some(ep_port) = match_endpoint_port(sp, &subset.ports) else {
                        continue;
                    };
                    for addr in &subset.addresses {
                        let pod = self.pod_for(&addr.ip, addr.target_ref.as_ref(), &svc.namespace);
                        out.entry(sp.port).or_default().push(self.endpoint(
                            &addr.ip,
                            ep_port,
                            pod,
                            &svc.namespace,
                        ));
                    }
                }
            }
            return sort_endpoints(out);
        }
        let Some(selector) = svc.selector.as_ref().filter(|s| !s.is_empty()) else {
            return out;
        };
        for ((ns, _), pod) in &self.pods {
            if ns != &svc.namespace || !labels_match(selector, &pod.labels) {
                continue;
            }
            let Some(ip) = &pod.ip else { continue };
            let Some(Object::Pod(raw)) =
                objects.get(&ObjectKey::new(Kind::Pod, ns.clone(), pod.name.clone()))
            else {
                continue;
            };
            for sp in &svc.ports {
                let Some(port) = resolve_target_port(sp, raw) else {
                    continue;
                };
                out.entry(sp.port).or_default().push(self.endpoint(
                    ip,
                    port,
                    Some(pod.clone()),
                    &svc.namespace,
                ));
            }
        }
        sort_endpoints(out)
    }

    fn pod_for(
        &self,
        ip: &str,
        target: Option<&crate::input::kube::ObjectReference>,
        ns: &str,
    ) -> Option<Arc<PodInfo>> {
        if let Some(t) = target.filter(|t| t.kind == "Pod") {
            let pod_ns = t.namespace.clone().unwrap_or_else(|| ns.to_string());
            if let Some(p) = self.pods.get(&(pod_ns, t.name.clone())) {
                return Some(p.clone());
            }
        }
        self.pods_by_ip.get(ip).cloned()
    }

    fn endpoint(&self, address: &str, port: u32, pod: Option<Arc<PodInfo>>, ns: &str) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            port,
            labels: pod.as_ref().map(|p| p.labels.clone()).unwrap_or_default(),
            service_account: pod.as_ref().map(|p| p.service_account.clone()),
            workload: pod.as_ref().map(|p| p.name.clone()),
            namespace: pod
                .as_ref()
                .map(|p| p.namespace.clone())
                .unwrap_or_else(|| ns.to_string()),
            locality: pod
                .as_ref()
                .and_then(|p| p.locality.as_ref())
                .map(ToString::to_string),
            weight: 1,
        }
    }

    fn add_service_entry(
        &mut self,
        se: &ServiceEntry,
        objects: &BTreeMap<ObjectKey, Object>,
        findings: &mut Vec<Finding>,
    ) {
        let ns = se.metadata.namespace.clone().unwrap_or_default();
        let key = ObjectKey::new(Kind::ServiceEntry, ns.clone(), se.metadata.name.clone());
        let spec = &se.spec;
        if !validate::service_entry(&key, se, findings) {
            return;
        }
        let resolution = match spec.resolution.as_deref().unwrap_or("NONE") {
            "STATIC" => Resolution::ClientSideLb,
            "DNS" => Resolution::DnsLb,
            "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
            _ => Resolution::Passthrough,
        };
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.number,
                protocol: p
                    .protocol
                    .as_deref()
                    .and_then(Protocol::parse)
                    .unwrap_or_else(|| Protocol::detect(None, Some(&p.name))),
                target_port: p.target_port.map(TargetPort::Number),
            })
            .collect();
        let mesh_external = spec.location.as_deref() != Some("MESH_INTERNAL");
        // Workloads: inline endpoints, or WorkloadEntries/Pods the selector picks in this namespace.
        let mut workloads: Vec<(WorkloadEntrySpec, Option<String>)> =
            spec.endpoints.iter().map(|e| (e.clone(), None)).collect();
        if let Some(sel) = &spec.workload_selector {
            for obj in objects.values() {
                match obj {
                    Object::WorkloadEntry(we)
                        if we.metadata.namespace.as_deref() == Some(&ns)
                            && !self.invalid_workload_entries.contains(&obj.key())
                            && labels_match(&sel.labels, &we.spec.labels) =>
                    {
                        workloads.push((we.spec.clone(), Some(we.metadata.name.clone())));
                    }
                    Object::Pod(pod)
                        if pod.metadata.namespace.as_deref() == Some(&ns)
                            && labels_match(&sel.labels, &pod.metadata.labels) =>
                    {
                        if let Some(ip) = pod.status.pod_ip.clone() {
                            workloads.push((
                                WorkloadEntrySpec {
                                    address: ip,
                                    labels: pod.metadata.labels.clone(),
                                    service_account: pod.spec.service_account_name.clone(),
                                    ..Default::default()
                                },
                                Some(pod.metadata.name.clone()),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
        for host in &spec.hosts {
            let model = ServiceModel {
                hostname: host.clone(),
                namespace: ns.clone(),
                name: host.clone(),
                source: key.clone(),
                addresses: spec
                    .addresses
                    .iter()
                    .map(|a| a.trim_end_matches("/32").to_string())
                    .collect(),
                ports: ports.clone(),
                resolution,
                mesh_external,
                selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
            };
            let mut eps: HashMap<u32, Vec<Endpoint>> = HashMap::new();
            for sp in &ports {
                for (w, workload) in &workloads {
                    let port = w.ports.get(&sp.name).copied().or(match sp.target_port {
                        Some(TargetPort::Number(n)) => Some(n),
                        _ => None,
                    });
                    eps.entry(sp.port).or_default().push(Endpoint {
                        address: w.address.clone(),
                        port: port.unwrap_or(sp.port),
                        labels: w.labels.clone(),
                        service_account: w.service_account.clone(),
                        workload: workload.clone(),
                        namespace: ns.clone(),
                        locality: w.locality.clone(),
                        weight: w.weight.unwrap_or(1).max(1),
                    });
                }
            }
            let hostname = model.hostname.clone();
            if self.insert_service(model, findings) {
                for (port, list) in sort_endpoints(eps) {
                    self.endpoints
                        .insert((hostname.clone(), port), Arc::new(list));
                }
            }
        }
    }
}

/// Endpoints Envoy could not connect to — an address that is not an IP, a port out of range —
/// are left out, with a warning on the Service: the API server would have refused them, but files
/// are not checked by it, and Envoy refuses a whole assignment for one of them.
fn drop_unusable_endpoints(
    service: &ObjectKey,
    endpoints: &mut HashMap<u32, Vec<Endpoint>>,
    findings: &mut Vec<Finding>,
) {
    for eps in endpoints.values_mut() {
        eps.retain(|e| {
            let usable = e.address.parse::<IpAddr>().is_ok() && (1..=65535).contains(&e.port);
            if !usable {
                findings.push(Finding::new(
                    Severity::Warning,
                    "IST0106",
                    service,
                    "endpoints",
                    format!(
                        "endpoint {:?} port {} is not an IP address and port; it is left out",
                        e.address, e.port
                    ),
                ));
            }
            usable
        });
    }
    endpoints.retain(|_, eps| !eps.is_empty());
}

fn match_endpoint_port(
    sp: &ServicePort,
    ports: &[crate::input::kube::EndpointPort],
) -> Option<u32> {
    ports
        .iter()
        .find(|p| p.name.as_deref().unwrap_or_default() == sp.name)
        .or_else(|| (ports.len() == 1).then(|| &ports[0]))
        .map(|p| p.port)
}

fn resolve_target_port(sp: &ServicePort, pod: &Pod) -> Option<u32> {
    match &sp.target_port {
        None => Some(sp.port),
        Some(TargetPort::Number(n)) => Some(*n),
        Some(TargetPort::Name(name)) => pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port),
    }
}

fn sort_endpoints(mut map: HashMap<u32, Vec<Endpoint>>) -> HashMap<u32, Vec<Endpoint>> {
    for list in map.values_mut() {
        list.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        list.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    }
    map
}

#[cfg(test)]
mod tests;
