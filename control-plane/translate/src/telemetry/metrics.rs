//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`, …,
//! `istio_tcp_*`) from stock Envoy: Envoy's stats access logger counts every request and
//! connection inside the proxy, tagged from access-log operators. Nothing per request reaches
//! meshd.
//!
//! Where each label comes from:
//! - the proxy's own workload: its node metadata (`meshd bootstrap` writes it), read once per
//!   connection into filter state ([`own_filter`]), so listeners stay the same bytes for every
//!   proxy they are generated for — outbound ones for a namespace's sidecars, a server's inbound
//!   ones for every pod with the same ports and policies (not one copy per pod);
//! - the destination, at the source: the endpoint's metadata meshd puts in EDS
//!   ([`endpoint_metadata`]) and the cluster's service ([`cluster_metadata`]);
//! - the source, at the destination: a header the client sidecar sets on every request it sends
//!   (replacing any value the app sent, see [`peer_header`]) and the server sidecar moves into
//!   dynamic metadata and removes before the app sees it ([`peer_filter`]). The header also
//!   names the service the client addressed, so both sides report the same `destination_service`.
//!   TCP has no such channel: a server reports TCP peers by their certificate only.
//!
//! The stats live under Envoy's stat namespace [`STAT_NAMESPACE`]; the 15090 scrape listener
//! strips `envoy_istiocustom_` from their Prometheus names (see the bootstrap).

mod peer;
mod tags;

use std::collections::BTreeMap;

use meshd_model::ServiceModel;
use meshd_model::telemetry::{IstioMetric, SideMetrics};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, AndFilter, LogTypeFilter, access_log, access_log_filter,
};
use meshd_proto::pb::envoy::config::core::v3::Metadata;
use meshd_proto::pb::envoy::data::accesslog::v3::AccessLogType;
use meshd_proto::pb::envoy::extensions::access_loggers::stats::v3::Config as StatsConfig;
use meshd_proto::pb::envoy::extensions::access_loggers::stats::v3::config::{
    Counter, Histogram, Stat, Tag, histogram,
};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use meshd_proto::pb::envoy::r#type::v3::Scope as StatsScope;
use meshd_proto::pb::google::protobuf::{Struct, UInt64Value};
use meshd_proto::pb::xds::r#type::matcher::v3::string_matcher;

pub(crate) use peer::{own_filter, peer_header};
use tags::{empty_becomes, field_matcher, fixed, format_tag, or_unknown, value_rules};

use crate::util::{ordered_metadata, ordered_struct};

/// Envoy's stat namespace of the metrics: Istio's, whose stats Prometheus sees without the
/// `envoy_` prefix.
pub const STAT_NAMESPACE: &str = "istiocustom";
/// What the 15090 listener strips from the Prometheus names of the metrics.
pub const PROMETHEUS_PREFIX: &str = "envoy_istiocustom_";
/// The request header a client sidecar sends its workload and the addressed service in:
/// `workload;namespace;canonical service;canonical revision;cluster;service host;service name;
/// service namespace`.
pub const PEER_HEADER: &str = "x-meshd-peer";
/// The dynamic metadata namespace the server sidecar moves [`PEER_HEADER`]'s fields into.
const PEER_METADATA: &str = "meshd.peer";
/// [`PEER_HEADER`]'s fields, in order.
const PEER_FIELDS: [&str; 8] = [
    "workload",
    "namespace",
    "canonical_service",
    "canonical_revision",
    "cluster",
    "service_host",
    "service_name",
    "service_namespace",
];
/// Where meshd puts a workload's names in EDS endpoint metadata and a service's in cluster
/// metadata (Envoy's metadata namespace).
const ISTIO_METADATA: &str = "istio";
/// Istio's label value for anything not known.
const UNKNOWN: &str = "unknown";
const STATS_LOGGER: &str = "envoy.access_loggers.stats";
const HEADER_TO_METADATA: &str = "envoy.filters.http.header_to_metadata";
const SET_FILTER_STATE: &str = "envoy.filters.network.set_filter_state";

/// The proxy's own workload, in [`PEER_FIELDS`]' first five places: connection filter state that [`own_filter`] fills from node metadata once per
/// connection (through CEL, which costs ~25 µs per request if evaluated per stat instead).
const OWN: [&str; 5] = [
    "%FILTER_STATE(meshd.own.workload:PLAIN)%",
    "%FILTER_STATE(meshd.own.namespace:PLAIN)%",
    "%FILTER_STATE(meshd.own.canonical_service:PLAIN)%",
    "%FILTER_STATE(meshd.own.canonical_revision:PLAIN)%",
    "%FILTER_STATE(meshd.own.cluster:PLAIN)%",
];
/// The filter state keys of [`OWN`].
const OWN_KEYS: [&str; 5] = [
    "meshd.own.workload",
    "meshd.own.namespace",
    "meshd.own.canonical_service",
    "meshd.own.canonical_revision",
    "meshd.own.cluster",
];
/// Where [`OWN`] comes from: the node metadata `meshd bootstrap` writes.
const NODE_METADATA: [&str; 5] = [
    "%CEL(xds.node.metadata.WORKLOAD_NAME)%",
    "%CEL(xds.node.metadata.NAMESPACE)%",
    "%CEL(xds.node.metadata.LABELS['service.istio.io/canonical-name'])%",
    "%CEL(xds.node.metadata.LABELS['service.istio.io/canonical-revision'])%",
    "%CEL(xds.node.metadata.CLUSTER_ID)%",
];
/// The upstream endpoint's workload (EDS metadata), in the same order.
const UPSTREAM: [&str; 5] = [
    "%UPSTREAM_METADATA(istio:workload_name)%",
    "%UPSTREAM_METADATA(istio:workload_namespace)%",
    "%UPSTREAM_METADATA(istio:canonical_service)%",
    "%UPSTREAM_METADATA(istio:canonical_revision)%",
    "%UPSTREAM_METADATA(istio:cluster_id)%",
];
/// The upstream cluster's service: host, name, namespace.
const SERVICE: [&str; 3] = [
    "%CLUSTER_METADATA(istio:service_host)%",
    "%CLUSTER_METADATA(istio:service_name)%",
    "%CLUSTER_METADATA(istio:service_namespace)%",
];
/// Label names of a workload, after `source_` or `destination_`, in [`OWN`]'s order.
const WORKLOAD_LABELS: [&str; 5] = [
    "workload",
    "workload_namespace",
    "canonical_service",
    "canonical_revision",
    "cluster",
];

/// Which side of the traffic a proxy's listeners report (Istio's `reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reporter {
    /// A client sidecar's outbound listeners, or a gateway's.
    Source,
    /// A server sidecar's inbound listener.
    Destination,
}

/// What a proxy's listeners get for the metrics of one side: a stats logger for the HTTP
/// metrics this side reports, and for TCP one when the upstream connection is made and one when
/// it closes; `None` where it reports none of them.
pub(crate) struct Metrics {
    reporter: Reporter,
    http: Option<AccessLog>,
    tcp_opened: Option<AccessLog>,
    tcp_closed: Option<AccessLog>,
}

impl Metrics {
    /// The loggers of `side`'s metrics; `None` when it reports none. They name the proxy from
    /// connection filter state, which [`own_filter`] fills.
    pub(crate) fn new(reporter: Reporter, side: &SideMetrics) -> Option<Metrics> {
        if side.is_off() {
            return None;
        }
        let own = OWN.map(str::to_string);
        Some(Metrics {
            reporter,
            http: http_logger(reporter, &own, side),
            tcp_opened: tcp_logger(reporter, &own, AccessLogType::TcpUpstreamConnected, side),
            tcp_closed: tcp_logger(reporter, &own, AccessLogType::TcpConnectionEnd, side),
        })
    }

    pub(crate) fn http(&self) -> Option<&AccessLog> {
        self.http.as_ref()
    }

    /// The loggers of a TCP proxy: one when the upstream connection is made (the TCP proxy must
    /// flush its logs then, see [`Metrics::counts_on_connect`]), one when the connection closes.
    pub(crate) fn tcp(&self) -> impl Iterator<Item = &AccessLog> {
        self.tcp_opened.iter().chain(self.tcp_closed.iter())
    }

    pub(crate) fn counts_on_connect(&self) -> bool {
        self.tcp_opened.is_some()
    }

    /// Whether the HTTP (or TCP) loggers read the proxy's names from connection filter state,
    /// which [`own_filter`] must then set first on each filter chain.
    pub(crate) fn needs_own_filter(&self, http: bool, tcp: bool) -> bool {
        (http && self.http.is_some()) || (tcp && self.tcp().next().is_some())
    }

    /// The HTTP filter a server's connection managers run first, if this side has one: it
    /// reads the client's [`PEER_HEADER`] for the HTTP metrics.
    pub(crate) fn http_filter(&self) -> Option<HttpFilter> {
        (self.reporter == Reporter::Destination && self.http.is_some()).then(peer::peer_filter)
    }
}

/// `log`, no longer written when a TCP proxy flushes on connect (only the metrics want that).
pub(crate) fn not_on_connect(mut log: AccessLog) -> AccessLog {
    let skip = AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::LogTypeFilter(
            LogTypeFilter {
                types: vec![AccessLogType::TcpUpstreamConnected as i32],
                exclude: true,
            },
        )),
    };
    log.filter = Some(match log.filter.take() {
        None => skip,
        Some(other) => AccessLogFilter {
            filter_specifier: Some(access_log_filter::FilterSpecifier::AndFilter(AndFilter {
                filters: vec![other, skip],
            })),
        },
    });
    log
}

/// EDS metadata naming the workload behind an endpoint, as the source side reports it.
pub(crate) fn endpoint_metadata(
    pod: Option<&str>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Struct {
    let names = pod.map(|pod| super::WorkloadNames::of(pod, namespace, labels));
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| UNKNOWN.to_string());
    ordered_struct(&[
        (
            "workload_name",
            or_unknown(pod.map(|pod| super::workload_name(pod, labels).to_string())),
        ),
        ("workload_namespace", namespace.to_string()),
        (
            "canonical_service",
            or_unknown(names.as_ref().map(|n| n.canonical_service.clone())),
        ),
        (
            "canonical_revision",
            or_unknown(names.as_ref().map(|n| n.canonical_revision.clone())),
        ),
        ("cluster_id", super::CLUSTER_ID.to_string()),
    ])
}

/// An outbound cluster's metadata: the config it came from (`istio.config`) and its service.
pub(crate) fn cluster_metadata(config: &str, svc: &ServiceModel) -> Option<Metadata> {
    let istio = ordered_struct(&[
        ("config", config.to_string()),
        ("service_host", svc.hostname.clone()),
        ("service_name", svc.name.clone()),
        ("service_namespace", svc.namespace.clone()),
    ]);
    Some(ordered_metadata(vec![(ISTIO_METADATA, istio)]))
}

/// PassthroughCluster's and BlackHoleCluster's metadata: Istio reports them as the service name.
pub(crate) fn catch_all_metadata(cluster: &str) -> Option<Metadata> {
    let istio = ordered_struct(&[("service_name", cluster.to_string())]);
    Some(ordered_metadata(vec![(ISTIO_METADATA, istio)]))
}

/// Istio's labels of one side, up to the protocol-specific ones.
fn peer_tags(reporter: Reporter, own: &[String; 5], tcp: bool) -> Vec<Tag> {
    let mut tags = vec![fixed(
        "reporter",
        match reporter {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        },
    )];
    let peer_field = |i: usize| format!("%DYNAMIC_METADATA({PEER_METADATA}:{})%", PEER_FIELDS[i]);
    // The proxy's own names are always in its node metadata, and the peer filter writes
    // `unknown` for a client that sent none: those need no rewriting of empty values, which keeps
    // the config small (every tag is repeated in each of the four stats).
    for (i, label) in WORKLOAD_LABELS.iter().enumerate() {
        let source = match reporter {
            Reporter::Source => own[i].clone(),
            // TCP carries no header: the client is known by its certificate only.
            Reporter::Destination if tcp => UNKNOWN.to_string(),
            Reporter::Destination => peer_field(i),
        };
        tags.push(format_tag(&format!("source_{label}"), &source));
    }
    let (source_principal, destination_principal) = match reporter {
        Reporter::Source => ("%UPSTREAM_LOCAL_URI_SAN%", "%UPSTREAM_PEER_URI_SAN%"),
        Reporter::Destination => ("%DOWNSTREAM_PEER_URI_SAN%", "%DOWNSTREAM_LOCAL_URI_SAN%"),
    };
    tags.push(or_unknown("source_principal", source_principal));
    for (i, label) in WORKLOAD_LABELS.iter().enumerate() {
        let name = format!("destination_{label}");
        tags.push(match reporter {
            // No upstream host (no route, no healthy endpoint): `unknown`.
            Reporter::Source => or_unknown(&name, UPSTREAM[i]),
            Reporter::Destination => format_tag(&name, &own[i]),
        });
    }
    tags.push(or_unknown("destination_principal", destination_principal));
    for (i, label) in ["service", "service_name", "service_namespace"]
        .iter()
        .enumerate()
    {
        let service = match reporter {
            Reporter::Source => SERVICE[i].to_string(),
            Reporter::Destination if tcp => UNKNOWN.to_string(),
            Reporter::Destination => peer_field(5 + i),
        };
        tags.push(or_unknown(&format!("destination_{label}"), &service));
    }
    tags
}

fn security_policy(reporter: Reporter) -> Tag {
    match reporter {
        Reporter::Source => fixed("connection_security_policy", UNKNOWN),
        // A client certificate's URI SAN means the connection was mutual TLS.
        Reporter::Destination => Tag {
            name: "connection_security_policy".to_string(),
            value_format: "%DOWNSTREAM_PEER_URI_SAN%".to_string(),
            rules: Some(value_rules(vec![empty_becomes("none")], Some("mutual_tls"))),
        },
    }
}

fn http_logger(reporter: Reporter, own: &[String; 5], side: &SideMetrics) -> Option<AccessLog> {
    let mut tags = peer_tags(reporter, own, false);
    tags.push(Tag {
        name: "request_protocol".to_string(),
        value_format: "%REQ(CONTENT-TYPE)%".to_string(),
        rules: Some(value_rules(
            vec![field_matcher(
                string_matcher::MatchPattern::Prefix("application/grpc".to_string()),
                "grpc",
            )],
            Some("http"),
        )),
    });
    tags.push(format_tag("response_code", "%RESPONSE_CODE%"));
    // Empty for plain HTTP, as in Istio.
    tags.push(format_tag("grpc_response_status", "%GRPC_STATUS_NUMBER%"));
    tags.push(format_tag("response_flags", "%RESPONSE_FLAGS%"));
    tags.push(security_policy(reporter));
    let counters: Vec<Counter> = stat(side, IstioMetric::RequestCount, &tags)
        .map(|stat| Counter {
            stat: Some(stat),
            value_fixed: Some(UInt64Value { value: 1 }),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let histograms: Vec<Histogram> = [
        (
            IstioMetric::RequestDuration,
            histogram::Unit::Milliseconds,
            "%DURATION%",
        ),
        (
            IstioMetric::RequestSize,
            histogram::Unit::Bytes,
            "%DOWNSTREAM_WIRE_BYTES_RECEIVED%",
        ),
        (
            IstioMetric::ResponseSize,
            histogram::Unit::Bytes,
            "%DOWNSTREAM_WIRE_BYTES_SENT%",
        ),
    ]
    .into_iter()
    .filter_map(|(metric, unit, value)| {
        stat(side, metric, &tags).map(|stat| Histogram {
            stat: Some(stat),
            unit: unit as i32,
            value_format: value.to_string(),
        })
    })
    .collect();
    if counters.is_empty() && histograms.is_empty() {
        return None;
    }
    Some(stats_logger(StatsConfig {
        stats_scope: Some(StatsScope {
            prefix: STAT_NAMESPACE.to_string(),
            ..Default::default()
        }),
        counters,
        histograms,
        ..Default::default()
    }))
}

/// `metric` with `tags` less the labels a Telemetry removed, if `side` reports it.
fn stat(side: &SideMetrics, metric: IstioMetric, tags: &[Tag]) -> Option<Stat> {
    let labels = side.labels(metric)?;
    Some(Stat {
        name: metric.prometheus_name().to_string(),
        tags: tags
            .iter()
            .filter(|t| !labels.removed.contains(&t.name))
            .cloned()
            .collect(),
    })
}

/// The TCP metrics counted at `when`: the opened connections when the upstream connection is
/// made; the closed ones and their bytes when it ends.
fn tcp_logger(
    reporter: Reporter,
    own: &[String; 5],
    when: AccessLogType,
    side: &SideMetrics,
) -> Option<AccessLog> {
    let mut tags = peer_tags(reporter, own, true);
    tags.push(fixed("request_protocol", "tcp"));
    tags.push(format_tag("response_flags", "%RESPONSE_FLAGS%"));
    tags.push(security_policy(reporter));
    let counter = |metric: IstioMetric, value: Option<&str>| {
        stat(side, metric, &tags).map(|stat| Counter {
            stat: Some(stat),
            value_format: value.unwrap_or_default().to_string(),
            value_fixed: value.is_none().then_some(UInt64Value { value: 1 }),
        })
    };
    let counters: Vec<Counter> = if when == AccessLogType::TcpUpstreamConnected {
        vec![counter(IstioMetric::TcpOpenedConnections, None)]
    } else {
        vec![
            counter(IstioMetric::TcpClosedConnections, None),
            counter(IstioMetric::TcpSentBytes, Some("%BYTES_SENT%")),
            counter(IstioMetric::TcpReceivedBytes, Some("%BYTES_RECEIVED%")),
        ]
    }
    .into_iter()
    .flatten()
    .collect();
    if counters.is_empty() {
        return None;
    }
    let mut log = stats_logger(StatsConfig {
        stats_scope: Some(StatsScope {
            prefix: STAT_NAMESPACE.to_string(),
            ..Default::default()
        }),
        counters,
        ..Default::default()
    });
    log.filter = Some(AccessLogFilter {
        filter_specifier: Some(access_log_filter::FilterSpecifier::LogTypeFilter(
            LogTypeFilter {
                types: vec![when as i32],
                exclude: false,
            },
        )),
    });
    Some(log)
}

fn stats_logger(config: StatsConfig) -> AccessLog {
    AccessLog {
        name: STATS_LOGGER.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&config))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
