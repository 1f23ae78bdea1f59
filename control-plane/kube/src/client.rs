//! The API client and what every Kubernetes-facing part of meshd shares: the root namespace, and
//! whether this replica is the leader.

use std::path::Path;

use anyhow::Context as _;
use tokio::sync::watch;

/// A Kubernetes client and what the parts using it need to agree on. Cheap to clone.
#[derive(Clone)]
pub struct KubeContext {
    pub client: kube::Client,
    /// True while this replica holds the leader Lease: write only then.
    pub leader: watch::Receiver<bool>,
    /// Istio's root (config) namespace, where meshd's own objects live (`istio-system`).
    pub root_namespace: String,
}

/// A client from `kubeconfig`, or the in-cluster service account when there is none.
pub async fn client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("loading kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster()
            .context("no --kubeconfig and not running in a cluster (in-cluster config)")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// 409: someone else wrote first (create of an existing object, or a stale resourceVersion).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 409)
}

/// 404: the object is gone, or its kind is not served.
pub(crate) fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// Whether the API server's Kubernetes runs native sidecars — init containers with
/// `restartPolicy: Always` — by default: 1.29 and later (SidecarContainers, beta and on from 1.29).
pub async fn native_sidecars(client: &kube::Client) -> Result<bool, kube::Error> {
    let info = client.apiserver_version().await?;
    Ok(native_sidecars_in(&info.major, &info.minor))
}

/// [`native_sidecars`] from the version's numbers (`minor` may carry a `+`, as GKE's do).
pub fn native_sidecars_in(major: &str, minor: &str) -> bool {
    let number = |s: &str| s.trim_end_matches('+').parse::<u32>().ok();
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 29),
        _ => false,
    }
}

#[cfg(test)]
mod native_tests {
    use super::native_sidecars_in;

    #[test]
    fn native_sidecars_from_kubernetes_1_29() {
        assert!(!native_sidecars_in("1", "20"));
        assert!(!native_sidecars_in("1", "28+"));
        assert!(native_sidecars_in("1", "29"));
        assert!(native_sidecars_in("1", "33+"));
        assert!(!native_sidecars_in("", "garbage"));
    }
}
