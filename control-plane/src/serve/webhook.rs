//! Kubernetes admission on `--webhook-addr` (HTTPS): `/inject` adds the sidecar to new pods,
//! `/validate` refuses Istio objects `meshd analyze` rejects, with analyze's message.
//!
//! The serving certificate comes from meshd's own CA (the CA bundle the webhook configurations
//! carry is meshd's trust bundle, patched in by the leader: [`ca_bundle`]), and is renewed at
//! half-life and after the CA changes, like the xDS port's. AdmissionReview `admission.k8s.io/v1`
//! and `v1beta1` are both answered, each in its own version.

pub mod ca_bundle;
pub mod inject;
pub mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use meshd_ca::CertificateAuthority;
use meshd_model::{Kind, Object, ObjectKey, Snapshot};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::generator::MeshGenerator;
use super::tls::{self, ServingCert};
use inject::InjectConfig;

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
    fn inject_config(&self) -> InjectConfig {
        InjectConfig {
            proxy_image: self.proxy_image.clone(),
            proxy_init_image: self.proxy_init_image.clone(),
            ..InjectConfig::default()
        }
    }
}

/// Istio's metric names, so injector and validation dashboards keep working.
#[derive(Clone, Default)]
pub struct Metrics {
    injection_requests: Counter,
    injection_success: Counter,
    injection_skip: Counter,
    injection_failure: Counter,
    validation_passed: Counter,
    validation_failed: Counter,
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
            (
                "galley_validation_passed",
                "Objects the validation webhook accepted",
                &metrics.validation_passed,
            ),
            (
                "galley_validation_failed",
                "Objects the validation webhook refused",
                &metrics.validation_failed,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
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
    ca: Arc<CertificateAuthority>,
    webhooks: Arc<Webhooks>,
}

impl Server {
    /// Binds `--webhook-addr` and mints the serving certificate; fails now rather than in a task.
    pub async fn bind(
        args: &Args,
        ca: Arc<CertificateAuthority>,
        generator: Arc<MeshGenerator>,
        metrics: Metrics,
    ) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(args.webhook_addr)
            .await
            .with_context(|| format!("binding {}", args.webhook_addr))?;
        let cert = ServingCert::issue(
            &ca,
            args.webhook_names.clone(),
            serving_ips(args.webhook_addr),
        )
        .context("minting the webhook's serving certificate")?;
        let webhooks = Webhooks::new(args.inject_config(), move || generator.snapshot(), metrics);
        tracing::info!(addr = %args.webhook_addr, "admission webhooks serving");
        Ok(Server {
            listener,
            cert,
            ca,
            webhooks: Arc::new(webhooks),
        })
    }

    /// Serves until the process ends, renewing the certificate as it goes.
    pub async fn run(self) {
        tokio::spawn(renew_certificate(self.cert.clone(), self.ca));
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

/// 127.0.0.1 (tests and port-forwards call the webhook there), and the listen address if it names one.
fn serving_ips(addr: SocketAddr) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    ips
}

/// How long the API server keeps getting a certificate from the old CA after the trust bundle
/// changed, so the bundle the leader patches in (old and new roots) is there before it is needed.
const ROOT_ROLL_GRACE: Duration = Duration::from_secs(3);

/// Renews at half-life, and reissues once the CA's trust bundle changed (root rotation).
async fn renew_certificate(cert: Arc<ServingCert>, ca: Arc<CertificateAuthority>) {
    let mut bundle = ca.root_bundle_pem();
    let mut reissue_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let current = ca.root_bundle_pem();
        if current != bundle {
            bundle = current;
            reissue_at = Some(Instant::now() + ROOT_ROLL_GRACE);
        }
        let force = reissue_at.is_some_and(|at| Instant::now() >= at);
        match cert.renew(&ca, force) {
            Ok(_) if force => reissue_at = None,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "renewing the webhook's serving certificate failed")
            }
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

/// The part of an AdmissionReview the handlers read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReview {
    #[serde(default)]
    api_version: String,
    request: Option<AdmissionRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    operation: String,
    #[serde(default)]
    object: Value,
}

/// What to answer for one request.
#[derive(Debug, Default)]
struct Answer {
    allowed: bool,
    patch: Option<Vec<u8>>,
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

/// Decodes the review, lets `decide` judge the request, and answers in the review's version.
fn answer(body: &[u8], decide: impl FnOnce(&AdmissionRequest) -> Answer) -> Response {
    let review: AdmissionReview = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}"),
            )
                .into_response();
        }
    };
    let Some(request) = review.request else {
        return (StatusCode::BAD_REQUEST, "AdmissionReview without a request").into_response();
    };
    if !SUPPORTED_VERSIONS.contains(&review.api_version.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "unsupported AdmissionReview version {:?} (supported: {})",
                review.api_version,
                SUPPORTED_VERSIONS.join(", ")
            ),
        )
            .into_response();
    }
    let answer = decide(&request);
    let mut response = json!({ "uid": request.uid, "allowed": answer.allowed });
    if let Some(patch) = answer.patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    if let Some(message) = answer.message {
        response["status"] = json!({ "metadata": {}, "status": "Failure", "message": message });
    }
    if !answer.warnings.is_empty() {
        response["warnings"] = json!(answer.warnings);
    }
    axum::Json(json!({
        "apiVersion": review.api_version,
        "kind": "AdmissionReview",
        "response": response,
    }))
    .into_response()
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
        if request.operation != "CREATE" {
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
        match inject::inject(pod, namespace, labels.as_ref(), &webhooks.inject) {
            Ok(Some(patch)) => match serde_json::to_vec(&patch) {
                Ok(bytes) => {
                    metrics.injection_success.inc();
                    tracing::info!(pod = %format!("{namespace}/{name}"), "injected the sidecar");
                    Answer {
                        patch: Some(bytes),
                        ..Answer::allow()
                    }
                }
                Err(e) => {
                    metrics.injection_failure.inc();
                    Answer::deny(format!("injection failed: encoding the patch: {e}"))
                }
            },
            Ok(None) => {
                metrics.injection_skip.inc();
                let reason = inject::skip_reason(pod, namespace, labels.as_ref());
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
        if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
            return Answer::allow();
        }
        let mesh = (webhooks.snapshot)().mesh.clone();
        let verdict = validate::review(&request.object, &request.namespace, &request.name, mesh);
        if verdict.allowed() {
            metrics.validation_passed.inc();
            Answer {
                warnings: verdict.warnings,
                ..Answer::allow()
            }
        } else {
            metrics.validation_failed.inc();
            Answer {
                warnings: verdict.warnings,
                ..Answer::deny(verdict.errors.join("\n"))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    fn mk_webhooks(objects: Vec<Object>) -> Arc<Webhooks> {
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        let snapshot = Arc::new(Snapshot::build(
            1,
            Arc::new(objects),
            Arc::new(meshd_model::MeshConfig::default()),
        ));
        Arc::new(Webhooks::new(
            InjectConfig::default(),
            move || snapshot.clone(),
            Metrics::default(),
        ))
    }

    fn mk_namespace(name: &str, labels: Value) -> Object {
        Object::parse(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": name, "labels": labels },
        }))
        .unwrap()
        .unwrap()
    }

    fn review(version: &str, namespace: &str, operation: &str, object: Value) -> Value {
        json!({
            "apiVersion": version,
            "kind": "AdmissionReview",
            "request": {
                "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "namespace": namespace,
                "operation": operation,
                "object": object,
            },
        })
    }

    async fn call(webhooks: Arc<Webhooks>, path: &str, body: Value) -> (StatusCode, Value) {
        let response = router(webhooks)
            .oneshot(
                Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, value)
    }

    fn mk_pod() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": { "name": "web-0" },
            "spec": { "containers": [{ "name": "web", "image": "nginx" }] },
        })
    }

    fn decoded_patch(response: &Value) -> Value {
        let b64 = response["response"]["patch"].as_str().expect("a patch");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn inject_answers_with_a_json_patch_in_the_reviews_version() {
        for version in SUPPORTED_VERSIONS {
            let (status, body) = call(
                mk_webhooks(vec![]),
                "/inject",
                review(version, "shop", "CREATE", mk_pod()),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["apiVersion"], version);
            assert_eq!(body["kind"], "AdmissionReview");
            let response = &body["response"];
            assert_eq!(response["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
            assert_eq!(response["allowed"], true);
            assert_eq!(response["patchType"], "JSONPatch");
            let patch = decoded_patch(&body);
            assert!(patch.as_array().unwrap().iter().any(
                |op| op["path"] == "/spec/containers/-" && op["value"]["name"] == "istio-proxy"
            ));
        }
    }

    #[tokio::test]
    async fn namespace_meshd_knows_decides_injection() {
        let webhooks = mk_webhooks(vec![
            mk_namespace("plain", json!({})),
            mk_namespace("meshed", json!({ "istio-injection": "enabled" })),
        ]);
        let (_, body) = call(
            webhooks.clone(),
            "/inject",
            review("admission.k8s.io/v1", "plain", "CREATE", mk_pod()),
        )
        .await;
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
        let (_, body) = call(
            webhooks,
            "/inject",
            review("admission.k8s.io/v1", "meshed", "CREATE", mk_pod()),
        )
        .await;
        assert!(body["response"]["patch"].is_string());
    }

    #[tokio::test]
    async fn bad_annotation_refuses_the_pod_with_the_reason() {
        let mut pod = mk_pod();
        pod["metadata"]["annotations"] =
            json!({ "traffic.sidecar.istio.io/excludeOutboundPorts": "nope" });
        let (_, body) = call(
            mk_webhooks(vec![]),
            "/inject",
            review("admission.k8s.io/v1", "shop", "CREATE", pod),
        )
        .await;
        assert_eq!(body["response"]["allowed"], false);
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "injection failed: annotation traffic.sidecar.istio.io/excludeOutboundPorts"
            ),
            "{message}"
        );
    }

    #[tokio::test]
    async fn validate_refuses_with_analyzes_message_and_passes_warnings() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews", "namespace": "shop" },
            "spec": {
                "hosts": ["reviews"],
                "http": [{
                    "match": [{ "uri": { "regex": "(" } }],
                    "route": [{ "destination": { "host": "reviews" } }],
                }],
            },
        });
        let (_, body) = call(
            mk_webhooks(vec![]),
            "/validate",
            review("admission.k8s.io/v1beta1", "shop", "CREATE", vs.clone()),
        )
        .await;
        assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(body["response"]["allowed"], false);
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("Error [IST0106] (VirtualService shop/reviews) spec.http[0].match[0].uri.regex: invalid regex"),
            "{message}"
        );

        let mut fine = vs;
        fine["spec"]["http"][0]["match"][0]["uri"] = json!({ "prefix": "/" });
        let (_, body) = call(
            mk_webhooks(vec![]),
            "/validate",
            review("admission.k8s.io/v1", "shop", "UPDATE", fine),
        )
        .await;
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("status").is_none());
    }

    #[tokio::test]
    async fn garbage_and_unknown_versions_are_bad_requests() {
        let (status, _) = call(mk_webhooks(vec![]), "/inject", json!("nope")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = call(
            mk_webhooks(vec![]),
            "/validate",
            review("admission.k8s.io/v2", "shop", "CREATE", mk_pod()),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn only_pod_creation_is_injected_and_deletes_are_not_validated() {
        let (_, body) = call(
            mk_webhooks(vec![]),
            "/inject",
            review("admission.k8s.io/v1", "shop", "UPDATE", mk_pod()),
        )
        .await;
        assert_eq!(body["response"]["allowed"], true);
        assert!(body["response"].get("patch").is_none());
        let (_, body) = call(
            mk_webhooks(vec![]),
            "/validate",
            review("admission.k8s.io/v1", "shop", "DELETE", Value::Null),
        )
        .await;
        assert_eq!(body["response"]["allowed"], true);
    }

    #[test]
    fn flags_parse_within_serve_with_defaults_and_overrides() {
        use clap::Parser as _;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: crate::serve::Args,
        }
        let defaults = Cli::try_parse_from(["meshd"]).unwrap().serve.webhook;
        assert_eq!(defaults.webhook_addr, "0.0.0.0:15017".parse().unwrap());
        assert_eq!(
            defaults.webhook_names,
            [
                "istiod.istio-system.svc",
                "meshd.istio-system.svc",
                "istiod.istio-system.svc.cluster.local"
            ]
        );
        assert_eq!(defaults.inject_config(), InjectConfig::default());
        let given = Cli::try_parse_from([
            "meshd",
            "--webhook-addr",
            "127.0.0.1:9443",
            "--webhook-names",
            "meshd.mesh.svc,meshd.mesh.svc.cluster.local",
            "--proxy-image",
            "registry.example/envoy:v1.40.0",
            "--proxy-init-image",
            "registry.example/meshd:1",
        ])
        .unwrap()
        .serve
        .webhook;
        assert_eq!(given.webhook_addr, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(given.webhook_names.len(), 2);
        let config = given.inject_config();
        assert_eq!(config.proxy_image, "registry.example/envoy:v1.40.0");
        assert_eq!(config.proxy_init_image, "registry.example/meshd:1");
    }

    #[test]
    fn serving_ips_always_hold_loopback() {
        assert_eq!(
            serving_ips("0.0.0.0:15017".parse().unwrap()),
            [IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(
            serving_ips("10.0.0.5:15017".parse().unwrap()),
            [IpAddr::from([127, 0, 0, 1]), IpAddr::from([10, 0, 0, 5])]
        );
    }
}
