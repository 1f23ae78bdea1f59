//! The synthetic mesh `make bench` pushes: namespaces of Services, the Pods behind them and the
//! Endpoints an endpoints controller would write, as plain Kubernetes YAML, one file per namespace.
//!
//! Everything is a function of [`MeshShape`], so `meshd-synth` (which writes the files) and
//! `meshd-loadgen` (which connects one client per Pod and later edits a file) agree on names and
//! addresses without reading each other's output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// How big the mesh is. Every service exposes `http 8080`; every tenth also `grpc 9090`, and every
/// fifth (offset by four) also `tcp 9000`, so sidecars get two RDS route configurations and a few
/// hundred TCP listeners besides the HTTP ones.
#[derive(clap::Args, Clone, Copy, Debug, serde::Serialize)]
pub struct MeshShape {
    /// Namespaces in the mesh.
    #[arg(long, env = "MESHD_BENCH_NAMESPACES", default_value_t = 100)]
    pub namespaces: usize,
    /// Services in each namespace.
    #[arg(long, env = "MESHD_BENCH_SERVICES_PER_NAMESPACE", default_value_t = 10)]
    pub services_per_namespace: usize,
    /// Pods behind each service.
    #[arg(long, env = "MESHD_BENCH_PODS_PER_SERVICE", default_value_t = 2)]
    pub pods_per_service: usize,
}

/// One Pod of the mesh: what its sidecar says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    pub ip: String,
    /// The service (and `app` label, and service account) it belongs to.
    pub app: String,
}

impl PodRef {
    /// Istio's node id for the pod's sidecar.
    pub fn node_id(&self) -> String {
        format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            self.ip, self.name, self.namespace, self.namespace
        )
    }
}

/// A port of a synthetic service: `(name, port)`; the target port is the same number.
type PortSpec = (&'static str, u32);

/// An edit of namespace 0 that `meshd-loadgen` makes to time a re-push.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Change {
    /// One more address (not a Pod: a VM, say) in the Endpoints of service 0. Only Endpoints
    /// change, so meshd may push EDS alone.
    Endpoint,
    /// A new Service (selecting service 0's Pods) with its Endpoints: new cluster, endpoints and
    /// virtual host for every sidecar.
    Service,
}

impl Change {
    pub fn name(self) -> &'static str {
        match self {
            Change::Endpoint => "endpoint",
            Change::Service => "service",
        }
    }
}

/// The address [`Change::Endpoint`] adds; no Pod has it.
pub const ADDED_ENDPOINT_IP: &str = "10.255.255.1";
/// The service [`Change::Service`] adds to namespace 0.
pub const ADDED_SERVICE: &str = "svc-added";

impl MeshShape {
    pub fn services(&self) -> usize {
        self.namespaces * self.services_per_namespace
    }

    pub fn pods(&self) -> usize {
        self.services() * self.pods_per_service
    }

    pub fn namespace(&self, index: usize) -> String {
        format!("bench-{index:03}")
    }

    /// The file holding namespace `index` under `dir`.
    pub fn file(&self, dir: &Path, index: usize) -> PathBuf {
        dir.join(format!("{}.yaml", self.namespace(index)))
    }

    fn ports(service: usize) -> Vec<PortSpec> {
        let mut ports = vec![("http", 8080)];
        if service.is_multiple_of(10) {
            ports.push(("grpc", 9090));
        }
        if service % 5 == 4 {
            ports.push(("tcp", 9000));
        }
        ports
    }

    /// The `n`th address of a /8, skipping `.0` and `.255` in the last octet.
    fn address(first_octet: u8, n: usize) -> String {
        let host = n % 254 + 1;
        let rest = n / 254;
        format!(
            "{first_octet}.{}.{}.{host}",
            (rest >> 8) & 0xff,
            rest & 0xff
        )
    }

    fn cluster_ip(global_service: usize) -> String {
        // 172.20.0.0/14 is what the service CIDR of many clusters looks like.
        let n = global_service + 1;
        format!("172.{}.{}.{}", 20 + (n >> 16), (n >> 8) & 0xff, n & 0xff)
    }

    /// Every Pod of the mesh, namespace by namespace.
    pub fn pod_list(&self) -> Vec<PodRef> {
        let mut pods = Vec::with_capacity(self.pods());
        for ns in 0..self.namespaces {
            for svc in 0..self.services_per_namespace {
                for pod in 0..self.pods_per_service {
                    pods.push(self.pod(ns, svc, pod));
                }
            }
        }
        pods
    }

    fn pod(&self, ns: usize, svc: usize, pod: usize) -> PodRef {
        let global = (ns * self.services_per_namespace + svc) * self.pods_per_service + pod;
        PodRef {
            name: format!("svc-{svc}-{pod}"),
            namespace: self.namespace(ns),
            ip: Self::address(10, global),
            app: format!("svc-{svc}"),
        }
    }

    /// The YAML of namespace `index`, with `changes` applied (only namespace 0 has any).
    pub fn namespace_yaml(&self, index: usize, changes: &[Change]) -> String {
        let ns = self.namespace(index);
        let mut out = String::with_capacity(1024 * self.services_per_namespace);
        // `write!` to a String cannot fail; the results are ignored deliberately below.
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio-injection: enabled\n"
        );
        for svc in 0..self.services_per_namespace {
            let app = format!("svc-{svc}");
            let global = index * self.services_per_namespace + svc;
            let ports = Self::ports(svc);
            let pods: Vec<PodRef> = (0..self.pods_per_service)
                .map(|p| self.pod(index, svc, p))
                .collect();
            service(&mut out, &ns, &app, &app, &Self::cluster_ip(global), &ports);
            for pod in &pods {
                let _ = write!(
                    out,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\n  namespace: {ns}\n  labels:\n    app: {app}\n    version: v1\n    security.istio.io/tlsMode: istio\nspec:\n  serviceAccountName: {app}\n  containers:\n  - name: app\n    ports:\n",
                    pod.name
                );
                for (_, port) in &ports {
                    let _ = writeln!(out, "    - containerPort: {port}");
                }
                let _ = writeln!(out, "status:\n  podIP: {}", pod.ip);
            }
            let mut addresses: Vec<(String, Option<String>)> = pods
                .iter()
                .map(|p| (p.ip.clone(), Some(p.name.clone())))
                .collect();
            if svc == 0 && index == 0 && changes.contains(&Change::Endpoint) {
                addresses.push((ADDED_ENDPOINT_IP.to_string(), None));
            }
            endpoints(&mut out, &ns, &app, &addresses, &ports);
            if svc == 0 && index == 0 && changes.contains(&Change::Service) {
                let ports = [("http", 8080)];
                let vip = Self::cluster_ip(self.services() + 1);
                service(&mut out, &ns, ADDED_SERVICE, &app, &vip, &ports);
                endpoints(&mut out, &ns, ADDED_SERVICE, &addresses, &ports);
            }
        }
        out
    }

    /// Writes every namespace file into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for ns in 0..self.namespaces {
            write_atomically(&self.file(dir, ns), &self.namespace_yaml(ns, &[]))?;
        }
        Ok(())
    }

    /// Rewrites namespace 0's file with `changes` applied.
    pub fn apply(&self, dir: &Path, changes: &[Change]) -> anyhow::Result<()> {
        write_atomically(&self.file(dir, 0), &self.namespace_yaml(0, changes))
    }
}

fn service(out: &mut String, ns: &str, name: &str, app: &str, vip: &str, ports: &[PortSpec]) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n  type: ClusterIP\n  clusterIP: {vip}\n  selector:\n    app: {app}\n  ports:\n"
    );
    for (port_name, port) in ports {
        let _ = writeln!(
            out,
            "  - name: {port_name}\n    port: {port}\n    targetPort: {port}\n    protocol: TCP"
        );
    }
}

fn endpoints(
    out: &mut String,
    ns: &str,
    name: &str,
    addresses: &[(String, Option<String>)],
    ports: &[PortSpec],
) {
    let _ = write!(
        out,
        "---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: {name}\n  namespace: {ns}\nsubsets:\n- addresses:\n"
    );
    for (ip, pod) in addresses {
        let _ = writeln!(out, "  - ip: {ip}");
        if let Some(pod) = pod {
            let _ = writeln!(
                out,
                "    targetRef:\n      kind: Pod\n      name: {pod}\n      namespace: {ns}"
            );
        }
    }
    let _ = writeln!(out, "  ports:");
    for (port_name, port) in ports {
        let _ = writeln!(
            out,
            "  - name: {port_name}\n    port: {port}\n    protocol: TCP"
        );
    }
}

/// Writes via a temporary file and a rename, so the file watcher never reads half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn shape() -> MeshShape {
        MeshShape {
            namespaces: 3,
            services_per_namespace: 10,
            pods_per_service: 2,
        }
    }

    #[test]
    fn every_pod_has_its_own_address_and_node_id() {
        let pods = shape().pod_list();
        assert_eq!(pods.len(), 60);
        assert_eq!(pods.iter().map(|p| &p.ip).collect::<HashSet<_>>().len(), 60);
        assert_eq!(
            pods[0].node_id(),
            "sidecar~10.0.0.1~svc-0-0.bench-000~bench-000.svc.cluster.local"
        );
    }

    #[test]
    fn changes_edit_only_namespace_zero() {
        let all = [Change::Endpoint, Change::Service];
        assert_eq!(
            shape().namespace_yaml(1, &all),
            shape().namespace_yaml(1, &[])
        );
        let changed = shape().namespace_yaml(0, &all);
        assert!(changed.contains(ADDED_ENDPOINT_IP));
        assert!(changed.contains(&format!("name: {ADDED_SERVICE}")));
        assert!(!shape().namespace_yaml(0, &[]).contains(ADDED_ENDPOINT_IP));
    }

    #[test]
    fn a_namespace_file_holds_its_services_pods_and_endpoints() {
        let yaml = shape().namespace_yaml(0, &[]);
        assert_eq!(yaml.matches("\nkind: Service\n").count(), 10);
        assert_eq!(yaml.matches("\nkind: Endpoints\n").count(), 10);
        assert_eq!(yaml.matches("\nkind: Pod\n").count(), 20);
        // grpc on svc-0, tcp on svc-4 and svc-9: each in the Service and its Endpoints.
        assert_eq!(yaml.matches("- name: grpc").count(), 2);
        assert_eq!(yaml.matches("- name: tcp").count(), 4);
    }
}
