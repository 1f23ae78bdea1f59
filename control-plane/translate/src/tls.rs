//! Mesh mutual TLS on stock Envoy: certificates come over SDS (`default` for the proxy's own,
//! `ROOTCA` for the trust bundle); peers are checked by their SPIFFE URI SANs.

use std::collections::{BTreeSet, HashMap};

use meshd_model::{Endpoint, MtlsMode, Protocol, Snapshot};
use meshd_proto::pack;
use meshd_proto::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use meshd_proto::pb::envoy::config::core::v3::{Metadata, TransportSocket, transport_socket};
use meshd_proto::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    SubjectAltNameMatcher, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use meshd_proto::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use meshd_proto::pb::google::protobuf::{Struct, Value, value};

use crate::util::ads;

/// SDS name of the proxy's own certificate and key.
pub const SECRET_DEFAULT: &str = "default";
/// SDS name of the trust bundle.
pub const SECRET_ROOTCA: &str = "ROOTCA";
/// Pod label Istio's injection sets; endpoints carrying it have a sidecar that speaks mesh mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// SDS name prefix of credentials kept in Kubernetes Secrets (`credentialName`), as Istio's agent
/// serves them.
pub const CREDENTIAL_PREFIX: &str = "kubernetes://";
/// SDS name suffix of a credential's CA certificates.
pub const CREDENTIAL_CA_SUFFIX: &str = "-cacert";
/// Endpoint metadata namespace Envoy's transport socket matching reads.
const SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";

/// The SDS name of the certificate and key in the Secret `name`.
pub fn credential_secret(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}")
}

/// The SDS name of the CA certificates that go with the Secret `name`.
pub fn credential_ca_secret(name: &str) -> String {
    format!("{CREDENTIAL_PREFIX}{name}{CREDENTIAL_CA_SUFFIX}")
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

fn string_struct(key: &str, val: &str) -> Struct {
    let mut fields = HashMap::new();
    fields.insert(
        key.to_string(),
        Value {
            kind: Some(value::Kind::StringValue(val.to_string())),
        },
    );
    Struct { fields }
}

fn common(sans: &[String], alpn: Vec<String>) -> CommonTlsContext {
    let default_validation_context = CertificateValidationContext {
        match_typed_subject_alt_names: sans
            .iter()
            .map(|san| SubjectAltNameMatcher {
                san_type: subject_alt_name_matcher::SanType::Uri as i32,
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact(san.clone())),
                    ignore_case: false,
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    CommonTlsContext {
        tls_certificate_sds_secret_configs: vec![sds(SECRET_DEFAULT)],
        validation_context_type: Some(
            common_tls_context::ValidationContextType::CombinedValidationContext(
                common_tls_context::CombinedCertificateValidationContext {
                    default_validation_context: Some(default_validation_context),
                    validation_context_sds_secret_config: Some(sds(SECRET_ROOTCA)),
                    ..Default::default()
                },
            ),
        ),
        alpn_protocols: alpn,
        ..Default::default()
    }
}

pub(crate) fn tls_socket(config: meshd_proto::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_string(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(config)),
    }
}

/// Istio's SNI for a mesh destination: `outbound_.<port>_.<subset>_.<fqdn>`.
pub fn mesh_sni(port: u32, subset: &str, host: &str) -> String {
    format!("outbound_.{port}_.{subset}_.{host}")
}

/// The ALPN a mesh client offers: Istio's (`istio-peer-exchange`, `istio`, and `h2` for HTTP/2),
/// or none on a port without a declared protocol, so that Envoy's HTTP connection pool offers
/// `http/1.1` or `h2` and the server's sidecar can tell HTTP from TCP by it.
pub fn mesh_alpn(protocol: Protocol, http2: bool) -> Vec<String> {
    if protocol.is_sniffed() && !http2 {
        return Vec::new();
    }
    let mut alpn = vec!["istio-peer-exchange".to_string(), "istio".to_string()];
    if http2 {
        alpn.push("h2".to_string());
    }
    alpn
}

/// Auto-mTLS: endpoints with a sidecar (metadata `tlsMode: istio`) get mutual TLS checked against
/// the destination's identities; the rest get plaintext.
pub fn auto_mtls_matches(
    sni: String,
    sans: &[String],
    alpn: Vec<String>,
) -> Vec<TransportSocketMatch> {
    vec![
        TransportSocketMatch {
            name: "tlsMode-istio".to_string(),
            r#match: Some(string_struct("tlsMode", "istio")),
            transport_socket: Some(mesh_mtls_socket(sni, sans, alpn)),
        },
        TransportSocketMatch {
            name: "tlsMode-disabled".to_string(),
            r#match: Some(Struct::default()),
            transport_socket: Some(TransportSocket {
                name: "envoy.transport_sockets.raw_buffer".to_string(),
                config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
                    &RawBuffer::default(),
                ))),
            }),
        },
    ]
}

/// Mesh mTLS as a client: the proxy's certificate, the destination's identities checked.
pub fn mesh_mtls_socket(sni: String, sans: &[String], alpn: Vec<String>) -> TransportSocket {
    let upstream = UpstreamTlsContext {
        common_tls_context: Some(common(sans, alpn)),
        sni,
        ..Default::default()
    };
    tls_socket(pack(&upstream))
}

/// Inbound termination: a client certificate from the mesh's roots is required.
pub fn inbound_mtls_socket(http: bool) -> TransportSocket {
    let alpn = if http {
        vec!["h2".to_string(), "http/1.1".to_string()]
    } else {
        Vec::new()
    };
    let downstream = DownstreamTlsContext {
        common_tls_context: Some(common(&[], alpn)),
        require_client_certificate: crate::util::bool_value(true),
        ..Default::default()
    };
    tls_socket(pack(&downstream))
}

/// The SPIFFE ids of the workloads behind some endpoints, for SAN checks: in the mesh's trust
/// domain and, as istiod expands them, in each of MeshConfig's `trustDomainAliases`.
pub fn endpoint_identities(snapshot: &Snapshot, endpoints: &[Endpoint]) -> Vec<String> {
    let mesh = &snapshot.mesh;
    let domains: Vec<&str> = std::iter::once(mesh.trust_domain.as_str())
        .chain(mesh.trust_domain_aliases.iter().map(String::as_str))
        .collect();
    endpoints
        .iter()
        .filter_map(|e| e.service_account.as_ref().map(|sa| (e, sa)))
        .flat_map(|(e, sa)| {
            domains
                .iter()
                .map(move |td| format!("spiffe://{td}/ns/{}/sa/{sa}", e.namespace))
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Whether a client should use mesh mTLS to this endpoint: it has a sidecar and does not refuse
/// TLS on that port (PeerAuthentication DISABLE).
pub fn endpoint_speaks_mtls(snapshot: &Snapshot, e: &Endpoint) -> bool {
    e.labels.get(TLS_MODE_LABEL).is_some_and(|m| m == "istio")
        && snapshot
            .peer_authentications
            .mode(&e.namespace, &e.labels, e.port)
            != MtlsMode::Disable
}

/// An endpoint's `filter_metadata`: `envoy.transport_socket_match = {tlsMode: istio}` when it
/// speaks mesh mTLS, and `istio` (the workload behind it, for metrics). Laid out alike for equal
/// inputs, so equal endpoints encode alike.
pub fn endpoint_metadata(mtls: bool, istio: Struct) -> Option<Metadata> {
    let mut namespaces = vec![("istio", istio)];
    if mtls {
        namespaces.push((
            SOCKET_MATCH_KEY,
            crate::util::ordered_struct(&[("tlsMode", "istio".to_string())]),
        ));
    }
    Some(crate::util::ordered_metadata(namespaces))
}
