//! One pod: a network namespace cabled to the hub's bridge, optionally with a captured Envoy.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;

use super::{
    ENVOY_ADMIN_PORT, GATEWAY, PREFIX_LEN, PROXY_UID, READY_TIMEOUT, SECURE_PORT, Shared, XDS_PORT,
    create_shared_dir, netns,
};
use crate::http::HttpResult;
use crate::process::{App, ProcessId, log_tail};
use crate::wait::wait_until;

/// Label Istio's injector adds to every pod with a sidecar; auto-mTLS keys on it.
const TLS_MODE_LABEL: (&str, &str) = ("security.istio.io/tlsMode", "istio");

/// What Envoy is to the control plane: `sidecar~…` or `router~…` (a gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeType {
    #[default]
    Sidecar,
    Router,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Sidecar => "sidecar",
            NodeType::Router => "router",
        }
    }
}

/// A pod to create. `sidecar` runs Envoy bootstrapped by `meshd bootstrap`; with
/// [`NodeType::Sidecar`] its traffic is also captured by `meshd iptables` (a gateway, `Router`,
/// gets Envoy without capture, as Istio's gateways do).
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// `None`: the next free address in 10.77.1.0 and up.
    pub ip: Option<Ipv4Addr>,
    pub labels: Vec<(String, String)>,
    pub service_account: String,
    pub sidecar: bool,
    /// Envoy asks for Delta xDS (`--delta`) instead of state-of-the-world.
    pub delta: bool,
    /// Envoy reaches meshd over TLS (`--secure-addr`, `--root-cert`), needed for certificates.
    pub tls: bool,
    pub node_type: NodeType,
    /// The Node the pod is scheduled to (`spec.nodeName`).
    pub node: Option<String>,
    /// The hub addresses of the meshd replicas the proxy may reach (`--xds-addr` lists them all);
    /// empty: meshd at [`GATEWAY`] alone.
    pub control_planes: Vec<Ipv4Addr>,
}

impl PodSpec {
    /// A plain pod (no sidecar) with service account `default`.
    pub fn new(name: &str, namespace: &str) -> Self {
        PodSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            ip: None,
            labels: Vec::new(),
            service_account: "default".to_owned(),
            sidecar: false,
            delta: false,
            tls: false,
            node_type: NodeType::Sidecar,
            node: None,
            control_planes: Vec::new(),
        }
    }

    /// Schedules the pod to Node `node` (whose labels say where it is).
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_owned());
        self
    }

    pub fn ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn service_account(mut self, service_account: &str) -> Self {
        self.service_account = service_account.to_owned();
        self
    }

    /// Injects a sidecar: capture plus Envoy.
    pub fn sidecar(mut self) -> Self {
        self.sidecar = true;
        self
    }

    /// The proxy's bootstrap names every meshd replica in `ips` (see
    /// [`super::Mesh::start_meshd_replica`]), in this order.
    pub fn control_planes(mut self, ips: &[Ipv4Addr]) -> Self {
        self.control_planes = ips.to_vec();
        self
    }

    pub fn delta(mut self) -> Self {
        self.delta = true;
        self
    }

    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// A gateway: Envoy as `router`, no capture.
    pub fn router(mut self) -> Self {
        self.sidecar = true;
        self.node_type = NodeType::Router;
        self
    }

    /// The labels as injection leaves them: a sidecar pod also carries
    /// `security.istio.io/tlsMode=istio`, which auto-mTLS keys on.
    pub fn injected_labels(&self) -> Vec<(String, String)> {
        let mut labels = self.labels.clone();
        let (key, value) = TLS_MODE_LABEL;
        if self.sidecar
            && self.node_type == NodeType::Sidecar
            && !labels.iter().any(|(k, _)| k == key)
        {
            labels.push((key.to_owned(), value.to_owned()));
        }
        labels
    }

    /// The Kubernetes `Pod` object for the file source, written before the pod exists (so
    /// meshd knows it when its Envoy connects); needs an explicit `ip`.
    pub fn yaml(&self) -> anyhow::Result<String> {
        let ip = self
            .ip
            .with_context(|| format!("pod {}.{} has no fixed ip", self.name, self.namespace))?;
        let labels = self.injected_labels();
        let labels: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let pod = crate::yaml::pod(
            &self.name,
            &self.namespace,
            &ip.to_string(),
            &labels,
            &self.service_account,
        );
        Ok(match &self.node {
            Some(node) => pod.replacen(
                "\nspec:\n",
                &format!("\nspec:\n  nodeName: {}\n", crate::yaml::quote(node)),
                1,
            ),
            None => pod,
        })
    }
}

/// A handle on a pod; cheap to clone. Valid while its [`super::Mesh`] lives.
#[derive(Clone)]
pub struct Pod {
    shared: Arc<Shared>,
    info: Arc<PodInfo>,
}

struct PodInfo {
    name: String,
    namespace: String,
    ip: Ipv4Addr,
    labels: Vec<(String, String)>,
    service_account: String,
    node_type: NodeType,
    netns: String,
    dir: PathBuf,
    envoy: Mutex<Option<ProcessId>>,
}

pub(super) fn create(shared: &Arc<Shared>, mut spec: PodSpec) -> anyhow::Result<Pod> {
    for part in [&spec.name, &spec.namespace] {
        let valid = !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        anyhow::ensure!(valid, "`{part}` is not a DNS-1123 label");
    }
    spec.labels = spec.injected_labels();
    let netns_name = format!("{}-{}.{}", shared.id, spec.name, spec.namespace);
    let (ip, veth) = {
        let mut state = shared.state.lock();
        anyhow::ensure!(
            !state.pods.contains(&netns_name),
            "pod {}.{} exists already",
            spec.name,
            spec.namespace
        );
        let ip = match spec.ip {
            Some(ip) => {
                let network = u32::from(GATEWAY) >> (32 - PREFIX_LEN);
                anyhow::ensure!(
                    u32::from(ip) >> (32 - PREFIX_LEN) == network && ip != GATEWAY,
                    "{ip} is not a pod address in {GATEWAY}/{PREFIX_LEN}"
                );
                anyhow::ensure!(!state.ips.contains(&ip), "{ip} is taken");
                ip
            }
            None => next_free_ip(&state.ips).context("the pod network is full")?,
        };
        state.ips.insert(ip);
        state.veths += 1;
        // Registered before it exists, so that a failure below still cleans it up.
        state.pods.push(netns_name.clone());
        (ip, format!("vp{}", state.veths))
    };

    let dir = shared.dir.join(format!("{}.{}", spec.name, spec.namespace));
    create_shared_dir(&dir)?;
    netns::add(&netns_name)?;
    let hub = shared.hub.as_str();
    let ns = netns_name.as_str();
    let address = format!("{ip}/{PREFIX_LEN}");
    let gateway = GATEWAY.to_string();
    netns::ip(&[
        "-n", hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    netns::ip(&["-n", hub, "link", "set", &veth, "master", "br0", "up"])?;
    netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
    netns::ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    netns::ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    netns::ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
    // What Kubernetes pods commonly get through a sysctl: the proxy uid may bind ports < 1024
    // (gateways listening on 80/443).
    let output = shared.exec(
        ns,
        &[
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start",
        ],
    )?;
    netns::check(&output, || "sysctl ip_unprivileged_port_start".to_owned())?;

    let pod = Pod {
        shared: shared.clone(),
        info: Arc::new(PodInfo {
            name: spec.name.clone(),
            namespace: spec.namespace.clone(),
            ip,
            labels: spec.labels.clone(),
            service_account: spec.service_account.clone(),
            node_type: spec.node_type,
            netns: netns_name,
            dir,
            envoy: Mutex::new(None),
        }),
    };
    if spec.sidecar {
        if spec.node_type == NodeType::Sidecar {
            pod.install_iptables(&[])?;
        }
        let bootstrap = pod.write_meshd_bootstrap(&spec)?;
        pod.start_envoy(&bootstrap)?;
    }
    Ok(pod)
}

fn next_free_ip(taken: &std::collections::BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    // 10.77.1.2 onwards; 10.77.0.x is left for the hub and for addresses tests pick.
    let first = u32::from(Ipv4Addr::new(10, 77, 1, 2));
    let last = u32::from(Ipv4Addr::new(10, 77, 255, 254));
    (first..=last)
        .map(Ipv4Addr::from)
        .filter(|ip| !matches!(ip.octets()[3], 0 | 255))
        .find(|ip| !taken.contains(ip))
}

impl Pod {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn namespace(&self) -> &str {
        &self.info.namespace
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.info.ip
    }

    pub fn labels(&self) -> &[(String, String)] {
        &self.info.labels
    }

    pub fn service_account(&self) -> &str {
        &self.info.service_account
    }

    pub fn netns(&self) -> &str {
        &self.info.netns
    }

    /// The pod's directory: Envoy's bootstrap and log, app logs.
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// `POD.NAMESPACE`, the id `meshd proxy-status` and `config_dump?proxyID=` use.
    pub fn proxy_id(&self) -> String {
        format!("{}.{}", self.info.name, self.info.namespace)
    }

    /// Istio's Envoy node id: `sidecar~IP~POD.NS~NS.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        format!(
            "{}~{}~{}~{}.svc.cluster.local",
            self.info.node_type.as_str(),
            self.info.ip,
            self.proxy_id(),
            self.info.namespace
        )
    }

    /// The Kubernetes `Pod` object for this pod, for the file source.
    pub fn yaml(&self) -> String {
        let labels: Vec<(&str, &str)> = self
            .info
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        crate::yaml::pod(
            &self.info.name,
            &self.info.namespace,
            &self.info.ip.to_string(),
            &labels,
            &self.info.service_account,
        )
    }

    /// A command running `program` in the pod's namespace, as root; for what [`Pod::exec`] and
    /// [`Pod::spawn`] do not cover.
    pub fn command(&self, program: &str) -> Command {
        netns::exec(&self.info.netns, program)
    }

    /// Runs `argv` in the pod as root and waits for it.
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.shared.exec(&self.info.netns, argv)
    }

    /// curl as the pod's app would: as root, so iptables captures it into the sidecar.
    pub fn curl(&self, url: &str, extra_args: &[&str]) -> HttpResult {
        self.shared.curl(&self.info.netns, url, extra_args)
    }

    /// Starts `argv` in the pod as root (an app); it lives until killed or the mesh drops.
    pub fn spawn(&self, argv: &[&str]) -> anyhow::Result<App> {
        let (program, args) = argv.split_first().context("spawn needs a program to run")?;
        let base = Path::new(program)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "app".to_owned());
        let n = self
            .shared
            .files
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.info.dir.join(format!("{base}-{n}.log"));
        let mut command = self.command(program);
        command.args(args);
        let (id, pid) = self.shared.processes.spawn(&base, command, &log)?;
        Ok(App { id, pid, log })
    }

    /// Kills an app started with [`Pod::spawn`]; false if it was not running.
    pub fn kill(&self, app: &App) -> bool {
        self.shared.processes.kill(app.id)
    }

    /// Runs `meshd-echo` as this pod's app on the given HTTP and TCP ports, returning once all of
    /// them accept connections.
    pub fn start_echo(&self, http_ports: &[u16], tcp_ports: &[u16]) -> anyhow::Result<App> {
        self.start_echo_with(http_ports, tcp_ports, &[])
    }

    /// [`Pod::start_echo`] with more `meshd-echo` flags (`--always-status 500`, say).
    pub fn start_echo_with(
        &self,
        http_ports: &[u16],
        tcp_ports: &[u16],
        extra_args: &[&str],
    ) -> anyhow::Result<App> {
        let echo = self.shared.tools.echo.display().to_string();
        let mut argv = vec![
            echo,
            "--name".to_owned(),
            self.info.name.clone(),
            "--namespace".to_owned(),
            self.info.namespace.clone(),
        ];
        for port in http_ports {
            argv.extend(["--http".to_owned(), port.to_string()]);
        }
        for port in tcp_ports {
            argv.extend(["--tcp".to_owned(), port.to_string()]);
        }
        argv.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let app = self.spawn(&argv)?;
        for port in http_ports.iter().chain(tcp_ports) {
            if let Err(err) = self.wait_listening(*port, Duration::from_secs(10)) {
                anyhow::bail!("{err}\n{}", log_tail(&app.log, 20));
            }
        }
        Ok(app)
    }

    /// Sends `line` over TCP to `ip:port` as the pod's app would (captured like any app) and
    /// returns the first line that comes back, empty if the connection closed without one.
    pub fn tcp_exchange(&self, ip: &str, port: u16, line: &str) -> anyhow::Result<String> {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{port} && printf '%s\\n' '{line}' >&3 && timeout 5 head -n1 <&3"
        );
        let output = self.exec(&["bash", "-c", &script])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Waits until something in the pod listens on TCP `port`.
    pub fn wait_listening(&self, port: u16, timeout: Duration) -> anyhow::Result<()> {
        let listening = wait_until(timeout, || self.listening_ports().contains(&port));
        anyhow::ensure!(
            listening,
            "nothing listens on port {port} in pod {} after {timeout:?}",
            self.proxy_id()
        );
        Ok(())
    }

    /// TCP ports with a listening socket in the pod (from the namespace's `/proc/net/tcp*`).
    pub fn listening_ports(&self) -> Vec<u16> {
        let Ok(output) = self.exec(&["cat", "/proc/net/tcp", "/proc/net/tcp6"]) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let local = fields.nth(1)?;
                let state = fields.nth(1)?;
                let port = local.rsplit_once(':')?.1;
                // 0A is TCP_LISTEN.
                (state == "0A")
                    .then(|| u16::from_str_radix(port, 16).ok())
                    .flatten()
            })
            .collect()
    }

    /// Installs the sidecar capture rules: `meshd iptables EXTRA_ARGS` in the pod.
    pub fn install_iptables(&self, extra_args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(&self.shared.tools.meshd.display().to_string())
            .arg("iptables")
            .args(extra_args)
            .output()
            .context("running meshd iptables")?;
        netns::check(&output, || {
            format!(
                "meshd iptables {} in {}",
                extra_args.join(" "),
                self.proxy_id()
            )
        })
    }

    /// The pod's nat table as `iptables-save` prints it.
    pub fn iptables_save(&self) -> anyhow::Result<String> {
        let output = self.exec(&["iptables-save", "-t", "nat"])?;
        netns::check(&output, || "iptables-save".to_owned())?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn write_meshd_bootstrap(&self, spec: &PodSpec) -> anyhow::Result<PathBuf> {
        let path = self.info.dir.join("envoy-bootstrap.json");
        let ip = self.info.ip.to_string();
        let labels = self
            .info
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut command = Command::new(&self.shared.tools.meshd);
        command
            .arg("bootstrap")
            .args(["--node-type", self.info.node_type.as_str()])
            .args(["--pod", &self.info.name])
            .args(["--namespace", &self.info.namespace])
            .args(["--ip", &ip])
            .args(["--service-account", &self.info.service_account])
            .args(["--admin-port", &ENVOY_ADMIN_PORT.to_string()]);
        if !labels.is_empty() {
            command.args(["--labels", &labels]);
        }
        let control_planes = if spec.control_planes.is_empty() {
            vec![GATEWAY]
        } else {
            spec.control_planes.clone()
        };
        let xds_addr = |port: u16| {
            control_planes
                .iter()
                .map(|ip| format!("{ip}:{port}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        if spec.tls {
            // As Istio mounts the `istio-ca-root-cert` ConfigMap: a copy the proxy uid can read.
            let root = self.shared.dir.join("ca").join("root-cert.pem");
            let copy = self.info.dir.join("root-cert.pem");
            std::fs::copy(&root, &copy).with_context(|| {
                format!(
                    "copying {} (a TLS pod needs meshd started first, with its CA)",
                    root.display()
                )
            })?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644))?;
            command
                .args(["--xds-addr", &xds_addr(SECURE_PORT)])
                .arg("--root-cert")
                .arg(&copy);
        } else {
            command.args(["--xds-addr", &xds_addr(XDS_PORT)]);
        }
        if spec.delta {
            command.arg("--delta");
        }
        command.arg("-o").arg(&path);
        let output = command.output().context("running meshd bootstrap")?;
        netns::check(&output, || format!("{command:?}"))?;
        // Envoy runs as the proxy uid, whatever umask meshd wrote the file with.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    /// Writes `bootstrap` (Envoy YAML) into the pod's directory and starts Envoy with it; see
    /// [`Pod::start_envoy`].
    pub fn start_envoy_with(&self, bootstrap: &str) -> anyhow::Result<()> {
        let path = self.info.dir.join("envoy-bootstrap.yaml");
        std::fs::write(&path, bootstrap).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        self.start_envoy(&path)
    }

    /// Starts Envoy in the pod as uid/gid 1337 and waits until its admin `/ready` says LIVE.
    pub fn start_envoy(&self, bootstrap: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.info.envoy.lock().is_none(),
            "Envoy already runs in {}",
            self.proxy_id()
        );
        let id = PROXY_UID.to_string();
        let mut command = self.command("setpriv");
        command
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(&self.shared.tools.envoy)
            .arg("-c")
            .arg(bootstrap)
            // Hot restart would share memory and sockets between the pods' Envoys.
            .args(["--disable-hot-restart", "--concurrency", "1"])
            // As meshd's injector runs it: after a listener update, connections still on a
            // replaced filter chain close at their next request, not gradually over ten minutes
            // (Envoy's default) — else a pooled connection keeps old policy (JWKS, RBAC) alive.
            .args(["--drain-time-s", "45", "--drain-strategy", "immediate"])
            .args(["--log-level", "info"]);
        let log = self.envoy_log_path();
        let (process, _pid) = self.shared.processes.spawn("envoy", command, &log)?;
        *self.info.envoy.lock() = Some(process);

        let mut exited = None;
        let mut last = String::new();
        let live = wait_until(READY_TIMEOUT, || {
            exited = self.shared.processes.exited(process);
            last = self
                .envoy_admin("/ready")
                .unwrap_or_else(|err| err.to_string());
            exited.is_some() || last.trim() == "LIVE"
        });
        match (live, exited) {
            (true, None) => Ok(()),
            (_, Some(exited)) => {
                *self.info.envoy.lock() = None;
                anyhow::bail!("{exited}\n{}", log_tail(&log, 40))
            }
            (false, None) => anyhow::bail!(
                "Envoy in {} not LIVE within {READY_TIMEOUT:?} (/ready: {})\n{}",
                self.proxy_id(),
                last.trim(),
                log_tail(&log, 40)
            ),
        }
    }

    /// Kills the pod's Envoy; false if none was running.
    pub fn stop_envoy(&self) -> bool {
        let process = self.info.envoy.lock().take();
        process.is_some_and(|process| self.shared.processes.kill(process))
    }

    fn envoy_log_path(&self) -> PathBuf {
        self.info.dir.join("envoy.log")
    }

    /// Everything the pod's Envoy logged.
    pub fn envoy_log(&self) -> String {
        std::fs::read_to_string(self.envoy_log_path()).unwrap_or_default()
    }

    /// GET `path` from Envoy's admin API in the pod; the body of a 2xx, an error otherwise.
    pub fn envoy_admin(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{ENVOY_ADMIN_PORT}{path}");
        let result = self.curl(&url, &["--max-time", "5"]);
        if !(200..300).contains(&result.status) {
            anyhow::bail!("GET {url} in {}: {result:?}", self.proxy_id());
        }
        Ok(result.body)
    }

    /// Every counter and gauge of the pod's Envoy.
    pub fn envoy_stats(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = self.envoy_admin("/stats")?;
        Ok(text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    /// One counter or gauge; `None` if Envoy is unreachable or has no such stat.
    pub fn envoy_stat(&self, name: &str) -> Option<u64> {
        self.envoy_stats().ok()?.remove(name)
    }
}
