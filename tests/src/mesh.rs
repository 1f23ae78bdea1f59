//! Mesh in a box: pods as network namespaces on one local bridge, like Kubernetes pods on a
//! node but without Kubernetes.
//!
//! Every [`Mesh`] owns a hub namespace holding a bridge with the gateway address
//! [`GATEWAY`]; each pod is its own namespace with an `eth0` cabled to that bridge. meshd runs in
//! the hub, so every mesh is an island: meshes in parallel tests reuse the same addresses without
//! meeting. Dropping the mesh (also while a test panics) kills its processes and deletes its
//! namespaces; namespaces left behind by crashed runs are deleted by the next `Mesh::new`.

mod netns;
mod pod;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use parking_lot::Mutex;

pub use pod::{NodeType, Pod, PodSpec};

use crate::deps::{self, Tools};
use crate::http::HttpResult;
use crate::process::{ProcessId, ProcessTable, log_tail};
use crate::wait::wait_until;

/// The hub's address on the pod network: pods' default gateway, and where meshd listens.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// Prefix length of the pod network 10.77.0.0/16.
pub const PREFIX_LEN: u8 = 16;
/// meshd's plaintext xDS port (`--xds-addr`).
pub const XDS_PORT: u16 = 15010;
/// meshd's TLS xDS + CA port (`--secure-addr`).
pub const SECURE_PORT: u16 = 15012;
/// meshd's debug HTTP port (`--debug-addr`).
pub const DEBUG_PORT: u16 = 15014;
/// The uid and gid Envoy runs as, and `meshd iptables` exempts.
pub const PROXY_UID: u32 = 1337;
/// Envoy's admin port (on 127.0.0.1 inside the pod).
pub const ENVOY_ADMIN_PORT: u16 = 15000;

/// How long a started process (meshd, Envoy) gets to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static MESHES: AtomicU64 = AtomicU64::new(0);

/// One mesh in a box. Not `Clone`: its drop is what tears everything down.
pub struct Mesh {
    shared: Arc<Shared>,
}

/// What the mesh and its pods share.
pub(crate) struct Shared {
    id: String,
    hub: String,
    dir: PathBuf,
    tools: Tools,
    processes: ProcessTable,
    state: Mutex<State>,
    files: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Pod namespaces, in creation order.
    pods: Vec<String>,
    ips: BTreeSet<Ipv4Addr>,
    veths: u32,
}

impl Shared {
    /// A fresh path in the mesh's directory for a throw-away file.
    fn scratch(&self, suffix: &str) -> PathBuf {
        let n = self.files.fetch_add(1, Ordering::Relaxed);
        self.dir.join("scratch").join(format!("{n}{suffix}"))
    }

    /// curl inside namespace `ns`, as root.
    fn curl(&self, ns: &str, url: &str, extra_args: &[&str]) -> HttpResult {
        let headers = self.scratch(".headers");
        let body = self.scratch(".body");
        let output = netns::exec(ns, "curl")
            // Nothing in the environment may send our requests to a proxy outside the box.
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .args(["-sS", "--max-time", "10", "-w", "%{http_code}"])
            .arg("-D")
            .arg(&headers)
            .arg("-o")
            .arg(&body)
            .args(extra_args)
            .arg(url)
            .stdin(Stdio::null())
            .output();
        let result = match output {
            Ok(output) => HttpResult::from_curl(
                &output,
                &std::fs::read_to_string(&headers).unwrap_or_default(),
                String::from_utf8_lossy(&std::fs::read(&body).unwrap_or_default()).into_owned(),
            ),
            Err(err) => HttpResult {
                error: Some(format!("cannot run curl in {ns}: {err}")),
                ..HttpResult::default()
            },
        };
        let _ = std::fs::remove_file(headers);
        let _ = std::fs::remove_file(body);
        result
    }

    fn exec(&self, ns: &str, argv: &[&str]) -> anyhow::Result<Output> {
        let (program, args) = argv.split_first().context("exec needs a program to run")?;
        netns::exec(ns, program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {ns}"))
    }
}

impl Mesh {
    /// Creates the hub namespace with its bridge. Fails, naming what is missing, when the machine
    /// lacks root, `ip`, `iptables`, `curl`, `setpriv`, Envoy or the project's binaries.
    pub fn new() -> anyhow::Result<Mesh> {
        let tools = deps::tools()?;
        netns::remove_stale(&std::env::temp_dir());

        let id = format!(
            "{}{}-{}",
            netns::PREFIX,
            std::process::id(),
            MESHES.fetch_add(1, Ordering::Relaxed)
        );
        // Created exclusively under a name nobody can predict; kept after the test for its logs
        // until a later run finds this process gone (`netns::remove_stale`).
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}{id}-", netns::LOG_DIR_PREFIX))
            .tempdir()
            .context("creating the mesh's directory")?
            .keep();
        for sub in ["", "scratch", "config", "ca"] {
            create_shared_dir(&dir.join(sub))?;
        }

        let hub = format!("{id}-hub");
        let mesh = Mesh {
            shared: Arc::new(Shared {
                id,
                hub: hub.clone(),
                dir,
                tools,
                processes: ProcessTable::default(),
                state: Mutex::new(State::default()),
                files: AtomicU64::new(0),
            }),
        };
        // From here on, an error drops `mesh`, which deletes the hub again.
        netns::add(&hub)?;
        let gateway = format!("{GATEWAY}/{PREFIX_LEN}");
        netns::ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        netns::ip(&["-n", &hub, "addr", "add", &gateway, "dev", "br0"])?;
        netns::ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        Ok(mesh)
    }

    /// `mx<pid>-<n>`: the prefix of every namespace of this mesh.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The hub namespace, where the bridge and meshd live.
    pub fn hub_netns(&self) -> &str {
        &self.shared.hub
    }

    /// Every namespace this mesh created (hub first), for checking clean-up.
    pub fn netns_names(&self) -> Vec<String> {
        let mut names = vec![self.shared.hub.clone()];
        names.extend(self.shared.state.lock().pods.iter().cloned());
        names
    }

    /// The mesh's working directory: logs, bootstraps, config, CA.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// An empty directory for config files, the natural `--config-dir` of [`Mesh::start_meshd`].
    pub fn config_dir(&self) -> PathBuf {
        self.shared.dir.join("config")
    }

    /// Where meshd keeps its CA (`--ca-dir`); `root-cert.pem` appears once meshd has started.
    pub fn ca_dir(&self) -> PathBuf {
        self.shared.dir.join("ca")
    }

    /// Writes `docs` as one multi-document YAML file into [`Mesh::config_dir`]. The write is a
    /// rename, so meshd's watcher never sees half a file.
    pub fn write_config(&self, file_name: &str, docs: &[String]) -> anyhow::Result<PathBuf> {
        crate::yaml::write(&self.config_dir(), file_name, docs)
    }

    pub fn xds_addr(&self) -> SocketAddr {
        SocketAddrV4::new(GATEWAY, XDS_PORT).into()
    }

    pub fn secure_addr(&self) -> SocketAddr {
        SocketAddrV4::new(GATEWAY, SECURE_PORT).into()
    }

    pub fn debug_addr(&self) -> SocketAddr {
        SocketAddrV4::new(GATEWAY, DEBUG_PORT).into()
    }

    /// Creates a pod (see [`PodSpec`]); with `sidecar`, also captures its traffic and starts its
    /// Envoy, returning once Envoy is LIVE — which needs a running meshd for xDS.
    pub fn add_pod(&self, spec: PodSpec) -> anyhow::Result<Pod> {
        pod::create(&self.shared, spec)
    }

    /// Runs `meshd serve` in the hub with the mesh's addresses and CA directory (each flag only
    /// if the binary has it; flags given in `extra_args` win) and waits for its `/ready`.
    pub fn start_meshd(
        &self,
        config_dir: impl AsRef<Path>,
        extra_args: &[&str],
    ) -> anyhow::Result<Meshd> {
        self.start_meshd_with_env(config_dir, extra_args, &[])
    }

    /// [`Mesh::start_meshd`] with more environment variables (`HTTP_PROXY`, say).
    pub fn start_meshd_with_env(
        &self,
        config_dir: impl AsRef<Path>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Meshd> {
        self.start_meshd_on(GATEWAY, config_dir, extra_args, env)
    }

    /// Another replica of meshd: like [`Mesh::start_meshd`] (same CA directory, so one root signs
    /// for all replicas), but listening on `ip`, a further address of the hub on the pod network
    /// (`10.77.0.2`, say), on the same ports. Start it after the first, which creates the CA.
    pub fn start_meshd_replica(
        &self,
        ip: Ipv4Addr,
        config_dir: impl AsRef<Path>,
        extra_args: &[&str],
    ) -> anyhow::Result<Meshd> {
        let network = u32::from(GATEWAY) >> (32 - PREFIX_LEN);
        anyhow::ensure!(
            u32::from(ip) >> (32 - PREFIX_LEN) == network && ip != GATEWAY,
            "{ip} is not a further hub address in {GATEWAY}/{PREFIX_LEN}"
        );
        let address = format!("{ip}/{PREFIX_LEN}");
        netns::ip(&[
            "-n",
            &self.shared.hub,
            "addr",
            "replace",
            &address,
            "dev",
            "br0",
        ])?;
        self.start_meshd_on(ip, config_dir, extra_args, &[])
    }

    fn start_meshd_on(
        &self,
        ip: Ipv4Addr,
        config_dir: impl AsRef<Path>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Meshd> {
        let mut args: Vec<OsString> = vec!["serve".into(), "--config-dir".into()];
        args.push(config_dir.as_ref().into());
        let address = |port: u16| SocketAddrV4::new(ip, port).to_string();
        let mut defaults = vec![
            ("--xds-addr", address(XDS_PORT)),
            ("--secure-addr", address(SECURE_PORT)),
            ("--debug-addr", address(DEBUG_PORT)),
            ("--ca-dir", self.ca_dir().display().to_string()),
        ];
        if ip != GATEWAY {
            // The first meshd's webhooks hold their port on every address; no pod calls them.
            defaults.push(("--webhook-addr", address(0)));
        }
        let supported = serve_flags(&self.shared.tools.meshd);
        for (flag, value) in defaults {
            let given = extra_args
                .iter()
                .any(|arg| *arg == flag || arg.starts_with(&format!("{flag}=")));
            if !given && supported.iter().any(|known| known == flag) {
                args.push(flag.into());
                args.push(value.into());
            }
        }
        args.extend(extra_args.iter().map(OsString::from));
        let log = if ip == GATEWAY {
            "meshd.log".to_owned()
        } else {
            format!("meshd-{ip}.log")
        };
        let mut meshd = Meshd {
            shared: self.shared.clone(),
            ip,
            args,
            env: env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v)))
                .collect(),
            log: self.shared.dir.join(log),
            process: None,
        };
        meshd.start()?;
        Ok(meshd)
    }

    /// GET `path` from meshd's debug API; the body of a 200, an error otherwise.
    pub fn meshd_debug(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}{path}", self.debug_addr());
        let result = self.hub_curl(&url, &[]);
        if result.status != 200 {
            anyhow::bail!("GET {url}: {result:?}");
        }
        Ok(result.body)
    }

    /// curl from the hub namespace (outside every pod, no capture).
    pub fn hub_curl(&self, url: &str, extra_args: &[&str]) -> HttpResult {
        self.shared.curl(&self.shared.hub, url, extra_args)
    }

    /// Runs `argv` in the hub namespace.
    pub fn hub_exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.shared.exec(&self.shared.hub, argv)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shared.processes.kill_all();
        let pods = std::mem::take(&mut self.shared.state.lock().pods);
        for ns in pods.iter().rev() {
            netns::delete(ns);
        }
        netns::delete(&self.shared.hub);
        // Logs stay until a later run finds this process gone (`netns::remove_stale`), so a
        // failed test can be looked into.
        if std::thread::panicking() {
            eprintln!(
                "mesh {}: logs in {}",
                self.shared.id,
                self.shared.dir.display()
            );
        }
    }
}

/// The long flags `meshd serve --help` lists. The harness passes its addresses only for flags
/// the binary has, so tests that need no CA run against a meshd that has none yet; a test that
/// needs one fails on the missing `root-cert.pem`, naming it.
fn serve_flags(meshd: &Path) -> Vec<String> {
    static FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FLAGS
        .get_or_init(|| {
            let help = std::process::Command::new(meshd)
                .args(["serve", "--help"])
                .output()
                .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
                .unwrap_or_default();
            help.split(|c: char| c.is_whitespace() || c == ',' || c == '=')
                .filter(|word| word.starts_with("--"))
                .map(str::to_owned)
                .collect()
        })
        .clone()
}

/// A directory Envoy (running as the proxy uid) can read.
fn create_shared_dir(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))
}

/// `meshd serve` running in a mesh's hub.
pub struct Meshd {
    shared: Arc<Shared>,
    /// The hub address it listens on.
    ip: Ipv4Addr,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    log: PathBuf,
    process: Option<ProcessId>,
}

impl Meshd {
    /// Starts meshd (if it is not running) and waits until `/ready` answers 200.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = netns::exec(&self.shared.hub, &self.shared.tools.meshd);
        command.args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let (id, _pid) = self.shared.processes.spawn("meshd", command, &self.log)?;
        self.process = Some(id);

        let url = format!("http://{}:{DEBUG_PORT}/ready", self.ip);
        let mut exited = None;
        let ready = wait_until(READY_TIMEOUT, || {
            exited = self.shared.processes.exited(id);
            exited.is_some() || self.shared.curl(&self.shared.hub, &url, &[]).status == 200
        });
        match (ready, exited) {
            (true, None) => Ok(()),
            (_, Some(exited)) => anyhow::bail!("{exited}\n{}", log_tail(&self.log, 40)),
            (false, None) => anyhow::bail!(
                "meshd not ready within {READY_TIMEOUT:?} ({url}: {:?})\n{}",
                self.shared.curl(&self.shared.hub, &url, &[]),
                log_tail(&self.log, 40)
            ),
        }
    }

    /// Kills meshd (SIGKILL: proxies see the connection drop, as on a crash).
    pub fn stop(&mut self) {
        if let Some(id) = self.process.take() {
            self.shared.processes.kill(id);
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start()
    }

    /// The hub address this meshd listens on ([`GATEWAY`] unless it is a further replica).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Its TLS xDS port (`--secure-addr`).
    pub fn secure_addr(&self) -> SocketAddr {
        SocketAddrV4::new(self.ip, SECURE_PORT).into()
    }

    /// GET `path` from this meshd's debug API; the body of a 200, an error otherwise.
    pub fn debug(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}:{DEBUG_PORT}{path}", self.ip);
        let result = self.shared.curl(&self.shared.hub, &url, &[]);
        if result.status != 200 {
            anyhow::bail!("GET {url}: {result:?}");
        }
        Ok(result.body)
    }

    pub fn is_running(&self) -> bool {
        self.process
            .is_some_and(|id| self.shared.processes.exited(id).is_none())
    }

    /// Everything meshd logged, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}
