//! A stock-Envoy bootstrap for one workload: everything the proxy needs before it can talk to meshd
//! (node identity, the xDS connection, admin) plus the listeners Istio also keeps out of LDS
//! (15090 Prometheus stats, 15021 readiness, and 15020 for the app's rewritten probes). Everything
//! else arrives over ADS.

pub mod app_health;
mod prometheus;
pub mod xds;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use meshd_model::NodeType;
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::bootstrap::v3::bootstrap::{DynamicResources, StaticResources};
use meshd_proto::pb::envoy::config::bootstrap::v3::{
    Admin, Bootstrap, LayeredRuntime, RuntimeLayer, runtime_layer,
};
use meshd_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use meshd_proto::pb::envoy::config::core::v3::{
    ApiConfigSource, ApiVersion, ConfigSource, Node, api_config_source,
};
use meshd_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use meshd_proto::pb::envoy::config::listener::v3::{FilterChain, Listener};
use meshd_proto::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use meshd_proto::pb::envoy::extensions::filters::http::router::v3::Router;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use meshd_proto::pb::google::protobuf::{Struct, Value, value};

use crate::hcm::{hcm_filter, http_filter};
use crate::names::{RE2_MAX_PROGRAM_SIZE, RUNTIME_DEFAULTS_LAYER};
use crate::util::{ads, duration, socket_address};

pub use app_health::{AppProbe, ProbeScheme};
pub use xds::{XdsAddr, XdsAddrs, XdsHost, XdsTls};

/// Points at the admin interface; Istio's name for the cluster behind the 15090 listener.
pub const PROMETHEUS_CLUSTER: &str = "prometheus_stats";
/// Points at the admin interface too, so readiness on 15021 is Envoy's own `/ready`.
pub const ADMIN_CLUSTER: &str = "envoy_admin";
/// Where Prometheus scrapes the proxy's stats.
pub const PROMETHEUS_PORT: u16 = 15090;
/// The pod labels naming a workload's canonical service and revision (Istio's).
const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// Where kubelet asks whether the proxy is ready.
pub const HEALTH_PORT: u16 = 15021;
/// The cluster readiness goes through: static in the bootstrap, its one endpoint (this proxy's
/// own readiness listener) sent by meshd over EDS — so a proxy is ready only once meshd answered.
pub const READINESS_CLUSTER: &str = "xds-ready";
/// Where the readiness cluster's endpoint forwards: Envoy's own `/ready`.
const ENVOY_READY_PATH: &str = "/healthz/envoy";
/// How long Envoy waits for meshd's first answer before it starts its listeners anyway: its
/// bootstrap listeners (the app's probes on 15020, stats on 15090, readiness on 15021) then serve
/// while meshd is out of reach, as pilot-agent's would; readiness stays 503 until meshd answers.
const INITIAL_FETCH_TIMEOUT_S: i64 = 5;

/// What one workload's bootstrap is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapParams {
    pub node_type: NodeType,
    pub pod: String,
    pub namespace: String,
    /// The pod's IP; meshd maps a proxy to its Services by this address.
    pub ip: IpAddr,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// The cluster (Istio multi-cluster sense) the workload runs in.
    pub cluster_id: String,
    /// What the node reports as `ISTIO_VERSION`.
    pub version: String,
    /// Where meshd serves ADS: one address (a Service), or one per replica.
    pub xds_addr: XdsAddrs,
    /// TLS to meshd (the only way a proxy can receive secrets); plaintext without.
    pub xds_tls: Option<XdsTls>,
    /// Incremental (Delta) xDS instead of state-of-the-world.
    pub delta: bool,
    /// Port of Envoy's admin interface, which listens on 127.0.0.1 only.
    pub admin_port: u16,
    /// The app's probes on 15020, by their path there; no listener without any.
    pub app_probes: BTreeMap<String, AppProbe>,
}

/// The whole bootstrap, as Envoy reads it from `-c FILE`.
pub fn bootstrap(params: &BootstrapParams) -> Bootstrap {
    let mut clusters = xds::static_clusters(params);
    let mut scrape = admin_cluster(PROMETHEUS_CLUSTER, params.admin_port);
    scrape.per_connection_buffer_limit_bytes =
        crate::util::u32_value(prometheus::SCRAPE_BUFFER_BYTES);
    clusters.push(scrape);
    clusters.push(admin_cluster(ADMIN_CLUSTER, params.admin_port));
    clusters.push(readiness_cluster());
    clusters.extend(app_health::clusters(&params.app_probes));
    let mut listeners = vec![prometheus_listener(), health_listener()];
    listeners.extend(app_health::listener(&params.app_probes));
    Bootstrap {
        node: Some(node(params)),
        admin: Some(Admin {
            address: Some(socket_address("127.0.0.1", params.admin_port.into())),
            ..Default::default()
        }),
        // Without an admin layer `/runtime_modify` refuses every change; it is how operators
        // flip a reloadable feature on a live proxy. It comes last, so it overrides the defaults.
        layered_runtime: Some(LayeredRuntime {
            layers: vec![
                runtime_defaults(),
                RuntimeLayer {
                    name: "admin".to_string(),
                    layer_specifier: Some(runtime_layer::LayerSpecifier::AdminLayer(
                        runtime_layer::AdminLayer {},
                    )),
                },
            ],
        }),
        dynamic_resources: Some(dynamic_resources(params)),
        static_resources: Some(StaticResources {
            clusters,
            listeners,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The node id is Istio's `<type>~<ip>~<pod>.<namespace>~<namespace>.svc.cluster.local`, which
/// istiod (and so meshd) parses; the metadata is what istiod reads from a pilot-agent.
fn node(params: &BootstrapParams) -> Node {
    let ns = &params.namespace;
    let node_type = match params.node_type {
        NodeType::Sidecar => "sidecar",
        NodeType::Router => "router",
    };
    // Istio's injector adds the canonical labels to the pod; the proxy reports its workload
    // under them (see `telemetry`), so they are there whether or not the pod has them.
    let names = crate::telemetry::WorkloadNames::of(&params.pod, ns, &params.labels);
    let mut labels = params.labels.clone();
    labels
        .entry(CANONICAL_NAME_LABEL.to_string())
        .or_insert(names.canonical_service);
    labels
        .entry(CANONICAL_REVISION_LABEL.to_string())
        .or_insert(names.canonical_revision);
    let labels = Struct {
        fields: labels.iter().map(|(k, v)| (k.clone(), string(v))).collect(),
    };
    let workload_name = crate::telemetry::workload_name(&params.pod, &params.labels);
    let metadata: HashMap<String, Value> = [
        ("NAMESPACE", string(ns)),
        (
            "LABELS",
            Value {
                kind: Some(value::Kind::StructValue(labels)),
            },
        ),
        ("SERVICE_ACCOUNT", string(&params.service_account)),
        ("INSTANCE_IPS", string(&params.ip.to_string())),
        ("CLUSTER_ID", string(&params.cluster_id)),
        ("ISTIO_VERSION", string(&params.version)),
        ("INTERCEPTION_MODE", string("REDIRECT")),
        ("NAME", string(&params.pod)),
        ("WORKLOAD_NAME", string(workload_name)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Node {
        id: format!(
            "{node_type}~{}~{}.{ns}~{ns}.svc.cluster.local",
            params.ip, params.pod
        ),
        // The service name of the proxy's spans (Zipkin reports it, Jaeger and Kiali look traces
        // up by it), as pilot-agent derives it.
        cluster: crate::telemetry::WorkloadNames::of(&params.pod, ns, &params.labels)
            .service_cluster,
        metadata: Some(Struct { fields: metadata }),
        ..Default::default()
    }
}

/// istiod's runtime defaults that decide what config Envoy accepts: RE2 programs up to
/// [`RE2_MAX_PROGRAM_SIZE`], so regexes istiod accepts are not refused by Envoy's default limit
/// of 100. istiod sets only the error level; the warn level is set to the same value, which
/// keeps Envoy from warning about any program it accepts, as it does when the level is unset.
fn runtime_defaults() -> RuntimeLayer {
    let size = RE2_MAX_PROGRAM_SIZE.to_string();
    let fields = HashMap::from([
        (
            "re2.max_program_size.error_level".to_string(),
            string(&size),
        ),
        ("re2.max_program_size.warn_level".to_string(), string(&size)),
    ]);
    RuntimeLayer {
        name: RUNTIME_DEFAULTS_LAYER.to_string(),
        layer_specifier: Some(runtime_layer::LayerSpecifier::StaticLayer(Struct {
            fields,
        })),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

fn dynamic_resources(params: &BootstrapParams) -> DynamicResources {
    // Not 0 as Istio's (its agent serves the probes while Envoy waits): Envoy starts its own
    // listeners after a while without meshd, and readiness says whether meshd answered.
    let via_ads = ConfigSource {
        initial_fetch_timeout: Some(duration(INITIAL_FETCH_TIMEOUT_S, 0)),
        ..ads()
    };
    let api_type = if params.delta {
        api_config_source::ApiType::DeltaGrpc
    } else {
        api_config_source::ApiType::Grpc
    };
    DynamicResources {
        ads_config: Some(ApiConfigSource {
            api_type: api_type as i32,
            transport_api_version: ApiVersion::V3 as i32,
            set_node_on_first_message_only: true,
            grpc_services: vec![xds::grpc_service(params)],
            ..Default::default()
        }),
        cds_config: Some(via_ads.clone()),
        lds_config: Some(via_ads),
        ..Default::default()
    }
}

/// A STATIC cluster with one endpoint.
fn static_cluster(
    name: &str,
    connect_timeout: meshd_proto::pb::google::protobuf::Duration,
    address: &str,
    port: u16,
) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(connect_timeout),
        load_assignment: Some(one_endpoint(name, address, port)),
        ..Default::default()
    }
}

/// `cluster_name`'s assignment of the single endpoint `address:port`.
fn one_endpoint(cluster_name: &str, address: &str, port: u16) -> ClusterLoadAssignment {
    endpoints(cluster_name, [(address.to_string(), port)])
}

/// `cluster_name`'s assignment of the endpoints `(address, port)`, in one locality.
fn endpoints(
    cluster_name: &str,
    addresses: impl IntoIterator<Item = (String, u16)>,
) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addresses
                .into_iter()
                .map(|(address, port)| LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(&address, port.into())),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn admin_cluster(name: &str, admin_port: u16) -> Cluster {
    static_cluster(name, duration(0, 250_000_000), "127.0.0.1", admin_port)
}

/// 15090 exposes only the Prometheus page of admin to scrapers; the rest of admin stays local.
/// A Lua filter gives Istio's metrics their Istio names there (see `prometheus`).
fn prometheus_listener() -> Listener {
    let route = Route {
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(
                "/stats/prometheus".to_string(),
            )),
            ..Default::default()
        }),
        action: Some(route::Action::Route(to_cluster(PROMETHEUS_CLUSTER))),
        ..Default::default()
    };
    let mut listener = http_listener(
        "prometheus_stats",
        PROMETHEUS_PORT,
        "stats",
        "backend",
        vec![route],
    );
    prometheus::rename(&mut listener);
    listener
}

/// 15021 `/healthz/ready` is what kubelet probes (Istio's port). Stock Envoy has no agent to
/// answer it, so it goes through [`READINESS_CLUSTER`], which has an endpoint only once meshd
/// sent it (503 before), back to this listener's `/healthz/envoy` and on to admin `/ready`: 200
/// once Envoy is initialized, 503 while initializing or draining — unlike a fixed 200, a
/// draining proxy leaves the endpoints.
fn health_listener() -> Listener {
    let ready = Route {
        r#match: Some(path_match("/healthz/ready")),
        action: Some(route::Action::Route(RouteAction {
            prefix_rewrite: ENVOY_READY_PATH.to_string(),
            ..to_cluster(READINESS_CLUSTER)
        })),
        ..Default::default()
    };
    let envoy = Route {
        r#match: Some(path_match(ENVOY_READY_PATH)),
        action: Some(route::Action::Route(RouteAction {
            prefix_rewrite: "/ready".to_string(),
            ..to_cluster(ADMIN_CLUSTER)
        })),
        ..Default::default()
    };
    http_listener(
        "health",
        HEALTH_PORT,
        "health",
        "backend",
        vec![ready, envoy],
    )
}

/// The readiness cluster: its endpoint comes over EDS, from meshd ([`readiness_assignment`]).
fn readiness_cluster() -> Cluster {
    Cluster {
        name: READINESS_CLUSTER.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        connect_timeout: Some(duration(0, 250_000_000)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                initial_fetch_timeout: Some(duration(INITIAL_FETCH_TIMEOUT_S, 0)),
                ..ads()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What meshd sends every proxy for [`READINESS_CLUSTER`]: the proxy's own readiness listener.
pub fn readiness_assignment() -> ClusterLoadAssignment {
    one_endpoint(READINESS_CLUSTER, "127.0.0.1", HEALTH_PORT)
}

fn path_match(path: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Path(path.to_string())),
        ..Default::default()
    }
}

fn to_cluster(name: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(name.to_string())),
        ..Default::default()
    }
}

/// A listener on `0.0.0.0:<port>` serving `routes` on any host, with nothing but the router.
fn http_listener(
    name: &str,
    port: u16,
    stat_prefix: &str,
    virtual_host: &str,
    routes: Vec<Route>,
) -> Listener {
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        codec_type: http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: name.to_string(),
                virtual_hosts: vec![VirtualHost {
                    name: virtual_host.to_string(),
                    domains: vec!["*".to_string()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![http_filter(
            "envoy.filters.http.router",
            pack(&Router::default()),
        )],
        ..Default::default()
    };
    Listener {
        name: name.to_string(),
        address: Some(socket_address("0.0.0.0", port.into())),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(&hcm)],
            ..Default::default()
        }],
        ..Default::default()
    }
}
