//! A real Kubernetes API server for tests: `kube-apiserver` v1.20.2 (built from Debian's source
//! package by `scripts/install-kube.sh`) on etcd 3.4 (Debian's `etcd-server`), both on loopback
//! ports of their own, so clusters of parallel tests never meet.
//!
//! No mocks and no kubelet: objects are stored and served, admission (webhooks included) and RBAC
//! run, service-account tokens are minted and reviewed, but no pod ever runs. Tests set what a
//! kubelet would (`status.podIP`) through the status subresource.
//!
//! A missing binary fails the test with a message to run `make test-deps`; nothing is skipped.

use std::fs;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::deps::{find_on_path, is_executable};
use crate::process::log_tail;
use crate::wait::wait_until;

/// The issuer every service-account token of a test cluster names (`iss`), as in a kubeadm cluster.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Audiences the API server accepts tokens for: its own, and the one Istio proxies ask for.
pub const API_AUDIENCES: [&str; 2] = [SERVICE_ACCOUNT_ISSUER, "istio-ca"];
/// The Service CIDR (`--service-cluster-ip-range`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
const START_ATTEMPTS: usize = 3;

/// The binaries a cluster runs.
#[derive(Debug, Clone)]
pub struct KubeTools {
    pub apiserver: PathBuf,
    pub etcd: PathBuf,
    pub kubectl: PathBuf,
    /// Helm's engine behind a `helm`-shaped command line (see `scripts/install-kube.sh`).
    pub helm: PathBuf,
}

/// Finds kube-apiserver, etcd and kubectl once per test process; the error names every missing one.
///
/// `MESHD_KUBE_APISERVER`, `MESHD_ETCD`, `MESHD_KUBECTL` and `MESHD_HELM` override the places
/// `scripts/install-kube.sh` puts them (`$MESHD_CACHE/kube/bin/`, `etcd` on `PATH`).
pub fn tools() -> anyhow::Result<KubeTools> {
    static TOOLS: OnceLock<Result<KubeTools, String>> = OnceLock::new();
    TOOLS
        .get_or_init(find_tools)
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_tools() -> Result<KubeTools, String> {
    let kube_bin = crate::deps::cache_dir().join("kube/bin");
    let mut missing = Vec::new();
    let mut find = |var: &str, default: Option<PathBuf>, what: &str| -> PathBuf {
        let path = std::env::var_os(var).map(PathBuf::from).or(default);
        match path {
            Some(path) if is_executable(&path) => path,
            Some(path) => {
                missing.push(format!("{what} at {} ({var})", path.display()));
                path
            }
            None => {
                missing.push(format!("{what} (set {var})"));
                PathBuf::new()
            }
        }
    };
    let apiserver = find(
        "MESHD_KUBE_APISERVER",
        Some(kube_bin.join("kube-apiserver")),
        "kube-apiserver v1.20.2",
    );
    let etcd = find(
        "MESHD_ETCD",
        find_on_path("etcd").or_else(|| Some(PathBuf::from("/usr/bin/etcd"))),
        "etcd (Debian package etcd-server)",
    );
    let kubectl = find(
        "MESHD_KUBECTL",
        Some(kube_bin.join("kubectl")),
        "kubectl v1.20.2",
    );
    let helm = find(
        "MESHD_HELM",
        Some(kube_bin.join("helm")),
        "helm (Helm's engine from helm-sdkpy)",
    );
    if missing.is_empty() {
        Ok(KubeTools {
            apiserver,
            etcd,
            kubectl,
            helm,
        })
    } else {
        Err(format!(
            "the Kubernetes test cluster cannot run, missing: {}; run `make test-deps` \
             (scripts/install-kube.sh builds kube-apiserver once, about 6-10 minutes)",
            missing.join("; ")
        ))
    }
}

/// Loopback ports of one cluster, fixed for its lifetime so restarts come back at the same address.
#[derive(Debug, Clone, Copy)]
struct Ports {
    etcd_client: u16,
    etcd_peer: u16,
    apiserver: u16,
}

impl Ports {
    fn free() -> anyhow::Result<Ports> {
        let [etcd_client, etcd_peer, apiserver] = crate::ports::free_loopback_ports()?;
        Ok(Ports {
            etcd_client,
            etcd_peer,
            apiserver,
        })
    }
}

/// One kube-apiserver + etcd pair on loopback, with its certificates, keys and kubeconfig in a
/// directory of its own. Dropping it stops both and removes the directory (kept, and its path
/// printed, when the test is panicking, for the logs).
pub struct KubeCluster {
    tools: KubeTools,
    dir: PathBuf,
    ports: Ports,
    admin_token: String,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// Cluster directories are `<temp dir>/meshd-kube-<pid>-<n>-<random>`.
const CLUSTER_DIR_PREFIX: &str = "meshd-kube-";

impl KubeCluster {
    /// Starts etcd and kube-apiserver and waits until `/readyz` answers `ok`.
    pub fn start() -> anyhow::Result<KubeCluster> {
        let tools = tools()?;
        remove_stale(&std::env::temp_dir());

        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let id = format!(
                "{}-{}",
                std::process::id(),
                CLUSTERS.fetch_add(1, Ordering::Relaxed)
            );
            // Created exclusively under a name nobody can predict.
            let dir = tempfile::Builder::new()
                .prefix(&format!("{CLUSTER_DIR_PREFIX}{id}-"))
                .tempdir()
                .context("creating the cluster's directory")?
                .keep();
            let mut cluster = KubeCluster::prepare(tools.clone(), dir)?;
            match cluster
                .start_etcd()
                .and_then(|()| cluster.start_apiserver())
            {
                Ok(()) => return Ok(cluster),
                // Another process may have taken one of the ports between choosing and binding.
                Err(err) if cluster.lost_a_port() => last_error = Some(err),
                Err(err) => {
                    cluster.keep_dir();
                    return Err(err);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the cluster did not start")))
    }

    /// Writes certificates, keys, the token file and the kubeconfig into `dir`.
    fn prepare(tools: KubeTools, dir: PathBuf) -> anyhow::Result<KubeCluster> {
        for sub in ["", "pki", "etcd", "logs"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let ports = Ports::free()?;
        write_pki(&dir.join("pki"))?;
        let admin_token = random_token()?;
        // `token,user,uid,"group1,group2"`: the admin is in system:masters, which RBAC lets do anything.
        fs::write(
            dir.join("pki/tokens.csv"),
            format!("{admin_token},meshd-test-admin,meshd-test-admin,\"system:masters\"\n"),
        )?;
        let cluster = KubeCluster {
            tools,
            dir,
            ports,
            admin_token,
            etcd: None,
            apiserver: None,
        };
        fs::write(cluster.kubeconfig_path(), cluster.kubeconfig())?;
        fs::write(
            cluster.dir.join("pids"),
            "", // filled as processes start; see `remove_stale`
        )?;
        Ok(cluster)
    }

    /// The kubeconfig of the cluster's admin (group `system:masters`).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.ports.apiserver)
    }

    /// The CA that signed the API server's serving certificate (and the admin client certificate).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("pki/ca.crt")
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The cluster's directory: `pki/`, `etcd/`, `logs/`, `kubeconfig`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn kubeconfig(&self) -> String {
        kubeconfig_yaml(
            &self.server_url(),
            &self.ca_cert_path(),
            "meshd-test-admin",
            &self.admin_token,
        )
    }

    /// A kubeconfig that authenticates with `token` (a service account's, say) instead of the admin's;
    /// written next to the admin's as `kubeconfig-<name>`.
    pub fn write_token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        fs::write(
            &path,
            kubeconfig_yaml(&self.server_url(), &self.ca_cert_path(), name, token),
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn spawn(&self, name: &str, program: &Path, args: &[String]) -> anyhow::Result<Child> {
        let log = fs::File::options()
            .create(true)
            .append(true)
            .open(self.log_path(name))
            .with_context(|| format!("opening the log of {name}"))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut pids = fs::File::options()
            .append(true)
            .open(self.dir.join("pids"))?;
        writeln!(pids, "{}", child.id())?;
        Ok(child)
    }

    fn start_etcd(&mut self) -> anyhow::Result<()> {
        let client = format!("http://127.0.0.1:{}", self.ports.etcd_client);
        let peer = format!("http://127.0.0.1:{}", self.ports.etcd_peer);
        let args = vec![
            "--name=meshd-test".to_owned(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=meshd-test={peer}"),
            "--initial-cluster-state=new".to_owned(),
            "--logger=zap".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let child = self.spawn("etcd", &self.tools.etcd, &args)?;
        self.etcd = Some(child);
        let authority = format!("127.0.0.1:{}", self.ports.etcd_client);
        let healthy = || {
            crate::http::get_plain(&authority, "/health")
                .is_ok_and(|(status, body)| status == 200 && body.contains("true"))
        };
        let ready = wait_until(STARTUP_TIMEOUT, || {
            self.etcd_exited().is_some() || healthy()
        });
        if let Some(exit) = self.etcd_exited() {
            bail!("{exit}\n{}", log_tail(&self.log_path("etcd"), 30));
        }
        if !ready {
            bail!(
                "etcd did not become healthy within {STARTUP_TIMEOUT:?}\n{}",
                log_tail(&self.log_path("etcd"), 30)
            );
        }
        Ok(())
    }

    fn apiserver_args(&self) -> Vec<String> {
        let pki = self.dir.join("pki");
        let file = |name: &str| pki.join(name).display().to_string();
        vec![
            format!("--etcd-servers=http://127.0.0.1:{}", self.ports.etcd_client),
            "--bind-address=127.0.0.1".to_owned(),
            format!("--secure-port={}", self.ports.apiserver),
            // The default insecure port (8080) would collide between clusters; nothing needs it.
            "--insecure-port=0".to_owned(),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--client-ca-file={}", file("ca.crt")),
            format!("--token-auth-file={}", file("tokens.csv")),
            "--authorization-mode=RBAC".to_owned(),
            // The defaults (ServiceAccount, NamespaceLifecycle, …, both webhook plugins) plus the
            // webhook plugins named, so a change of defaults cannot silently drop them.
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook"
                .to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", file("sa.pub")),
            format!("--service-account-signing-key-file={}", file("sa.key")),
            format!("--api-audiences={}", API_AUDIENCES.join(",")),
            // There is no controller manager to create legacy token Secrets: pods get projected
            // (bound) tokens instead, which the ServiceAccount admission plugin then mounts.
            "--feature-gates=BoundServiceAccountTokenVolume=true".to_owned(),
            // Webhook (and aggregated API) calls go to a Service's endpoints, not its cluster IP:
            // there is no kube-proxy to route cluster IPs.
            "--enable-aggregator-routing=true".to_owned(),
            // The `kubernetes` Service would get a loopback endpoint, which Endpoints validation
            // refuses; no test needs that endpoint.
            "--endpoint-reconciler-type=none".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
            "--v=1".to_owned(),
        ]
    }

    fn start_apiserver(&mut self) -> anyhow::Result<()> {
        let args = self.apiserver_args();
        let child = self.spawn("kube-apiserver", &self.tools.apiserver, &args)?;
        self.apiserver = Some(child);
        self.wait_ready()
    }

    /// Waits until `/readyz` answers `ok` (etcd reachable, bootstrap done, RBAC roles in place).
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        let ready = wait_until(STARTUP_TIMEOUT, || {
            self.apiserver_exited().is_some() || self.readyz().unwrap_or(false)
        });
        if let Some(exit) = self.apiserver_exited() {
            bail!("{exit}\n{}", log_tail(&self.log_path("kube-apiserver"), 40));
        }
        if !ready {
            bail!(
                "kube-apiserver was not ready within {STARTUP_TIMEOUT:?}\n{}\n{}",
                log_tail(&self.log_path("kube-apiserver"), 40),
                log_tail(&self.log_path("etcd"), 10)
            );
        }
        Ok(())
    }

    fn readyz(&self) -> anyhow::Result<bool> {
        let output = self.kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"])?;
        Ok(output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok")
    }

    fn etcd_exited(&mut self) -> Option<String> {
        exited("etcd", self.etcd.as_mut())
    }

    fn apiserver_exited(&mut self) -> Option<String> {
        exited("kube-apiserver", self.apiserver.as_mut())
    }

    fn lost_a_port(&self) -> bool {
        ["etcd", "kube-apiserver"].iter().any(|name| {
            fs::read_to_string(self.log_path(name))
                .map(|log| log.contains("address already in use"))
                .unwrap_or(false)
        })
    }

    /// Runs kubectl against the cluster as its admin. Only fails when kubectl cannot be started; the
    /// caller judges the exit status.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.kubectl_with_input(args, None)
    }

    /// Runs kubectl and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        checked(args, self.kubectl(args)?)
    }

    /// Runs kubectl with `input` on its stdin (for `-f -`).
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.tools.kubectl);
        command
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting kubectl {args:?}"))?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .context("writing kubectl's stdin")?;
        }
        child
            .wait_with_output()
            .with_context(|| format!("running kubectl {args:?}"))
    }

    /// Runs `helm ARGS --kubeconfig <admin>`; kubectl-style: only fails when helm cannot start.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(&self.tools.helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig_path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running helm {args:?}"))
    }

    /// `kubectl apply -f -` of a (multi-document) YAML or JSON text; kubectl's stdout on success.
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let args = ["apply", "-f", "-"];
        checked(&args, self.kubectl_with_input(&args, Some(yaml))?)
    }

    /// `kubectl apply -f FILE`.
    pub fn apply_file(&self, path: &Path) -> anyhow::Result<String> {
        let path = path.display().to_string();
        self.kubectl_ok(&["apply", "-f", &path])
    }

    /// `GET` of an API path, as JSON.
    pub fn get_raw(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        parse_json(path, &self.kubectl_ok(&["get", "--raw", path])?)
    }

    /// `POST` of a JSON body to an API path (TokenRequest, TokenReview, …), the answer as JSON.
    pub fn post_raw(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let args = ["create", "--raw", path, "-f", "-"];
        let output = self.kubectl_with_input(&args, Some(&body.to_string()))?;
        parse_json(path, &checked(&args, output)?)
    }

    /// `PUT` of a JSON body to an API path (a status subresource, say), the answer as JSON.
    pub fn put_raw(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let args = ["replace", "--raw", path, "-f", "-"];
        let output = self.kubectl_with_input(&args, Some(&body.to_string()))?;
        parse_json(path, &checked(&args, output)?)
    }

    /// A token for a service account from the TokenRequest API, bound to `audiences` (the API
    /// server's own when empty). Kubernetes 1.20's kubectl has no `create token`; this is what it
    /// does.
    pub fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audiences: &[&str],
    ) -> anyhow::Result<String> {
        let path =
            format!("/api/v1/namespaces/{namespace}/serviceaccounts/{service_account}/token");
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"audiences": audiences, "expirationSeconds": 3600},
        });
        let answer = self.post_raw(&path, &body)?;
        answer["status"]["token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("TokenRequest answered without a token: {answer}"))
    }

    /// A TokenReview of `token` for `audiences`: the API server's `status` (`authenticated`,
    /// `user.username`, `audiences`, `error`).
    pub fn token_review(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences},
        });
        let answer = self.post_raw("/apis/authentication.k8s.io/v1/tokenreviews", &body)?;
        Ok(answer["status"].clone())
    }

    /// Sets what a kubelet would report for a pod: `status.podIP`/`podIPs` and phase Running, ready.
    pub fn set_pod_ip(&self, namespace: &str, name: &str, ip: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let mut pod = self.get_raw(&path)?;
        pod["status"] = serde_json::json!({
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        });
        self.put_raw(&format!("{path}/status"), &pod)?;
        Ok(())
    }

    /// Kills the API server (SIGKILL) and leaves it down; etcd keeps running.
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            reap(child);
        }
    }

    /// Kills the API server and starts it again at the same address, on the same etcd.
    pub fn restart_apiserver(&mut self) -> anyhow::Result<()> {
        self.stop_apiserver();
        self.start_apiserver()
    }

    /// Kills etcd (SIGKILL) and leaves it down; the API server keeps running and fails its
    /// readiness until etcd is back.
    pub fn stop_etcd(&mut self) {
        if let Some(child) = self.etcd.take() {
            reap(child);
        }
    }

    /// Kills etcd and starts it again on the same data directory and ports; waits until the API
    /// server is ready again.
    pub fn restart_etcd(&mut self) -> anyhow::Result<()> {
        self.stop_etcd();
        self.start_etcd()?;
        self.wait_ready()
    }

    /// Stops both processes (the directory stays until the cluster is dropped).
    pub fn stop(&mut self) {
        self.stop_apiserver();
        self.stop_etcd();
    }

    fn keep_dir(&mut self) {
        self.stop();
        eprintln!(
            "kube test cluster kept for its logs: {}",
            self.dir.display()
        );
        // Keeping means not deleting on drop: an empty path is never removed.
        self.dir = PathBuf::new();
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        if std::thread::panicking() {
            eprintln!(
                "kube test cluster kept for its logs: {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn exited(name: &str, child: Option<&mut Child>) -> Option<String> {
    let Some(child) = child else {
        return Some(format!("{name} is not running"));
    };
    match child.try_wait() {
        Ok(None) => None,
        Ok(Some(status)) => Some(format!("{name} exited: {status}")),
        Err(err) => Some(format!("{name} cannot be waited for: {err}")),
    }
}

fn reap(mut child: Child) {
    // An already-exited child makes kill fail; waiting is what matters.
    let _ = child.kill();
    let _ = child.wait();
}

fn checked(args: &[&str], output: Output) -> anyhow::Result<String> {
    if !output.status.success() {
        bail!(
            "kubectl {} failed ({}): {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn parse_json(path: &str, text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("{path} answered non-JSON: {text}"))
}

fn kubeconfig_yaml(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: meshd-test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: meshd-test
  context:
    cluster: meshd-test
    user: {user}
current-context: meshd-test
",
        ca = ca.display()
    )
}

fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 24];
    fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The cluster's PKI: a CA, the API server's serving certificate (loopback and the in-cluster names
/// of the `kubernetes` Service), an admin client certificate (group `system:masters`) and the
/// service-account signing key pair.
fn write_pki(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "meshd-test-kubernetes-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ])?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.subject_alt_names.extend([
        SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(Ipv4Addr::new(10, 96, 0, 1).into()),
    ]);
    serving.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "meshd-test-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &issuer)?;

    let sa_key = KeyPair::generate().context("generating the service-account key")?;

    let files = [
        ("ca.crt", ca_cert.pem()),
        ("apiserver.crt", serving_cert.pem()),
        ("apiserver.key", serving_key.serialize_pem()),
        ("admin.crt", admin_cert.pem()),
        ("admin.key", admin_key.serialize_pem()),
        ("sa.key", sa_key.serialize_pem()),
        ("sa.pub", sa_key.public_key_pem()),
    ];
    for (name, pem) in files {
        fs::write(dir.join(name), pem).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

/// Stops processes and removes directories that clusters of test processes no longer alive left
/// behind (a test binary killed before its clusters were dropped). A recorded pid is only killed
/// while its command line still names the cluster's directory, so a reused pid is never touched.
fn remove_stale(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = name
            .strip_prefix(CLUSTER_DIR_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{owner}")).exists() {
            continue;
        }
        let dir = entry.path();
        let pids = fs::read_to_string(dir.join("pids")).unwrap_or_default();
        for pid in pids
            .lines()
            .filter_map(|line| line.trim().parse::<u32>().ok())
        {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
