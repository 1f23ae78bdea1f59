//! What the groups share: how long they wait, the standard mesh ([`MeshSetup`]), HTTP polling,
//! meshd's command line ([`cli`]), Kubernetes clusters ([`kube`]), meshd on the host's loopback
//! ([`host_meshd`]) and a JWT issuer ([`jwt`]).

pub mod cli;
pub mod host_meshd;
pub mod istioctl;
pub mod jwt;
pub mod kube;
mod mesh_setup;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_for};

pub use mesh_setup::{ECHO_VIP, MeshEnv, MeshSetup, client_pod, echo_pod, echo_service};

/// How long config may take to reach Envoy at most (debounce, push, warming, reconnect backoff).
pub const CONVERGE: Duration = Duration::from_secs(30);
/// How fast a changed object (an edited file, a change in the cluster) must reach the proxies'
/// behaviour.
pub const HOT_RELOAD: Duration = Duration::from_secs(2);

/// How a sidecar talks xDS to meshd; behaviour must not depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Xds {
    SotW,
    Delta,
}

impl Xds {
    /// `spec`, speaking this protocol.
    pub fn speak(self, spec: PodSpec) -> PodSpec {
        match self {
            Xds::SotW => spec,
            Xds::Delta => spec.delta(),
        }
    }
}

/// Polls until `url` answers `status` from `pod` (config reaches sidecars asynchronously); the
/// last answer either way.
pub fn get_until(pod: &Pod, url: &str, args: &[&str], status: u16) -> HttpResult {
    let mut last = HttpResult::default();
    wait_for(CONVERGE, || {
        last = pod.curl(url, args);
        (last.status == status).then_some(())
    });
    last
}

/// [`get_until`] a 200.
pub fn get_until_ok(pod: &Pod, url: &str, args: &[&str]) -> HttpResult {
    get_until(pod, url, args, 200)
}

/// Polls until `url` is answered by the `meshd-echo` of pod `expected`; the last answer either
/// way.
pub fn get_until_answered_by(pod: &Pod, url: &str, args: &[&str], expected: &str) -> HttpResult {
    let mut last = HttpResult::default();
    wait_for(CONVERGE, || {
        last = pod.curl(url, args);
        (last.echo_pod().as_deref() == Some(expected)).then_some(())
    });
    last
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// What tells why a request failed: where the logs are, the tail of each pod's Envoy log and of
/// meshd's.
pub fn diagnostics(mesh: &Mesh, meshd: &Meshd, pods: &[&Pod]) -> String {
    diagnostics_of(mesh, &[meshd], pods)
}

/// [`diagnostics`] with the log of each of several meshd replicas.
pub fn diagnostics_of(mesh: &Mesh, replicas: &[&Meshd], pods: &[&Pod]) -> String {
    let mut out = format!("logs in {}\n", mesh.dir().display());
    for pod in pods {
        out.push_str(&format!(
            "--- envoy in {} ---\n{}\n",
            pod.proxy_id(),
            tail(&pod.envoy_log(), 30)
        ));
    }
    for meshd in replicas {
        out.push_str(&format!(
            "--- meshd at {} ---\n{}\n",
            meshd.ip(),
            tail(&meshd.log(), 60)
        ));
    }
    out
}

/// Writes `text` to `path` so that a reader never sees half of it (as kubelet swaps projected
/// volumes), readable by Envoy's uid.
pub fn write_readable(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A file of this repository (`manifests/crds.yaml`, say).
pub fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A serving certificate for `host` from a CA of its own (not meshd's), made in the mesh's
/// directory under `name`, and that CA's root as a file the client can trust.
pub fn certificate_for(
    mesh: &Mesh,
    name: &str,
    host: &str,
) -> anyhow::Result<(meshd_ca::IssuedCert, PathBuf)> {
    let ca_dir = mesh.dir().join(format!("{name}-ca"));
    let ca = meshd_ca::CertificateAuthority::load_or_generate(meshd_ca::CaOptions::new(
        &ca_dir,
        "cluster.local",
    ))?;
    let cert = ca.serving_cert(&[host.to_string()], &[])?;
    let root = mesh.dir().join(format!("{name}-root.pem"));
    std::fs::copy(ca_dir.join("root-cert.pem"), &root)?;
    Ok((cert, root))
}

/// A Secret with PEM values as block scalars.
pub fn tls_secret(name: &str, namespace: &str, cert: &str, key: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}\n  tls.key: |\n{}\n",
        indent(cert),
        indent(key)
    )
}

/// How many requests for `path` the `meshd-echo` at `ip:port` has seen (its `/_count`, asked from
/// the hub, outside any sidecar).
pub fn echo_count(
    mesh: &Mesh,
    ip: std::net::Ipv4Addr,
    port: u16,
    path: &str,
) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let url = format!("http://{ip}:{port}/_count");
    let result = mesh.hub_curl(&url, &[]);
    anyhow::ensure!(result.status == 200, "GET {url}: {result:?}");
    let counts: std::collections::BTreeMap<String, u64> =
        serde_json::from_str(&result.body).context("parsing /_count")?;
    Ok(counts.get(path).copied().unwrap_or(0))
}

/// `n` requests made by `get(i)` (numbered, so none is cached or coalesced): how many each echo
/// pod answered.
pub fn tally(
    n: u32,
    mut get: impl FnMut(u32) -> HttpResult,
) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
    use anyhow::Context as _;
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..n {
        let response = get(i);
        let pod = response
            .echo_pod()
            .with_context(|| format!("request {i}: {response:?}"))?;
        *seen.entry(pod).or_default() += 1;
    }
    Ok(seen)
}

/// 200 requests split 80/20 over pods `major` and `minor`, within ten points: only they answered,
/// `major` 160 ± 20 times. `context` is added to a failure.
pub fn assert_80_20_split(
    seen: &std::collections::BTreeMap<String, u32>,
    (major, minor): (&str, &str),
    context: &str,
) {
    eprintln!("200 requests split as {seen:?}");
    let a = seen.get(major).copied().unwrap_or(0);
    let b = seen.get(minor).copied().unwrap_or(0);
    assert_eq!(
        a + b,
        200,
        "only {major} and {minor} answer: {seen:?}\n{context}"
    );
    assert!(
        (140..=180).contains(&a),
        "{major} got {a} of 200 (expected 160 ± 20): {seen:?}\n{context}"
    );
}

/// Starts `openssl s_server` in `pod` on `port`, terminating TLS with `cert` (written to the
/// pod's directory) and answering with its status page; returns once it listens.
pub fn serve_tls_with_openssl(
    pod: &Pod,
    cert: &meshd_ca::IssuedCert,
    port: u16,
) -> anyhow::Result<()> {
    let (cert_path, key_path) = (pod.dir().join("cert.pem"), pod.dir().join("key.pem"));
    std::fs::write(&cert_path, &cert.chain_pem)?;
    std::fs::write(&key_path, cert.key_pem.expose())?;
    let port_arg = port.to_string();
    pod.spawn(&[
        "openssl",
        "s_server",
        "-accept",
        &port_arg,
        "-cert",
        &cert_path.display().to_string(),
        "-key",
        &key_path.display().to_string(),
        "-www",
        "-quiet",
    ])?;
    pod.wait_listening(port, Duration::from_secs(10))
}
