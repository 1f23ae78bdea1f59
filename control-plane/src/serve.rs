//! `meshd serve`: config sources → index → snapshot → xDS, plus the debug API.

mod debug;
mod file_source;
mod generator;
mod index;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use meshd_model::{Kind, MeshConfig, Object, ObjectKey, Snapshot};
use meshd_proto::type_url;
use meshd_xds::{AdsServer, Push};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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
}

/// State the debug API reads.
pub struct Shared {
    pub generator: Arc<MeshGenerator>,
    pub ads: AdsServer<MeshGenerator>,
    pub ready: AtomicBool,
    pub errors: RwLock<BTreeMap<String, Vec<DocumentError>>>,
    pub registry: Registry,
    pub pushes: AtomicU64,
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
    if args.config_dirs.is_empty() {
        anyhow::bail!(
            "no config source: pass --config-dir (the Kubernetes source is not available in this build)"
        );
    }
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

    let generator = Arc::new(MeshGenerator::new(Arc::new(Snapshot::default())));
    let (push_tx, push_rx) = watch::channel(Arc::new(Push {
        epoch: 0,
        changed_at: BTreeMap::new(),
        triggered_at: Instant::now(),
    }));
    let ads = AdsServer::new(generator.clone(), push_rx, &mut registry);
    let shared = Arc::new(Shared {
        generator: generator.clone(),
        ads: ads.clone(),
        ready: AtomicBool::new(false),
        errors: RwLock::default(),
        registry,
        pushes: AtomicU64::new(0),
    });

    let (source_tx, source_rx) = mpsc::unbounded_channel();
    let sources: BTreeSet<String> = args
        .config_dirs
        .iter()
        .map(|d| format!("file:{}", d.display()))
        .collect();
    for dir in &args.config_dirs {
        file_source::spawn(dir.clone(), source_tx.clone())?;
    }
    tokio::spawn(index_loop(
        source_rx,
        sources,
        base_mesh,
        args.clone(),
        shared.clone(),
        push_tx,
        metrics,
    ));

    let xds_listener = tokio::net::TcpListener::bind(args.xds_addr)
        .await
        .with_context(|| format!("binding {}", args.xds_addr))?;
    let debug_listener = tokio::net::TcpListener::bind(args.debug_addr)
        .await
        .with_context(|| format!("binding {}", args.debug_addr))?;
    tracing::info!(xds = %args.xds_addr, debug = %args.debug_addr, "meshd serving");

    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(ads.service())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(xds_listener),
            shutdown_signal(),
        );
    let http = axum::serve(debug_listener, debug::router(shared.clone()))
        .with_graceful_shutdown(shutdown_signal());
    let (g, h) = tokio::join!(grpc, http);
    ads.shutdown();
    g.context("xDS server")?;
    h.context("debug server")?;
    Ok(())
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
async fn index_loop(
    mut rx: mpsc::UnboundedReceiver<SourceEvent>,
    mut pending_sources: BTreeSet<String>,
    base_mesh: MeshConfig,
    args: Args,
    shared: Arc<Shared>,
    push_tx: watch::Sender<Arc<Push>>,
    metrics: Metrics,
) {
    let mut index = Index::default();
    let mut epoch = 0u64;
    let mut changed_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_mesh: Option<MeshConfig> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let started = Instant::now();
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
        if kinds.is_empty() && !mesh_changed && epoch > 0 {
            continue;
        }
        last_mesh = Some(mesh.clone());
        epoch += 1;
        let snapshot = Arc::new(Snapshot::build(epoch, objects, Arc::new(mesh)));
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
            && epoch > 1
            && kinds
                .iter()
                .all(|k| matches!(k, Kind::Endpoints | Kind::EndpointSlice));
        let types: &[&str] = if endpoint_only {
            // Endpoints can change which ports a workload serves (inbound), never outbound routes.
            &[type_url::ENDPOINT, type_url::CLUSTER, type_url::LISTENER]
        } else {
            &type_url::PUSH_ORDER
        };
        for t in types {
            changed_at.insert(t.to_string(), epoch);
        }
        metrics.push_triggers.inc();
        shared.pushes.store(epoch, Ordering::Relaxed);
        let _ = push_tx.send(Arc::new(Push {
            epoch,
            changed_at: changed_at.clone(),
            triggered_at: started,
        }));
        if !shared.ready.swap(true, Ordering::SeqCst) {
            tracing::info!(epoch, "all sources synced; serving");
        }
    }
}
