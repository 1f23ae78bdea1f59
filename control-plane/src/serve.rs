//! `meshd serve`: config sources → index → snapshot → xDS, plus the debug API.

mod debug;
mod file_source;
mod generator;
mod identity;
mod index;
mod jwks;
pub mod kube;
pub mod kube_source;
mod root_cert;
mod secrets;
mod tls;
mod token_review;
mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use meshd_model::{Kind, MeshConfig, Object, ObjectKey, Snapshot};
use meshd_proto::type_url;
use meshd_xds::{AdsServer, Push};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use secrets::Secrets;
use tokio::sync::{mpsc, watch};

use crate::documents::DocumentError;
use generator::MeshGenerator;
pub use generator::content_version;
use index::Index;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory of Kubernetes/Istio YAML (repeatable); watched and hot-reloaded.
    #[arg(long = "config-dir", env = "MESHD_CONFIG_DIR", value_delimiter = ',')]
    pub config_dirs: Vec<PathBuf>,
    /// Plaintext gRPC (ADS, SotW and Delta).
    #[arg(long, env = "MESHD_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// TLS gRPC: ADS (the only port that serves secrets) and Istio's certificate service.
    #[arg(long, env = "MESHD_SECURE_ADDR", default_value = "0.0.0.0:15012")]
    pub secure_addr: SocketAddr,
    /// CA directory in Istio's plug-in layout; a generated root is persisted here. Without it the
    /// root is generated anew in a temporary directory at every start.
    #[arg(long, env = "MESHD_CA_DIR")]
    pub ca_dir: Option<PathBuf>,
    /// Lifetime of workload certificates; they are renewed at half-life.
    #[arg(long, env = "MESHD_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_duration)]
    pub workload_cert_ttl: Duration,
    /// DNS names on meshd's serving certificate (what proxies verify when they connect over TLS).
    #[arg(
        long,
        env = "MESHD_SERVING_NAMES",
        value_delimiter = ',',
        default_value = "istiod.istio-system.svc,meshd.istio-system.svc,localhost"
    )]
    pub serving_names: Vec<String>,
    /// HTTP debug API: /ready, /metrics, /debug/*.
    #[arg(long, env = "MESHD_DEBUG_ADDR", default_value = "0.0.0.0:15014")]
    pub debug_addr: SocketAddr,
    /// MeshConfig YAML (Istio's `mesh` key).
    #[arg(long, env = "MESHD_MESH_CONFIG")]
    pub mesh_config: Option<PathBuf>,
    /// Quiet period before a change is pushed.
    #[arg(long, env = "MESHD_DEBOUNCE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub debounce_after: Duration,
    /// Longest a burst of changes may delay a push.
    #[arg(long, env = "MESHD_DEBOUNCE_MAX", default_value = "10s", value_parser = parse_duration)]
    pub debounce_max: Duration,
    /// How often RequestAuthentication `jwksUri` documents are fetched again (meshd fetches them
    /// and inlines the keys; proxies never do). A URI that never answered is retried sooner.
    #[arg(long, env = "MESHD_JWKS_REFRESH", default_value = "10m", value_parser = parse_duration)]
    pub jwks_refresh: Duration,
    /// Kubernetes source: the kubeconfig to use. Without it and without `--config-dir`, meshd
    /// uses its in-cluster service account. With the Kubernetes source, proxies prove their
    /// identity with service-account tokens (TokenReview) instead of their address.
    #[arg(long, env = "MESHD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Audience proxies' service-account tokens must be issued for (checked by TokenReview).
    #[arg(long, env = "MESHD_TOKEN_AUDIENCE", default_value = "istio-ca")]
    pub token_audience: String,
    /// This replica's name in the leader Lease (a random suffix is added); default: hostname.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[command(flatten)]
    pub webhook: webhook::Args,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (s, n) = meshd_model::registry::parse_duration(text)?;
    Ok(Duration::new(s as u64, n as u32))
}

/// What sources tell the index.
#[derive(Debug)]
pub enum SourceEvent {
    /// Replace everything `origin` contributed.
    Reset {
        origin: String,
        objects: Vec<Object>,
        errors: Vec<DocumentError>,
    },
    /// A source has been read completely once.
    Synced { source: String },
    /// Something besides objects changed (fetched JWKS): rebuild even if no object did.
    Refresh,
    /// Add or replace `apply` and remove `delete` among `origin`'s objects (a watch event);
    /// `errors`, when given, replaces `origin`'s invalid documents.
    Update {
        origin: String,
        apply: Vec<Object>,
        delete: Vec<ObjectKey>,
        errors: Option<Vec<DocumentError>>,
    },
}

/// State the debug API reads.
pub struct Shared {
    pub generator: Arc<MeshGenerator>,
    pub ads: AdsServer<MeshGenerator>,
    pub ready: AtomicBool,
    pub errors: RwLock<BTreeMap<String, Vec<DocumentError>>>,
    pub registry: Registry,
}

/// Announces pushes. Shared by the index (config changes) and certificate rotation, so epochs stay
/// strictly increasing whoever pushes.
pub struct Pusher {
    state: parking_lot::Mutex<(u64, BTreeMap<String, u64>)>,
    tx: watch::Sender<Arc<Push>>,
}

impl Pusher {
    fn new() -> (Self, watch::Receiver<Arc<Push>>) {
        let (tx, rx) = watch::channel(Arc::new(Push {
            epoch: 0,
            changed_at: BTreeMap::new(),
            triggered_at: Instant::now(),
        }));
        (
            Pusher {
                state: parking_lot::Mutex::default(),
                tx,
            },
            rx,
        )
    }

    /// Announces that `types` changed; returns the new epoch.
    pub fn push(&self, types: &[&str], triggered_at: Instant) -> u64 {
        let mut state = self.state.lock();
        state.0 += 1;
        let epoch = state.0;
        for t in types {
            state.1.insert(t.to_string(), epoch);
        }
        let _ = self.tx.send(Arc::new(Push {
            epoch,
            changed_at: state.1.clone(),
            triggered_at,
        }));
        epoch
    }

    /// Pushes only once sources have synced (epoch 0 still refuses streams).
    pub fn push_if_serving(&self, types: &[&str]) {
        if self.state.lock().0 > 0 {
            self.push(types, Instant::now());
        }
    }
}

struct Metrics {
    services: Gauge,
    invalid_documents: Gauge,
    push_triggers: Counter,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

fn load_mesh_config(path: Option<&PathBuf>) -> anyhow::Result<MeshConfig> {
    let Some(path) = path else {
        return Ok(MeshConfig::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    // Accept both a bare MeshConfig and Istio's ConfigMap-style `mesh:` wrapper.
    let value = value.get("mesh").cloned().unwrap_or(value);
    MeshConfig::from_value(value).with_context(|| format!("in {}", path.display()))
}

/// MeshConfig from ConfigMap `istio` in the root namespace when present, else the file's.
fn effective_mesh(objects: &BTreeMap<ObjectKey, Object>, base: &MeshConfig) -> MeshConfig {
    let key = ObjectKey::new(Kind::ConfigMap, base.root_namespace.clone(), "istio");
    let Some(Object::ConfigMap(cm)) = objects.get(&key) else {
        return base.clone();
    };
    let Some(text) = cm.data.get("mesh") else {
        return base.clone();
    };
    match serde_saphyr::from_str::<serde_json::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|v| MeshConfig::from_value(v).map_err(|e| e.to_string()))
    {
        Ok(mesh) => mesh,
        Err(e) => {
            tracing::warn!(configmap = %key, error = %e, "ignoring invalid mesh config");
            base.clone()
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let base_mesh = load_mesh_config(args.mesh_config.as_ref())?;
    // The Kubernetes source: with --kubeconfig, or in-cluster when there is no other source.
    let kube_client = if args.kubeconfig.is_some() || args.config_dirs.is_empty() {
        Some(self::kube::client(args.kubeconfig.as_deref()).await?)
    } else {
        None
    };
    let mut registry = Registry::default();
    let metrics = Metrics {
        services: Gauge::default(),
        invalid_documents: Gauge::default(),
        push_triggers: Counter::default(),
    };
    registry.register(
        "pilot_services",
        "Total services known to the control plane",
        metrics.services.clone(),
    );
    registry.register(
        "meshd_invalid_documents",
        "Documents rejected by validation",
        metrics.invalid_documents.clone(),
    );
    registry.register(
        "pilot_push_triggers",
        "Pushes triggered by config changes",
        metrics.push_triggers.clone(),
    );

    let identity_rejections = Counter::default();
    registry.register(
        "meshd_xds_identity_rejections",
        "xDS streams refused on the TLS port because the proxy could not prove its identity",
        identity_rejections.clone(),
    );
    let (ca, _ca_tmp) = load_ca(&args, &base_mesh)?;
    let secrets = Arc::new(Secrets::new(ca.clone(), Some(args.workload_cert_ttl)));
    // Leader election and token review exist only with the Kubernetes source.
    let (kube_ctx, election) = match &kube_client {
        Some(client) => {
            let (election, leader) = self::kube::LeaderElection::start(
                client.clone(),
                &base_mesh.root_namespace,
                self::kube::holder_identity(args.pod_name.as_deref()),
                self::kube::LeaseTiming::default(),
            );
            let ctx = self::kube::KubeContext {
                client: client.clone(),
                leader,
                root_namespace: base_mesh.root_namespace.clone(),
            };
            (Some(ctx), Some(election))
        }
        None => (None, None),
    };
    let reviewer = kube_client.as_ref().map(|client| {
        Arc::new(token_review::TokenReviewer::new(
            client.clone(),
            args.token_audience.clone(),
        ))
    });
    let proof = match &reviewer {
        Some(r) => identity::IdentityProof::Token(r.clone()),
        None => identity::IdentityProof::Address,
    };
    let generator = Arc::new(
        MeshGenerator::new(
            Arc::new(Snapshot::default()),
            secrets.clone(),
            identity_rejections,
        )
        .with_identity_proof(proof),
    );
    let (pusher, push_rx) = Pusher::new();
    let pusher = Arc::new(pusher);
    let ads = AdsServer::new(generator.clone(), push_rx, &mut registry);
    let certificates = meshd_ca::CertificateService::new(
        ca.clone(),
        match &reviewer {
            Some(reviewer) => CaAuthenticator::Token(token_review::TokenAuthenticator {
                reviewer: reviewer.clone(),
                generator: generator.clone(),
            }),
            None => CaAuthenticator::Address(AddressAuthenticator {
                generator: generator.clone(),
            }),
        },
        &mut registry,
    );
    if let Some(ctx) = &kube_ctx {
        let leader: Gauge = Gauge::default();
        registry.register(
            "meshd_leader",
            "1 while this replica holds the leader Lease (and so writes to the cluster)",
            leader.clone(),
        );
        let mut rx = ctx.leader.clone();
        tokio::spawn(async move {
            loop {
                leader.set(i64::from(*rx.borrow_and_update()));
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let webhook_metrics = webhook::Metrics::register(&mut registry);
    let shared = Arc::new(Shared {
        generator: generator.clone(),
        ads: ads.clone(),
        ready: AtomicBool::new(false),
        errors: RwLock::default(),
        registry,
    });

    let (source_tx, source_rx) = mpsc::unbounded_channel();
    let mut sources: BTreeSet<String> = args
        .config_dirs
        .iter()
        .map(|d| format!("file:{}", d.display()))
        .collect();
    for dir in &args.config_dirs {
        file_source::spawn(dir.clone(), source_tx.clone())?;
    }
    if let Some(ctx) = &kube_ctx {
        sources.insert(kube_source::SOURCE.to_string());
        kube_source::spawn(
            ctx.client.clone(),
            ctx.root_namespace.clone(),
            source_tx.clone(),
        );
        root_cert::spawn(ctx.clone(), ca.clone());
    }
    let jwks = Arc::new(jwks::JwksCache::new(
        jwks::Fetcher::new(
            std::path::Path::new(jwks::SYSTEM_ROOTS),
            jwks::FETCH_TIMEOUT,
        ),
        args.jwks_refresh,
    ));
    jwks::spawn_refresher(jwks.clone(), source_tx.clone());
    tokio::spawn(index_loop(
        source_rx,
        sources,
        base_mesh,
        args.clone(),
        shared.clone(),
        pusher.clone(),
        metrics,
        jwks,
    ));

    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("binding {}", args.xds_addr))?;
    let secure_listener = tokio::net::TcpListener::bind(args.secure_addr)
        .await
        .with_context(|| format!("binding {}", args.secure_addr))?;
    let debug_listener = tokio::net::TcpListener::bind(args.debug_addr)
        .await
        .with_context(|| format!("binding {}", args.debug_addr))?;
    tracing::info!(xds = %args.xds_addr, secure = %args.secure_addr, debug = %args.debug_addr, "meshd serving");

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads.service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds_listener),
            shutdown_signal(),
        );
    let serving = tls::ServingCert::issue(&ca, args.serving_names.clone(), serving_ips(&args))
        .context("minting meshd's serving certificate")?;
    tokio::spawn(rotate_certificates(
        secrets.clone(),
        serving.clone(),
        pusher.clone(),
    ));
    let webhooks = webhook::Server::bind(
        &args.webhook,
        ca.clone(),
        generator.clone(),
        webhook_metrics,
    )
    .await?;
    tokio::spawn(webhooks.run());
    if let Some(ctx) = &kube_ctx {
        tokio::spawn(webhook::ca_bundle::run(
            ctx.client.clone(),
            ctx.leader.clone(),
            ca.clone(),
        ));
    }
    let secure = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        // Reviews bearer tokens before admission, which then only looks the answer up.
        .layer(token_review::TokenReviewLayer::new(reviewer.clone()))
        .add_service(ads.clone().secure(true).service())
        .add_service(certificates.into_server())
        .serve_with_incoming_shutdown(tls::incoming(secure_listener, serving), shutdown_signal());
    let http = axum::serve(debug_listener, debug::router(shared.clone()))
        .with_graceful_shutdown(shutdown_signal());
    // Graceful shutdown waits for open streams, and only the ADS server can end those: end them
    // on the signal itself.
    {
        let ads = ads.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            ads.shutdown();
        });
    }
    let (g, s, h) = tokio::join!(grpc, secure, http);
    if let Some(election) = election {
        election.stop().await;
    }
    g.context("xDS server")?;
    s.context("secure xDS server")?;
    h.context("debug server")?;
    Ok(())
}

/// IP SANs for the serving certificate: the secure address when it names one.
fn serving_ips(args: &Args) -> Vec<std::net::IpAddr> {
    let ip = args.secure_addr.ip();
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    if !ip.is_unspecified() && !ips.contains(&ip) {
        ips.push(ip);
    }
    ips
}

/// The CA from `--ca-dir`, or a fresh one in a temporary directory that lives as long as meshd.
fn load_ca(
    args: &Args,
    mesh: &MeshConfig,
) -> anyhow::Result<(Arc<meshd_ca::CertificateAuthority>, Option<TempDir>)> {
    let (dir, tmp) = match &args.ca_dir {
        Some(d) => (d.clone(), None),
        None => {
            let tmp = TempDir::new()?;
            (tmp.0.clone(), Some(tmp))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = meshd_ca::CertificateAuthority::load_or_generate(meshd_ca::CaOptions {
        dir: dir.clone(),
        trust_domain: mesh.trust_domain.clone(),
        workload_ttl: args.workload_cert_ttl,
        max_ttl: Duration::from_secs(90 * 24 * 3600),
    })
    .with_context(|| format!("loading the CA from {}", dir.display()))?;
    Ok((Arc::new(ca), tmp))
}

/// A private directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("meshd-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How CA callers prove who they are: as proxies do on the TLS port.
enum CaAuthenticator {
    Address(AddressAuthenticator),
    Token(token_review::TokenAuthenticator),
}

impl meshd_ca::Authenticator for CaAuthenticator {
    fn authenticate(
        &self,
        caller: &meshd_ca::Caller,
    ) -> Result<meshd_ca::Identity, meshd_ca::AuthError> {
        match self {
            CaAuthenticator::Address(a) => a.authenticate(caller),
            CaAuthenticator::Token(t) => t.authenticate(caller),
        }
    }
}

/// Certificate callers of the CA service proved the same way xDS peers do: by source address.
struct AddressAuthenticator {
    generator: Arc<MeshGenerator>,
}

impl meshd_ca::Authenticator for AddressAuthenticator {
    fn authenticate(
        &self,
        caller: &meshd_ca::Caller,
    ) -> Result<meshd_ca::Identity, meshd_ca::AuthError> {
        let snapshot = self.generator.snapshot();
        let remote = caller
            .remote_addr
            .ok_or_else(|| meshd_ca::AuthError::new("no source address"))?;
        let pod = snapshot
            .registry
            .pods_by_ip
            .get(&remote.ip().to_string())
            .ok_or_else(|| {
                meshd_ca::AuthError::new(format!("no pod has address {}", remote.ip()))
            })?;
        Ok(meshd_ca::Identity::new(
            &snapshot.mesh.trust_domain,
            &pod.namespace,
            &pod.service_account,
        ))
    }
}

/// How long proxies get to take a new trust bundle before certificates from a new CA follow.
const ROOT_ROLL_GRACE: Duration = Duration::from_secs(3);

/// Renews workload certificates at half-life and follows CA changes (root rotation), pushing SDS.
async fn rotate_certificates(
    secrets: Arc<Secrets>,
    serving: Arc<tls::ServingCert>,
    pusher: Arc<Pusher>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut changed = secrets.expire_due(std::time::SystemTime::now());
        match secrets.ca().reload() {
            Ok(true) => {
                // Two phases, so no proxy ever meets a certificate its peer does not trust yet:
                // first every proxy gets the bundle with old and new roots, then new certificates.
                tracing::info!("CA changed on disk; distributing the new trust bundle");
                pusher.push_if_serving(&[type_url::SECRET]);
                tokio::time::sleep(ROOT_ROLL_GRACE).await;
                tracing::info!("reissuing every workload certificate from the new CA");
                secrets.clear();
                if let Err(e) = serving.renew(secrets.ca(), true) {
                    tracing::error!(error = %e, "reissuing meshd's serving certificate failed");
                }
                changed = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reloading the CA failed; keeping the current one")
            }
        }
        if let Err(e) = serving.renew(secrets.ca(), false) {
            tracing::error!(error = %e, "renewing meshd's serving certificate failed");
        }
        if changed {
            pusher.push_if_serving(&[type_url::SECRET]);
        }
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Applies source events to the index, debounces them, and publishes snapshots and pushes.
#[allow(clippy::too_many_arguments)]
async fn index_loop(
    mut rx: mpsc::UnboundedReceiver<SourceEvent>,
    mut pending_sources: BTreeSet<String>,
    base_mesh: MeshConfig,
    args: Args,
    shared: Arc<Shared>,
    pusher: Arc<Pusher>,
    metrics: Metrics,
    jwks: Arc<jwks::JwksCache>,
) {
    let mut index = Index::default();
    let mut version = 0u64;
    let mut last_mesh: Option<MeshConfig> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let started = Instant::now();
        let mut forced = false;
        let mut apply = |ev: SourceEvent, index: &mut Index| match ev {
            SourceEvent::Reset {
                origin,
                objects,
                errors,
            } => {
                for e in &errors {
                    tracing::warn!(error = %e, "invalid document skipped");
                }
                let mut all = shared.errors.write();
                if errors.is_empty() {
                    all.remove(&origin);
                } else {
                    all.insert(origin.clone(), errors);
                }
                index.reset(&origin, objects);
            }
            SourceEvent::Synced { source } => {
                pending_sources.remove(&source);
            }
            SourceEvent::Refresh => forced = true,
            SourceEvent::Update {
                origin,
                apply,
                delete,
                errors,
            } => {
                if let Some(errors) = errors {
                    let mut all = shared.errors.write();
                    if errors.is_empty() {
                        all.remove(&origin);
                    } else {
                        all.insert(origin.clone(), errors);
                    }
                }
                index.update(&origin, apply, delete);
            }
        };
        apply(first, &mut index);
        // Debounce: wait for a quiet period, bounded by the maximum delay.
        loop {
            let remaining = args.debounce_max.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(args.debounce_after.min(remaining), rx.recv()).await {
                Ok(Some(ev)) => apply(ev, &mut index),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if !pending_sources.is_empty() {
            continue;
        }
        let kinds = index.take_changes();
        let objects = index.objects();
        let mesh = effective_mesh(&objects, &base_mesh);
        let mesh_changed = last_mesh.as_ref() != Some(&mesh);
        if kinds.is_empty() && !mesh_changed && !forced && version > 0 {
            continue;
        }
        last_mesh = Some(mesh.clone());
        version += 1;
        let mut snapshot = Snapshot::build(version, objects, Arc::new(mesh));
        // Keys for `jwksUri`s are inlined: fetch what this snapshot needs before publishing it.
        let resolved = jwks
            .resolve(&snapshot.request_authentications.jwks_uris())
            .await;
        let mut fetched: BTreeMap<String, meshd_model::JwksState> = resolved
            .keys
            .into_iter()
            .map(|(uri, keys)| {
                let state = meshd_model::JwksState {
                    keys: Some(keys),
                    error: None,
                };
                (uri, state)
            })
            .collect();
        for (uri, error) in resolved.errors {
            fetched.entry(uri).or_default().error = Some(error);
        }
        let findings = snapshot
            .request_authentications
            .apply_fetched_jwks(&fetched);
        snapshot.findings.extend(findings);
        let snapshot = Arc::new(snapshot);
        for f in &snapshot.findings {
            tracing::warn!(finding = %f, "config finding");
        }
        metrics
            .services
            .set(snapshot.registry.services.len() as i64);
        metrics
            .invalid_documents
            .set(shared.errors.read().values().map(|v| v.len() as i64).sum());
        shared.generator.set_snapshot(snapshot);
        let endpoint_only = !mesh_changed
            && !forced
            && version > 1
            && kinds
                .iter()
                .all(|k| matches!(k, Kind::Endpoints | Kind::EndpointSlice));
        let types: &[&str] = if endpoint_only {
            // Endpoints can change which ports a workload serves (inbound), never outbound routes.
            &[type_url::ENDPOINT, type_url::CLUSTER, type_url::LISTENER]
        } else {
            &type_url::PUSH_ORDER
        };
        metrics.push_triggers.inc();
        pusher.push(types, started);
        if !shared.ready.swap(true, Ordering::SeqCst) {
            tracing::info!(version, "all sources synced; serving");
        }
    }
}
