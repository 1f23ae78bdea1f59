//! DestinationRule traffic policies on stock Envoy: load balancing, connection limits, outlier
//! detection and upstream TLS on clusters; the consistent-hash key on the routes to them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meshd_model::traffic::{
    ClientTlsModel, ConnectionPoolModel, DestinationRuleModel, H2Upgrade, HashKey, HashTable,
    LbPolicy, LoadBalancerModel, OutlierDetectionModel, PolicySettings, RuleView, TlsMode,
};
use meshd_model::{Protocol, Snapshot};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions, cluster,
};
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonOptions,
    TcpKeepalive, TransportSocket, UpstreamHttpProtocolOptions, data_source,
};
use meshd_proto::pb::envoy::config::route::v3::{
    RouteAction, RouteConfiguration, route, route_action,
};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher,
    TlsCertificate, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use meshd_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use meshd_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use meshd_proto::pb::envoy::r#type::v3::Percent;

use crate::Scope;
use crate::names::parse_outbound_cluster;
use crate::util::{ads, u32_value};
use crate::{locality, tls};

/// The `typed_extension_protocol_options` key for upstream HTTP settings (the map's only entry).
pub(crate) const HTTP_PROTOCOL_OPTIONS: &str =
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's retry predicate that Istio drops from routes that hash to one host.
const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

/// The DestinationRule this scope's proxies use for `host`.
pub(crate) fn rule_for<'a>(
    snapshot: &'a Snapshot,
    scope: &Scope,
    host: &str,
) -> Option<&'a Arc<DestinationRuleModel>> {
    if snapshot.traffic.destination_rules.is_empty() {
        return None;
    }
    let service_namespace = match snapshot.registry.services.get(host) {
        Some(svc) => svc.namespace.as_str(),
        // `name.namespace.svc.<domain>` names its namespace; other hosts have none.
        None => host
            .split('.')
            .nth(1)
            .filter(|_| host.split('.').nth(2) == Some("svc"))
            .unwrap_or_default(),
    };
    let view = RuleView {
        proxy_namespace: &scope.namespace,
        proxy_labels: &scope.labels,
        service_namespace,
        root_namespace: &snapshot.mesh.root_namespace,
    };
    snapshot.traffic.destination_rule(host, &view)
}

/// What a cluster is for, beyond its policy.
pub(crate) struct ClusterTarget<'a> {
    pub host: &'a str,
    pub port: u32,
    pub subset: &'a str,
    pub protocol: Protocol,
    /// The proxy holds a mesh certificate.
    pub proxy_mtls: bool,
    /// Auto-mTLS applies to this destination (in-mesh, enabled, proxy has a certificate).
    pub auto_mtls: bool,
    /// The destination's SPIFFE identities.
    pub sans: &'a [String],
    /// Where the proxy is, when locality load balancing needs it.
    pub proxy_locality: Option<&'a str>,
    /// The DestinationRule the settings come from.
    pub rule: Option<&'a meshd_model::ObjectKey>,
}

/// Applies merged DestinationRule settings to a cluster built with Istio's defaults. With default
/// settings the cluster is left as it was, apart from auto-mTLS.
pub(crate) fn apply(c: &mut Cluster, settings: &PolicySettings, t: &ClusterTarget<'_>) {
    if let Some(lb) = &settings.load_balancer {
        apply_load_balancer(c, lb);
    }
    if let (Some(proxy_locality), Some(rule)) = (t.proxy_locality, t.rule) {
        locality::apply(c, settings, proxy_locality, rule);
    }
    let original_dst = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        ));
    let pool = settings.connection_pool.clone().unwrap_or_default();
    apply_connection_pool(c, &pool);
    if let Some(o) = &settings.outlier_detection {
        apply_outlier_detection(c, o);
    }
    let http2 = t.protocol.is_http2()
        || (t.protocol == Protocol::Http && pool.h2_upgrade == H2Upgrade::Upgrade);
    let alpn = tls::mesh_alpn(t.protocol, http2);
    let mut upstream_http = UpstreamHttpProtocolOptions::default();
    c.transport_socket = None;
    c.transport_socket_matches.clear();
    match &settings.tls {
        None => {
            if t.auto_mtls && !original_dst {
                c.transport_socket_matches =
                    tls::auto_mtls_matches(tls::mesh_sni(t.port, t.subset, t.host), t.sans, alpn);
            }
        }
        Some(tls) => match tls.mode {
            TlsMode::Disable => {}
            TlsMode::IstioMutual => {
                // Without a certificate of its own the proxy could not present one: plaintext.
                if t.proxy_mtls {
                    let sni = tls
                        .sni
                        .clone()
                        .unwrap_or_else(|| tls::mesh_sni(t.port, t.subset, t.host));
                    let sans = if tls.subject_alt_names.is_empty() {
                        t.sans
                    } else {
                        &tls.subject_alt_names
                    };
                    c.transport_socket = Some(tls::mesh_mtls_socket(sni, sans, alpn));
                }
            }
            TlsMode::Simple | TlsMode::Mutual => {
                c.transport_socket = Some(origination_socket(tls, http2));
                // No SNI given: Envoy uses each request's host, as Istio's auto-SNI does, and
                // checks the certificate against it when there is a CA and no SANs to check.
                if tls.sni.is_none() {
                    upstream_http.auto_sni = true;
                    upstream_http.auto_san_validation = tls.subject_alt_names.is_empty()
                        && !tls.insecure_skip_verify
                        && (tls.ca_certificates.is_some() || tls.credential_name.is_some());
                }
            }
        },
    }
    apply_http_protocol_options(c, &pool, http2, upstream_http);
}

fn duration(d: Duration) -> meshd_proto::pb::google::protobuf::Duration {
    meshd_proto::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or_default(),
    }
}

fn apply_load_balancer(c: &mut Cluster, lb: &LoadBalancerModel) {
    use cluster::{LbConfig, LbPolicy as Envoy};
    let is_original_dst = c.cluster_discovery_type
        == Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        ));
    if is_original_dst {
        return;
    }
    let slow_start = lb.warmup.map(|w| cluster::SlowStartConfig {
        slow_start_window: Some(duration(w)),
        ..Default::default()
    });
    match &lb.policy {
        LbPolicy::Unspecified | LbPolicy::LeastRequest => {
            c.lb_policy = Envoy::LeastRequest as i32;
            if let Some(slow_start_config) = slow_start {
                c.lb_config = Some(LbConfig::LeastRequestLbConfig(
                    cluster::LeastRequestLbConfig {
                        slow_start_config: Some(slow_start_config),
                        ..Default::default()
                    },
                ));
            }
        }
        LbPolicy::RoundRobin => {
            c.lb_policy = Envoy::RoundRobin as i32;
            if let Some(slow_start_config) = slow_start {
                c.lb_config = Some(LbConfig::RoundRobinLbConfig(cluster::RoundRobinLbConfig {
                    slow_start_config: Some(slow_start_config),
                }));
            }
        }
        LbPolicy::Random => c.lb_policy = Envoy::Random as i32,
        LbPolicy::Passthrough => {
            // Connect where the caller was going: no endpoints of ours.
            c.lb_policy = Envoy::ClusterProvided as i32;
            c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            ));
            c.eds_cluster_config = None;
            c.load_assignment = None;
        }
        LbPolicy::ConsistentHash(ch) => match ch.table {
            HashTable::Maglev { table_size } => {
                c.lb_policy = Envoy::Maglev as i32;
                c.lb_config = table_size.map(|size| {
                    LbConfig::MaglevLbConfig(cluster::MaglevLbConfig {
                        table_size: Some(meshd_proto::pb::google::protobuf::UInt64Value {
                            value: size,
                        }),
                    })
                });
            }
            HashTable::RingHash { minimum_ring_size } => {
                c.lb_policy = Envoy::RingHash as i32;
                c.lb_config = minimum_ring_size.map(|size| {
                    LbConfig::RingHashLbConfig(cluster::RingHashLbConfig {
                        minimum_ring_size: Some(meshd_proto::pb::google::protobuf::UInt64Value {
                            value: size,
                        }),
                        ..Default::default()
                    })
                });
            }
        },
    }
}

/// Circuit breakers, connect timeout and keepalive; unset limits stay at Istio's maximum.
fn apply_connection_pool(c: &mut Cluster, pool: &ConnectionPoolModel) {
    if let Some(thresholds) = c
        .circuit_breakers
        .as_mut()
        .and_then(|cb: &mut CircuitBreakers| cb.thresholds.first_mut())
    {
        for (limit, field) in [
            (pool.max_connections, &mut thresholds.max_connections),
            (
                pool.http1_max_pending_requests,
                &mut thresholds.max_pending_requests,
            ),
            (pool.http2_max_requests, &mut thresholds.max_requests),
            (pool.max_retries, &mut thresholds.max_retries),
        ] {
            if let Some(n) = limit {
                *field = u32_value(n);
            }
        }
    }
    if let Some(t) = pool.connect_timeout {
        c.connect_timeout = Some(duration(t));
    }
    if let Some(k) = &pool.tcp_keepalive {
        let secs = |d: Option<Duration>| {
            d.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1))
                .and_then(u32_value)
        };
        c.upstream_connection_options = Some(UpstreamConnectionOptions {
            tcp_keepalive: Some(TcpKeepalive {
                keepalive_probes: k.probes.and_then(u32_value),
                keepalive_time: secs(k.time),
                keepalive_interval: secs(k.interval),
            }),
            ..Default::default()
        });
    }
}

fn apply_outlier_detection(c: &mut Cluster, o: &OutlierDetectionModel) {
    // A check set to a count is enforced always; set to 0 it is off.
    let enforcing = |n: Option<u32>| n.and_then(|n| u32_value(if n > 0 { 100 } else { 0 }));
    let mut out = OutlierDetection {
        consecutive_5xx: o.consecutive_5xx.and_then(u32_value),
        enforcing_consecutive_5xx: enforcing(o.consecutive_5xx),
        consecutive_gateway_failure: o.consecutive_gateway.and_then(u32_value),
        enforcing_consecutive_gateway_failure: enforcing(o.consecutive_gateway),
        interval: o.interval.map(duration),
        base_ejection_time: o.base_ejection_time.map(duration),
        max_ejection_percent: o.max_ejection_percent.and_then(u32_value),
        // Istio judges hosts by errors only, never by success-rate statistics.
        enforcing_success_rate: u32_value(0),
        ..Default::default()
    };
    if o.split_external_local_origin_errors {
        out.split_external_local_origin_errors = true;
        if let Some(n) = o.consecutive_local_origin_failures {
            out.consecutive_local_origin_failure = u32_value(n);
            out.enforcing_consecutive_local_origin_failure = u32_value(100);
        }
        out.enforcing_local_origin_success_rate = u32_value(0);
    }
    c.outlier_detection = Some(out);
    // Few pods per service: Envoy's default 50% panic threshold would send traffic to ejected
    // hosts; Istio sets it from minHealthPercent, 0 (never panic) unless given.
    let common = c.common_lb_config.get_or_insert_with(Default::default);
    common.healthy_panic_threshold = Some(Percent {
        value: f64::from(o.min_health_percent),
    });
}

/// Everything upstream HTTP in the one `HttpProtocolOptions` entry Envoy reads: the protocol, the
/// pool's per-connection limits, auto-SNI. Nothing to say: no entry (HTTP/1.1 defaults).
fn apply_http_protocol_options(
    c: &mut Cluster,
    pool: &ConnectionPoolModel,
    http2: bool,
    upstream_http: UpstreamHttpProtocolOptions,
) {
    use http_protocol_options::explicit_http_config::ProtocolConfig;
    use http_protocol_options::{ExplicitHttpConfig, UpstreamProtocolOptions};
    let common = CommonOptions {
        idle_timeout: pool.idle_timeout.map(duration),
        max_connection_duration: pool.max_connection_duration.map(duration),
        max_requests_per_connection: pool.max_requests_per_connection.and_then(u32_value),
        ..Default::default()
    };
    let explicit = |config| {
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(config),
            },
        ))
    };
    let upstream_protocol_options = if http2 {
        explicit(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
            max_concurrent_streams: pool.max_concurrent_streams.and_then(u32_value),
            ..Default::default()
        }))
    } else if pool.use_client_protocol {
        Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            http_protocol_options::UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            },
        ))
    } else {
        None
    };
    let has_common = common != CommonOptions::default();
    let has_upstream = upstream_http != UpstreamHttpProtocolOptions::default();
    if upstream_protocol_options.is_none() && !has_common && !has_upstream {
        c.typed_extension_protocol_options.clear();
        return;
    }
    let options = HttpProtocolOptions {
        // Envoy requires a protocol choice; HTTP/1.1 is what the cluster speaks otherwise.
        upstream_protocol_options: upstream_protocol_options.or_else(|| {
            explicit(ProtocolConfig::HttpProtocolOptions(
                Http1ProtocolOptions::default(),
            ))
        }),
        common_http_protocol_options: has_common.then_some(common),
        upstream_http_protocol_options: has_upstream.then_some(upstream_http),
        ..Default::default()
    };
    c.typed_extension_protocol_options =
        HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&options))]);
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

/// SAN matchers by the form of each name: SPIFFE and other URIs, IP addresses, else DNS names.
fn san_matchers(sans: &[String]) -> Vec<SubjectAltNameMatcher> {
    use subject_alt_name_matcher::SanType;
    sans.iter()
        .map(|san| {
            let san_type = if san.contains("://") {
                SanType::Uri
            } else if san.parse::<std::net::IpAddr>().is_ok() {
                SanType::IpAddress
            } else {
                SanType::Dns
            };
            SubjectAltNameMatcher {
                san_type: san_type as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
                    ignore_case: false,
                }),
                ..Default::default()
            }
        })
        .collect()
}

/// TLS origination (SIMPLE, MUTUAL): certificates from files Envoy reads, or from SDS secrets named
/// after the Kubernetes Secret (`credentialName`).
fn origination_socket(t: &ClientTlsModel, http2: bool) -> TransportSocket {
    let mut common = CommonTlsContext {
        alpn_protocols: if http2 {
            vec!["h2".to_string()]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    if t.mode == TlsMode::Mutual {
        match &t.credential_name {
            Some(name) => {
                common.tls_certificate_sds_secret_configs = vec![sds(tls::credential_secret(name))];
            }
            None => {
                common.tls_certificates = vec![TlsCertificate {
                    certificate_chain: t.client_certificate.as_deref().and_then(file),
                    private_key: t.private_key.as_deref().and_then(file),
                    ..Default::default()
                }];
            }
        }
    }
    if !t.insecure_skip_verify {
        let sans = san_matchers(&t.subject_alt_names);
        if let Some(name) = &t.credential_name {
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans,
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds(tls::credential_ca_secret(
                            name,
                        ))),
                        ..Default::default()
                    },
                ),
            );
        } else if let Some(ca) = &t.ca_certificates {
            common.validation_context_type = Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: file(ca),
                        match_typed_subject_alt_names: sans,
                        ..Default::default()
                    },
                ),
            );
        }
        // Neither: stock Envoy has no system roots to check against (analyze warns, IST0128).
    }
    let upstream = UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: t.sni.clone().unwrap_or_default(),
        ..Default::default()
    };
    tls::tls_socket(pack(&upstream))
}

/// Adds each route's consistent-hash key from the DestinationRule of the cluster it goes to, and
/// drops the previous-hosts retry predicate from single-destination routes that hash, as istiod
/// does: a retry must go back to the host the key hashes to.
pub(crate) fn apply_consistent_hash(
    snapshot: &Snapshot,
    scope: &Scope,
    routes: &mut RouteConfiguration,
) {
    if snapshot.traffic.destination_rules.is_empty() {
        return;
    }
    for vh in &mut routes.virtual_hosts {
        for r in &mut vh.routes {
            if let Some(route::Action::Route(action)) = &mut r.action {
                hash_route(snapshot, scope, action);
            }
        }
    }
}

fn hash_route(snapshot: &Snapshot, scope: &Scope, action: &mut RouteAction) {
    let (clusters, single): (Vec<&str>, bool) = match &action.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => (vec![c.as_str()], true),
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            (w.clusters.iter().map(|c| c.name.as_str()).collect(), false)
        }
        _ => (Vec::new(), false),
    };
    let mut policies = Vec::new();
    for name in clusters {
        let Some((port, subset, host)) = parse_outbound_cluster(name) else {
            continue;
        };
        let Some(rule) = rule_for(snapshot, scope, host) else {
            continue;
        };
        let settings = rule.settings(subset, port);
        if let Some(LbPolicy::ConsistentHash(ch)) =
            settings.load_balancer.as_ref().map(|lb| &lb.policy)
            && let Some(key) = &ch.key
        {
            policies.push(hash_policy(key));
        }
    }
    if policies.is_empty() {
        return;
    }
    if single && let Some(retry) = action.retry_policy.as_mut() {
        retry
            .retry_host_predicate
            .retain(|p| p.name != PREVIOUS_HOSTS);
    }
    action.hash_policy.extend(policies);
}

fn hash_policy(key: &HashKey) -> route_action::HashPolicy {
    use route_action::hash_policy::{
        ConnectionProperties, Cookie, Header, PolicySpecifier, QueryParameter,
    };
    let specifier = match key {
        HashKey::Header(name) => PolicySpecifier::Header(Header {
            header_name: name.clone(),
            ..Default::default()
        }),
        HashKey::Cookie { name, path, ttl } => PolicySpecifier::Cookie(Cookie {
            name: name.clone(),
            path: path.clone().unwrap_or_default(),
            ttl: ttl.map(duration),
            ..Default::default()
        }),
        HashKey::SourceIp => {
            PolicySpecifier::ConnectionProperties(ConnectionProperties { source_ip: true })
        }
        HashKey::QueryParameter(name) => {
            PolicySpecifier::QueryParameter(QueryParameter { name: name.clone() })
        }
    };
    route_action::HashPolicy {
        policy_specifier: Some(specifier),
        ..Default::default()
    }
}
