//! `IstioCertificateService/CreateCertificate` over real gRPC on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meshd_ca::{
    AuthError, Authenticator, Caller, CertificateAuthority, CertificateService, Identity, PeerInfo,
    uri_sans,
};
use meshd_proto::istio_ca::IstioCertificateRequest;
use meshd_proto::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Code, Request};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::support::*;

const TOKEN: &str = "token-of-default-a";

/// Accepts one bearer token, for `default/a`, and remembers every caller it saw.
struct TokenAuth {
    seen: Arc<Mutex<Vec<Caller>>>,
}

impl Authenticator for TokenAuth {
    fn authenticate(&self, caller: &Caller) -> Result<Identity, AuthError> {
        self.seen.lock().push(caller.clone());
        match caller.bearer_token.as_deref() {
            None => Err(AuthError::NoCredentials),
            Some(TOKEN) => Ok(mk_identity("default", "a")),
            Some(_) => Err(AuthError::Rejected("unknown token".into())),
        }
    }
}

struct Harness {
    client: IstioCertificateServiceClient<Channel>,
    ca: Arc<CertificateAuthority>,
    registry: Registry,
    seen: Arc<Mutex<Vec<Caller>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(mk_ca(dir.path()));
        let seen = Arc::default();
        let mut registry = Registry::default();
        let service = CertificateService::new(
            ca.clone(),
            TokenAuth {
                seen: Arc::clone(&seen),
            },
            &mut registry,
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service.into_server())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let client = IstioCertificateServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Harness {
            client,
            ca,
            registry,
            seen,
            _dir: dir,
        }
    }

    async fn create(
        &mut self,
        csr: &str,
        token: Option<&str>,
        validity_duration: i64,
    ) -> Result<Vec<String>, tonic::Status> {
        let mut request = Request::new(IstioCertificateRequest {
            csr: csr.to_string(),
            validity_duration,
            metadata: None,
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.client
            .create_certificate(request)
            .await
            .map(|response| response.into_inner().cert_chain)
    }

    fn metric(&self, name: &str) -> f64 {
        metric(&self.registry, name)
    }
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find_map(|line| {
            let (metric, value) = line.split_once(' ')?;
            (metric == name).then(|| value.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

fn leaf_lifetime(chain: &[String]) -> i64 {
    let der = &ders(&chain[0])[0];
    let cert = X509Certificate::from_der(der).unwrap().1;
    cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp()
}

#[tokio::test]
async fn create_certificate_signs_for_an_authenticated_caller() {
    let mut h = Harness::start().await;
    let id = mk_identity("default", "a");
    let (csr, _key) = mk_csr(Some("ignored"), &[&id.uri()], &[]);
    let chain = h.create(&csr, Some(TOKEN), 0).await.unwrap();

    assert_eq!(chain.len(), 2, "leaf, root");
    assert_eq!(chain[1], h.ca.root_bundle_pem());
    let leaf = &ders(&chain[0])[0];
    assert_eq!(uri_sans(leaf).unwrap(), vec![id.uri()]);
    verify(std::slice::from_ref(leaf), &h.ca.root_bundle_pem()).unwrap();
    assert_eq!(leaf_lifetime(&chain), 24 * 3600 + 120, "the default TTL");

    let seen = h.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].remote_addr.is_some_and(|a| a.ip().is_loopback()));
    assert_eq!(seen[0].bearer_token.as_deref(), Some(TOKEN));

    assert_eq!(h.metric("citadel_server_csr_count_total"), 1.0);
    assert_eq!(
        h.metric("citadel_server_success_cert_issuance_count_total"),
        1.0
    );
    assert_eq!(
        h.metric("citadel_server_authentication_failure_count_total"),
        0.0
    );
    let expiry = h.metric("citadel_server_root_cert_expiry_seconds");
    assert!(expiry > 9.9 * 365.0 * 86400.0, "{expiry}");
}

#[tokio::test]
async fn create_certificate_signs_a_csr_without_sans_for_the_callers_identity() {
    let mut h = Harness::start().await;
    let (csr, _key) = mk_csr(None, &[], &[]);
    let chain = h.create(&csr, Some(TOKEN), 0).await.unwrap();
    let leaf = &ders(&chain[0])[0];
    assert_eq!(
        uri_sans(leaf).unwrap(),
        vec![mk_identity("default", "a").uri()]
    );
}

#[tokio::test]
async fn create_certificate_refuses_an_unauthenticated_caller() {
    let mut h = Harness::start().await;
    let (csr, _key) = mk_csr(None, &[&mk_identity("default", "a").uri()], &[]);
    let status = h.create(&csr, None, 0).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = h.create(&csr, Some("stolen"), 0).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    assert_eq!(h.metric("citadel_server_csr_count_total"), 2.0);
    assert_eq!(
        h.metric("citadel_server_authentication_failure_count_total"),
        2.0
    );
    assert_eq!(
        h.metric("citadel_server_success_cert_issuance_count_total"),
        0.0
    );
}

#[tokio::test]
async fn create_certificate_refuses_a_csr_for_another_identity() {
    let mut h = Harness::start().await;
    let admin = mk_identity("istio-system", "istiod").uri();
    let (csr, _key) = mk_csr(None, &[&admin], &[]);
    let status = h.create(&csr, Some(TOKEN), 0).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&admin), "{}", status.message());
    assert_eq!(
        h.metric("citadel_server_success_cert_issuance_count_total"),
        0.0
    );
}

#[tokio::test]
async fn create_certificate_honours_the_requested_validity_up_to_the_maximum() {
    let mut h = Harness::start().await;
    let (csr, _key) = mk_csr(None, &[], &[]);
    let chain = h.create(&csr, Some(TOKEN), 3600).await.unwrap();
    assert_eq!(leaf_lifetime(&chain), 3600 + 120);
    let chain = h.create(&csr, Some(TOKEN), 365 * 86400).await.unwrap();
    assert_eq!(leaf_lifetime(&chain), 90 * 86400 + 120);
    let chain = h.create(&csr, Some(TOKEN), -5).await.unwrap();
    assert_eq!(leaf_lifetime(&chain), 24 * 3600 + 120);
}

#[tokio::test]
async fn create_certificate_rejects_a_malformed_csr() {
    let mut h = Harness::start().await;
    let status = h.create("hello", Some(TOKEN), 0).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(h.metric("citadel_server_csr_parsing_err_count_total"), 1.0);
}

#[test]
fn caller_is_read_from_the_bearer_header_and_peer_info() {
    let addr: SocketAddr = "10.0.0.7:41000".parse().unwrap();
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("authorization", "bearer  abc.def ".parse().unwrap());
    request.extensions_mut().insert(PeerInfo {
        remote_addr: Some(addr),
        uri_sans: vec![mk_identity("default", "a").uri()],
    });
    let caller = Caller::from_request(&request);
    assert_eq!(caller.bearer_token.as_deref(), Some("abc.def"));
    assert_eq!(caller.remote_addr, Some(addr));
    assert_eq!(
        caller.peer_uri_sans,
        vec![mk_identity("default", "a").uri()]
    );
    let printed = format!("{caller:?}");
    assert!(!printed.contains("abc.def"), "{printed}");

    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(Caller::from_request(&request).bearer_token, None);
}

#[test]
fn root_expiry_gauges_follow_the_ca() {
    struct Nobody;
    impl Authenticator for Nobody {
        fn authenticate(&self, _: &Caller) -> Result<Identity, AuthError> {
            Err(AuthError::NoCredentials)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(mk_ca(dir.path()));
    let mut registry = Registry::default();
    let _service = CertificateService::new(ca.clone(), Nobody, &mut registry);
    let not_after = ca.root_not_after();
    let expected = not_after.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(
        metric(&registry, "citadel_server_root_cert_expiry_timestamp"),
        expected
    );
    let left = not_after.duration_since(SystemTime::now()).unwrap();
    let seconds = metric(&registry, "citadel_server_root_cert_expiry_seconds");
    assert!((seconds - left.as_secs_f64()).abs() < 5.0, "{seconds}");
}

#[test]
fn wire_format_matches_istios_service_and_field_numbers() {
    use meshd_proto::istio_ca::IstioCertificateResponse;
    use meshd_proto::istio_ca::istio_certificate_service_server::SERVICE_NAME;
    use meshd_proto::pb::google::protobuf::{Struct, Value, value::Kind};
    use prost::Message;

    assert_eq!(SERVICE_NAME, "istio.v1.auth.IstioCertificateService");
    let request = IstioCertificateRequest {
        csr: "c".into(),
        validity_duration: 7,
        metadata: Some(Struct {
            fields: [(
                "ClusterID".to_string(),
                Value {
                    kind: Some(Kind::StringValue("k".into())),
                },
            )]
            .into(),
        }),
    };
    let bytes = request.encode_to_vec();
    // csr: field 1, length-delimited; validity_duration: field 3, varint; metadata: field 4.
    assert_eq!(&bytes[..5], &[0x0a, 1, b'c', 0x18, 7]);
    assert_eq!(bytes[5], 0x22);
    let response = IstioCertificateResponse {
        cert_chain: vec!["a".into(), "b".into()],
    };
    // cert_chain: field 1, repeated string.
    assert_eq!(response.encode_to_vec(), vec![0x0a, 1, b'a', 0x0a, 1, b'b']);
}
