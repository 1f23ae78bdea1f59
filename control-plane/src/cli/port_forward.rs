//! Reaching into a cluster as istioctl does: `kubectl port-forward` to meshd's monitoring port
//! (debug-reading commands) or to a pod's Envoy admin port (`proxy-config --from envoy`), for as
//! long as the command runs.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// How to run kubectl: which one, with which kubeconfig (its own lookup without one).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Kubectl {
    /// kubeconfig of the cluster meshd runs in; with it (or `KUBECONFIG`, or ~/.kube/config),
    /// commands reach meshd and proxies through `kubectl port-forward`.
    #[arg(long = "kubeconfig", env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// The kubectl to run.
    #[arg(long = "kubectl", env = "MESHD_KUBECTL", default_value = "kubectl")]
    pub kubectl: String,
}

impl Kubectl {
    /// Whether a cluster is configured: `--kubeconfig`, `KUBECONFIG`, or kubectl's default file.
    pub fn configured(&self, home: Option<PathBuf>) -> bool {
        self.kubeconfig.as_deref().is_some_and(|k| !k.is_empty())
            || home.is_some_and(|h| h.join(".kube/config").is_file())
    }

    /// kubectl's arguments for forwarding `ports` (`LOCAL:REMOTE`, or `:REMOTE` for any free
    /// local port) of `target` (`service/NAME`, `pod/NAME`) in `namespace`.
    pub fn argv(&self, namespace: &str, address: &str, target: &str, ports: &str) -> Vec<String> {
        let mut argv = Vec::new();
        if let Some(kubeconfig) = self.kubeconfig.as_deref().filter(|k| !k.is_empty()) {
            argv.extend(["--kubeconfig".to_owned(), kubeconfig.to_owned()]);
        }
        argv.extend(
            [
                "--namespace",
                namespace,
                "port-forward",
                "--address",
                address,
                target,
                ports,
            ]
            .map(str::to_owned),
        );
        argv
    }

    /// Starts kubectl with `argv` (from [`Kubectl::argv`]).
    pub fn spawn(&self, argv: &[String]) -> anyhow::Result<Child> {
        Command::new(&self.kubectl)
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {} {}", self.kubectl, argv.join(" ")))
    }

    /// Forwards any free loopback port to `remote_port` of `target` in `namespace`, and waits
    /// until kubectl says the port is open.
    pub fn forward(
        &self,
        namespace: &str,
        target: &str,
        remote_port: u16,
    ) -> anyhow::Result<Forward> {
        let argv = self.argv(namespace, "127.0.0.1", target, &format!(":{remote_port}"));
        let mut child = self.spawn(&argv)?;
        let stdout = child.stdout.take().context("kubectl's output")?;
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            match lines.next() {
                Some(line) => {
                    if let Some(port) = forwarded_port(&line?) {
                        break port;
                    }
                }
                None => {
                    let mut stderr = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut stderr);
                    }
                    let status = child.wait()?;
                    anyhow::bail!(
                        "kubectl port-forward {target} -n {namespace}: {status}: {}",
                        stderr.trim()
                    );
                }
            }
        };
        Ok(Forward {
            child,
            addr: format!("127.0.0.1:{port}"),
        })
    }
}

/// A running `kubectl port-forward`; stopped when dropped.
pub struct Forward {
    child: Child,
    /// `127.0.0.1:PORT`, forwarded.
    pub addr: String,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The local port of kubectl's `Forwarding from 127.0.0.1:PORT -> REMOTE`.
fn forwarded_port(line: &str) -> Option<u16> {
    let from = line.strip_prefix("Forwarding from ")?;
    let (local, _) = from.split_once(" -> ")?;
    local.rsplit_once(':')?.1.parse().ok()
}

/// A proxy's pod and namespace from `POD.NAMESPACE` or a full Istio node id.
pub fn pod_of(proxy_id: &str) -> anyhow::Result<(String, String)> {
    let short = proxy_id.split('~').nth(2).unwrap_or(proxy_id);
    let (pod, namespace) = short
        .rsplit_once('.')
        .with_context(|| format!("{proxy_id}: expected POD.NAMESPACE or a node id"))?;
    Ok((pod.to_owned(), namespace.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_forwarding_line_names_the_local_port() {
        assert_eq!(
            forwarded_port("Forwarding from 127.0.0.1:43127 -> 15014"),
            Some(43127)
        );
        assert_eq!(
            forwarded_port("Forwarding from [::1]:43127 -> 15014"),
            Some(43127)
        );
        assert_eq!(forwarded_port("Handling connection for 43127"), None);
    }

    #[test]
    fn a_forward_names_its_kubeconfig_namespace_target_and_ports() {
        let kubectl = Kubectl {
            kubeconfig: Some("kubeconfig.yaml".into()),
            kubectl: "kubectl".into(),
        };
        assert_eq!(
            kubectl
                .argv("istio-system", "127.0.0.1", "service/istiod", ":15014")
                .join(" "),
            "--kubeconfig kubeconfig.yaml --namespace istio-system port-forward --address 127.0.0.1 service/istiod :15014"
        );
        let own = Kubectl::default().argv("shop", "localhost", "pod/web-1", "15000:15000");
        assert_eq!(own[0], "--namespace");
    }

    #[test]
    fn a_cluster_is_configured_by_flag_environment_or_kubectls_own_file() {
        let none = Kubectl::default();
        assert!(!none.configured(None));
        let dir = tempfile::tempdir().unwrap();
        assert!(!none.configured(Some(dir.path().to_path_buf())));
        std::fs::create_dir(dir.path().join(".kube")).unwrap();
        std::fs::write(dir.path().join(".kube/config"), "apiVersion: v1\n").unwrap();
        assert!(none.configured(Some(dir.path().to_path_buf())));
        let flag = Kubectl {
            kubeconfig: Some("k.yaml".into()),
            ..Kubectl::default()
        };
        assert!(flag.configured(None));
    }

    #[test]
    fn a_proxy_id_names_its_pod() {
        assert_eq!(
            pod_of("reviews-v1-abc.default").unwrap(),
            ("reviews-v1-abc".to_owned(), "default".to_owned())
        );
        assert_eq!(
            pod_of("sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local").unwrap(),
            ("web-1".to_owned(), "shop".to_owned())
        );
        assert!(pod_of("nodots").is_err());
    }
}
