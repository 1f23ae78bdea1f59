//! The real Envoy's verdict on what passed meshd's checks: every resource goes into one static
//! bootstrap — meshd's own bootstrap (runtime layers, static listeners and clusters) plus the
//! resources — written as binary protobuf, as the server sends them, and loaded with
//! `envoy --mode validate`.
//!
//! Static config differs from xDS in a few ways, each made up for here: a route configuration is
//! served in a listener of its own (in Istio's HTTP filter chain), with `validate_clusters` off
//! unless meshd set it, as RDS has it; an endpoint assignment is the `load_assignment` of a
//! static cluster; and proxies that hold resources of the same name or listen on the same address
//! each got their own, so the later one is renamed or moved to a free port; clusters Envoy
//! initializes at startup get their SDS secrets as static ones ([`super::secrets`]). A clash within one
//! proxy's resources, or with the bootstrap's own listeners, is left for Envoy to judge.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use meshd_model::NodeType;
use meshd_proto::pb::envoy::config::bootstrap::v3::Bootstrap;
use meshd_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use meshd_proto::pb::envoy::config::core::v3::{SocketAddress, address, socket_address};
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use meshd_proto::pb::envoy::config::route::v3::RouteConfiguration;
use meshd_proto::pb::envoy::extensions::filters::http::cors::v3::Cors;
use meshd_proto::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use meshd_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use meshd_proto::pb::google::protobuf::{BoolValue, Duration};
use meshd_proto::{pack, type_url, unpack};
use meshd_translate::bootstrap::{self, BootstrapParams};
use prost::Message as _;

use super::pipeline::Passed;

/// First port handed to listeners moved off an address another proxy's listener holds.
const MOVED_PORT_BASE: u32 = 20000;
/// Route configurations are served on `127.0.0.2:<base + i>`, an address nothing else uses.
const ROUTE_PORT_BASE: u32 = 30000;
const ROUTE_ADDRESS: &str = "127.0.0.2";

/// Runs Envoy in validate mode; counts its runs.
pub struct Envoy {
    binary: PathBuf,
    dir: tempfile::TempDir,
    pub runs: u64,
}

impl Envoy {
    pub fn new(binary: &Path) -> anyhow::Result<Envoy> {
        let dir = tempfile::Builder::new()
            .prefix("meshd-fuzz-")
            .tempdir()
            .context("a directory for the validation bootstraps")?;
        write_certificates(dir.path())?;
        Ok(Envoy {
            binary: binary.to_path_buf(),
            dir,
            runs: 0,
        })
    }

    /// `Ok` when Envoy accepts `config`, else its complaint.
    pub fn validate(&mut self, config: &Bootstrap) -> anyhow::Result<Result<(), String>> {
        let mut file = tempfile::Builder::new()
            .prefix("bootstrap-")
            .suffix(".pb")
            .tempfile_in(self.dir.path())?;
        file.write_all(&config.encode_to_vec())?;
        file.flush()?;
        self.runs += 1;
        let out = Command::new(&self.binary)
            .current_dir(self.dir.path())
            .args([
                "--mode",
                "validate",
                "--disable-hot-restart",
                "-l",
                "error",
                "-c",
            ])
            .arg(file.path())
            .output()
            .with_context(|| format!("running {}", self.binary.display()))?;
        if out.status.success() {
            return Ok(Ok(()));
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Err(complaint(&text)))
    }
}

/// The files the generator's TLS settings name (`certs/...`, relative to where Envoy runs), so
/// that Envoy judges the config rather than a missing file: a self-signed certificate and key.
fn write_certificates(dir: &Path) -> anyhow::Result<()> {
    let certs = dir.join(super::atoms::CERT_DIR);
    std::fs::create_dir(&certs)?;
    let key = rcgen::generate_simple_self_signed(vec!["fuzz.example".to_string()])?;
    let cert = key.cert.pem();
    for (file, pem) in [
        (super::atoms::CERT_FILE, cert.clone()),
        (super::atoms::CA_FILE, cert),
        (super::atoms::KEY_FILE, key.signing_key.serialize_pem()),
    ] {
        std::fs::write(certs.join(file), pem)?;
    }
    Ok(())
}

/// Envoy's reason, without the log prefix and the temporary file's name: the lines from the one
/// that says the configuration failed.
fn complaint(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    // A crash (Envoy's backtrace handler caught a signal): its first line, without the log
    // prefix and the addresses that change from run to run.
    if let Some(caught) = lines.iter().find_map(|l| l.split_once("] Caught ")) {
        let signal = caught.1.split(',').next().unwrap_or(caught.1);
        return format!("Envoy crashed: caught {signal}");
    }
    let start = lines
        .iter()
        .position(|l| l.contains("error initializing configuration"))
        .or_else(|| lines.iter().position(|l| l.contains("[critical]")))
        .unwrap_or(0);
    let text = lines[start..].join("\n");
    match text.split_once(".pb': ") {
        Some((_, reason)) => reason.trim().to_string(),
        None => text.trim().to_string(),
    }
}

/// What stays the same when other objects show the same problem: the reason without the dump of
/// the offending proto Envoy appends, and without digits.
pub fn normalized(complaint: &str) -> String {
    let reason = match complaint.find("): ") {
        Some(end) if complaint.starts_with("Proto constraint validation failed") => {
            &complaint[..end]
        }
        _ => complaint,
    };
    reason.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// meshd's bootstrap for a sidecar: the runtime layers and static resources every proxy has.
pub fn base_bootstrap() -> Bootstrap {
    bootstrap::bootstrap(&BootstrapParams {
        node_type: NodeType::Sidecar,
        pod: "fuzz-0".to_string(),
        namespace: "default".to_string(),
        ip: std::net::IpAddr::from([10, 255, 0, 2]),
        labels: BTreeMap::new(),
        service_account: "default".to_string(),
        cluster_id: "Kubernetes".to_string(),
        version: "fuzz".to_string(),
        xds_addr: bootstrap::XdsAddr {
            host: bootstrap::XdsHost::Ip(std::net::IpAddr::from([127, 0, 0, 1])),
            port: 15010,
        }
        .into(),
        xds_tls: None,
        delta: false,
        admin_port: 15000,
        app_probes: BTreeMap::new(),
    })
}

fn listener_address(listener: &Listener) -> Option<String> {
    match listener.address.as_ref()?.address.as_ref()? {
        address::Address::SocketAddress(s) => Some(format!("{}:{:?}", s.address, s.port_specifier)),
        other => Some(format!("{other:?}")),
    }
}

fn move_to_port(listener: &mut Listener, port: u32) {
    if let Some(address::Address::SocketAddress(s)) =
        listener.address.as_mut().and_then(|a| a.address.as_mut())
    {
        s.port_specifier = Some(socket_address::PortSpecifier::PortValue(port));
    }
}

/// The listener that serves `route` as RDS would: Istio's HTTP filters, clusters not validated
/// unless the configuration asks for it.
fn route_listener(mut route: RouteConfiguration, index: u32) -> Listener {
    if route.validate_clusters.is_none() {
        route.validate_clusters = Some(BoolValue { value: false });
    }
    let filter = |name: &str, config| HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "fuzz".to_string(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(route)),
        http_filters: vec![
            filter("envoy.filters.http.fault", pack(&HttpFault::default())),
            filter("envoy.filters.http.cors", pack(&Cors::default())),
            filter("envoy.filters.http.router", pack(&Router::default())),
        ],
        ..Default::default()
    };
    Listener {
        name: format!("fuzz-rds-{index}"),
        address: Some(meshd_proto::pb::envoy::config::core::v3::Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: ROUTE_ADDRESS.to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(
                    ROUTE_PORT_BASE + index,
                )),
                ..Default::default()
            })),
        }),
        bind_to_port: Some(BoolValue { value: false }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".to_string(),
                config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn assignment_cluster(cla: ClusterLoadAssignment, index: usize) -> Cluster {
    Cluster {
        name: format!("fuzz-eds-{index}"),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(cla),
        ..Default::default()
    }
}

/// `base` holding every resource of `passed`.
pub fn config(base: &Bootstrap, passed: &[Passed]) -> Bootstrap {
    let mut config = base.clone();
    let statics = config.static_resources.get_or_insert_with(Default::default);
    // Name → (proxy, bytes) of what is in, so repeats are skipped and clashes renamed.
    let mut names: BTreeMap<(&str, String), (usize, Vec<u8>)> = BTreeMap::new();
    let mut addresses: BTreeMap<String, Option<usize>> = statics
        .listeners
        .iter()
        .filter_map(listener_address)
        .map(|a| (a, None))
        .collect();
    let mut next_port = MOVED_PORT_BASE;
    let mut assignments: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut routes = 0u32;
    let mut secrets = BTreeMap::new();
    for p in passed {
        let key = (p.type_url, p.name.clone());
        let rename = match names.get(&key) {
            Some((_, bytes)) if *bytes == p.body.value => continue,
            Some((holder, _)) => *holder != p.proxy,
            None => {
                names.insert(key, (p.proxy, p.body.value.clone()));
                false
            }
        };
        let renamed = format!("{}~proxy{}", p.name, p.proxy);
        match p.type_url {
            type_url::CLUSTER => {
                if let Some(mut c) = unpack::<Cluster>(&p.body) {
                    if rename {
                        c.name = renamed;
                    }
                    super::secrets::localize_cluster(&mut c, &mut secrets);
                    statics.clusters.push(c);
                }
            }
            type_url::ENDPOINT => {
                if assignments.insert(p.body.value.clone())
                    && let Some(cla) = unpack::<ClusterLoadAssignment>(&p.body)
                {
                    let index = statics.clusters.len();
                    statics.clusters.push(assignment_cluster(cla, index));
                }
            }
            type_url::LISTENER => {
                if let Some(mut l) = unpack::<Listener>(&p.body) {
                    if rename {
                        l.name = renamed;
                    }
                    if let Some(address) = listener_address(&l) {
                        match addresses.get(&address) {
                            Some(Some(holder)) if *holder != p.proxy => {
                                move_to_port(&mut l, next_port);
                                next_port += 1;
                            }
                            Some(_) => {}
                            None => {
                                addresses.insert(address, Some(p.proxy));
                            }
                        }
                    }
                    statics.listeners.push(l);
                }
            }
            type_url::ROUTE => {
                if let Some(r) = unpack::<RouteConfiguration>(&p.body) {
                    statics.listeners.push(route_listener(r, routes));
                    routes += 1;
                }
            }
            _ => {}
        }
    }
    statics.secrets.extend(secrets.into_values());
    config
}

/// Envoy JSON of `passed` resources, for a report.
pub fn to_json(passed: &[Passed]) -> serde_json::Value {
    serde_json::Value::Array(
        passed
            .iter()
            .map(|p| {
                meshd_proto::json::any_to_json(&p.body)
                    .unwrap_or_else(|e| serde_json::json!({"name": p.name, "error": e.to_string()}))
            })
            .collect(),
    )
}
