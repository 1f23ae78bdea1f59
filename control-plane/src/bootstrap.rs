//! `meshd bootstrap`: a stock-Envoy bootstrap for one workload.
//!
//! The flags and their environment variables are read and checked here; the bootstrap itself is
//! built by `meshd_translate::bootstrap` and printed as the JSON Envoy reads from `-c FILE`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

mod app_health;

use anyhow::Context as _;
use meshd_translate::bootstrap::{
    self as envoy_bootstrap, BootstrapParams, HEALTH_PORT, PROMETHEUS_PORT, XdsAddrs, XdsTls,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Which kind of proxy this is: `sidecar` for workloads, `router` for gateways.
    #[arg(long, env = "MESHD_NODE_TYPE", value_enum, default_value_t = NodeType::Sidecar)]
    pub node_type: NodeType,

    /// The pod's name.
    #[arg(long, env = "MESHD_POD")]
    pub pod: String,

    /// The pod's namespace.
    #[arg(long, env = "MESHD_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// The pod's IP; meshd maps a proxy to its Services by this address.
    #[arg(long, env = "MESHD_IP")]
    pub ip: IpAddr,

    /// The pod's labels, `k=v,k=v`.
    #[arg(
        long,
        env = "MESHD_LABELS",
        default_value = "",
        hide_default_value = true
    )]
    pub labels: Labels,

    /// The pod's service account.
    #[arg(long, env = "MESHD_SERVICE_ACCOUNT", default_value = "default")]
    pub service_account: String,

    /// Where meshd serves ADS: its plaintext port, or its TLS port together with `--root-cert`.
    /// Several `HOST:PORT`s, comma-separated, name replicas the proxy reaches directly (no Service
    /// in front): Envoy reconnects to the next when its replica goes away.
    #[arg(long, env = "MESHD_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: XdsAddrs,

    /// Root certificate (PEM) that meshd's serving certificate chains to; switches the xDS
    /// connection to TLS, the only way a proxy can receive secrets.
    #[arg(long, env = "MESHD_ROOT_CERT")]
    pub root_cert: Option<PathBuf>,

    /// The name meshd's serving certificate carries: sent as SNI and required as a DNS SAN.
    #[arg(
        long,
        env = "MESHD_XDS_SERVER_NAME",
        default_value = "istiod.istio-system.svc"
    )]
    pub xds_server_name: String,

    /// Service-account token file (the kubelet-projected one, audience `istio-ca`) Envoy
    /// presents as `authorization: Bearer <token>` to prove its identity on the TLS port (needs
    /// `--root-cert`). The file is read again for every new xDS stream, so a rotated token is
    /// what a reconnecting proxy sends.
    #[arg(long, env = "MESHD_TOKEN_FILE", requires = "root_cert")]
    pub token_file: Option<PathBuf>,

    /// Use incremental (Delta) xDS, Istio's default since 1.22, instead of state-of-the-world.
    // Falsey so env spellings like `1`/`yes` mean on and an empty or `0`/`false`/`no` means off.
    #[arg(long, env = "MESHD_DELTA", value_parser = clap::builder::FalseyValueParser::new())]
    pub delta: bool,

    /// Port of Envoy's admin interface, which listens on 127.0.0.1 only.
    #[arg(long, env = "MESHD_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,

    /// The cluster (Istio multi-cluster sense) the workload runs in.
    #[arg(long, env = "MESHD_CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,

    /// Write the bootstrap to FILE instead of stdout.
    #[arg(
        short = 'o',
        long = "output",
        env = "MESHD_BOOTSTRAP_OUTPUT",
        value_name = "FILE"
    )]
    pub output: Option<PathBuf>,

    /// Also copy this meshd binary to DIR/meshd (the pod's Envoy volume), so the stock Envoy
    /// container can run `meshd wait` and `meshd drain` as its lifecycle hooks.
    #[arg(long, env = "MESHD_INSTALL_SELF", value_name = "DIR")]
    pub install_self: Option<PathBuf>,

    /// The app's kubelet probes that injection pointed at `:15020/app-health/<container>/<probe>`,
    /// as Istio's `ISTIO_KUBE_APP_PROBERS` JSON: Envoy listens on 15020 and forwards each to the
    /// app's original port and path on 127.0.0.1.
    #[arg(
        long,
        env = "MESHD_APP_PROBERS",
        default_value = "",
        hide_default_value = true
    )]
    pub app_probers: app_health::AppProbers,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Sidecar,
    Router,
}

impl From<NodeType> for meshd_model::NodeType {
    fn from(t: NodeType) -> Self {
        match t {
            NodeType::Sidecar => meshd_model::NodeType::Sidecar,
            NodeType::Router => meshd_model::NodeType::Router,
        }
    }
}

/// Pod labels from `k=v,k=v`; sorted so the same pod always renders the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

#[derive(Debug, PartialEq, Eq)]
pub enum InvalidLabels {
    MissingEquals(String),
    EmptyKey(String),
}

impl fmt::Display for InvalidLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidLabels::MissingEquals(pair) => write!(f, "label `{pair}` is not key=value"),
            InvalidLabels::EmptyKey(pair) => write!(f, "label `{pair}` has an empty key"),
        }
    }
}

impl std::error::Error for InvalidLabels {}

impl FromStr for Labels {
    type Err = InvalidLabels;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut labels = BTreeMap::new();
        // Label values can hold neither `,` nor `=`, so a plain split is exact; empty pieces
        // (`a=b,`) are tolerated because shell-built lists often end with a separator.
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| InvalidLabels::MissingEquals(pair.to_owned()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(InvalidLabels::EmptyKey(pair.to_owned()));
            }
            labels.insert(key.to_owned(), value.trim().to_owned());
        }
        Ok(Labels(labels))
    }
}

pub fn run(mut args: Args) -> anyhow::Result<()> {
    check(&args)?;
    // Envoy resolves a relative path against its own working directory, not ours.
    if let Some(root) = args.root_cert.take() {
        args.root_cert = Some(
            std::path::absolute(&root)
                .with_context(|| format!("resolving --root-cert {}", root.display()))?,
        );
    }
    if let Some(token) = args.token_file.take() {
        args.token_file = Some(
            std::path::absolute(&token)
                .with_context(|| format!("resolving --token-file {}", token.display()))?,
        );
    }
    let bootstrap = envoy_bootstrap::bootstrap(&params(&args));
    let json = meshd_proto::json::to_json(&bootstrap).context("printing the bootstrap")?;
    let mut text = serde_json::to_string_pretty(&json)?;
    text.push('\n');
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("writing bootstrap to {}", path.display()))?,
        None => {
            use std::io::Write as _;
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("writing bootstrap to stdout")?;
        }
    }
    if let Some(dir) = &args.install_self {
        install_self(dir)?;
    }
    Ok(())
}

/// Copies the running binary to `dir/meshd`, executable by the proxy's user.
fn install_self(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let me = std::env::current_exe().context("finding meshd's own binary")?;
    let to = dir.join("meshd");
    std::fs::copy(&me, &to)
        .with_context(|| format!("copying {} to {}", me.display(), to.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", to.display()))?;
    Ok(())
}

/// Rejects what would produce a node id that istiod-style parsers split wrongly (fields are
/// `~`-separated, `POD.NS` splits at the last dot: pod names may hold dots, namespaces cannot),
/// or an Envoy that cannot start because two of its own listeners want the same port.
fn check(args: &Args) -> anyhow::Result<()> {
    let bad = |v: &str, also: &[char]| {
        v.is_empty() || v.contains('~') || v.contains(also) || v.contains(char::is_whitespace)
    };
    if bad(&args.pod, &[]) {
        anyhow::bail!(
            "--pod `{}` must be a Kubernetes name (no `~` or spaces)",
            args.pod
        );
    }
    if bad(&args.namespace, &['.']) {
        anyhow::bail!(
            "--namespace `{}` must be a Kubernetes namespace (no `~`, `.` or spaces)",
            args.namespace
        );
    }
    if args.token_file.is_some() && args.xds_addr.len() > 1 {
        anyhow::bail!(
            "--token-file takes one --xds-addr (the control plane's Service), not a list of replicas"
        );
    }
    if [PROMETHEUS_PORT, HEALTH_PORT].contains(&args.admin_port) {
        anyhow::bail!(
            "--admin-port {} collides with a bootstrap listener ({PROMETHEUS_PORT}, {HEALTH_PORT})",
            args.admin_port
        );
    }
    if !args.app_probers.is_empty() && args.admin_port == envoy_bootstrap::app_health::PORT {
        anyhow::bail!(
            "--admin-port {} collides with the app-health listener",
            args.admin_port
        );
    }
    Ok(())
}

/// What the flags say, for the bootstrap builder.
fn params(args: &Args) -> BootstrapParams {
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    BootstrapParams {
        node_type: args.node_type.into(),
        pod: args.pod.clone(),
        namespace: args.namespace.clone(),
        ip: args.ip,
        labels: args.labels.0.clone(),
        service_account: args.service_account.clone(),
        cluster_id: args.cluster_id.clone(),
        version: concat!("meshd-", env!("CARGO_PKG_VERSION")).to_string(),
        xds_addr: args.xds_addr.clone(),
        xds_tls: args.root_cert.as_ref().map(|root| XdsTls {
            root_cert: path(root),
            server_name: args.xds_server_name.clone(),
            token_file: args.token_file.as_ref().map(path),
        }),
        delta: args.delta,
        admin_port: args.admin_port,
        app_probes: args.app_probers.probes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn mk_args(extra: &[&str]) -> Args {
        let base = [
            "meshd",
            "--pod",
            "reviews-v1-5d4b8c7f9-x2k4p",
            "--ip",
            "10.1.2.3",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).unwrap().args
    }

    #[test]
    fn flags_take_istio_defaults() {
        let params = params(&mk_args(&[]));
        assert_eq!(params.node_type, meshd_model::NodeType::Sidecar);
        assert_eq!(params.namespace, "default");
        assert_eq!(params.service_account, "default");
        assert_eq!(params.cluster_id, "Kubernetes");
        assert_eq!(
            params.version,
            format!("meshd-{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(params.xds_addr, "127.0.0.1:15010".parse().unwrap());
        assert_eq!(params.xds_tls, None);
        assert!(!params.delta);
        assert_eq!(params.admin_port, 15000);
        assert!(params.labels.is_empty());
        assert!(params.app_probes.is_empty());
    }

    #[test]
    fn flags_become_bootstrap_params() {
        let args = mk_args(&[
            "--node-type",
            "router",
            "--namespace",
            "istio-system",
            "--labels",
            "istio=ingressgateway",
            "--xds-addr",
            "[fd00::1]:15012",
            "--root-cert",
            "/etc/meshd/root-cert.pem",
            "--token-file",
            "/var/run/secrets/tokens/istio-token",
            "--delta",
        ]);
        let params = params(&args);
        assert_eq!(params.node_type, meshd_model::NodeType::Router);
        assert_eq!(params.labels["istio"], "ingressgateway");
        assert_eq!(params.xds_addr, "[fd00::1]:15012".parse().unwrap());
        assert_eq!(
            params.xds_tls,
            Some(XdsTls {
                root_cert: "/etc/meshd/root-cert.pem".to_string(),
                server_name: "istiod.istio-system.svc".to_string(),
                token_file: Some("/var/run/secrets/tokens/istio-token".to_string()),
            })
        );
        assert!(params.delta);
    }

    #[test]
    fn the_printed_bootstrap_carries_the_node_and_the_probes() {
        let mut args = mk_args(&["--namespace", "bookinfo", "--labels", "app=reviews"]);
        args.app_probers =
            r#"{"/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080}}}"#
                .parse()
                .unwrap();
        let bootstrap = envoy_bootstrap::bootstrap(&params(&args));
        let json = meshd_proto::json::to_json(&bootstrap).unwrap();
        assert_eq!(
            json["node"]["id"],
            "sidecar~10.1.2.3~reviews-v1-5d4b8c7f9-x2k4p.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(json["node"]["cluster"], "reviews.bookinfo");
        let listeners = json["static_resources"]["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 3, "stats, health and app health");
    }

    #[test]
    fn a_token_file_needs_tls() {
        let plain = Cli::try_parse_from([
            "meshd",
            "--pod",
            "p",
            "--ip",
            "10.0.0.1",
            "--token-file",
            "/t",
        ]);
        assert!(plain.is_err());
    }

    #[test]
    fn labels_parse_leniently_but_reject_garbage() {
        let labels: Labels = " app=web , version=v2,empty=,".parse().unwrap();
        assert_eq!(
            labels.0.into_iter().collect::<Vec<_>>(),
            [("app", "web"), ("empty", ""), ("version", "v2")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!("".parse::<Labels>().unwrap(), Labels::default());
        assert_eq!(
            "app".parse::<Labels>(),
            Err(InvalidLabels::MissingEquals("app".into()))
        );
        assert_eq!(
            "=x".parse::<Labels>(),
            Err(InvalidLabels::EmptyKey("=x".into()))
        );
    }

    #[test]
    fn check_rejects_names_that_break_the_node_id_and_port_clashes() {
        assert!(check(&mk_args(&[])).is_ok());
        assert!(check(&mk_args(&["--namespace", "a.b"])).is_err());
        let dotted = Cli::try_parse_from(["meshd", "--pod", "web.0", "--ip", "10.0.0.1"]);
        assert!(check(&dotted.unwrap().args).is_ok());
        assert!(check(&mk_args(&["--admin-port", "15090"])).is_err());
        let tilde = Cli::try_parse_from(["meshd", "--pod", "a~b", "--ip", "10.0.0.1"])
            .unwrap()
            .args;
        assert!(check(&tilde).is_err());
    }

    #[test]
    fn several_xds_addresses_name_replicas_but_not_with_a_token_file() {
        let args = mk_args(&["--xds-addr", "10.0.0.1:15012,10.0.0.2:15012"]);
        assert!(check(&args).is_ok());
        assert_eq!(params(&args).xds_addr.len(), 2);
        let token = mk_args(&[
            "--xds-addr",
            "10.0.0.1:15012,10.0.0.2:15012",
            "--root-cert",
            "/r",
            "--token-file",
            "/t",
        ]);
        assert!(check(&token).is_err());
        let one = mk_args(&[
            "--xds-addr",
            "10.0.0.1:15012",
            "--root-cert",
            "/r",
            "--token-file",
            "/t",
        ]);
        assert!(check(&one).is_ok());
    }
}
