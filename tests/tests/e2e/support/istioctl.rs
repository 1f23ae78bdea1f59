//! What istioctl sends a control plane for `proxy-status` and `proxy-config`, sent the way its
//! xDS client sends it (istioctl's `pkg/xds/client.go` and `pkg/adsc`): ADS over TLS without
//! verifying the server's certificate (istioctl skips it), a service-account token of
//! `istio-system/default` for audience `istio-ca` as bearer credentials, a node of its own
//! (`sidecar~IP~test-1.NS~NS.svc.cluster.local`, metadata `GENERATOR: event`, `SERVICE_ACCOUNT`,
//! `NAMESPACE`, `ISTIO_VERSION: 65536.65536.65536`), and a first request whose nonce is the time.
//! No istioctl binary can be installed here; this is its request, byte for byte where it counts.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshd_proto::pb::envoy::config::core::v3::Node;
use meshd_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshd_proto::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message as _;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The SAN istioctl would check if it checked: the `istiod` Service.
const XDS_SAN: &str = "istiod.istio-system.svc";

/// What a debug request came back with: a response, or the gRPC status the stream ended with.
pub type Answer = Result<DiscoveryResponse, (i32, String)>;

/// How istioctl reaches the control plane.
pub enum Transport<'a> {
    /// The TLS xDS port with this bearer token (istioctl's default).
    Tls { token: &'a str },
    /// `--plaintext`: the plaintext port, no credentials.
    Plaintext,
}

/// istioctl's node for a request from namespace `ns` as service account `sa`.
fn node(ns: &str, sa: &str) -> Node {
    let string = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let mut metadata = Struct::default();
    for (key, value) in [
        ("GENERATOR", "event"),
        ("SERVICE_ACCOUNT", sa),
        ("NAMESPACE", ns),
        ("ISTIO_VERSION", "65536.65536.65536"),
    ] {
        metadata.fields.insert(key.to_owned(), string(value));
    }
    Node {
        id: format!("sidecar~10.255.0.9~test-1.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// Sends one debug request (`istio.io/debug/syncz`, or `istio.io/debug/config_dump` naming
/// `POD.NAMESPACE`) to `addr` and waits for the answer, then ACKs it as istioctl's client does.
pub fn ask(addr: &str, transport: Transport<'_>, type_url: &str, names: &[&str]) -> Answer {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let request = DiscoveryRequest {
        node: Some(node("istio-system", "default")),
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        response_nonce: "2026-12-05 08:00:00.000000001 +0000 UTC m=+0.051".to_owned(),
        ..Default::default()
    };
    let answer = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), exchange(addr, transport, request)).await
    });
    match answer {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => panic!("asking {addr} for {type_url}: {err:#}"),
        Err(_) => panic!("no answer from {addr} for {type_url} within 30 s"),
    }
}

async fn exchange(
    addr: &str,
    transport: Transport<'_>,
    request: DiscoveryRequest,
) -> anyhow::Result<Answer> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    match transport {
        Transport::Plaintext => {
            let (client, connection) = h2::client::handshake(tcp).await?;
            tokio::spawn(connection);
            stream(client, "http", None, request).await
        }
        Transport::Tls { token } => {
            let mut config = rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify))
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from(XDS_SAN)?, tcp)
                .await?;
            let (client, connection) = h2::client::handshake(tls).await?;
            tokio::spawn(connection);
            stream(client, "https", Some(token), request).await
        }
    }
}

fn frame(message: &impl prost::Message) -> Bytes {
    let body = message.encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + body.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(body.len()).unwrap_or(u32::MAX));
    framed.extend_from_slice(&body);
    framed.freeze()
}

fn grpc_status(headers: &http::HeaderMap) -> Option<(i32, String)> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Some((code, message))
}

async fn stream(
    mut client: h2::client::SendRequest<Bytes>,
    scheme: &str,
    token: Option<&str>,
    request: DiscoveryRequest,
) -> anyhow::Result<Answer> {
    let mut http = http::Request::post(format!("{scheme}://{XDS_SAN}:15012{ADS_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        http = http.header("authorization", format!("Bearer {token}"));
    }
    let (response, mut send) = client.send_request(http.body(())?, false)?;
    send.send_data(frame(&request), false)?;
    let response = response.await?;
    // A refusal comes as a trailers-only response: the status is in the headers.
    if let Some(status) = grpc_status(response.headers())
        && status.0 != 0
    {
        return Ok(Err(status));
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                buf.advance(5);
                let answer = DiscoveryResponse::decode(buf.split_to(len))?;
                // ACKed as istioctl's client ACKs: same type, the response's nonce and version.
                send.send_data(
                    frame(&DiscoveryRequest {
                        type_url: answer.type_url.clone(),
                        version_info: answer.version_info.clone(),
                        response_nonce: answer.nonce.clone(),
                        ..Default::default()
                    }),
                    false,
                )?;
                return Ok(Ok(answer));
            }
        }
        match body.data().await {
            Some(chunk) => {
                let chunk = chunk?;
                let _ = body.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            None => {
                let trailers = body.trailers().await?.unwrap_or_default();
                return Ok(Err(
                    grpc_status(&trailers).unwrap_or((2, "stream ended without an answer".into()))
                ));
            }
        }
    }
}

/// istioctl's `InsecureSkipVerify: true`: any certificate, signatures still checked.
#[derive(Debug)]
struct SkipVerify;

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        algorithms().supported_schemes()
    }
}

fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}
