//! Validation of traffic policies (load balancing, connection pools, outlier detection, TLS
//! origination) into their typed models, each mistake an error naming its field.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::duration::parse as parse_duration;
use crate::finding::Checks;
use crate::input::networking::{
    ClientTls, ConnectionPool, ConsistentHash, LoadBalancer, LocalityLbSetting, OutlierDetection,
    PortTrafficPolicy, TrafficPolicy,
};

use super::{
    ClientTlsModel, ConnectionPoolModel, ConsistentHashModel, DEFAULT_MINIMUM_RING_SIZE, H2Upgrade,
    HashKey, HashTable, LbPolicy, LoadBalancerModel, LocalityLbModel, OutlierDetectionModel,
    PolicySettings, PortPolicy, TcpKeepaliveModel, TlsMode, TrafficPolicyModel,
};

/// The DestinationRule validator's helpers.
#[derive(Debug)]
pub(super) struct DestinationRuleRules;

pub(super) type Check<'a> = Checks<'a, DestinationRuleRules>;

impl Check<'_> {
    /// A count where 0 means "unset" (as in Istio) and negatives are wrong.
    fn count(&mut self, field: &str, value: Option<i64>) -> Option<u32> {
        let v = value?;
        match u32::try_from(v) {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) if v < 0 => {
                self.error(field, format!("{v} is negative"));
                None
            }
            Err(_) => {
                self.error(field, format!("{v} is too large"));
                None
            }
        }
    }

    fn percent(&mut self, field: &str, value: Option<i64>) -> Option<u32> {
        let v = value?;
        if !(0..=100).contains(&v) {
            self.error(field, format!("{v} is not a percentage (0 to 100)"));
            return None;
        }
        u32::try_from(v).ok()
    }

    /// A duration Envoy takes as a timeout or interval: at least 1ms, whole milliseconds.
    fn duration(&mut self, field: &str, value: Option<&String>) -> Option<Duration> {
        let d = self.any_duration(field, value)?;
        if d < Duration::from_millis(1) {
            self.error(field, format!("{:?} must be at least 1ms", value?));
            return None;
        }
        if d.subsec_nanos() % 1_000_000 != 0 {
            self.error(
                field,
                format!("{:?}: only millisecond precision is supported", value?),
            );
            return None;
        }
        Some(d)
    }

    /// Any non-negative duration (0 allowed).
    fn any_duration(&mut self, field: &str, value: Option<&String>) -> Option<Duration> {
        let text = value?;
        match parse_duration(text) {
            Ok((s, n)) => Some(Duration::new(
                u64::try_from(s).unwrap_or_default(),
                u32::try_from(n).unwrap_or_default(),
            )),
            Err(e) => {
                self.error(field, e);
                None
            }
        }
    }
}

pub(super) fn traffic_policy(
    check: &mut Check<'_>,
    at: &str,
    p: &TrafficPolicy,
) -> TrafficPolicyModel {
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_empty()
        && p.other.is_empty()
    {
        check.error(
            at,
            "traffic policy must have at least one field".to_string(),
        );
    }
    let settings = policy_settings(
        check,
        at,
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
    );
    let mut port_level = Vec::new();
    let mut ports = BTreeSet::new();
    for (i, pls) in p.port_level_settings.iter().enumerate() {
        let field = format!("{at}.portLevelSettings[{i}]");
        let PortTrafficPolicy {
            port,
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
        } = pls;
        let number = match port {
            None => {
                check.error(&format!("{field}.port"), "port is required".to_string());
                None
            }
            // istiod takes any number here; settings for a port no service has never apply.
            Some(p) if p.number == 0 || p.number > 65535 => {
                check.warning(
                    &format!("{field}.port.number"),
                    format!(
                        "no service port can be {}; these settings never apply",
                        p.number
                    ),
                );
                None
            }
            Some(p) if !ports.insert(p.number) => {
                check.warning(
                    &format!("{field}.port.number"),
                    format!("port {} has settings already; these are ignored", p.number),
                );
                None
            }
            Some(p) => Some(p.number),
        };
        if load_balancer.is_none()
            && connection_pool.is_none()
            && outlier_detection.is_none()
            && tls.is_none()
        {
            check.error(
                &field,
                "port settings must set loadBalancer, connectionPool, outlierDetection or tls"
                    .to_string(),
            );
        }
        let settings = policy_settings(
            check,
            &field,
            load_balancer.as_ref(),
            connection_pool.as_ref(),
            outlier_detection.as_ref(),
            tls.as_ref(),
        );
        if let Some(port) = number {
            port_level.push(PortPolicy { port, settings });
        }
    }
    TrafficPolicyModel {
        settings,
        port_level,
    }
}

fn policy_settings(
    check: &mut Check<'_>,
    at: &str,
    lb: Option<&LoadBalancer>,
    pool: Option<&ConnectionPool>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTls>,
) -> PolicySettings {
    let load_balancer = lb.map(|lb| load_balancer(check, &format!("{at}.loadBalancer"), lb));
    let outlier_detection =
        outlier.map(|o| outlier_detection(check, &format!("{at}.outlierDetection"), o));
    if let Some(locality) = load_balancer.as_ref().and_then(|l| l.locality.as_ref())
        && (!locality.failover.is_empty() || !locality.failover_priority.is_empty())
        && outlier_detection.is_none()
    {
        check.warn(
            "IST0106",
            &format!("{at}.loadBalancer.localityLbSetting"),
            "locality failover needs outlierDetection to notice unhealthy endpoints; it is off"
                .to_string(),
        );
    }
    PolicySettings {
        load_balancer,
        connection_pool: pool.map(|p| connection_pool(check, &format!("{at}.connectionPool"), p)),
        outlier_detection,
        tls: tls.and_then(|t| client_tls(check, &format!("{at}.tls"), t)),
    }
}

fn load_balancer(check: &mut Check<'_>, at: &str, lb: &LoadBalancer) -> LoadBalancerModel {
    let mut policy = match lb.simple.as_deref() {
        None | Some("UNSPECIFIED") => LbPolicy::Unspecified,
        Some("ROUND_ROBIN") => LbPolicy::RoundRobin,
        Some("LEAST_REQUEST" | "LEAST_CONN") => LbPolicy::LeastRequest,
        Some("RANDOM") => LbPolicy::Random,
        Some("PASSTHROUGH") => LbPolicy::Passthrough,
        Some(other) => {
            check.error(
                &format!("{at}.simple"),
                format!("unknown load balancer {other:?}"),
            );
            LbPolicy::Unspecified
        }
    };
    if let Some(ch) = &lb.consistent_hash {
        if lb.simple.is_some() {
            check.error(
                at,
                "only one of simple and consistentHash may be set".to_string(),
            );
        }
        policy =
            LbPolicy::ConsistentHash(consistent_hash(check, &format!("{at}.consistentHash"), ch));
    }
    LoadBalancerModel {
        policy,
        locality: lb
            .locality_lb_setting
            .as_ref()
            .map(|l| locality(check, &format!("{at}.localityLbSetting"), l)),
        warmup: check.duration(
            &format!("{at}.warmupDurationSecs"),
            lb.warmup_duration_secs.as_ref(),
        ),
    }
}

/// Envoy's largest Maglev table.
const MAX_MAGLEV_TABLE: i64 = 5_000_011;
/// Envoy's largest hash ring (its default `maximum_ring_size`).
const MAX_RING_SIZE: i64 = 8 * 1024 * 1024;

fn is_prime(n: i64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn consistent_hash(check: &mut Check<'_>, at: &str, ch: &ConsistentHash) -> ConsistentHashModel {
    let mut keys = Vec::new();
    if let Some(h) = &ch.http_header_name {
        if h.is_empty() {
            check.error(
                &format!("{at}.httpHeaderName"),
                "empty header name".to_string(),
            );
        }
        keys.push(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        if c.name.is_empty() {
            check.error(
                &format!("{at}.httpCookie.name"),
                "cookie name is required".to_string(),
            );
        }
        keys.push(HashKey::Cookie {
            name: c.name.clone(),
            path: c.path.clone().filter(|p| !p.is_empty()),
            ttl: check.any_duration(&format!("{at}.httpCookie.ttl"), c.ttl.as_ref()),
        });
    }
    if ch.use_source_ip == Some(true) {
        keys.push(HashKey::SourceIp);
    }
    if let Some(q) = &ch.http_query_parameter_name {
        if q.is_empty() {
            check.error(
                &format!("{at}.httpQueryParameterName"),
                "empty query parameter name".to_string(),
            );
        }
        keys.push(HashKey::QueryParameter(q.clone()));
    }
    if keys.len() > 1 {
        check.error(
            at,
            "only one of httpHeaderName, httpCookie, useSourceIp and httpQueryParameterName may be set"
                .to_string(),
        );
    }
    if ch.ring_hash.is_some() && ch.maglev.is_some() {
        check.error(at, "only one of ringHash and maglev may be set".to_string());
    }
    if ch.minimum_ring_size.is_some() && (ch.ring_hash.is_some() || ch.maglev.is_some()) {
        check.error(
            &format!("{at}.minimumRingSize"),
            "cannot be combined with ringHash or maglev".to_string(),
        );
    }
    let ring_size = |check: &mut Check<'_>, field: &str, v: Option<i64>| -> Option<u64> {
        let v = v?;
        if !(0..=MAX_RING_SIZE).contains(&v) {
            check.error(
                field,
                format!("{v} is not a ring size (0 to {MAX_RING_SIZE})"),
            );
            return None;
        }
        u64::try_from(v).ok().filter(|n| *n > 0)
    };
    let ring = ch.ring_hash.as_ref().map(|r| {
        ring_size(
            check,
            &format!("{at}.ringHash.minimumRingSize"),
            r.minimum_ring_size,
        )
    });
    let table = if let Some(m) = &ch.maglev {
        let field = format!("{at}.maglev.tableSize");
        let table_size = match m.table_size {
            None | Some(0) => {
                check.error(&field, "tableSize must be set for maglev".to_string());
                None
            }
            Some(n) if !(1..=MAX_MAGLEV_TABLE).contains(&n) || !is_prime(n) => {
                check.error(
                    &field,
                    format!("{n} is not a prime number between 2 and {MAX_MAGLEV_TABLE}"),
                );
                None
            }
            other => other.and_then(|n| u64::try_from(n).ok()),
        };
        HashTable::Maglev { table_size }
    } else if let Some(minimum_ring_size) = ring {
        HashTable::RingHash { minimum_ring_size }
    } else {
        HashTable::RingHash {
            minimum_ring_size: Some(
                ring_size(
                    check,
                    &format!("{at}.minimumRingSize"),
                    ch.minimum_ring_size,
                )
                .unwrap_or(DEFAULT_MINIMUM_RING_SIZE),
            ),
        }
    };
    ConsistentHashModel {
        key: keys.into_iter().next(),
        table,
    }
}

fn locality(check: &mut Check<'_>, at: &str, l: &LocalityLbSetting) -> LocalityLbModel {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        check.error(
            at,
            "only one of distribute and failover may be set".to_string(),
        );
    }
    let mut distribute = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let field = format!("{at}.distribute[{i}]");
        if d.from.is_empty() {
            check.error(
                &format!("{field}.from"),
                "source locality is required".to_string(),
            );
        }
        let mut to = BTreeMap::new();
        let mut total: i64 = 0;
        for (locality, weight) in &d.to {
            if *weight <= 0 {
                check.error(
                    &format!("{field}.to.{locality}"),
                    format!("weight {weight} must be greater than 0"),
                );
            }
            total = total.saturating_add(*weight);
            to.insert(locality.clone(), u32::try_from(*weight).unwrap_or_default());
        }
        if total != 100 {
            check.error(
                &format!("{field}.to"),
                format!("weights add up to {total}, not 100"),
            );
        }
        distribute.push((d.from.clone(), to));
    }
    if !l.failover_priority.is_empty() {
        check.warn(
            "IST0106",
            &format!("{at}.failoverPriority"),
            "failoverPriority is not supported by meshd yet; it is ignored".to_string(),
        );
    }
    let mut failover = Vec::new();
    for (i, f) in l.failover.iter().enumerate() {
        let field = format!("{at}.failover[{i}]");
        if f.from.is_empty() || f.to.is_empty() {
            check.error(&field, "from and to regions are required".to_string());
        } else if f.from == f.to {
            check.error(&field, "from and to must be different regions".to_string());
        } else if [&f.from, &f.to]
            .iter()
            .any(|r| r.contains('/') || r.contains('*'))
        {
            check.error(
                &field,
                "failover names regions only (no `/` zones, no `*`)".to_string(),
            );
        }
        failover.push((f.from.clone(), f.to.clone()));
    }
    LocalityLbModel {
        enabled: l.enabled.unwrap_or(true),
        distribute,
        failover,
        failover_priority: l.failover_priority.clone(),
    }
}

fn connection_pool(check: &mut Check<'_>, at: &str, p: &ConnectionPool) -> ConnectionPoolModel {
    let mut out = ConnectionPoolModel::default();
    if p.tcp.is_none() && p.http.is_none() {
        check.error(at, "at least one of tcp and http must be set".to_string());
    }
    if let Some(tcp) = &p.tcp {
        let at = format!("{at}.tcp");
        out.max_connections = check.count(&format!("{at}.maxConnections"), tcp.max_connections);
        out.connect_timeout = check.duration(
            &format!("{at}.connectTimeout"),
            tcp.connect_timeout.as_ref(),
        );
        out.max_connection_duration = check.duration(
            &format!("{at}.maxConnectionDuration"),
            tcp.max_connection_duration.as_ref(),
        );
        out.tcp_keepalive = tcp.tcp_keepalive.as_ref().map(|k| TcpKeepaliveModel {
            probes: check.count(&format!("{at}.tcpKeepalive.probes"), k.probes),
            time: check.duration(&format!("{at}.tcpKeepalive.time"), k.time.as_ref()),
            interval: check.duration(&format!("{at}.tcpKeepalive.interval"), k.interval.as_ref()),
        });
    }
    if let Some(http) = &p.http {
        let at = format!("{at}.http");
        out.http1_max_pending_requests = check.count(
            &format!("{at}.http1MaxPendingRequests"),
            http.http1_max_pending_requests,
        );
        out.http2_max_requests =
            check.count(&format!("{at}.http2MaxRequests"), http.http2_max_requests);
        out.max_requests_per_connection = check.count(
            &format!("{at}.maxRequestsPerConnection"),
            http.max_requests_per_connection,
        );
        out.max_retries = check.count(&format!("{at}.maxRetries"), http.max_retries);
        out.max_concurrent_streams = check.count(
            &format!("{at}.maxConcurrentStreams"),
            http.max_concurrent_streams,
        );
        out.idle_timeout = check.duration(&format!("{at}.idleTimeout"), http.idle_timeout.as_ref());
        out.h2_upgrade = match http.h2_upgrade_policy.as_deref() {
            None | Some("DEFAULT") => H2Upgrade::Default,
            Some("DO_NOT_UPGRADE") => H2Upgrade::DoNotUpgrade,
            Some("UPGRADE") => H2Upgrade::Upgrade,
            Some(other) => {
                check.error(
                    &format!("{at}.h2UpgradePolicy"),
                    format!("unknown policy {other:?} (DEFAULT, DO_NOT_UPGRADE, UPGRADE)"),
                );
                H2Upgrade::Default
            }
        };
        out.use_client_protocol = http.use_client_protocol.unwrap_or(false);
        if out.use_client_protocol && out.h2_upgrade == H2Upgrade::Upgrade {
            check.error(
                &format!("{at}.useClientProtocol"),
                "cannot be true when h2UpgradePolicy is UPGRADE".to_string(),
            );
        }
    }
    out
}

fn outlier_detection(
    check: &mut Check<'_>,
    at: &str,
    o: &OutlierDetection,
) -> OutlierDetectionModel {
    if o.split_external_local_origin_errors != Some(true)
        && o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        check.error(
            &format!("{at}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split \
             external local origin errors is set to false"
                .to_string(),
        );
    }
    let consecutive_5xx = match o.consecutive_5xx_errors {
        Some(v) => non_negative(check, &format!("{at}.consecutive5xxErrors"), v),
        None => o
            .consecutive_errors
            .and_then(|v| non_negative(check, &format!("{at}.consecutiveErrors"), v)),
    };
    OutlierDetectionModel {
        consecutive_5xx,
        consecutive_gateway: o
            .consecutive_gateway_errors
            .and_then(|v| non_negative(check, &format!("{at}.consecutiveGatewayErrors"), v)),
        split_external_local_origin_errors: o.split_external_local_origin_errors == Some(true),
        consecutive_local_origin_failures: check.count(
            &format!("{at}.consecutiveLocalOriginFailures"),
            o.consecutive_local_origin_failures,
        ),
        interval: check.duration(&format!("{at}.interval"), o.interval.as_ref()),
        base_ejection_time: check.duration(
            &format!("{at}.baseEjectionTime"),
            o.base_ejection_time.as_ref(),
        ),
        max_ejection_percent: check
            .percent(&format!("{at}.maxEjectionPercent"), o.max_ejection_percent)
            .filter(|p| *p > 0),
        min_health_percent: check
            .percent(&format!("{at}.minHealthPercent"), o.min_health_percent)
            .unwrap_or(0),
    }
}

/// A count where 0 is meaningful (e.g. `consecutive5xxErrors: 0` turns that check off).
fn non_negative(check: &mut Check<'_>, field: &str, v: i64) -> Option<u32> {
    match u32::try_from(v) {
        Ok(n) => Some(n),
        Err(_) => {
            check.error(field, format!("{v} is not a count (0 or more)"));
            None
        }
    }
}

fn client_tls(check: &mut Check<'_>, at: &str, t: &ClientTls) -> Option<ClientTlsModel> {
    let mode = match t.mode.as_str() {
        "DISABLE" => TlsMode::Disable,
        "SIMPLE" => TlsMode::Simple,
        "MUTUAL" => TlsMode::Mutual,
        "ISTIO_MUTUAL" => TlsMode::IstioMutual,
        other => {
            check.error(
                &format!("{at}.mode"),
                format!("unknown TLS mode {other:?} (DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)"),
            );
            return None;
        }
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let model = ClientTlsModel {
        mode,
        client_certificate: nonempty(&t.client_certificate),
        private_key: nonempty(&t.private_key),
        ca_certificates: nonempty(&t.ca_certificates),
        credential_name: nonempty(&t.credential_name),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: nonempty(&t.sni),
        insecure_skip_verify: t.insecure_skip_verify == Some(true),
    };
    let files = model.client_certificate.is_some()
        || model.private_key.is_some()
        || model.ca_certificates.is_some();
    if matches!(mode, TlsMode::Simple | TlsMode::Mutual) {
        if model.credential_name.is_some() && files {
            check.error(
                &format!("{at}.credentialName"),
                "cannot be combined with clientCertificate, privateKey or caCertificates"
                    .to_string(),
            );
        }
        if mode == TlsMode::Mutual && model.credential_name.is_none() {
            if model.client_certificate.is_none() {
                check.error(
                    &format!("{at}.clientCertificate"),
                    "MUTUAL needs a client certificate (or credentialName)".to_string(),
                );
            }
            if model.private_key.is_none() {
                check.error(
                    &format!("{at}.privateKey"),
                    "MUTUAL needs a private key (or credentialName)".to_string(),
                );
            }
        }
        // With SIMPLE the CA can only come from these; with MUTUAL a credentialName also
        // carries the client certificate, so istiod allows it there.
        let verifies = model.ca_certificates.is_some()
            || !model.subject_alt_names.is_empty()
            || (mode == TlsMode::Simple && model.credential_name.is_some());
        if model.insecure_skip_verify && verifies {
            check.error(
                &format!("{at}.insecureSkipVerify"),
                "cannot specify caCertificates, subjectAltNames (or, with SIMPLE, \
                 credentialName) when insecureSkipVerify is set true"
                    .to_string(),
            );
        }
        if model.ca_certificates.is_none()
            && model.credential_name.is_none()
            && !model.insecure_skip_verify
        {
            check.warn(
                "IST0128",
                &format!("{at}.caCertificates"),
                "no caCertificates: the server's certificate is not verified".to_string(),
            );
        }
    }
    Some(model)
}
