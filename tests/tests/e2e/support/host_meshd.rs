//! `meshd serve` on the host's loopback, outside any mesh: what a kube-apiserver on loopback can
//! call (webhooks), and replicas that need no pods (leader election).

use std::ffi::OsStr;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use meshd_tests::kube::KubeCluster;
use meshd_tests::process::log_tail;
use meshd_tests::wait_until;

use super::cli::meshd_command;

const STARTUP: Duration = Duration::from_secs(30);

/// One `meshd serve` with loopback ports no other test uses, a directory of its own (config
/// directory, CA, log) and the injector's images set to test names. Killed when dropped; its
/// directory is kept when the test is failing.
pub struct HostMeshd {
    child: Child,
    dir: PathBuf,
    xds: String,
    secure: String,
    debug: String,
    webhook: String,
}

impl HostMeshd {
    /// With the file source: an empty directory.
    pub fn with_config_dir() -> HostMeshd {
        HostMeshd::start(|dir| vec![OsStr::new("--config-dir").into(), dir.join("config").into()])
    }

    /// With the Kubernetes source, as replica `name` (`--pod-name`, the Lease's holder).
    pub fn with_kubeconfig(cluster: &KubeCluster, name: &str) -> HostMeshd {
        HostMeshd::with_kubeconfig_and(cluster, name, &[])
    }

    /// [`HostMeshd::with_kubeconfig`] with more flags of `meshd serve`.
    pub fn with_kubeconfig_and(cluster: &KubeCluster, name: &str, flags: &[&str]) -> HostMeshd {
        let kubeconfig = cluster.kubeconfig_path();
        HostMeshd::start(|_| {
            let mut args: Vec<std::ffi::OsString> = vec![
                OsStr::new("--kubeconfig").into(),
                kubeconfig.into(),
                OsStr::new("--pod-name").into(),
                OsStr::new(name).into(),
            ];
            args.extend(flags.iter().map(|flag| OsStr::new(flag).into()));
            args
        })
    }

    /// Starts meshd with the flags `source` gives (from meshd's directory) and waits until it is
    /// ready and its webhook port accepts connections.
    fn start(source: impl FnOnce(&Path) -> Vec<std::ffi::OsString>) -> HostMeshd {
        // Created exclusively under a name nobody can predict; removed on drop unless failing.
        let dir = tempfile::Builder::new()
            .prefix("meshd-host-")
            .tempdir()
            .expect("creating meshd's directory")
            .keep();
        for sub in ["config", "ca"] {
            std::fs::create_dir_all(dir.join(sub)).expect("creating meshd's directories");
        }
        let [xds, secure, debug, webhook] =
            meshd_tests::ports::free_loopback_ports().unwrap_or_else(|err| panic!("{err:#}"));
        let xds = format!("127.0.0.1:{xds}");
        let secure = format!("127.0.0.1:{secure}");
        let (debug, webhook) = (format!("127.0.0.1:{debug}"), format!("127.0.0.1:{webhook}"));
        let log = std::fs::File::create(dir.join("meshd.log")).expect("creating the log");
        let child = meshd_command()
            .arg("serve")
            .args(source(&dir))
            .arg("--ca-dir")
            .arg(dir.join("ca"))
            .args(["--xds-addr", &xds])
            .args(["--secure-addr", &secure])
            .args(["--debug-addr", &debug])
            .args(["--webhook-addr", &webhook])
            .args(["--proxy-image", "registry.test/envoy:v1.40.0"])
            .args(["--proxy-init-image", "registry.test/meshd:test"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "starting {}: {err} (build it with `cargo build -p meshd`, or set MESHD_BIN)",
                    meshd_tests::deps::meshd_binary().display()
                )
            });
        let mut meshd = HostMeshd {
            child,
            dir,
            xds,
            secure,
            debug,
            webhook,
        };
        let ready = wait_until(STARTUP, || {
            meshd.exited().is_some()
                || (meshd.get("/ready").is_some() && TcpStream::connect(&meshd.webhook).is_ok())
        });
        if let Some(exit) = meshd.exited() {
            panic!("meshd exited: {exit}\n{}", meshd.log());
        }
        assert!(
            ready,
            "meshd was not ready within {STARTUP:?}\n{}",
            meshd.log()
        );
        meshd
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(status.to_string()),
            Err(err) => Some(err.to_string()),
        }
    }

    /// The tail of meshd's log, for assertion messages.
    pub fn log(&self) -> String {
        log_tail(&self.dir.join("meshd.log"), 40)
    }

    /// meshd's directory: `config/`, `ca/`, `meshd.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// meshd's trust bundle.
    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.dir.join("ca/root-cert.pem")).expect("meshd wrote its root")
    }

    /// `127.0.0.1:PORT` of xDS over TLS.
    pub fn secure_addr(&self) -> &str {
        &self.secure
    }

    /// `127.0.0.1:PORT` of the debug API (`/metrics`, `/ready`, `/debug/*`).
    pub fn debug_addr(&self) -> &str {
        &self.debug
    }

    /// `127.0.0.1:PORT` of plaintext xDS.
    pub fn xds_addr(&self) -> &str {
        &self.xds
    }

    /// `https://127.0.0.1:PORT/PATH` on the webhook port.
    pub fn webhook_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.webhook)
    }

    /// The body of a 200 from the debug API.
    pub fn get(&self, path: &str) -> Option<String> {
        let (status, body) = meshd_tests::http::get_plain(&self.debug, path).ok()?;
        (status == 200).then_some(body)
    }

    /// What `meshd_leader` says, if meshd answers.
    pub fn is_leader(&self) -> Option<bool> {
        let metrics = self.get("/metrics")?;
        let line = metrics.lines().find(|l| l.starts_with("meshd_leader "))?;
        Some(line.ends_with(" 1"))
    }

    /// Sends `signal` (`TERM`, `KILL`) to meshd; the process is reaped when dropped.
    pub fn signal(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM and wait: a graceful stop, which gives the lease up.
    pub fn terminate(&mut self) {
        self.signal("TERM");
        let _ = wait_until(Duration::from_secs(10), || {
            self.child.try_wait().is_ok_and(|s| s.is_some())
        });
        self.reap();
    }

    /// Waits up to `limit` for meshd to exit on its own; its exit status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    fn reap(&mut self) {
        // An already-exited child makes kill fail; waiting is what matters.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostMeshd {
    fn drop(&mut self) {
        self.reap();
        if std::thread::panicking() {
            eprintln!(
                "meshd kept for its logs: {}\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
