//! Kubernetes admission on `--webhook-addr` (HTTPS): `/inject` adds the sidecar to new pods,
//! `/validate` refuses Istio objects `meshd analyze` rejects, with analyze's message.
//!
//! The serving certificate comes from meshd's own CA (the CA bundle the webhook configurations
//! carry is meshd's trust bundle, patched in by the leader: `meshd_kube::ca_bundle`), and is
//! renewed at half-life and after the CA changes, like the xDS port's. AdmissionReview
//! `admission.k8s.io/v1` and `v1beta1` (kube's types) are both answered, each in its own version.
//! What to inject is [`crate::inject`], a pure function; what to refuse is [`validate`].

pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use meshd_ca::CertificateAuthority;
use meshd_model::{Kind, Object, ObjectKey, Snapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use crate::inject::{self, InjectConfig, JsonPatch};
use crate::tls::{self, ServingCert};

#[derive(clap::Args, Debug, Clone)]
// Flattened into `serve`'s own `Args`: the group needs a name of its own.
#[group(id = "webhook")]
pub struct Args {
    /// HTTPS: Kubernetes admission webhooks, `/inject` (sidecar injection) and `/validate`.
    #[arg(long, env = "MESHD_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,
    /// DNS names on the webhook's serving certificate: the names the API server calls it by.
    #[arg(
        long,
        env = "MESHD_WEBHOOK_NAMES",
        value_delimiter = ',',
        default_value = "istiod.istio-system.svc,meshd.istio-system.svc,istiod.istio-system.svc.cluster.local"
    )]
    pub webhook_names: Vec<String>,
    /// Image of the injected proxy: stock Envoy.
    #[arg(long, env = "MESHD_PROXY_IMAGE", default_value = inject::DEFAULT_PROXY_IMAGE)]
    pub proxy_image: String,
    /// Image of the injected init containers (`meshd iptables`, `meshd bootstrap`): meshd's own.
    #[arg(long, env = "MESHD_PROXY_INIT_IMAGE", default_value = inject::DEFAULT_PROXY_INIT_IMAGE)]
    pub proxy_init_image: String,
}

impl Args {
    pub fn inject_config(&self) -> InjectConfig {
        InjectConfig {
            proxy_image: self.proxy_image.clone(),
            proxy_init_image: self.proxy_init_image.clone(),
            ..InjectConfig::default()
        }
    }
}

/// The resource a validation was about, as istiod labels `galley_validation_*`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    group: String,
    version: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    group: String,
    version: String,
    resource: String,
    reason: &'static str,
}

/// istiod's `reason` for an object its validation refused.
const INVALID_RESOURCE: &str = "invalid_resource";

/// Istio's metric names and labels, so injector and validation dashboards keep working.
#[derive(Clone, Default)]
pub struct Metrics {
    injection_requests: Counter,
    injection_success: Counter,
    injection_skip: Counter,
    injection_failure: Counter,
    validation_passed: Family<ResourceLabels, Counter>,
    validation_failed: Family<FailureLabels, Counter>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        for (name, help, counter) in [
            (
                "sidecar_injection_requests",
                "Sidecar injection requests",
                &metrics.injection_requests,
            ),
            (
                "sidecar_injection_success",
                "Pods injected",
                &metrics.injection_success,
            ),
            (
                "sidecar_injection_skip",
                "Pods left without a sidecar (opted out, not enabled, already injected)",
                &metrics.injection_skip,
            ),
            (
                "sidecar_injection_failure",
                "Injection requests refused",
                &metrics.injection_failure,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "galley_validation_passed",
            "Resource is valid",
            metrics.validation_passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Resource validation failed",
            metrics.validation_failed.clone(),
        );
        metrics
    }
}

/// What the handlers need: how to inject, the current snapshot (namespace labels, mesh config).
pub struct Webhooks {
    inject: InjectConfig,
    snapshot: Box<dyn Fn() -> Arc<Snapshot> + Send + Sync>,
    metrics: Metrics,
}

impl Webhooks {
    pub fn new(
        inject: InjectConfig,
        snapshot: impl Fn() -> Arc<Snapshot> + Send + Sync + 'static,
        metrics: Metrics,
    ) -> Self {
        Webhooks {
            inject,
            snapshot: Box::new(snapshot),
            metrics,
        }
    }
}

/// The bound webhook port with its certificate, ready to run.
pub struct Server {
    listener: TcpListener,
    cert: Arc<ServingCert>,
    webhooks: Arc<Webhooks>,
}

impl Server {
    /// Binds `--webhook-addr` and mints the serving certificate; fails now rather than in a task.
    /// `inject`: [`Args::inject_config`], with what the server adds (its revision).
    pub async fn bind(
        args: &Args,
        inject: InjectConfig,
        ca: &CertificateAuthority,
        snapshot: impl Fn() -> Arc<Snapshot> + Send + Sync + 'static,
        metrics: Metrics,
    ) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(args.webhook_addr)
            .await
            .with_context(|| format!("binding {}", args.webhook_addr))?;
        let cert = ServingCert::issue(
            ca,
            args.webhook_names.clone(),
            tls::serving_ips(args.webhook_addr),
        )
        .context("minting the webhook's serving certificate")?;
        let webhooks = Webhooks::new(inject, snapshot, metrics);
        tracing::info!(addr = %args.webhook_addr, "admission webhooks serving");
        Ok(Server {
            listener,
            cert,
            webhooks: Arc::new(webhooks),
        })
    }

    /// The certificate to keep renewed.
    pub fn cert(&self) -> Arc<ServingCert> {
        self.cert.clone()
    }

    /// Serves until the process ends.
    pub async fn run(self) {
        let local = self
            .listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let incoming =
            tls::incoming_with_alpn(self.listener, self.cert, vec![b"http/1.1".to_vec()]);
        let listener = TlsListener { incoming, local };
        if let Err(e) = axum::serve(listener, router(self.webhooks)).await {
            tracing::error!(error = %e, "the webhook server stopped");
        }
    }
}

/// TLS connections as axum's listener.
struct TlsListener {
    incoming: ReceiverStream<std::io::Result<TlsStream<TcpStream>>>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    let peer = stream.get_ref().0.peer_addr().unwrap_or(self.local);
                    return (stream, peer);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "webhook connection failed"),
                // The acceptor only stops with the process.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

pub fn router(webhooks: Arc<Webhooks>) -> Router {
    Router::new()
        .route("/inject", post(inject_handler))
        .route("/validate", post(validate_handler))
        .with_state(webhooks)
}

/// What to answer for one request.
#[derive(Debug, Default)]
struct Answer {
    allowed: bool,
    patch: Option<JsonPatch>,
    message: Option<String>,
    warnings: Vec<String>,
}

impl Answer {
    fn allow() -> Self {
        Answer {
            allowed: true,
            ..Answer::default()
        }
    }

    fn deny(message: String) -> Self {
        Answer {
            allowed: false,
            message: Some(message),
            ..Answer::default()
        }
    }
}

const SUPPORTED_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// One admission request, as the handlers read it.
struct Request {
    operation: Operation,
    namespace: String,
    name: String,
    object: Value,
    /// The resource reviewed, `group/version/resource` (metrics label it).
    resource: kube::core::GroupVersionResource,
}

/// Decodes the review, lets `decide` judge the request, and answers in the review's version.
fn answer(body: &[u8], decide: impl FnOnce(&Request) -> Answer) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    if !SUPPORTED_VERSIONS.contains(&review.types.api_version.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported AdmissionReview version {:?} (supported: {})",
                review.types.api_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        )
            .into_response();
    }
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            return (StatusCode::BAD_REQUEST, "AdmissionReview without a request").into_response();
        }
    };
    let object = match request.object.as_ref().map(serde_json::to_value) {
        Some(Ok(object)) => object,
        Some(Err(e)) => {
            return (StatusCode::BAD_REQUEST, format!("unreadable object: {e}")).into_response();
        }
        None => Value::Null,
    };
    let decided = decide(&Request {
        operation: request.operation.clone(),
        namespace: request.namespace.clone().unwrap_or_default(),
        name: request.name.clone(),
        object,
        resource: request.resource.clone(),
    });
    let mut response = AdmissionResponse::from(&request);
    if !decided.allowed {
        response = response.deny(decided.message.unwrap_or_default());
    }
    if !decided.warnings.is_empty() {
        response.warnings = Some(decided.warnings);
    }
    if let Some(patch) = decided.patch {
        response = match response.with_patch(json_patch::Patch(patch)) {
            Ok(response) => response,
            Err(e) => AdmissionResponse::from(&request).deny(format!("encoding the patch: {e}")),
        };
    }
    axum::Json(response.into_review()).into_response()
}

/// The namespace's labels when meshd knows the namespace (the Kubernetes source watches them).
fn namespace_labels(snapshot: &Snapshot, namespace: &str) -> Option<BTreeMap<String, String>> {
    match snapshot
        .objects
        .get(&ObjectKey::new(Kind::Namespace, "", namespace))
    {
        Some(Object::Namespace(ns)) => Some(ns.metadata.labels.clone()),
        _ => None,
    }
}

async fn inject_handler(State(webhooks): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let metrics = &webhooks.metrics;
    metrics.injection_requests.inc();
    answer(&body, |request| {
        if request.operation != Operation::Create {
            return Answer::allow();
        }
        let pod = &request.object;
        let namespace = if request.namespace.is_empty() {
            pod["metadata"]["namespace"].as_str().unwrap_or("default")
        } else {
            &request.namespace
        };
        let snapshot = (webhooks.snapshot)();
        let labels = namespace_labels(&snapshot, namespace);
        let name = pod["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .or_else(|| pod["metadata"]["generateName"].as_str())
            .unwrap_or_default();
        let config = webhooks.inject.with_mesh(&snapshot.mesh);
        match inject::inject(pod, namespace, labels.as_ref(), &config) {
            Ok(Some(patch)) => {
                metrics.injection_success.inc();
                tracing::info!(pod = %format!("{namespace}/{name}"), "injected the sidecar");
                Answer {
                    patch: Some(patch),
                    ..Answer::allow()
                }
            }
            Ok(None) => {
                metrics.injection_skip.inc();
                let reason =
                    inject::skip_reason(pod, namespace, labels.as_ref(), &webhooks.inject.revision);
                tracing::debug!(
                    pod = %format!("{namespace}/{name}"),
                    reason = reason.map_or("", inject::Skip::as_str),
                    "not injecting"
                );
                Answer::allow()
            }
            Err(e) => {
                metrics.injection_failure.inc();
                tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "injection refused");
                Answer::deny(format!("injection failed: {e}"))
            }
        }
    })
}

async fn validate_handler(State(webhooks): State<Arc<Webhooks>>, body: Bytes) -> Response {
    let metrics = &webhooks.metrics;
    answer(&body, |request| {
        if !matches!(request.operation, Operation::Create | Operation::Update) {
            return Answer::allow();
        }
        let mesh = (webhooks.snapshot)().mesh.clone();
        let verdict = validate::review(&request.object, &request.namespace, &request.name, mesh);
        let resource = &request.resource;
        if verdict.allowed() {
            metrics
                .validation_passed
                .get_or_create(&ResourceLabels {
                    group: resource.group.clone(),
                    version: resource.version.clone(),
                    resource: resource.resource.clone(),
                })
                .inc();
            Answer {
                warnings: verdict.warnings,
                ..Answer::allow()
            }
        } else {
            metrics
                .validation_failed
                .get_or_create(&FailureLabels {
                    group: resource.group.clone(),
                    version: resource.version.clone(),
                    resource: resource.resource.clone(),
                    reason: INVALID_RESOURCE,
                })
                .inc();
            Answer {
                warnings: verdict.warnings,
                ..Answer::deny(verdict.errors.join("\n"))
            }
        }
    })
}

#[cfg(test)]
mod tests;
