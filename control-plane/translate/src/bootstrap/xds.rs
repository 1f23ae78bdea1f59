//! The proxy's connection to meshd: where it is, the `xds-grpc` cluster, and the gRPC service ADS
//! rides on.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, UpstreamConnectionOptions, circuit_breakers, cluster,
};
use meshd_proto::pb::envoy::config::core::v3::{
    DataSource, GrpcService, Http2ProtocolOptions, KeepaliveSettings, RoutingPriority,
    TcpKeepalive, TransportSocket, data_source, grpc_service,
};
use meshd_proto::pb::envoy::config::grpc_credential::v3::FileBasedMetadataConfig;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context, subject_alt_name_matcher,
};
use meshd_proto::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use meshd_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};

use super::{BootstrapParams, endpoints, static_cluster};
use crate::tls::tls_socket;
use crate::util::{duration, u32_value};

/// The cluster every xDS stream rides on; the name is Istio's, so config dumps read the same.
pub const XDS_CLUSTER: &str = "xds-grpc";
const FILE_BASED_METADATA: &str = "envoy.grpc_credentials.file_based_metadata";
const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// `HOST:PORT` of the control plane; HOST is an IP literal (`[v6]` bracketed) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsAddr {
    pub host: XdsHost,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XdsHost {
    Ip(IpAddr),
    Dns(String),
}

/// Where the control plane is: one `HOST:PORT` (in a cluster, the `istiod` Service, whose one
/// address spreads connections over the replicas), or several comma-separated, one per replica,
/// for proxies that reach the replicas with nothing in front of them. Never empty, no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsAddrs(Vec<XdsAddr>);

impl XdsAddrs {
    /// The first address given; the only one, unless the proxy was given several replicas.
    pub fn first(&self) -> &XdsAddr {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &XdsAddr> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: there is at least one address. (Clippy wants it beside `len`.)
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<XdsAddr> for XdsAddrs {
    fn from(addr: XdsAddr) -> Self {
        XdsAddrs(vec![addr])
    }
}

impl FromStr for XdsAddrs {
    type Err = InvalidXdsAddr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut addrs: Vec<XdsAddr> = Vec::new();
        for piece in s.split(',').map(str::trim) {
            if piece.is_empty() {
                return Err(InvalidXdsAddr::Empty(s.to_owned()));
            }
            let addr: XdsAddr = piece.parse()?;
            if addrs.contains(&addr) {
                return Err(InvalidXdsAddr::Repeated(piece.to_owned()));
            }
            addrs.push(addr);
        }
        Ok(XdsAddrs(addrs))
    }
}

/// TLS to meshd: its serving certificate is checked against a root and a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsTls {
    /// File of the root certificate (PEM) that meshd's serving certificate chains to.
    pub root_cert: String,
    /// The name meshd's serving certificate carries: sent as SNI and required as a DNS SAN.
    pub server_name: String,
    /// File of the service-account token Envoy presents as `authorization: Bearer <token>`.
    pub token_file: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum InvalidXdsAddr {
    MissingPort(String),
    BadPort(String),
    BadHost(String),
    /// An empty entry in a comma-separated list (or nothing at all).
    Empty(String),
    /// The same address twice in a list.
    Repeated(String),
}

impl fmt::Display for InvalidXdsAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidXdsAddr::MissingPort(s) => write!(f, "`{s}` is not HOST:PORT"),
            InvalidXdsAddr::BadPort(s) => write!(f, "`{s}` has an invalid port"),
            InvalidXdsAddr::BadHost(s) => write!(f, "`{s}` has an invalid host"),
            InvalidXdsAddr::Empty(s) => write!(f, "`{s}` has an empty address"),
            InvalidXdsAddr::Repeated(s) => write!(f, "`{s}` is given twice"),
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
            (XdsHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| InvalidXdsAddr::MissingPort(s.to_owned()))?;
            // An unbracketed v6 literal would have been split at its last group.
            if host.contains(':') {
                return Err(InvalidXdsAddr::BadHost(s.to_owned()));
            }
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => XdsHost::Ip(ip),
                Err(_) if is_dns_name(host) => XdsHost::Dns(host.to_owned()),
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

impl fmt::Display for XdsHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdsHost::Ip(ip) => ip.fmt(f),
            XdsHost::Dns(name) => f.write_str(name),
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

/// The `xds-grpc` cluster, unless a token file puts xDS on the google_grpc client, which needs none.
pub(super) fn static_clusters(params: &BootstrapParams) -> Vec<Cluster> {
    let token = params
        .xds_tls
        .as_ref()
        .is_some_and(|t| t.token_file.is_some());
    if token {
        Vec::new()
    } else {
        vec![xds_cluster(params)]
    }
}

/// The ADS gRPC service. Plain: Envoy's own gRPC client on the `xds-grpc` cluster. With a token
/// file: Envoy's google_grpc client, because only it takes call credentials that are read at
/// stream start — `envoy.grpc_credentials.file_based_metadata` reads the file for every new
/// stream, so a kubelet-rotated token is what a reconnecting proxy presents. (Envoy's own client
/// only has `initial_metadata`, fixed when the bootstrap is written: a proxy would be locked out
/// once its first token expired.) Checked with Envoy 1.40: `--mode validate` accepts it and a
/// real proxy sends `authorization: Bearer <file contents>` on every (re)connect.
pub(super) fn grpc_service(params: &BootstrapParams) -> GrpcService {
    let Some((tls, token)) = params
        .xds_tls
        .as_ref()
        .and_then(|t| Some((t, t.token_file.as_ref()?)))
    else {
        return GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: XDS_CLUSTER.to_string(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
    };
    use grpc_service::google_grpc::{
        CallCredentials, ChannelArgs, ChannelCredentials, SslCredentials, call_credentials,
        channel_args, channel_credentials,
    };
    // Envoy's google_grpc client takes one target; `meshd bootstrap` refuses a token file with
    // several addresses, which would need gRPC's own name resolution.
    let XdsAddr { host, port } = params.xds_addr.first();
    let target_uri = match host {
        XdsHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        host => format!("{host}:{port}"),
    };
    let plugin = call_credentials::MetadataCredentialsFromPlugin {
        name: FILE_BASED_METADATA.to_string(),
        config_type: Some(
            call_credentials::metadata_credentials_from_plugin::ConfigType::TypedConfig(pack(
                &FileBasedMetadataConfig {
                    secret_data: file(token),
                    header_key: "authorization".to_string(),
                    header_prefix: "Bearer ".to_string(),
                },
            )),
        ),
    };
    let text = |s: &str| channel_args::Value {
        value_specifier: Some(channel_args::value::ValueSpecifier::StringValue(
            s.to_string(),
        )),
    };
    let int = |n: i64| channel_args::Value {
        value_specifier: Some(channel_args::value::ValueSpecifier::IntValue(n)),
    };
    let args = HashMap::from([
        // Verify meshd's certificate for its service name, whatever address it has.
        (
            "grpc.ssl_target_name_override".to_string(),
            text(&tls.server_name),
        ),
        ("grpc.default_authority".to_string(), text(&tls.server_name)),
        // As the plain client's HTTP/2 PINGs: notice a dead control plane quickly.
        ("grpc.keepalive_time_ms".to_string(), int(30_000)),
        ("grpc.keepalive_timeout_ms".to_string(), int(10_000)),
        // gRPC's default limit (4 MiB) is too small for a large mesh's CDS/EDS.
        ("grpc.max_receive_message_length".to_string(), int(-1)),
    ]);
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::GoogleGrpc(
            grpc_service::GoogleGrpc {
                target_uri,
                stat_prefix: XDS_CLUSTER.to_string(),
                // Without naming the plugin's factory, Envoy's default one ignores `from_plugin`.
                credentials_factory_name: FILE_BASED_METADATA.to_string(),
                channel_credentials: Some(ChannelCredentials {
                    credential_specifier: Some(
                        channel_credentials::CredentialSpecifier::SslCredentials(SslCredentials {
                            root_certs: file(&tls.root_cert),
                            ..Default::default()
                        }),
                    ),
                }),
                call_credentials: vec![CallCredentials {
                    credential_specifier: Some(call_credentials::CredentialSpecifier::FromPlugin(
                        plugin,
                    )),
                }],
                channel_args: Some(ChannelArgs { args }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn xds_cluster(params: &BootstrapParams) -> Cluster {
    let XdsAddr { host, port } = params.xds_addr.first();
    let mut c = static_cluster(XDS_CLUSTER, duration(1, 0), &host.to_string(), *port);
    if params.xds_addr.len() > 1 {
        // One endpoint per replica. The ADS stream is one request on this cluster: when its
        // replica dies, Envoy retries with backoff and each retry is a new request, which round
        // robin (the default policy) sends to the next replica — a dead one is tried at most once
        // in a row, and a silent one costs the 1 s connect timeout.
        c.load_assignment = Some(endpoints(
            XDS_CLUSTER,
            params
                .xds_addr
                .iter()
                .map(|addr| (addr.host.to_string(), addr.port)),
        ));
    }
    if params
        .xds_addr
        .iter()
        .any(|addr| matches!(addr.host, XdsHost::Dns(_)))
    {
        c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        ));
        // meshd may listen on IPv4 only while `localhost` resolves to ::1 first.
        c.dns_lookup_family = cluster::DnsLookupFamily::V4Preferred as i32;
    }
    // One long-lived ADS stream must never be refused by the default limits (1024).
    c.circuit_breakers = Some(CircuitBreakers {
        thresholds: [RoutingPriority::Default, RoutingPriority::High]
            .map(high_limits)
            .to_vec(),
        ..Default::default()
    });
    // Catches a control plane that vanished without a FIN (node loss, NAT timeouts).
    c.upstream_connection_options = Some(UpstreamConnectionOptions {
        tcp_keepalive: Some(TcpKeepalive {
            keepalive_time: u32_value(300),
            ..Default::default()
        }),
        ..Default::default()
    });
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Http2ProtocolOptions {
                                // An idle ADS stream carries nothing for minutes; PINGs notice a
                                // dead peer long before TCP keepalive does, so the proxy
                                // reconnects quickly.
                                connection_keepalive: Some(KeepaliveSettings {
                                    interval: Some(duration(30, 0)),
                                    timeout: Some(duration(10, 0)),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    c.typed_extension_protocol_options =
        HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_string(), pack(&options))]);
    if let Some(tls) = &params.xds_tls {
        c.transport_socket = Some(xds_tls(tls));
    }
    c
}

fn high_limits(priority: RoutingPriority) -> circuit_breakers::Thresholds {
    circuit_breakers::Thresholds {
        priority: priority as i32,
        max_connections: u32_value(100_000),
        max_pending_requests: u32_value(100_000),
        max_requests: u32_value(100_000),
        max_retries: u32_value(100_000),
        ..Default::default()
    }
}

/// HTTP/2 over TLS, meshd's certificate checked against the root and its service name.
fn xds_tls(tls: &XdsTls) -> TransportSocket {
    let context = UpstreamTlsContext {
        sni: tls.server_name.clone(),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: vec!["h2".to_string()],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: file(&tls.root_cert),
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                            san_type: subject_alt_name_matcher::SanType::Dns as i32,
                            matcher: Some(StringMatcher {
                                match_pattern: Some(string_matcher::MatchPattern::Exact(
                                    tls.server_name.clone(),
                                )),
                                ignore_case: false,
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    tls_socket(pack(&context))
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.to_string())),
        ..Default::default()
    })
}
