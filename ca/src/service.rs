//! Istio's `istio.v1.auth.IstioCertificateService/CreateCertificate`: an authenticated caller
//! sends a CSR and gets a certificate for the identity it proved — never for one it merely names.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshd_proto::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use meshd_proto::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};

use crate::{CaError, CertificateAuthority, Identity};

/// Proves who a caller is from what its connection and request carry.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(&self, caller: &Caller) -> Result<Identity, AuthError>;
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: neither a bearer token nor a client certificate")]
    NoCredentials,
    #[error("credentials rejected: {0}")]
    Rejected(String),
    /// The authentication backend (e.g. TokenReview) could not be asked.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The caller's credentials do not prove an identity, for `reason`.
    pub fn new(reason: impl Into<String>) -> Self {
        AuthError::Rejected(reason.into())
    }
}

/// What a request offers as proof of identity.
#[derive(Clone, Default)]
pub struct Caller {
    pub remote_addr: Option<SocketAddr>,
    /// The token of an `authorization: Bearer <token>` header.
    pub bearer_token: Option<String>,
    /// URI SANs of the verified client certificate, if the connection had one.
    pub peer_uri_sans: Vec<String>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("remote_addr", &self.remote_addr)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("peer_uri_sans", &self.peer_uri_sans)
            .finish()
    }
}

/// Connection facts a TLS server puts into request extensions (for example as its
/// `tonic::transport::server::Connected::ConnectInfo`), since tonic's own TLS types are not
/// compiled in. [`crate::uri_sans`] reads the SANs from a verified client certificate.
#[derive(Clone, Debug, Default)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    pub uri_sans: Vec<String>,
}

impl Caller {
    /// The caller of a gRPC request: remote address (tonic's TCP info or [`PeerInfo`]), bearer
    /// token from `authorization`, client certificate SANs from [`PeerInfo`].
    pub fn from_request<T>(request: &Request<T>) -> Caller {
        let peer = request.extensions().get::<PeerInfo>();
        let bearer_token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_string())
            })
            .filter(|token| !token.is_empty());
        Caller {
            remote_addr: request
                .remote_addr()
                .or_else(|| peer.and_then(|p| p.remote_addr)),
            bearer_token,
            peer_uri_sans: peer.map(|p| p.uri_sans.clone()).unwrap_or_default(),
        }
    }
}

/// istiod's CA server metrics, under istiod's names.
#[derive(Clone, Debug, Default)]
struct CaMetrics {
    csr: Counter,
    success: Counter,
    authentication_failure: Counter,
    csr_parsing_error: Counter,
    csr_sign_error: Counter,
}

impl CaMetrics {
    fn register(registry: &mut Registry, ca: Arc<CertificateAuthority>) -> Self {
        let metrics = Self::default();
        registry.register(
            "citadel_server_csr_count",
            "The number of CSRs received by Citadel server",
            metrics.csr.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "The number of certificates issuances that have succeeded",
            metrics.success.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "The number of authentication failures",
            metrics.authentication_failure.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "The number of errors occurred when parsing the CSR",
            metrics.csr_parsing_error.clone(),
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "The number of errors occurred when signing the CSR",
            metrics.csr_sign_error.clone(),
        );
        registry.register_collector(Box::new(RootExpiry { ca }));
        metrics
    }
}

/// `citadel_server_root_cert_expiry_seconds`, computed at scrape time so it never goes stale.
#[derive(Debug)]
struct RootExpiry {
    ca: Arc<CertificateAuthority>,
}

impl Collector for RootExpiry {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let not_after = self.ca.root_not_after();
        let now = SystemTime::now();
        let seconds = match not_after.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        };
        let gauge = ConstGauge::new(seconds);
        let metric = encoder.encode_descriptor(
            "citadel_server_root_cert_expiry_seconds",
            "The time remaining, in seconds, before the root cert will expire",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        let timestamp = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let gauge = ConstGauge::new(timestamp);
        let metric = encoder.encode_descriptor(
            "citadel_server_root_cert_expiry_timestamp",
            "The unix timestamp, in seconds, when the root cert will expire",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}

/// The `IstioCertificateService` server.
pub struct CertificateService<A: Authenticator> {
    ca: Arc<CertificateAuthority>,
    auth: A,
    metrics: CaMetrics,
}

impl<A: Authenticator> CertificateService<A> {
    /// Registers istiod's `citadel_server_*` metrics on `registry`.
    pub fn new(ca: Arc<CertificateAuthority>, auth: A, registry: &mut Registry) -> Self {
        let metrics = CaMetrics::register(registry, ca.clone());
        Self { ca, auth, metrics }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> IstioCertificateServiceServer<Self> {
        IstioCertificateServiceServer::new(self)
    }

    fn create(
        &self,
        caller: &Caller,
        request: &IstioCertificateRequest,
    ) -> Result<Vec<String>, Status> {
        self.metrics.csr.inc();
        let identity = self.auth.authenticate(caller).map_err(|e| {
            self.metrics.authentication_failure.inc();
            tracing::warn!(remote = ?caller.remote_addr, error = %e, "CreateCertificate: authentication failed");
            match e {
                AuthError::Unavailable(_) => Status::unavailable(e.to_string()),
                AuthError::NoCredentials | AuthError::Rejected(_) => {
                    Status::unauthenticated(e.to_string())
                }
            }
        })?;
        let ttl = u64::try_from(request.validity_duration)
            .ok()
            .filter(|secs| *secs > 0)
            .map(Duration::from_secs);
        match self.ca.sign_csr(&request.csr, &identity, ttl) {
            Ok(chain) => {
                self.metrics.success.inc();
                tracing::info!(remote = ?caller.remote_addr, %identity, "CreateCertificate: issued");
                Ok(chain)
            }
            Err(e) => {
                tracing::warn!(remote = ?caller.remote_addr, %identity, error = %e,
                    "CreateCertificate: refused");
                Err(match e {
                    CaError::InvalidCsr(_) => {
                        self.metrics.csr_parsing_error.inc();
                        Status::invalid_argument(e.to_string())
                    }
                    CaError::ForeignSan { .. }
                    | CaError::ForeignTrustDomain { .. }
                    | CaError::InvalidIdentity { .. } => Status::permission_denied(e.to_string()),
                    _ => {
                        self.metrics.csr_sign_error.inc();
                        Status::internal(e.to_string())
                    }
                })
            }
        }
    }
}

impl<A: Authenticator> fmt::Debug for CertificateService<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateService")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

#[tonic::async_trait]
impl<A: Authenticator> IstioCertificateService for CertificateService<A> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let caller = Caller::from_request(&request);
        let cert_chain = self.create(&caller, request.get_ref())?;
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}
