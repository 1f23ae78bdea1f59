//! The mesh most groups start from: Services in front of pods running `meshd-echo` in namespace
//! `default`, other pods calling them, and meshd serving them all from a config directory.

use anyhow::Context as _;
use meshd_tests::{Mesh, Meshd, Pod, PodSpec, yaml};

/// The ClusterIP of Service `echo`.
pub const ECHO_VIP: &str = "10.96.0.10";

/// A pod behind Service `echo`: label `app=echo`, service account `echo`, with a sidecar.
pub fn echo_pod(name: &str, ip: &str) -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new(name, "default")
        .ip(ip.parse()?)
        .label("app", "echo")
        .service_account("echo")
        .sidecar())
}

/// A pod calling others: label `app=NAME`, service account `NAME`, with a sidecar.
pub fn client_pod(name: &str, ip: &str) -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new(name, "default")
        .ip(ip.parse()?)
        .label("app", name)
        .service_account(name)
        .sidecar())
}

/// Service `name` in `default` at `vip` selecting the `app=echo` pods; `ports` are `(name,
/// port)`, each the same port on the pods.
pub fn echo_service(name: &str, vip: &str, ports: &[(&str, u16)]) -> String {
    let ports: Vec<(&str, u16, u16)> = ports
        .iter()
        .map(|(port_name, port)| (*port_name, *port, *port))
        .collect();
    yaml::service(name, "default", vip, &ports, &[("app", "echo")])
}

/// What a mesh starts with. Pods are written into the config before meshd starts (so it knows
/// them when their Envoys connect); apps run before their callers' sidecars start.
pub struct MeshSetup {
    docs: Vec<String>,
    mesh_config: Option<String>,
    meshd_args: Vec<String>,
    meshd_env: Vec<(String, String)>,
    apps: Vec<(PodSpec, EchoApp)>,
    callers: Vec<PodSpec>,
}

/// What `meshd-echo` serves in a pod.
struct EchoApp {
    http: Vec<u16>,
    tcp: Vec<u16>,
    args: Vec<String>,
}

impl MeshSetup {
    /// Namespace `default` with injection enabled, and nothing else yet.
    pub fn new() -> MeshSetup {
        MeshSetup {
            docs: vec![yaml::namespace(
                "default",
                &[("istio-injection", "enabled")],
            )],
            mesh_config: None,
            meshd_args: Vec::new(),
            meshd_env: Vec::new(),
            apps: Vec::new(),
            callers: Vec::new(),
        }
    }

    /// More documents for the config file meshd starts with.
    pub fn config(mut self, docs: impl IntoIterator<Item = String>) -> MeshSetup {
        self.docs.extend(docs);
        self
    }

    /// MeshConfig YAML for `--mesh-config`.
    pub fn mesh_config(mut self, yaml: &str) -> MeshSetup {
        self.mesh_config = Some(yaml.to_owned());
        self
    }

    /// More flags for `meshd serve`.
    pub fn meshd_args(mut self, args: &[&str]) -> MeshSetup {
        self.meshd_args
            .extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// An environment variable for `meshd serve` (`HTTP_PROXY`, say).
    pub fn meshd_env(mut self, key: &str, value: &str) -> MeshSetup {
        self.meshd_env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A pod running `meshd-echo` on the given HTTP and TCP ports.
    pub fn app(self, spec: PodSpec, http: &[u16], tcp: &[u16]) -> MeshSetup {
        self.app_with(spec, http, tcp, &[])
    }

    /// A pod running `meshd-echo` with more flags (`--always-status 500`, say).
    pub fn app_with(
        mut self,
        spec: PodSpec,
        http: &[u16],
        tcp: &[u16],
        echo_args: &[&str],
    ) -> MeshSetup {
        let app = EchoApp {
            http: http.to_vec(),
            tcp: tcp.to_vec(),
            args: echo_args.iter().map(|arg| (*arg).to_owned()).collect(),
        };
        self.apps.push((spec, app));
        self
    }

    /// A pod without an app of its own, started last.
    pub fn caller(mut self, spec: PodSpec) -> MeshSetup {
        self.callers.push(spec);
        self
    }

    pub fn start(self) -> anyhow::Result<MeshEnv> {
        self.start_in(Mesh::new()?)
    }

    /// Starts in a mesh the test prepared (a server meshd must reach from its start, say).
    pub fn start_in(self, mesh: Mesh) -> anyhow::Result<MeshEnv> {
        let mut docs = self.docs;
        for spec in self.apps.iter().map(|(spec, _)| spec).chain(&self.callers) {
            docs.push(spec.yaml()?);
        }
        mesh.write_config("mesh.yaml", &docs)?;

        let mut args = self.meshd_args;
        if let Some(config) = self.mesh_config {
            // Beside the config dir, not in it: the file source would read it as a document.
            let path = mesh.dir().join("mesh-config.yaml");
            std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
            args.extend(["--mesh-config".to_owned(), path.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .meshd_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let meshd = mesh.start_meshd_with_env(mesh.config_dir(), &args, &env)?;

        let mut pods = Vec::new();
        for (spec, app) in self.apps {
            let pod = mesh.add_pod(spec)?;
            let args: Vec<&str> = app.args.iter().map(String::as_str).collect();
            pod.start_echo_with(&app.http, &app.tcp, &args)?;
            pods.push(pod);
        }
        for spec in self.callers {
            pods.push(mesh.add_pod(spec)?);
        }
        Ok(MeshEnv { mesh, meshd, pods })
    }
}

/// A started [`MeshSetup`].
pub struct MeshEnv {
    pub mesh: Mesh,
    pub meshd: Meshd,
    pods: Vec<Pod>,
}

impl MeshEnv {
    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> anyhow::Result<Pod> {
        self.pods
            .iter()
            .find(|pod| pod.name() == name)
            .cloned()
            .with_context(|| format!("the mesh has no pod {name}"))
    }
}
