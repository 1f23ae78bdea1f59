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
    /// Namespace isolation: a `Sidecar` per namespace limiting egress to the namespace itself and
    /// `istio-system`, as large meshes are run.
    #[arg(long, env = "MESHD_BENCH_ISOLATION")]
    pub isolation: bool,
    /// Pod addresses in 127.100.0.0/14 instead of 10.0.0.0/8, so clients on this machine can
    /// connect *from* their pod's address (the file source's identity proof on the TLS port).
    #[arg(long, env = "MESHD_BENCH_LOOPBACK_PODS")]
    pub loopback_pods: bool,
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
/// Churned endpoint addresses start with this; the rest encodes the change's sequence number.
pub const CHURN_PREFIX: &str = "10.254.";
/// The service whose endpoints churn and whose VirtualService is edited, in every namespace.
pub const CHURNED_SERVICE: &str = "svc-0";

/// The address churn change `seq` puts into its namespace's `svc-0` Endpoints.
pub fn churn_address(seq: usize) -> String {
    format!("{CHURN_PREFIX}{}.{}", seq / 250, seq % 250 + 1)
}

/// The churn sequence number in an encoded resource that holds a [`churn_address`], if any.
pub fn churn_seq(bytes: &[u8]) -> Option<usize> {
    let prefix = CHURN_PREFIX.as_bytes();
    let at = bytes.windows(prefix.len()).position(|w| w == prefix)? + prefix.len();
    let digits = |from: usize| {
        let len = bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let n = std::str::from_utf8(&bytes[from..from + len])
            .ok()?
            .parse::<usize>()
            .ok()?;
        Some((n, from + len))
    };
    let (high, end) = digits(at)?;
    if bytes.get(end) != Some(&b'.') {
        return None;
    }
    let (low, _) = digits(end + 1)?;
    Some(high * 250 + low.checked_sub(1)?)
}

/// The marker a VirtualService edit puts into the route configuration.
pub fn edit_marker(edit: usize) -> String {
    format!("bench-edit-{edit:05}")
}

/// The state of the mesh's files beyond the generated mesh: what `meshd-loadgen` has edited.
#[derive(Clone, Debug, Default)]
pub struct Edits {
    /// Applied in order, cumulatively, to namespace 0.
    pub changes: Vec<Change>,
    /// The latest VirtualService edit of namespace 0's `svc-0`.
    pub virtual_service: Option<usize>,
    /// Per namespace, the latest churn change of its `svc-0` Endpoints.
    pub churn: std::collections::BTreeMap<usize, usize>,
}
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

    /// The index of a namespace [`MeshShape::namespace`] named.
    pub fn namespace_index(name: &str) -> Option<usize> {
        name.strip_prefix("bench-")?.parse().ok()
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
        let ip = if self.loopback_pods {
            // 127.100.0.1 onwards: never 127.0.0.1, where the servers listen.
            let host = global % 254 + 1;
            let rest = global / 254;
            format!("127.{}.{}.{host}", 100 + (rest >> 8), rest & 0xff)
        } else {
            Self::address(10, global)
        };
        PodRef {
            name: format!("svc-{svc}-{pod}"),
            namespace: self.namespace(ns),
            ip,
            app: format!("svc-{svc}"),
        }
    }

    /// The YAML of namespace `index`, with `edits` applied.
    pub fn namespace_yaml(&self, index: usize, edits: &Edits) -> String {
        let none = Vec::new();
        let changes = if index == 0 { &edits.changes } else { &none };
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
            if svc == 0
                && let Some(seq) = edits.churn.get(&index)
            {
                addresses.push((churn_address(*seq), None));
            }
            endpoints(&mut out, &ns, &app, &addresses, &ports);
            if svc == 0 && index == 0 && changes.contains(&Change::Service) {
                let ports = [("http", 8080)];
                let vip = Self::cluster_ip(self.services() + 1);
                service(&mut out, &ns, ADDED_SERVICE, &app, &vip, &ports);
                endpoints(&mut out, &ns, ADDED_SERVICE, &addresses, &ports);
            }
        }
        if index == 0
            && let Some(edit) = edits.virtual_service
        {
            virtual_service(&mut out, &ns, &edit_marker(edit));
        }
        if self.isolation {
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: default\n  namespace: {ns}\nspec:\n  egress:\n  - hosts:\n    - ./*\n    - istio-system/*\n"
            );
        }
        out
    }

    /// The clients that see namespace `index`'s `svc-0` (its endpoints, its routes).
    pub fn sees(&self, pod: &PodRef, index: usize) -> bool {
        !self.isolation || pod.namespace == self.namespace(index)
    }

    /// Writes every namespace file into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let edits = Edits::default();
        for ns in 0..self.namespaces {
            write_atomically(&self.file(dir, ns), &self.namespace_yaml(ns, &edits))?;
        }
        Ok(())
    }

    /// Rewrites namespace `index`'s file with `edits` applied.
    pub fn apply(&self, dir: &Path, index: usize, edits: &Edits) -> anyhow::Result<()> {
        write_atomically(&self.file(dir, index), &self.namespace_yaml(index, edits))
    }
}

/// A VirtualService on `svc-0` whose first route matches a header carrying `marker`, so each
/// edit changes the route configuration of every sidecar that sees the service.
fn virtual_service(out: &mut String, ns: &str, marker: &str) {
    let _ = write!(
        out,
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {CHURNED_SERVICE}\n  namespace: {ns}\nspec:\n  hosts:\n  - {CHURNED_SERVICE}\n  http:\n  - match:\n    - headers:\n        x-bench-edit:\n          exact: {marker}\n    route:\n    - destination:\n        host: {CHURNED_SERVICE}\n  - route:\n    - destination:\n        host: {CHURNED_SERVICE}\n"
    );
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
            isolation: false,
            loopback_pods: false,
        }
    }

    fn edits(changes: &[Change]) -> Edits {
        Edits {
            changes: changes.to_vec(),
            ..Default::default()
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
        let loopback = MeshShape {
            loopback_pods: true,
            namespaces: 30,
            ..shape()
        }
        .pod_list();
        assert_eq!(loopback[0].ip, "127.100.0.1");
        assert_eq!(loopback[254].ip, "127.100.1.1");
        assert_eq!(
            loopback.iter().map(|p| &p.ip).collect::<HashSet<_>>().len(),
            600
        );
    }

    #[test]
    fn changes_edit_only_namespace_zero() {
        let all = edits(&[Change::Endpoint, Change::Service]);
        assert_eq!(
            shape().namespace_yaml(1, &all),
            shape().namespace_yaml(1, &Edits::default())
        );
        let changed = shape().namespace_yaml(0, &all);
        assert!(changed.contains(ADDED_ENDPOINT_IP));
        assert!(changed.contains(&format!("name: {ADDED_SERVICE}")));
        assert!(
            !shape()
                .namespace_yaml(0, &Edits::default())
                .contains(ADDED_ENDPOINT_IP)
        );
    }

    #[test]
    fn churn_addresses_carry_their_sequence_number() {
        for seq in [0, 1, 249, 250, 2999, 60_000] {
            let address = churn_address(seq);
            let mut encoded = b"\x0a\x0b".to_vec();
            encoded.extend_from_slice(address.as_bytes());
            encoded.push(0x18);
            assert_eq!(churn_seq(&encoded), Some(seq), "{address}");
        }
        assert_eq!(churn_seq(b"10.0.0.1"), None);
        let mut churned = Edits::default();
        churned.churn.insert(2, 7);
        assert!(
            shape()
                .namespace_yaml(2, &churned)
                .contains(&churn_address(7))
        );
        assert_eq!(
            shape().namespace_yaml(1, &churned),
            shape().namespace_yaml(1, &Edits::default())
        );
    }

    #[test]
    fn isolation_scopes_each_namespace_and_edits_name_their_marker() {
        let isolated = MeshShape {
            isolation: true,
            ..shape()
        };
        let yaml = isolated.namespace_yaml(1, &Edits::default());
        assert!(yaml.contains("kind: Sidecar"));
        assert!(yaml.contains("- istio-system/*"));
        let pod = &isolated.pod_list()[0];
        assert!(isolated.sees(pod, 0) && !isolated.sees(pod, 1));
        assert!(shape().sees(pod, 1));
        let edited = Edits {
            virtual_service: Some(3),
            ..Default::default()
        };
        assert!(shape().namespace_yaml(0, &edited).contains(&edit_marker(3)));
        assert!(
            !shape()
                .namespace_yaml(1, &edited)
                .contains("VirtualService")
        );
    }

    #[test]
    fn a_namespace_file_holds_its_services_pods_and_endpoints() {
        let yaml = shape().namespace_yaml(0, &Edits::default());
        assert_eq!(yaml.matches("\nkind: Service\n").count(), 10);
        assert_eq!(yaml.matches("\nkind: Endpoints\n").count(), 10);
        assert_eq!(yaml.matches("\nkind: Pod\n").count(), 20);
        // grpc on svc-0, tcp on svc-4 and svc-9: each in the Service and its Endpoints.
        assert_eq!(yaml.matches("- name: grpc").count(), 2);
        assert_eq!(yaml.matches("- name: tcp").count(), 4);
    }
}
