//! Access logs, tracing and Istio's standard metrics on a proxy's listeners, as istiod puts them
//! there: every HTTP connection manager logs requests, traces and counts them, every TCP proxy
//! logs and counts connections, and the capturing listeners (`virtualOutbound`,
//! `virtualInbound`) and gateways log connections no filter chain took.
//!
//! Listeners are built first and given their telemetry here, in one place: what a proxy logs and
//! traces depends only on its side of the traffic (client: sidecar outbound and gateways; server:
//! sidecar inbound), its Telemetry objects and the mesh config, never on the listener.

mod access_log;
mod metrics;
mod tracing;

use std::collections::BTreeMap;

use meshd_model::mesh_config::ProviderKind;
use meshd_model::telemetry::{AppliedTelemetry, WorkloadMode};
use meshd_model::{NodeType, ObjectKey, Snapshot};
use meshd_proto::pb::envoy::config::accesslog::v3::AccessLog;
use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, RequestIdExtension,
};
use meshd_proto::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use meshd_proto::pb::envoy::extensions::request_id::uuid::v3::UuidRequestIdConfig;
use meshd_proto::{pack, unpack};

use crate::Scope;
use crate::names::{VIRTUAL_INBOUND, VIRTUAL_OUTBOUND};
use crate::util::bool_value;

pub use access_log::{ISTIO_JSON_FIELDS, ISTIO_TEXT_FORMAT};
pub use metrics::{PEER_HEADER, PROMETHEUS_PREFIX, STAT_NAMESPACE};
pub(crate) use metrics::{catch_all_metadata, cluster_metadata, endpoint_metadata, peer_header};
pub use tracing::LEGACY_ZIPKIN_CLUSTER;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";
/// The cluster (Istio multi-cluster sense) of every proxy meshd serves: `meshd bootstrap`'s
/// default `CLUSTER_ID`, and istiod's.
const CLUSTER_ID: &str = "Kubernetes";

/// A workload's name as Istio derives it and the node metadata carries it (`WORKLOAD_NAME`):
/// a Deployment's pod (it has `pod-template-hash`) is named `<deployment>-<hash>-<suffix>`, so
/// the Deployment's name; a pod of a Job, the Job's; any other pod, its own name. Metrics name a
/// destination by the same rule, from the registry.
pub fn workload_name<'a>(pod: &'a str, labels: &'a BTreeMap<String, String>) -> &'a str {
    if let Some(job) = labels.get("job-name") {
        return job;
    }
    if let Some(hash) = labels.get("pod-template-hash")
        && let Some(deployment) = pod
            .rsplit_once('-')
            .and_then(|(rest, _)| rest.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
    {
        return deployment;
    }
    pod
}

/// How a workload is named in spans: Istio's canonical service and revision, its namespace, and
/// the service name its spans are reported under (Envoy's node `cluster`, `<app>.<namespace>`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadNames {
    pub canonical_service: String,
    pub canonical_revision: String,
    pub namespace: String,
    pub service_cluster: String,
}

impl WorkloadNames {
    /// As Istio's injector and pilot-agent derive them from the pod's labels.
    pub fn of(pod: &str, namespace: &str, labels: &BTreeMap<String, String>) -> WorkloadNames {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).cloned();
        let canonical_service = first(&[
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ])
        .unwrap_or_else(|| pod.to_string());
        let canonical_revision = first(&[
            "service.istio.io/canonical-revision",
            "app.kubernetes.io/version",
            "version",
        ])
        .unwrap_or_else(|| "latest".to_string());
        let app = first(&[
            "app",
            "app.kubernetes.io/name",
            "service.istio.io/canonical-name",
        ])
        .unwrap_or_else(|| pod.to_string());
        WorkloadNames {
            canonical_service,
            canonical_revision,
            namespace: namespace.to_string(),
            service_cluster: format!("{app}.{namespace}"),
        }
    }
}

/// What one side of a proxy's listeners log, trace and count with.
#[derive(Default)]
pub(crate) struct ListenerTelemetry {
    http: Vec<AccessLog>,
    tcp: Vec<AccessLog>,
    /// On the capturing listeners and gateways: connections no filter chain matched.
    listener: Vec<AccessLog>,
    tracing: Option<tracing::HcmTracing>,
    /// Istio's standard metrics, reported as this side; `None` where it reports none.
    metrics: Option<metrics::Metrics>,
    /// Client side: every HTTP request names the proxy in [`PEER_HEADER`] (set by the route
    /// configurations), from connection filter state on these shared listeners. Kept even where
    /// the client reports no metrics, as Istio's metadata exchange is: the server may.
    sends_peer_header: bool,
    /// Server side without HTTP metrics: nothing reads [`PEER_HEADER`], which is dropped before
    /// the app sees it.
    drops_peer_header: bool,
}

/// The Telemetries of a scope: the mesh-wide and namespace-wide ones of its namespace, and the
/// workload ones it resolved.
fn applied<'a>(snapshot: &'a Snapshot, scope: &Scope) -> AppliedTelemetry<'a> {
    let mut applied = snapshot
        .telemetries
        .for_workload(&scope.namespace, &BTreeMap::new());
    applied.levels.extend(
        scope
            .telemetry
            .iter()
            .filter_map(|k| snapshot.telemetries.get(k))
            .map(AsRef::as_ref),
    );
    applied
}

impl ListenerTelemetry {
    /// For the listeners of `scope` on `side`; `names` name the workload in spans (required when
    /// it traces, see [`traces`]).
    pub(crate) fn new(
        snapshot: &Snapshot,
        scope: &Scope,
        side: WorkloadMode,
        names: Option<&WorkloadNames>,
    ) -> Self {
        let applied = applied(snapshot, scope);
        let mesh = &snapshot.mesh;
        let mut out = ListenerTelemetry::default();
        match applied.access_logging(mesh, side) {
            Some(choices) if !choices.is_empty() => {
                for choice in choices.iter().filter(|c| !c.disabled) {
                    let Some(provider) = mesh.provider(&choice.provider) else {
                        continue;
                    };
                    let Some(ProviderKind::FileAccessLog(file)) = provider.kind() else {
                        // Only Envoy's file logger is configured by meshd.
                        continue;
                    };
                    let log = access_log::from_provider(&provider.name, file, mesh);
                    let filter = choice.filter.as_deref().map(access_log::cel_filter);
                    out.http.push(access_log::with_filters(
                        log.clone(),
                        filter.iter().cloned().collect(),
                    ));
                    out.tcp.push(access_log::with_filters(
                        log.clone(),
                        filter.iter().cloned().collect(),
                    ));
                    let mut listener_filters = vec![access_log::no_route_filter()];
                    listener_filters.extend(filter);
                    out.listener
                        .push(access_log::with_filters(log, listener_filters));
                }
            }
            // No Telemetry logging (or all of it named no usable provider): the mesh config's.
            _ if !mesh.access_log_file.is_empty() => {
                let log = access_log::from_mesh_config(&mesh.access_log_file, mesh);
                out.http.push(log.clone());
                out.tcp.push(log.clone());
                out.listener.push(access_log::with_filters(
                    log,
                    vec![access_log::no_route_filter()],
                ));
            }
            _ => {}
        }
        let reported = applied.metrics(mesh);
        let (reporter, side_metrics) = match side {
            WorkloadMode::Server => (metrics::Reporter::Destination, &reported.server),
            WorkloadMode::Client | WorkloadMode::ClientAndServer => {
                (metrics::Reporter::Source, &reported.client)
            }
        };
        out.metrics = metrics::Metrics::new(reporter, side_metrics);
        out.sends_peer_header = reporter == metrics::Reporter::Source;
        out.drops_peer_header = reporter == metrics::Reporter::Destination
            && out.metrics.as_ref().and_then(|m| m.http()).is_none();
        if let Some(names) = names {
            out.tracing = tracing::hcm_tracing(snapshot, scope, &applied, side, names);
        }
        out
    }

    /// Puts the access logs and the tracer on `listeners`; `capturing` says which listeners also
    /// log connections no filter chain took.
    pub(crate) fn apply(&self, listeners: &mut [Listener], capturing: impl Fn(&Listener) -> bool) {
        if self.http.is_empty()
            && self.tcp.is_empty()
            && self.tracing.is_none()
            && self.metrics.is_none()
            && !self.sends_peer_header
            && !self.drops_peer_header
        {
            return;
        }
        for listener in listeners.iter_mut() {
            if capturing(listener) {
                listener.access_log.extend(self.listener.iter().cloned());
            }
            for chain in &mut listener.filter_chains {
                for filter in &mut chain.filters {
                    self.apply_to_filter(filter);
                }
                // Shared listeners' metrics and peer header read the proxy's names from
                // connection state.
                let http = chain.filters.iter().any(|f| f.name == HCM);
                let tcp = chain.filters.iter().any(|f| f.name == TCP_PROXY);
                let own = (http && self.sends_peer_header)
                    || self
                        .metrics
                        .as_ref()
                        .is_some_and(|m| m.needs_own_filter(http, tcp));
                if own {
                    chain.filters.insert(0, metrics::own_filter());
                }
            }
        }
    }

    fn apply_to_filter(&self, filter: &mut Filter) {
        let Some(filter::ConfigType::TypedConfig(any)) = &mut filter.config_type else {
            return;
        };
        match filter.name.as_str() {
            HCM => {
                let Some(mut hcm) = unpack::<HttpConnectionManager>(any) else {
                    return;
                };
                hcm.access_log.extend(self.http.iter().cloned());
                if let Some(m) = &self.metrics {
                    hcm.access_log.extend(m.http().cloned());
                    hcm.http_filters.splice(0..0, m.http_filter());
                }
                if self.drops_peer_header
                    && let Some(RouteSpecifier::RouteConfig(routes)) = &mut hcm.route_specifier
                {
                    routes
                        .request_headers_to_remove
                        .push(PEER_HEADER.to_string());
                }
                if let Some(t) = &self.tracing {
                    hcm.tracing = Some(t.tracing.clone());
                    hcm.request_id_extension = Some(RequestIdExtension {
                        typed_config: Some(pack(&UuidRequestIdConfig {
                            use_request_id_for_trace_sampling: bool_value(
                                t.use_request_id_for_trace_sampling,
                            ),
                            ..Default::default()
                        })),
                    });
                }
                *any = pack(&hcm);
            }
            TCP_PROXY => {
                let counters: Vec<&AccessLog> = self.metrics.iter().flat_map(|m| m.tcp()).collect();
                if self.tcp.is_empty() && counters.is_empty() {
                    return;
                }
                let Some(mut tcp) = unpack::<TcpProxy>(any) else {
                    return;
                };
                if self.metrics.as_ref().is_some_and(|m| m.counts_on_connect()) {
                    // The opened-connections counter is written when the upstream connection
                    // is made; the file logs keep one line per connection.
                    tcp.access_log
                        .extend(self.tcp.iter().cloned().map(metrics::not_on_connect));
                    tcp.access_log_options
                        .get_or_insert_with(Default::default)
                        .flush_access_log_on_connected = true;
                } else {
                    tcp.access_log.extend(self.tcp.iter().cloned());
                }
                tcp.access_log.extend(counters.into_iter().cloned());
                *any = pack(&tcp);
            }
            _ => {}
        }
    }
}

/// Whether a listener is one istiod logs unmatched connections on: the capturing ones of a
/// sidecar, every one of a gateway.
pub(crate) fn capturing(node_type: NodeType) -> impl Fn(&Listener) -> bool {
    move |l: &Listener| {
        node_type == NodeType::Router || l.name == VIRTUAL_OUTBOUND || l.name == VIRTUAL_INBOUND
    }
}

/// Whether a proxy of `scope` traces, so its listeners need the workload's names.
pub(crate) fn traces(snapshot: &Snapshot, scope: &Scope) -> bool {
    let applied = applied(snapshot, scope);
    match applied.tracing(&snapshot.mesh) {
        Some(choice) => !(choice.client.disabled && choice.server.disabled),
        None => {
            snapshot.mesh.enable_tracing
                && snapshot
                    .mesh
                    .default_config
                    .tracing
                    .as_ref()
                    .is_some_and(|t| t.zipkin.is_some())
        }
    }
}

/// The selector-matched Telemetries of a workload, for its [`Scope`].
pub(crate) fn workload_keys(
    snapshot: &Snapshot,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<ObjectKey> {
    snapshot.telemetries.workload_keys(namespace, labels)
}

/// Clusters tracing needs beyond the services': the legacy Zipkin collector's.
pub(crate) fn clusters(snapshot: &Snapshot) -> Vec<Cluster> {
    tracing::legacy_zipkin_cluster(snapshot)
        .into_iter()
        .collect()
}
