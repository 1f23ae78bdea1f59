//! `meshd bootstrap`: a stock-Envoy bootstrap for one workload.
//!
//! The output is plain upstream Envoy v3 configuration: everything the proxy needs before it can
//! talk to meshd (node identity, the ADS cluster, admin) plus the two listeners Istio also keeps
//! out of LDS (15090 Prometheus stats, 15021 readiness). Everything else arrives over ADS.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

mod app_health;

use anyhow::Context as _;
use serde_json::{Value, json};

/// The cluster every xDS stream rides on; the name is Istio's, so config dumps read the same.
const XDS_CLUSTER: &str = "xds-grpc";
/// Points at the admin interface; Istio's name for the cluster behind the 15090 listener.
const PROMETHEUS_CLUSTER: &str = "prometheus_stats";
/// Points at the admin interface too, so readiness on 15021 is Envoy's own `/ready`.
const ADMIN_CLUSTER: &str = "envoy_admin";
const PROMETHEUS_PORT: u16 = 15090;
const HEALTH_PORT: u16 = 15021;

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const FILE_BASED_METADATA: &str = "envoy.grpc_credentials.file_based_metadata";
const FILE_BASED_METADATA_TYPE: &str =
    "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig";
const UPSTREAM_TLS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";

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
    #[arg(long, env = "MESHD_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: XdsAddr,

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

impl NodeType {
    /// The first field of the node id, which istiod (and so meshd) reads to pick the proxy kind.
    fn as_str(self) -> &'static str {
        match self {
            NodeType::Sidecar => "sidecar",
            NodeType::Router => "router",
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

/// `HOST:PORT` of the control plane; HOST is an IP literal (`[v6]` bracketed) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsAddr {
    pub host: Host,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    Dns(String),
}

#[derive(Debug, PartialEq, Eq)]
pub enum InvalidXdsAddr {
    MissingPort(String),
    BadPort(String),
    BadHost(String),
}

impl fmt::Display for InvalidXdsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidXdsAddr::MissingPort(s) => write!(f, "`{s}` is not HOST:PORT"),
            InvalidXdsAddr::BadPort(s) => write!(f, "`{s}` has an invalid port"),
            InvalidXdsAddr::BadHost(s) => write!(f, "`{s}` has an invalid host"),
        }
    }
}

impl std::error::Error for InvalidXdsAddr {}

impl FromStr for XdsAddr {
    type Err = InvalidXdsAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| InvalidXdsAddr::MissingPort(s.to_owned()))?;
            let ip = host
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| InvalidXdsAddr::BadHost(s.to_owned()))?;
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| InvalidXdsAddr::MissingPort(s.to_owned()))?;
            // An unbracketed v6 literal would have been split at its last group.
            if host.contains(':') {
                return Err(InvalidXdsAddr::BadHost(s.to_owned()));
            }
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => Host::Ip(ip),
                Err(_) if is_dns_name(host) => Host::Dns(host.to_owned()),
                Err(_) => return Err(InvalidXdsAddr::BadHost(s.to_owned())),
            };
            (host, port)
        };
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| InvalidXdsAddr::BadPort(s.to_owned()))?;
        Ok(XdsAddr { host, port })
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => ip.fmt(f),
            Host::Dns(name) => f.write_str(name),
        }
    }
}

fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
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
    let mut text = serde_json::to_string_pretty(&render(&args))?;
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
    if [PROMETHEUS_PORT, HEALTH_PORT].contains(&args.admin_port) {
        anyhow::bail!(
            "--admin-port {} collides with a bootstrap listener ({PROMETHEUS_PORT}, {HEALTH_PORT})",
            args.admin_port
        );
    }
    if !args.app_probers.is_empty() && args.admin_port == app_health::PORT {
        anyhow::bail!(
            "--admin-port {} collides with the app-health listener",
            args.admin_port
        );
    }
    Ok(())
}

/// The whole bootstrap, as Envoy reads it from `-c FILE`.
pub fn render(args: &Args) -> Value {
    json!({
        "node": node(args),
        "admin": {
            "address": socket_address("127.0.0.1", args.admin_port),
        },
        // Without an admin layer `/runtime_modify` refuses every change; it is how operators
        // flip a reloadable feature on a live proxy.
        "layered_runtime": {
            "layers": [{ "name": "admin", "admin_layer": {} }],
        },
        "dynamic_resources": dynamic_resources(args),
        "static_resources": {
            "clusters": (static_clusters(args)
                .into_iter()
                .chain(args.app_probers.clusters())
                .collect::<Vec<_>>()),
            "listeners": ([prometheus_listener(), health_listener()]
                .into_iter()
                .chain(args.app_probers.listener())
                .collect::<Vec<_>>()),
        },
    })
}

fn node(args: &Args) -> Value {
    let ns = &args.namespace;
    let labels = &args.labels.0;
    json!({
        "id": format!(
            "{}~{}~{}.{ns}~{ns}.svc.cluster.local",
            args.node_type.as_str(),
            args.ip,
            args.pod,
        ),
        "cluster": format!("{}.{ns}", canonical_name(args)),
        "metadata": {
            "NAMESPACE": ns,
            "LABELS": labels,
            "SERVICE_ACCOUNT": args.service_account,
            "INSTANCE_IPS": args.ip.to_string(),
            "CLUSTER_ID": args.cluster_id,
            "ISTIO_VERSION": concat!("meshd-", env!("CARGO_PKG_VERSION")),
            "INTERCEPTION_MODE": "REDIRECT",
            "NAME": args.pod,
            "WORKLOAD_NAME": labels.get("app").unwrap_or(&args.pod),
        },
    })
}

/// Istio's canonical service name: the first of these labels the pod carries, else the pod.
fn canonical_name(args: &Args) -> &str {
    [
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ]
    .iter()
    .find_map(|key| args.labels.0.get(*key))
    .unwrap_or(&args.pod)
}

fn static_clusters(args: &Args) -> Vec<Value> {
    let mut clusters = Vec::new();
    // With a token, xDS rides on Envoy's google_grpc client, which needs no cluster.
    if args.token_file.is_none() {
        clusters.push(xds_cluster(args));
    }
    clusters.push(admin_cluster(PROMETHEUS_CLUSTER, args.admin_port));
    clusters.push(admin_cluster(ADMIN_CLUSTER, args.admin_port));
    clusters
}

/// The ADS gRPC service. Plain: Envoy's own gRPC client on the `xds-grpc` cluster. With a token
/// file: Envoy's google_grpc client, because only it takes call credentials that are read at
/// stream start — `envoy.grpc_credentials.file_based_metadata` reads the file for every new
/// stream, so a kubelet-rotated token is what a reconnecting proxy presents. (Envoy's own client
/// only has `initial_metadata`, fixed when the bootstrap is written: a proxy would be locked out
/// once its first token expired.) Checked with Envoy 1.40: `--mode validate` accepts it and a
/// real proxy sends `authorization: Bearer <file contents>` on every (re)connect.
fn grpc_service(args: &Args) -> Value {
    let (Some(token), Some(root)) = (&args.token_file, &args.root_cert) else {
        return json!({ "envoy_grpc": { "cluster_name": XDS_CLUSTER } });
    };
    let XdsAddr { host, port } = &args.xds_addr;
    let target = match host {
        Host::Ip(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        host => format!("{host}:{port}"),
    };
    json!({
        "google_grpc": {
            "target_uri": target,
            "stat_prefix": XDS_CLUSTER,
            // Without naming the plugin's factory, Envoy's default one ignores `from_plugin`.
            "credentials_factory_name": FILE_BASED_METADATA,
            "channel_credentials": {
                "ssl_credentials": { "root_certs": { "filename": root.to_string_lossy() } },
            },
            "call_credentials": [{
                "from_plugin": {
                    "name": FILE_BASED_METADATA,
                    "typed_config": {
                        "@type": FILE_BASED_METADATA_TYPE,
                        "secret_data": { "filename": token.to_string_lossy() },
                        "header_key": "authorization",
                        "header_prefix": "Bearer ",
                    },
                },
            }],
            "channel_args": { "args": {
                // Verify meshd's certificate for its service name, whatever address it has.
                "grpc.ssl_target_name_override": { "string_value": args.xds_server_name },
                "grpc.default_authority": { "string_value": args.xds_server_name },
                // As the plain client's HTTP/2 PINGs: notice a dead control plane quickly.
                "grpc.keepalive_time_ms": { "int_value": 30_000 },
                "grpc.keepalive_timeout_ms": { "int_value": 10_000 },
                // gRPC's default limit (4 MiB) is too small for a large mesh's CDS/EDS.
                "grpc.max_receive_message_length": { "int_value": -1 },
            } },
        },
    })
}

fn dynamic_resources(args: &Args) -> Value {
    // initial_fetch_timeout 0 (as Istio): the proxy stays unready until meshd has answered,
    // rather than going live with no clusters or listeners after the default 15 s.
    let via_ads = json!({
        "ads": {},
        "resource_api_version": "V3",
        "initial_fetch_timeout": "0s",
    });
    json!({
        "ads_config": {
            "api_type": if args.delta { "DELTA_GRPC" } else { "GRPC" },
            "transport_api_version": "V3",
            "set_node_on_first_message_only": true,
            "grpc_services": [grpc_service(args)],
        },
        "cds_config": via_ads.clone(),
        "lds_config": via_ads,
    })
}

fn xds_cluster(args: &Args) -> Value {
    let XdsAddr { host, port } = &args.xds_addr;
    let mut cluster = json!({
        "name": XDS_CLUSTER,
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address(&host.to_string(), *port) },
                }],
            }],
        },
        // One long-lived ADS stream must never be refused by the default limits (1024).
        "circuit_breakers": {
            "thresholds": (["DEFAULT", "HIGH"].map(high_limits)),
        },
        // Catches a control plane that vanished without a FIN (node loss, NAT timeouts).
        "upstream_connection_options": {
            "tcp_keepalive": { "keepalive_time": 300 },
        },
        "typed_extension_protocol_options": {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": format!("type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"),
                "explicit_http_config": {
                    "http2_protocol_options": {
                        // An idle ADS stream carries nothing for minutes; PINGs notice a dead
                        // peer long before TCP keepalive does, so the proxy reconnects quickly.
                        "connection_keepalive": { "interval": "30s", "timeout": "10s" },
                    },
                },
            },
        },
    });
    match host {
        Host::Ip(_) => cluster["type"] = json!("STATIC"),
        Host::Dns(_) => {
            cluster["type"] = json!("STRICT_DNS");
            // meshd may listen on IPv4 only while `localhost` resolves to ::1 first.
            cluster["dns_lookup_family"] = json!("V4_PREFERRED");
        }
    }
    if let Some(root) = &args.root_cert {
        cluster["transport_socket"] = xds_tls(root, &args.xds_server_name);
    }
    cluster
}

fn high_limits(priority: &str) -> Value {
    json!({
        "priority": priority,
        "max_connections": 100_000,
        "max_pending_requests": 100_000,
        "max_requests": 100_000,
        "max_retries": 100_000,
    })
}

fn xds_tls(root_cert: &std::path::Path, server_name: &str) -> Value {
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "sni": server_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "validation_context": {
                    "trusted_ca": { "filename": root_cert.to_string_lossy() },
                    "match_typed_subject_alt_names": [{
                        "san_type": "DNS",
                        "matcher": { "exact": server_name },
                    }],
                },
            },
        },
    })
}

fn admin_cluster(name: &str, admin_port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address("127.0.0.1", admin_port) },
                }],
            }],
        },
    })
}

/// 15090 exposes only the Prometheus page of admin to scrapers; the rest of admin stays local.
fn prometheus_listener() -> Value {
    http_listener(
        "prometheus_stats",
        PROMETHEUS_PORT,
        "stats",
        json!({ "match": { "prefix": "/stats/prometheus" }, "route": { "cluster": PROMETHEUS_CLUSTER } }),
    )
}

/// 15021 `/healthz/ready` is what kubelet probes (Istio's port). Stock Envoy has no agent to
/// answer it, so it is forwarded to admin `/ready`: 200 once the initial xDS fetch is done, 503
/// while initializing or draining — unlike a fixed 200, a draining proxy leaves the endpoints.
fn health_listener() -> Value {
    http_listener(
        "health",
        HEALTH_PORT,
        "health",
        json!({
            "match": { "path": "/healthz/ready" },
            "route": { "cluster": ADMIN_CLUSTER, "prefix_rewrite": "/ready" },
        }),
    )
}

fn http_listener(name: &str, port: u16, stat_prefix: &str, route: Value) -> Value {
    json!({
        "name": name,
        "address": socket_address("0.0.0.0", port),
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM_TYPE,
                    "stat_prefix": stat_prefix,
                    "codec_type": "AUTO",
                    "route_config": {
                        "name": name,
                        "virtual_hosts": [{
                            "name": "backend",
                            "domains": ["*"],
                            "routes": [route],
                        }],
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": { "@type": ROUTER_TYPE },
                    }],
                },
            }],
        }],
    })
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
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
    fn node_follows_istio_id_and_metadata() {
        let args = mk_args(&[
            "--namespace",
            "bookinfo",
            "--labels",
            "app=reviews,version=v1",
            "--service-account",
            "bookinfo-reviews",
        ]);
        let node = &render(&args)["node"];
        assert_eq!(
            node["id"],
            "sidecar~10.1.2.3~reviews-v1-5d4b8c7f9-x2k4p.bookinfo~bookinfo.svc.cluster.local"
        );
        assert_eq!(node["cluster"], "reviews.bookinfo");
        let md = &node["metadata"];
        assert_eq!(md["NAMESPACE"], "bookinfo");
        assert_eq!(md["LABELS"], json!({ "app": "reviews", "version": "v1" }));
        assert_eq!(md["SERVICE_ACCOUNT"], "bookinfo-reviews");
        assert_eq!(md["INSTANCE_IPS"], "10.1.2.3");
        assert_eq!(md["CLUSTER_ID"], "Kubernetes");
        assert_eq!(
            md["ISTIO_VERSION"],
            format!("meshd-{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(md["INTERCEPTION_MODE"], "REDIRECT");
        assert_eq!(md["NAME"], "reviews-v1-5d4b8c7f9-x2k4p");
        assert_eq!(md["WORKLOAD_NAME"], "reviews");
    }

    #[test]
    fn unlabelled_pod_names_its_own_cluster_and_workload() {
        let node = &render(&mk_args(&[]))["node"];
        assert_eq!(node["cluster"], "reviews-v1-5d4b8c7f9-x2k4p.default");
        assert_eq!(
            node["metadata"]["WORKLOAD_NAME"],
            "reviews-v1-5d4b8c7f9-x2k4p"
        );
        assert_eq!(node["metadata"]["LABELS"], json!({}));
        assert_eq!(node["metadata"]["SERVICE_ACCOUNT"], "default");
    }

    #[test]
    fn router_node_id_starts_with_router() {
        let args = mk_args(&["--node-type", "router", "--namespace", "istio-system"]);
        assert_eq!(
            render(&args)["node"]["id"],
            "router~10.1.2.3~reviews-v1-5d4b8c7f9-x2k4p.istio-system~istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn ads_is_sotw_by_default_and_delta_on_request() {
        for (flags, api_type) in [(&[][..], "GRPC"), (&["--delta"][..], "DELTA_GRPC")] {
            let dynamic = &render(&mk_args(flags))["dynamic_resources"];
            let ads = &dynamic["ads_config"];
            assert_eq!(ads["api_type"], api_type);
            assert_eq!(ads["transport_api_version"], "V3");
            assert_eq!(ads["set_node_on_first_message_only"], true);
            assert_eq!(
                ads["grpc_services"][0]["envoy_grpc"]["cluster_name"],
                "xds-grpc"
            );
            for source in ["cds_config", "lds_config"] {
                assert_eq!(dynamic[source]["ads"], json!({}));
                assert_eq!(dynamic[source]["resource_api_version"], "V3");
            }
        }
    }

    fn cluster<'a>(bootstrap: &'a Value, name: &str) -> &'a Value {
        bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    #[test]
    fn xds_cluster_is_plaintext_http2_to_an_ip() {
        let bootstrap = render(&mk_args(&["--xds-addr", "10.0.0.9:15010"]));
        let xds = cluster(&bootstrap, "xds-grpc");
        assert_eq!(xds["type"], "STATIC");
        assert_eq!(xds["connect_timeout"], "1s");
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"],
            json!({ "socket_address": { "address": "10.0.0.9", "port_value": 15010 } })
        );
        let options = &xds["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS];
        assert!(
            options["explicit_http_config"]["http2_protocol_options"]["connection_keepalive"]
                .is_object()
        );
        assert!(xds.get("transport_socket").is_none());
        assert_eq!(
            xds["circuit_breakers"]["thresholds"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn xds_cluster_resolves_a_dns_host() {
        let bootstrap = render(&mk_args(&["--xds-addr", "istiod.istio-system.svc:15012"]));
        let xds = cluster(&bootstrap, "xds-grpc");
        assert_eq!(xds["type"], "STRICT_DNS");
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["address"],
            "istiod.istio-system.svc"
        );
    }

    #[test]
    fn root_cert_turns_on_tls_verified_against_istiod_name() {
        let bootstrap = render(&mk_args(&[
            "--xds-addr",
            "127.0.0.1:15012",
            "--root-cert",
            "/etc/meshd/root-cert.pem",
        ]));
        let tls = &cluster(&bootstrap, "xds-grpc")["transport_socket"];
        assert_eq!(tls["name"], "envoy.transport_sockets.tls");
        let ctx = &tls["typed_config"];
        assert_eq!(ctx["@type"], UPSTREAM_TLS_TYPE);
        assert_eq!(ctx["sni"], "istiod.istio-system.svc");
        let common = &ctx["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_eq!(
            common["validation_context"]["trusted_ca"]["filename"],
            "/etc/meshd/root-cert.pem"
        );
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"],
            json!([{ "san_type": "DNS", "matcher": { "exact": "istiod.istio-system.svc" } }])
        );
    }

    #[test]
    fn a_token_file_sends_the_token_with_every_stream_over_google_grpc() {
        let bootstrap = render(&mk_args(&[
            "--xds-addr",
            "10.77.0.1:15012",
            "--root-cert",
            "/etc/meshd/root-cert.pem",
            "--token-file",
            "/var/run/secrets/tokens/istio-token",
        ]));
        let service = &bootstrap["dynamic_resources"]["ads_config"]["grpc_services"][0];
        assert!(service.get("envoy_grpc").is_none());
        let google = &service["google_grpc"];
        assert_eq!(google["target_uri"], "10.77.0.1:15012");
        assert_eq!(google["credentials_factory_name"], FILE_BASED_METADATA);
        assert_eq!(
            google["channel_credentials"]["ssl_credentials"]["root_certs"]["filename"],
            "/etc/meshd/root-cert.pem"
        );
        let plugin = &google["call_credentials"][0]["from_plugin"];
        assert_eq!(plugin["name"], FILE_BASED_METADATA);
        assert_eq!(
            plugin["typed_config"],
            json!({
                "@type": FILE_BASED_METADATA_TYPE,
                "secret_data": { "filename": "/var/run/secrets/tokens/istio-token" },
                "header_key": "authorization",
                "header_prefix": "Bearer ",
            })
        );
        assert_eq!(
            google["channel_args"]["args"]["grpc.ssl_target_name_override"]["string_value"],
            "istiod.istio-system.svc"
        );
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_array()
            .unwrap();
        assert!(clusters.iter().all(|c| c["name"] != XDS_CLUSTER));
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
    fn admin_and_static_listeners_use_istio_ports() {
        let bootstrap = render(&mk_args(&["--admin-port", "16000"]));
        assert_eq!(
            bootstrap["admin"]["address"],
            json!({ "socket_address": { "address": "127.0.0.1", "port_value": 16000 } })
        );
        for name in [PROMETHEUS_CLUSTER, ADMIN_CLUSTER] {
            assert_eq!(
                cluster(&bootstrap, name)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                    ["address"]["socket_address"]["port_value"],
                16000
            );
        }
        let listeners = bootstrap["static_resources"]["listeners"]
            .as_array()
            .unwrap();
        let ports: Vec<_> = listeners
            .iter()
            .map(|l| {
                (
                    l["name"].clone(),
                    l["address"]["socket_address"]["port_value"].clone(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (json!("prometheus_stats"), json!(15090)),
                (json!("health"), json!(15021))
            ]
        );
        let routes = |i: usize| {
            listeners[i]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0].clone()
        };
        assert_eq!(routes(0)["match"]["prefix"], "/stats/prometheus");
        assert_eq!(routes(0)["route"]["cluster"], PROMETHEUS_CLUSTER);
        assert_eq!(routes(1)["match"]["path"], "/healthz/ready");
        assert_eq!(routes(1)["route"]["prefix_rewrite"], "/ready");
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
    fn xds_addr_accepts_ipv4_ipv6_and_dns() {
        let parse = |s: &str| s.parse::<XdsAddr>();
        assert_eq!(
            parse("127.0.0.1:15010").unwrap(),
            XdsAddr {
                host: Host::Ip("127.0.0.1".parse().unwrap()),
                port: 15010
            }
        );
        assert_eq!(
            parse("[::1]:15012").unwrap(),
            XdsAddr {
                host: Host::Ip("::1".parse().unwrap()),
                port: 15012
            }
        );
        assert_eq!(
            parse("meshd.mesh-system.svc:15010").unwrap(),
            XdsAddr {
                host: Host::Dns("meshd.mesh-system.svc".into()),
                port: 15010
            }
        );
        for bad in [
            "localhost",
            "::1:15010",
            "host:0",
            "host:http",
            ":15010",
            "bad_host:1",
            "[::1]15010",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn ipv6_pod_keeps_the_address_in_the_node_id() {
        let args = Cli::try_parse_from(["meshd", "--pod", "p", "--ip", "fd00::7"])
            .unwrap()
            .args;
        assert_eq!(
            render(&args)["node"]["id"],
            "sidecar~fd00::7~p.default~default.svc.cluster.local"
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
}
