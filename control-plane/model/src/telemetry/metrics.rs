//! Which of Istio's standard metrics a proxy reports, per side, as istiod merges the `metrics`
//! rules of the Telemetries that apply (`mergeMetrics`): the providers in scope are those the
//! most specific rule naming any names (else `defaultProviders.metrics`); each rule's overrides
//! then turn metrics off or on and remove labels, later ones over earlier ones, a rule without
//! providers acting on its parent's. `ALL_METRICS` disabled drops a side's metrics altogether,
//! until a later override (of any metric) for that side brings them back. meshd reports through
//! providers of kind `prometheus` only (Istio's built-in `prometheus` among them).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::WorkloadMode;
use crate::mesh_config::MeshConfig;

/// Istio's standard metrics, as the Telemetry API names them (`MetricSelector.IstioMetric`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IstioMetric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

impl IstioMetric {
    pub const ALL: [IstioMetric; 10] = [
        IstioMetric::RequestCount,
        IstioMetric::RequestDuration,
        IstioMetric::RequestSize,
        IstioMetric::ResponseSize,
        IstioMetric::TcpOpenedConnections,
        IstioMetric::TcpClosedConnections,
        IstioMetric::TcpSentBytes,
        IstioMetric::TcpReceivedBytes,
        IstioMetric::GrpcRequestMessages,
        IstioMetric::GrpcResponseMessages,
    ];

    /// The Telemetry API's name (`REQUEST_COUNT`).
    pub fn api_name(self) -> &'static str {
        match self {
            IstioMetric::RequestCount => "REQUEST_COUNT",
            IstioMetric::RequestDuration => "REQUEST_DURATION",
            IstioMetric::RequestSize => "REQUEST_SIZE",
            IstioMetric::ResponseSize => "RESPONSE_SIZE",
            IstioMetric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
            IstioMetric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
            IstioMetric::TcpSentBytes => "TCP_SENT_BYTES",
            IstioMetric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
            IstioMetric::GrpcRequestMessages => "GRPC_REQUEST_MESSAGES",
            IstioMetric::GrpcResponseMessages => "GRPC_RESPONSE_MESSAGES",
        }
    }

    pub fn from_api_name(name: &str) -> Option<IstioMetric> {
        IstioMetric::ALL.into_iter().find(|m| m.api_name() == name)
    }

    /// The Prometheus name it is reported under.
    pub fn prometheus_name(self) -> &'static str {
        match self {
            IstioMetric::RequestCount => "istio_requests_total",
            IstioMetric::RequestDuration => "istio_request_duration_milliseconds",
            IstioMetric::RequestSize => "istio_request_bytes",
            IstioMetric::ResponseSize => "istio_response_bytes",
            IstioMetric::TcpOpenedConnections => "istio_tcp_connections_opened_total",
            IstioMetric::TcpClosedConnections => "istio_tcp_connections_closed_total",
            IstioMetric::TcpSentBytes => "istio_tcp_sent_bytes_total",
            IstioMetric::TcpReceivedBytes => "istio_tcp_received_bytes_total",
            IstioMetric::GrpcRequestMessages => "istio_request_messages_total",
            IstioMetric::GrpcResponseMessages => "istio_response_messages_total",
        }
    }
}

/// What an override is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum MetricMatch {
    /// `ALL_METRICS`, or no `match.metric` at all.
    All,
    Istio(IstioMetric),
    /// A metric of the user's own (`customMetric`): not reported by meshd.
    Custom(String),
}

/// A label an override changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TagOverride {
    Remove,
    /// Set to the value of a CEL expression.
    Upsert(String),
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsOverride {
    pub metric: MetricMatch,
    pub mode: WorkloadMode,
    pub disabled: Option<bool>,
    pub tags: BTreeMap<String, TagOverride>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MetricsRule {
    pub providers: Vec<String>,
    pub overrides: Vec<MetricsOverride>,
}

/// How one metric is reported: the labels taken away and the ones set by CEL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricLabels {
    pub removed: BTreeSet<String>,
    pub upserted: BTreeMap<String, String>,
}

/// The metrics one side of a proxy reports (empty: none, and no stats logger).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideMetrics {
    pub metrics: BTreeMap<IstioMetric, MetricLabels>,
}

impl SideMetrics {
    /// Every standard metric with every label: what a proxy reports with no Telemetry.
    pub fn all() -> SideMetrics {
        SideMetrics {
            metrics: IstioMetric::ALL
                .into_iter()
                .map(|m| (m, MetricLabels::default()))
                .collect(),
        }
    }

    pub fn is_off(&self) -> bool {
        self.metrics.is_empty()
    }

    pub fn reports(&self, metric: IstioMetric) -> bool {
        self.metrics.contains_key(&metric)
    }

    pub fn labels(&self, metric: IstioMetric) -> Option<&MetricLabels> {
        self.metrics.get(&metric)
    }
}

/// The metrics of both sides of a proxy: client (outbound, gateways) and server (inbound).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsChoice {
    pub client: SideMetrics,
    pub server: SideMetrics,
}

/// One metric's override state as the rules leave it.
#[derive(Clone, Debug, Default)]
struct Merged {
    disabled: Option<bool>,
    tags: BTreeMap<String, TagOverride>,
}

/// One provider's state for one side.
#[derive(Clone, Debug, Default)]
struct SideState {
    all_disabled: bool,
    metrics: BTreeMap<IstioMetric, Merged>,
}

fn sides(mode: WorkloadMode) -> &'static [usize] {
    match mode {
        WorkloadMode::Client => &[0],
        WorkloadMode::Server => &[1],
        WorkloadMode::ClientAndServer => &[0, 1],
    }
}

/// istiod's `mergeMetrics`, for the providers meshd reports through: `rules` least specific
/// first.
pub(super) fn merge(rules: &[&MetricsRule], mesh: &MeshConfig) -> MetricsChoice {
    let defaults = &mesh.default_providers.metrics;
    let mut providers: BTreeMap<String, [SideState; 2]> = BTreeMap::new();
    if rules.is_empty() {
        for p in defaults {
            providers.insert(p.clone(), Default::default());
        }
    }
    let in_scope: BTreeSet<&String> = rules
        .iter()
        .map(|r| &r.providers)
        .rfind(|p| !p.is_empty())
        .unwrap_or(defaults)
        .iter()
        .collect();
    let mut parent = defaults;
    for rule in rules {
        let names = if rule.providers.is_empty() {
            parent
        } else {
            &rule.providers
        };
        parent = names;
        for provider in names.iter().filter(|p| in_scope.contains(p)) {
            let state = providers.entry(provider.clone()).or_default();
            for o in &rule.overrides {
                let metrics: Vec<IstioMetric> = match &o.metric {
                    MetricMatch::All if o.disabled == Some(true) => {
                        for &side in sides(o.mode) {
                            state[side].all_disabled = true;
                        }
                        continue;
                    }
                    MetricMatch::All => IstioMetric::ALL.to_vec(),
                    MetricMatch::Istio(m) => vec![*m],
                    // Custom metrics are not reported; naming one still re-enables the side,
                    // as in istiod.
                    MetricMatch::Custom(_) => Vec::new(),
                };
                for &side in sides(o.mode) {
                    state[side].all_disabled = false;
                    for m in &metrics {
                        let merged = state[side].metrics.entry(*m).or_default();
                        if o.disabled.is_some() {
                            merged.disabled = o.disabled;
                        }
                        merged
                            .tags
                            .extend(o.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
            }
        }
    }
    // Only providers of kind `prometheus` are implemented; with several, the first by name.
    let Some([client, server]) = providers
        .into_iter()
        .find(|(name, _)| mesh.provider(name).is_some_and(|p| p.is_prometheus()))
        .map(|(_, state)| state)
    else {
        return MetricsChoice::default();
    };
    MetricsChoice {
        client: side_metrics(client),
        server: side_metrics(server),
    }
}

fn side_metrics(state: SideState) -> SideMetrics {
    if state.all_disabled {
        return SideMetrics::default();
    }
    let mut out = SideMetrics::all();
    for (metric, merged) in state.metrics {
        if merged.disabled == Some(true) {
            out.metrics.remove(&metric);
            continue;
        }
        let labels = out.metrics.entry(metric).or_default();
        for (name, tag) in merged.tags {
            match tag {
                TagOverride::Remove => {
                    labels.removed.insert(name);
                }
                TagOverride::Upsert(value) => {
                    labels.upserted.insert(name, value);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
