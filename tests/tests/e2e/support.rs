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
