//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`, …,
//! `istio_tcp_*`) from stock Envoy: Envoy's stats access logger counts every request and
//! connection inside the proxy, tagged from access-log operators. Nothing per request reaches
//! meshd.
//!
//! Where each label comes from:
//! - the proxy's own workload: on a server's inbound listener (its alone) fixed strings; on
//!   listeners several workloads share (outbound, gateways) its node metadata (`meshd bootstrap`
//!   writes it), read once per connection into filter state ([`own_filter`]), so they stay
//!   shared;
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

use std::collections::BTreeMap;

use meshd_model::ServiceModel;
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::accesslog::v3::{
    AccessLog, AccessLogFilter, AndFilter, LogTypeFilter, access_log, access_log_filter,
};
use meshd_proto::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, Metadata, SubstitutionFormatString, data_source,
    substitution_format_string,
};
use meshd_proto::pb::envoy::config::listener::v3::{Filter, filter};
use meshd_proto::pb::envoy::data::accesslog::v3::AccessLogType;
use meshd_proto::pb::envoy::extensions::access_loggers::stats::v3::Config as StatsConfig;
use meshd_proto::pb::envoy::extensions::access_loggers::stats::v3::config::{
    Counter, Histogram, Stat, Tag, histogram,
};
use meshd_proto::pb::envoy::extensions::filters::common::set_filter_state::v3::{
    FilterStateValue, filter_state_value,
};
use meshd_proto::pb::envoy::extensions::filters::http::header_to_metadata::v3::Config as HeaderToMetadata;
use meshd_proto::pb::envoy::extensions::filters::http::header_to_metadata::v3::config::{
    KeyValuePair, Rule,
};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use meshd_proto::pb::envoy::extensions::filters::network::set_filter_state::v3::Config as SetFilterState;
use meshd_proto::pb::envoy::extensions::matching::actions::transform_stat::v3::TransformStat;
use meshd_proto::pb::envoy::extensions::matching::actions::transform_stat::v3::transform_stat::UpdateTag;
use meshd_proto::pb::envoy::extensions::matching::common_inputs::stats::v3::StatTagValueInput;
use meshd_proto::pb::envoy::r#type::matcher::v3::{RegexMatchAndSubstitute, RegexMatcher};
use meshd_proto::pb::envoy::r#type::v3::Scope as StatsScope;
use meshd_proto::pb::google::protobuf::{Struct, UInt64Value};
use meshd_proto::pb::xds::core::v3::TypedExtensionConfig;
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::single_predicate;
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::matcher_list::{
    FieldMatcher, Predicate, predicate,
};
use meshd_proto::pb::xds::r#type::matcher::v3::matcher::{
    MatcherList, MatcherType, OnMatch, on_match,
};
use meshd_proto::pb::xds::r#type::matcher::v3::{Matcher, StringMatcher, string_matcher};

use crate::hcm::http_filter;
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

/// The proxy's own workload on listeners several workloads share, in [`PEER_FIELDS`]' first
/// five places: connection filter state that [`own_filter`] fills from node metadata once per
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

/// What a proxy's listeners get for the metrics of one side.
pub(crate) struct Metrics {
    reporter: Reporter,
    /// Listeners several workloads share: the proxy's own names come from [`own_filter`].
    shared: bool,
    http: AccessLog,
    tcp_opened: AccessLog,
    tcp_closed: AccessLog,
}

impl Metrics {
    /// `own`: the proxy's own workload labels in [`WORKLOAD_LABELS`]' order, where its
    /// listeners are its own (a server's inbound listener): fixed strings cost nothing per
    /// request, where reading node metadata costs a filter per connection. Without, listeners
    /// shared by several workloads read them from connection filter state ([`own_filter`]).
    pub(crate) fn new(reporter: Reporter, own: Option<[String; 5]>) -> Metrics {
        let shared = own.is_none();
        let own = own
            .map(|names| names.map(|n| if n.is_empty() { UNKNOWN.to_string() } else { n }))
            .unwrap_or_else(|| OWN.map(str::to_string));
        Metrics {
            reporter,
            shared,
            http: http_logger(reporter, &own),
            tcp_opened: tcp_logger(reporter, &own, AccessLogType::TcpUpstreamConnected),
            tcp_closed: tcp_logger(reporter, &own, AccessLogType::TcpConnectionEnd),
        }
    }

    pub(crate) fn reporter(&self) -> Reporter {
        self.reporter
    }

    pub(crate) fn http(&self) -> &AccessLog {
        &self.http
    }

    /// The loggers of a TCP proxy: one when the upstream connection is made (the TCP proxy must
    /// flush its logs then), one when the connection closes.
    pub(crate) fn tcp(&self) -> [&AccessLog; 2] {
        [&self.tcp_opened, &self.tcp_closed]
    }

    /// Whether the loggers read the proxy's names from connection filter state, which
    /// [`own_filter`] must then set first on each filter chain.
    pub(crate) fn needs_own_filter(&self) -> bool {
        self.shared
    }

    /// The HTTP filter a server's connection managers run first, if this side has one.
    pub(crate) fn http_filter(&self) -> Option<HttpFilter> {
        (self.reporter == Reporter::Destination).then(peer_filter)
    }
}

/// The network filter that reads the proxy's own names from its node metadata into connection
/// filter state ([`OWN`]), first on every filter chain of a listener that reads them.
pub(crate) fn own_filter() -> Filter {
    let values = OWN_KEYS
        .iter()
        .zip(NODE_METADATA)
        .map(|(key, format)| FilterStateValue {
            key: Some(filter_state_value::Key::ObjectKey(key.to_string())),
            factory_key: "envoy.string".to_string(),
            value: Some(filter_state_value::Value::FormatString(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormatSource(
                        DataSource {
                            specifier: Some(data_source::Specifier::InlineString(
                                format.to_string(),
                            )),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        })
        .collect();
    Filter {
        name: SET_FILTER_STATE.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(pack(&SetFilterState {
            on_new_connection: values,
            ..Default::default()
        }))),
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

/// The header every request a client sidecar or gateway sends carries its workload in; set on
/// its route configurations, replacing whatever the app sent.
pub(crate) fn peer_header() -> HeaderValueOption {
    let value = OWN
        .iter()
        .chain(SERVICE.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(";");
    HeaderValueOption {
        header: Some(HeaderValue {
            key: PEER_HEADER.to_string(),
            value,
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// Moves [`PEER_HEADER`]'s fields into dynamic metadata and removes the header, so the app never
/// sees it; `unknown` for a client that sent none.
fn peer_filter() -> HttpFilter {
    let last = PEER_FIELDS.len() - 1;
    let request_rules = PEER_FIELDS
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let pair = |value: &str| KeyValuePair {
                metadata_namespace: PEER_METADATA.to_string(),
                key: key.to_string(),
                value: value.to_string(),
                ..Default::default()
            };
            Rule {
                header: PEER_HEADER.to_string(),
                on_header_present: Some(KeyValuePair {
                    regex_value_rewrite: Some(RegexMatchAndSubstitute {
                        pattern: Some(RegexMatcher {
                            regex: format!("^(?:[^;]*;){{{i}}}([^;]*).*$"),
                            ..Default::default()
                        }),
                        substitution: "\\1".to_string(),
                    }),
                    ..pair("")
                }),
                on_header_missing: Some(pair(UNKNOWN)),
                // Each rule reads the header; the last one takes it away.
                remove: i == last,
                ..Default::default()
            }
        })
        .collect();
    http_filter(
        HEADER_TO_METADATA,
        pack(&HeaderToMetadata {
            request_rules,
            ..Default::default()
        }),
    )
}

/// A workload's own labels in [`WORKLOAD_LABELS`]' order, named as EDS names it to its clients.
pub(crate) fn own_names(
    pod: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> [String; 5] {
    let names = super::WorkloadNames::of(pod, namespace, labels);
    [
        super::workload_name(pod, labels).to_string(),
        namespace.to_string(),
        names.canonical_service,
        names.canonical_revision,
        super::CLUSTER_ID.to_string(),
    ]
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

fn http_logger(reporter: Reporter, own: &[String; 5]) -> AccessLog {
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
    let stat = |name: &str| Stat {
        name: name.to_string(),
        tags: tags.clone(),
    };
    let histogram = |name: &str, unit: histogram::Unit, value: &str| Histogram {
        stat: Some(stat(name)),
        unit: unit as i32,
        value_format: value.to_string(),
    };
    stats_logger(StatsConfig {
        stats_scope: Some(StatsScope {
            prefix: STAT_NAMESPACE.to_string(),
            ..Default::default()
        }),
        counters: vec![Counter {
            stat: Some(stat("istio_requests_total")),
            value_fixed: Some(UInt64Value { value: 1 }),
            ..Default::default()
        }],
        histograms: vec![
            histogram(
                "istio_request_duration_milliseconds",
                histogram::Unit::Milliseconds,
                "%DURATION%",
            ),
            histogram(
                "istio_request_bytes",
                histogram::Unit::Bytes,
                "%DOWNSTREAM_WIRE_BYTES_RECEIVED%",
            ),
            histogram(
                "istio_response_bytes",
                histogram::Unit::Bytes,
                "%DOWNSTREAM_WIRE_BYTES_SENT%",
            ),
        ],
        ..Default::default()
    })
}

/// The TCP metrics counted at `when`: the opened connections when the upstream connection is
/// made; the closed ones and their bytes when it ends.
fn tcp_logger(reporter: Reporter, own: &[String; 5], when: AccessLogType) -> AccessLog {
    let mut tags = peer_tags(reporter, own, true);
    tags.push(fixed("request_protocol", "tcp"));
    tags.push(format_tag("response_flags", "%RESPONSE_FLAGS%"));
    tags.push(security_policy(reporter));
    let counter = |name: &str, value: Option<&str>| Counter {
        stat: Some(Stat {
            name: name.to_string(),
            tags: tags.clone(),
        }),
        value_format: value.unwrap_or_default().to_string(),
        value_fixed: value.is_none().then_some(UInt64Value { value: 1 }),
    };
    let counters = if when == AccessLogType::TcpUpstreamConnected {
        vec![counter("istio_tcp_connections_opened_total", None)]
    } else {
        vec![
            counter("istio_tcp_connections_closed_total", None),
            counter("istio_tcp_sent_bytes_total", Some("%BYTES_SENT%")),
            counter("istio_tcp_received_bytes_total", Some("%BYTES_RECEIVED%")),
        ]
    };
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
    log
}

fn stats_logger(config: StatsConfig) -> AccessLog {
    AccessLog {
        name: STATS_LOGGER.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&config))),
        ..Default::default()
    }
}

fn fixed(name: &str, value: &str) -> Tag {
    format_tag(name, value)
}

fn format_tag(name: &str, format: &str) -> Tag {
    Tag {
        name: name.to_string(),
        value_format: format.to_string(),
        rules: None,
    }
}

/// A tag whose empty value (an operator with nothing to print) is Istio's `unknown`: written on
/// the scrape page (see the bootstrap's 15090 listener), not by a rule here, which would be
/// repeated in every tag of every stat of every listener.
fn or_unknown(name: &str, format: &str) -> Tag {
    format_tag(name, format)
}

fn empty_becomes(value: &str) -> FieldMatcher {
    field_matcher(string_matcher::MatchPattern::Exact(String::new()), value)
}

/// Rewrites a tag's value: the first matcher that matches sets it; `otherwise` sets it when none
/// does.
fn value_rules(matchers: Vec<FieldMatcher>, otherwise: Option<&str>) -> Matcher {
    Matcher {
        matcher_type: Some(MatcherType::MatcherList(MatcherList { matchers })),
        on_no_match: otherwise.map(|v| Box::new(set_tag(v))),
    }
}

fn field_matcher(pattern: string_matcher::MatchPattern, value: &str) -> FieldMatcher {
    FieldMatcher {
        predicate: Some(Predicate {
            match_type: Some(predicate::MatchType::SinglePredicate(
                predicate::SinglePredicate {
                    input: Some(TypedExtensionConfig {
                        name: "value".to_string(),
                        typed_config: Some(pack(&StatTagValueInput {})),
                    }),
                    matcher: Some(single_predicate::Matcher::ValueMatch(StringMatcher {
                        match_pattern: Some(pattern),
                        ..Default::default()
                    })),
                },
            )),
        }),
        on_match: Some(set_tag(value)),
    }
}

fn set_tag(value: &str) -> OnMatch {
    OnMatch {
        on_match: Some(on_match::OnMatch::Action(TypedExtensionConfig {
            name: "set".to_string(),
            typed_config: Some(pack(&TransformStat {
                update_tag: Some(UpdateTag {
                    new_tag_value: value.to_string(),
                }),
                ..Default::default()
            })),
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags_of(log: &AccessLog) -> Vec<String> {
        let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            panic!("no config");
        };
        let config: StatsConfig = meshd_proto::unpack(any).expect("stats config");
        config.counters[0]
            .stat
            .as_ref()
            .expect("stat")
            .tags
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    #[test]
    fn both_sides_report_istios_request_labels() {
        for reporter in [Reporter::Source, Reporter::Destination] {
            let tags = tags_of(&http_logger(reporter, &OWN.map(str::to_string)));
            for label in [
                "reporter",
                "source_workload",
                "source_workload_namespace",
                "source_canonical_service",
                "source_canonical_revision",
                "source_cluster",
                "source_principal",
                "destination_workload",
                "destination_workload_namespace",
                "destination_canonical_service",
                "destination_canonical_revision",
                "destination_cluster",
                "destination_principal",
                "destination_service",
                "destination_service_name",
                "destination_service_namespace",
                "request_protocol",
                "response_code",
                "grpc_response_status",
                "response_flags",
                "connection_security_policy",
            ] {
                assert!(
                    tags.iter().any(|t| t == label),
                    "{reporter:?} lacks {label}"
                );
            }
        }
    }

    #[test]
    fn peer_header_carries_the_fields_the_server_reads() {
        let header = peer_header().header.expect("header");
        assert_eq!(header.value.split(';').count(), PEER_FIELDS.len());
    }

    /// Every HTTP connection manager and TCP proxy carries these: their size is per listener
    /// (measured: 15.9 kB on the client side's connection managers, 12.9 kB on the server's).
    #[test]
    fn the_loggers_of_a_listener_stay_under_their_budget() {
        use prost::Message as _;
        for reporter in [Reporter::Source, Reporter::Destination] {
            let m = Metrics::new(reporter, None);
            assert!(m.http().encoded_len() < 17_000, "{reporter:?}");
            let tcp: usize = m.tcp().iter().map(|l| l.encoded_len()).sum();
            assert!(tcp < 15_000, "{reporter:?}");
        }
    }

    #[test]
    fn equal_endpoint_metadata_encodes_alike() {
        let labels = BTreeMap::from([("app".to_string(), "prices".to_string())]);
        let a = endpoint_metadata(Some("prices-1"), "default", &labels);
        let b = endpoint_metadata(Some("prices-1"), "default", &labels);
        assert_eq!(
            prost::Message::encode_to_vec(&a),
            prost::Message::encode_to_vec(&b)
        );
    }
}
