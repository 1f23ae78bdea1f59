//! The HTTP connection manager's tracer as istiod configures it
//! (`pilot/pkg/networking/core/tracing.go`): a Zipkin or OpenTelemetry provider from the mesh
//! config, sampling (`randomSamplingPercentage`, else `defaultConfig.tracing.sampling`, else 1%),
//! Istio's span tags and the user's.
//!
//! Where istiod leaves the tracer to the bootstrap (`defaultConfig.tracing.zipkin.address`, the
//! legacy path), meshd sends it with the listener instead, reporting through a CDS cluster
//! `zipkin` shaped like istiod's bootstrap one: stock Envoy gets the same tracer, and a changed
//! address needs no proxy restart.

use std::collections::BTreeMap;

use meshd_model::input::telemetry::CustomTag;
use meshd_model::mesh_config::ProviderKind;
use meshd_model::mesh_config::observability::{OpenTelemetryProvider, ZipkinProvider};
use meshd_model::telemetry::{AppliedTelemetry, TracingSpec, WorkloadMode};
use meshd_model::{NodeType, Snapshot};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use meshd_proto::pb::envoy::config::core::v3::{
    GrpcService, HttpService, HttpUri, grpc_service, http_uri,
};
use meshd_proto::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use meshd_proto::pb::envoy::config::trace::v3::{
    OpenTelemetryConfig, ZipkinConfig, tracing as trace, zipkin_config,
};
use meshd_proto::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use meshd_proto::pb::envoy::r#type::metadata::v3::{MetadataKey, MetadataKind, metadata_key, metadata_kind};
use meshd_proto::pb::envoy::r#type::tracing::v3::{CustomTag as EnvoyTag, custom_tag};
use meshd_proto::pb::envoy::r#type::v3::Percent;

use super::WorkloadNames;
use crate::Scope;
use crate::names::outbound_cluster;
use crate::util::{bool_value, duration, socket_address, u32_value};

/// The bootstrap-style cluster the legacy Zipkin tracer reports through, named as istiod's.
pub const LEGACY_ZIPKIN_CLUSTER: &str = "zipkin";
/// istiod's default share of requests traced (`PILOT_TRACE_SAMPLING`), in percent.
const DEFAULT_SAMPLING: f64 = 1.0;
const ZIPKIN: &str = "envoy.tracers.zipkin";
const OPENTELEMETRY: &str = "envoy.tracers.opentelemetry";
const ZIPKIN_PATH: &str = "/api/v2/spans";

/// What an HTTP connection manager of one side of a proxy traces with, if anything; and whether
/// the request id decides sampling (istiod's `useRequestIdForTraceSampling`).
pub(crate) struct HcmTracing {
    pub tracing: Tracing,
    pub use_request_id_for_trace_sampling: bool,
}

/// istiod's `configureTracing` for traffic on `side` of a proxy.
pub(crate) fn hcm_tracing(
    snapshot: &Snapshot,
    scope: &Scope,
    applied: &AppliedTelemetry<'_>,
    side: WorkloadMode,
    names: &WorkloadNames,
) -> Option<HcmTracing> {
    let mesh = &snapshot.mesh;
    let proxy_tracing = mesh.default_config.tracing.as_ref();
    let Some(choice) = applied.tracing(mesh) else {
        if !mesh.enable_tracing {
            return None;
        }
        // The legacy path: a tracer only where the proxy config names a Zipkin collector.
        proxy_tracing.and_then(|t| t.zipkin.as_ref())?;
        let mut tracing = Tracing {
            provider: Some(zipkin_http(legacy_zipkin())),
            spawn_upstream_span: spawn_upstream_span(scope),
            ..Default::default()
        };
        sampling(&mut tracing, proxy_sampling(snapshot));
        let istio_tags = proxy_tracing
            .and_then(|t| t.enable_istio_tags)
            .unwrap_or(true);
        tracing.custom_tags = tags(snapshot, names, istio_tags, None);
        tracing.max_path_tag_length = proxy_tracing
            .and_then(|t| t.max_path_tag_length)
            .and_then(u32_value);
        return Some(HcmTracing {
            tracing,
            use_request_id_for_trace_sampling: true,
        });
    };
    let spec = match side {
        WorkloadMode::Server => &choice.server,
        _ => &choice.client,
    };
    if spec.disabled {
        return None;
    }
    let provider = spec.provider.as_deref().and_then(|p| mesh.provider(p))?;
    let (http, max_tag_length) = match provider.kind()? {
        ProviderKind::Zipkin(z) => (
            zipkin_http(zipkin_provider(snapshot, scope, z)?),
            z.max_tag_length,
        ),
        ProviderKind::OpenTelemetry(o) => (
            otel_http(opentelemetry_provider(snapshot, scope, o, names)?),
            o.max_tag_length,
        ),
        ProviderKind::FileAccessLog(_) | ProviderKind::Other(_) => return None,
    };
    let mut tracing = Tracing {
        provider: Some(http),
        spawn_upstream_span: spawn_upstream_span(scope),
        no_context_propagation: spec.disable_context_propagation,
        ..Default::default()
    };
    sampling(
        &mut tracing,
        spec.random_sampling_percentage
            .unwrap_or_else(|| proxy_sampling(snapshot)),
    );
    tracing.custom_tags = tags(snapshot, names, spec.enable_istio_tags, Some(spec));
    tracing.max_path_tag_length = max_tag_length
        .filter(|l| *l != 0)
        .or_else(|| proxy_tracing.and_then(|t| t.max_path_tag_length))
        .and_then(u32_value);
    Some(HcmTracing {
        tracing,
        use_request_id_for_trace_sampling: spec.use_request_id_for_trace_sampling,
    })
}

/// Gateways start a child span for the upstream request, as istiod has them do.
fn spawn_upstream_span(scope: &Scope) -> Option<meshd_proto::pb::google::protobuf::BoolValue> {
    (scope.node_type == NodeType::Router)
        .then_some(true)
        .and_then(bool_value)
}

/// `defaultConfig.tracing.sampling`, unless unset or 0; above 100 it falls back to 1%.
fn proxy_sampling(snapshot: &Snapshot) -> f64 {
    match snapshot
        .mesh
        .default_config
        .tracing
        .as_ref()
        .and_then(|t| t.sampling)
    {
        Some(s) if s > 100.0 => DEFAULT_SAMPLING,
        Some(s) if s != 0.0 => s,
        _ => DEFAULT_SAMPLING,
    }
}

/// Every request reaching the tracer is a candidate; `random` percent of those without a prior
/// decision are traced.
fn sampling(tracing: &mut Tracing, random: f64) {
    tracing.client_sampling = Some(Percent { value: 100.0 });
    tracing.overall_sampling = Some(Percent { value: 100.0 });
    tracing.random_sampling = Some(Percent { value: random });
}

fn zipkin_http(config: ZipkinConfig) -> trace::Http {
    trace::Http {
        name: ZIPKIN.to_string(),
        config_type: Some(trace::http::ConfigType::TypedConfig(pack(&config))),
    }
}

fn otel_http(config: OpenTelemetryConfig) -> trace::Http {
    trace::Http {
        name: OPENTELEMETRY.to_string(),
        config_type: Some(trace::http::ConfigType::TypedConfig(pack(&config))),
    }
}

/// istiod's bootstrap Zipkin tracer.
fn legacy_zipkin() -> ZipkinConfig {
    ZipkinConfig {
        collector_cluster: LEGACY_ZIPKIN_CLUSTER.to_string(),
        collector_endpoint: ZIPKIN_PATH.to_string(),
        collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
        trace_id_128bit: true,
        shared_span_context: bool_value(false),
        ..Default::default()
    }
}

/// The cluster the legacy tracer reports through, as istiod's bootstrap has it; none unless the
/// proxy config names a Zipkin collector and tracing is on.
pub(crate) fn legacy_zipkin_cluster(snapshot: &Snapshot) -> Option<Cluster> {
    if !snapshot.mesh.enable_tracing {
        return None;
    }
    let address = &snapshot
        .mesh
        .default_config
        .tracing
        .as_ref()?
        .zipkin
        .as_ref()?
        .address;
    let (host, port) = address.rsplit_once(':')?;
    let port: u32 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(Cluster {
        name: LEGACY_ZIPKIN_CLUSTER.to_string(),
        alt_stat_name: "zipkin;".to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        dns_lookup_family: cluster::DnsLookupFamily::V4Only as i32,
        connect_timeout: Some(duration(1, 0)),
        lb_policy: cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: LEGACY_ZIPKIN_CLUSTER.to_string(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket_address(host, port)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// istiod's `LookupCluster`: `namespace/hostname`, or a hostname only one namespace has; the
/// hostname and the outbound cluster of `port`. `None` also when this proxy has no such cluster
/// (its Sidecar hides the service, or the service has no such port): Envoy refuses a tracer whose
/// cluster it does not know.
fn provider_cluster(
    snapshot: &Snapshot,
    scope: &Scope,
    service: &str,
    port: u32,
) -> Option<(String, String)> {
    let (namespace, host) = match service.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, service),
    };
    let mut found = snapshot
        .registry
        .services
        .values()
        .filter(|s| s.hostname == host && namespace.is_none_or(|ns| s.namespace == ns));
    let svc = found.next()?;
    if found.next().is_some() {
        return None;
    }
    let has_port = svc.ports.iter().any(|p| p.port == port);
    (has_port && scope.sees(snapshot, svc, port)).then(|| {
        (
            svc.hostname.clone(),
            outbound_cluster(port, "", &svc.hostname),
        )
    })
}

fn zipkin_provider(snapshot: &Snapshot, scope: &Scope, z: &ZipkinProvider) -> Option<ZipkinConfig> {
    let (hostname, cluster) = provider_cluster(snapshot, scope, &z.service, z.port)?;
    let path = if z.path.is_empty() {
        ZIPKIN_PATH
    } else {
        z.path.as_str()
    };
    let timeout = z
        .timeout
        .as_deref()
        .and_then(|t| meshd_model::syntax::duration_ms(t).ok())
        .map(|d| {
            duration(
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos() as i32,
            )
        })
        .unwrap_or_else(|| duration(5, 0));
    let trace_context_option = match z.trace_context_option.as_str() {
        "USE_B3_WITH_W3C_PROPAGATION" => zipkin_config::TraceContextOption::UseB3WithW3cPropagation,
        _ => zipkin_config::TraceContextOption::UseB3,
    };
    Some(ZipkinConfig {
        collector_endpoint_version: zipkin_config::CollectorEndpointVersion::HttpJson as i32,
        trace_id_128bit: !z.enable_64bit_trace_id,
        shared_span_context: bool_value(false),
        trace_context_option: trace_context_option as i32,
        collector_service: Some(HttpService {
            http_uri: Some(HttpUri {
                uri: format!("http://{hostname}{path}"),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
                timeout: Some(timeout),
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn opentelemetry_provider(
    snapshot: &Snapshot,
    scope: &Scope,
    o: &OpenTelemetryProvider,
    names: &WorkloadNames,
) -> Option<OpenTelemetryConfig> {
    let (hostname, cluster) = provider_cluster(snapshot, scope, &o.service, o.port)?;
    let timeout = |t: Option<&String>| {
        t.and_then(|t| meshd_model::syntax::duration_ms(t).ok())
            .map(|d| {
                duration(
                    i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                    d.subsec_nanos() as i32,
                )
            })
    };
    let mut config = OpenTelemetryConfig {
        service_name: names.service_cluster.clone(),
        ..Default::default()
    };
    match &o.http {
        Some(http) => {
            let path = http.path.trim_start_matches('/');
            config.http_service = Some(HttpService {
                http_uri: Some(HttpUri {
                    uri: format!("{hostname}/{path}"),
                    http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(cluster)),
                    timeout: timeout(http.timeout.as_ref()),
                }),
                ..Default::default()
            });
        }
        None => {
            config.grpc_service = Some(GrpcService {
                target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                    grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        authority: hostname,
                        ..Default::default()
                    },
                )),
                timeout: timeout(o.grpc.as_ref().and_then(|g| g.timeout.as_ref())),
                ..Default::default()
            });
        }
    }
    Some(config)
}

/// Span tags, sorted by name: Istio's own (who reports the span) unless turned off, and the
/// Telemetry's custom tags, else the proxy config's.
fn tags(
    snapshot: &Snapshot,
    names: &WorkloadNames,
    istio_tags: bool,
    spec: Option<&TracingSpec>,
) -> Vec<EnvoyTag> {
    let mut tags = Vec::new();
    if istio_tags {
        let literal = |tag: &str, value: &str| EnvoyTag {
            tag: tag.to_string(),
            r#type: Some(custom_tag::Type::Literal(custom_tag::Literal {
                value: value.to_string(),
            })),
        };
        tags.push(literal(
            "istio.canonical_revision",
            &names.canonical_revision,
        ));
        tags.push(literal("istio.canonical_service", &names.canonical_service));
        tags.push(literal("istio.mesh_id", &snapshot.mesh.trust_domain));
        tags.push(literal("istio.namespace", &names.namespace));
        tags.push(literal("istio.cluster_id", super::CLUSTER_ID));
        tags.extend(dry_run_tags());
    }
    let user: BTreeMap<String, CustomTag> = match spec.and_then(|s| s.custom_tags.clone()) {
        Some(tags) if !tags.is_empty() => tags,
        _ => snapshot
            .mesh
            .default_config
            .tracing
            .as_ref()
            .map(|t| {
                t.custom_tags
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                    .filter(|(_, v)| v.formatter.is_none())
                    .collect()
            })
            .unwrap_or_default(),
    };
    for (name, tag) in user {
        let kind = if let Some(l) = tag.literal {
            custom_tag::Type::Literal(custom_tag::Literal { value: l.value })
        } else if let Some(e) = tag.environment {
            custom_tag::Type::Environment(custom_tag::Environment {
                name: e.name,
                default_value: e.default_value,
            })
        } else if let Some(h) = tag.header {
            custom_tag::Type::RequestHeader(custom_tag::Header {
                name: h.name,
                default_value: h.default_value,
            })
        } else if let Some(f) = tag.formatter {
            custom_tag::Type::Value(f.value)
        } else {
            continue;
        };
        tags.push(EnvoyTag {
            tag: name,
            r#type: Some(kind),
        });
    }
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    tags
}

/// The dry-run AuthorizationPolicy tags istiod adds: what the RBAC filter's shadow rules decided.
fn dry_run_tags() -> Vec<EnvoyTag> {
    [
        (
            "istio.authorization.dry_run.allow_policy.name",
            "istio_dry_run_allow_shadow_effective_policy_id",
        ),
        (
            "istio.authorization.dry_run.allow_policy.result",
            "istio_dry_run_allow_shadow_engine_result",
        ),
        (
            "istio.authorization.dry_run.deny_policy.name",
            "istio_dry_run_deny_shadow_effective_policy_id",
        ),
        (
            "istio.authorization.dry_run.deny_policy.result",
            "istio_dry_run_deny_shadow_engine_result",
        ),
    ]
    .into_iter()
    .map(|(tag, key)| EnvoyTag {
        tag: tag.to_string(),
        r#type: Some(custom_tag::Type::Metadata(custom_tag::Metadata {
            kind: Some(MetadataKind {
                kind: Some(metadata_kind::Kind::Request(metadata_kind::Request {})),
            }),
            metadata_key: Some(MetadataKey {
                key: "envoy.filters.http.rbac".to_string(),
                path: vec![metadata_key::PathSegment {
                    segment: Some(metadata_key::path_segment::Segment::Key(key.to_string())),
                }],
            }),
            default_value: String::new(),
        })),
    })
    .collect()
}
