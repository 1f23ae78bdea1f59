//! Real Kubernetes API servers for the groups that need one, kubectl that fails the test when it
//! fails, and meshd in a mesh's hub reading a cluster.
//!
//! meshd in a mesh runs in the hub network namespace at 10.77.0.1, so the pods' Envoys reach it as
//! they would a control plane. The API server listens on the host's loopback, which no namespace
//! can reach; [`ApiServerBridge`] carries it into the hub at the same address (`127.0.0.1:PORT`,
//! so the kubeconfig and the server's certificate fit unchanged): a helper process in the hub
//! (this test binary again, see [`forwarder_helper_for_meshd_in_the_hub`]) accepts there and
//! hands each connection over a Unix socket — a file, which every namespace sees — to a thread of
//! the test process on the host, which connects to the API server.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshd_tests::kube::KubeCluster;
use meshd_tests::{Mesh, Meshd, wait_until};
use serde_json::Value;

use super::repo_file;

const FORWARD_ENV: &str = "MESHD_TEST_APISERVER_FORWARD";

/// A fresh kube-apiserver + etcd; fails the test, saying what is missing, when it cannot start.
pub fn cluster() -> KubeCluster {
    KubeCluster::start().unwrap_or_else(|err| panic!("{err:#}"))
}

/// A fresh cluster serving the generated Istio CRDs.
pub fn cluster_with_crds() -> KubeCluster {
    let cluster = cluster();
    install_crds(&cluster);
    cluster
}

/// Applies `manifests/crds.yaml` and waits until the API server serves the kinds.
pub fn install_crds(cluster: &KubeCluster) {
    apply_repo_files(cluster, &["manifests/crds.yaml"]);
    kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "crd",
            "--all",
            "--timeout=60s",
        ],
    );
    // Established is not yet served everywhere in the API server.
    assert!(
        wait_until(Duration::from_secs(30), || {
            cluster
                .kubectl(&["get", "virtualservices.networking.istio.io", "-A"])
                .is_ok_and(|output| output.status.success())
        }),
        "the Istio CRDs are not served"
    );
}

/// `kubectl apply -f FILE` for files of this repository, in order.
pub fn apply_repo_files(cluster: &KubeCluster, files: &[&str]) {
    for file in files {
        cluster
            .apply_file(&repo_file(file))
            .unwrap_or_else(|err| panic!("applying {file}: {err:#}"));
    }
}

/// `kubectl apply -f -` of `yaml` (or JSON); kubectl's output.
pub fn apply(cluster: &KubeCluster, yaml: &str) -> String {
    cluster
        .apply(yaml)
        .unwrap_or_else(|err| panic!("{err:#}\n--- applied ---\n{yaml}"))
}

/// kubectl's stdout.
pub fn kubectl(cluster: &KubeCluster, args: &[&str]) -> String {
    cluster
        .kubectl_ok(args)
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// `kubectl ARGS -o json`, parsed.
pub fn get_json(cluster: &KubeCluster, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(cluster, &all)).expect("kubectl -o json prints JSON")
}

/// meshd in the mesh's hub, reading the cluster (and the mesh's config directory); the bridge
/// must be up.
pub fn meshd_in_hub(mesh: &Mesh, cluster: &KubeCluster) -> Meshd {
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    mesh.start_meshd(mesh.config_dir(), &["--kubeconfig", &kubeconfig])
        .unwrap_or_else(|err| panic!("{err:#}"))
}

/// The helper process the bridge starts in the hub: forwards every connection accepted on
/// `ADDR` to the Unix socket `PATH` (`MESHD_TEST_APISERVER_FORWARD=ADDR|PATH`). As an ordinary
/// test (no variable set) it does nothing.
#[test]
fn forwarder_helper_for_meshd_in_the_hub() {
    let Ok(spec) = std::env::var(FORWARD_ENV) else {
        return;
    };
    let (addr, socket) = spec.split_once('|').unwrap();
    let listener = TcpListener::bind(addr).unwrap();
    for tcp in listener.incoming().flatten() {
        let socket = socket.to_owned();
        std::thread::spawn(move || {
            if let Ok(unix) = UnixStream::connect(&socket) {
                splice(tcp, unix);
            }
        });
    }
}

/// The helper's name as libtest knows it: its module path without the crate's name.
fn forwarder_test_name() -> &'static str {
    let path = concat!(module_path!(), "::forwarder_helper_for_meshd_in_the_hub");
    path.split_once("::").map_or(path, |(_crate, rest)| rest)
}

/// Copies both ways until both sides are done.
fn splice(tcp: TcpStream, unix: UnixStream) {
    let (Ok(mut tcp_read), Ok(mut unix_read)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let (mut tcp_write, mut unix_write) = (tcp, unix);
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut tcp_read, &mut unix_write);
        let _ = unix_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut unix_read, &mut tcp_write);
    let _ = tcp_write.shutdown(Shutdown::Write);
    let _ = up.join();
}

/// The API server at its own address inside the hub namespace (see the module docs).
pub struct ApiServerBridge {
    helper: Child,
    socket: PathBuf,
}

impl ApiServerBridge {
    pub fn start(cluster: &KubeCluster, mesh: &Mesh) -> ApiServerBridge {
        let authority = cluster
            .server_url()
            .trim_start_matches("https://")
            .to_owned();
        let socket = mesh.dir().join("apiserver.sock");
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).unwrap();
        let target = authority.clone();
        std::thread::spawn(move || {
            for unix in listener.incoming().flatten() {
                let target = target.clone();
                std::thread::spawn(move || {
                    if let Ok(tcp) = TcpStream::connect(&target) {
                        splice(tcp, unix);
                    }
                });
            }
        });
        let helper = Command::new("ip")
            .args(["netns", "exec", mesh.hub_netns()])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", forwarder_test_name()])
            .args(["--nocapture", "--test-threads=1"])
            .env(FORWARD_ENV, format!("{authority}|{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bridge = ApiServerBridge { helper, socket };
        let url = format!("https://{authority}/readyz");
        assert!(
            wait_until(Duration::from_secs(20), || mesh
                .hub_curl(&url, &["-k"])
                .status
                == 200),
            "the API server is not reachable from the hub through the bridge"
        );
        bridge
    }
}

impl Drop for ApiServerBridge {
    fn drop(&mut self) {
        let _ = self.helper.kill();
        let _ = self.helper.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
fn the_forwarder_helper_is_named_as_libtest_lists_it() {
    assert_eq!(
        forwarder_test_name(),
        "support::kube::forwarder_helper_for_meshd_in_the_hub"
    );
}
