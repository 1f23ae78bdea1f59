//! The index loop: source events in, snapshots and pushes out. It applies events to the
//! [`Index`], waits for a quiet period (bounded by a maximum delay; for a batch of endpoint
//! changes alone, by the quiet period itself), assembles the snapshot with
//! the same [`Snapshot::assemble`] that `meshd analyze` uses, and publishes it. It awaits
//! nothing but events: whatever is slow (a JWKS fetch, an API server) is a source that sends
//! its result as an event when it has one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use meshd_model::finding::{REJECTED_BY_ENVOY, Severity};
use meshd_model::{Finding, InvalidObject, MeshConfig, Snapshot, SourceEvent};
use meshd_proto::type_url;
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};

pub use crate::debounce::Debounce;

use super::generator::MeshGenerator;
use super::index::Index;
use super::pusher::Pusher;

/// What the debug API reads besides the snapshot: readiness and the objects sources could not use.
#[derive(Default)]
pub struct Status {
    ready: AtomicBool,
    invalid: RwLock<Vec<InvalidObject>>,
}

impl Status {
    /// Every source has been read once and the first snapshot is out.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn invalid(&self) -> Vec<InvalidObject> {
        self.invalid.read().clone()
    }
}

/// The index loop's metrics, under istiod's names where istiod has them.
pub struct Metrics {
    services: Gauge,
    invalid_objects: Gauge,
    quarantined: Gauge,
    push_triggers: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            services: Gauge::default(),
            invalid_objects: Gauge::default(),
            quarantined: Gauge::default(),
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
            metrics.invalid_objects.clone(),
        );
        registry.register(
            "meshd_quarantined_objects",
            "Objects left out because Envoy would reject (or did reject) what they produce",
            metrics.quarantined.clone(),
        );
        registry.register(
            "pilot_push_triggers",
            "Pushes triggered by config changes",
            metrics.push_triggers.clone(),
        );
        metrics
    }
}

/// Where published snapshots go.
pub struct Outputs {
    pub generator: Arc<MeshGenerator>,
    pub pusher: Arc<Pusher>,
    pub status: Arc<Status>,
    pub metrics: Metrics,
    /// The `jwksUri`s the current snapshot uses: what the JWKS source fetches.
    pub jwks_wanted: watch::Sender<BTreeSet<String>>,
    /// Published snapshots, for the Gateway API writers (a slow reader sees only the latest).
    pub snapshots: watch::Sender<Arc<Snapshot>>,
}

/// Runs until every source is gone.
pub async fn run(
    mut rx: mpsc::UnboundedReceiver<SourceEvent>,
    mut index: Index,
    base_mesh: MeshConfig,
    debounce: Debounce,
    out: Outputs,
) {
    let mut version = 0u64;
    loop {
        let Some(first) = rx.recv().await else { return };
        let started = Instant::now();
        index.apply(first);
        loop {
            let limit = debounce.limit(index.pending_kinds());
            let remaining = limit.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            match tokio::time::timeout(debounce.after.min(remaining), rx.recv()).await {
                Ok(Some(event)) => index.apply(event),
                Ok(None) => return,
                Err(_) => break,
            }
        }
        if !index.synced() {
            continue;
        }
        let changes = index.take_changes();
        if changes.is_empty() && version > 0 {
            continue;
        }
        version += 1;
        let mut snapshot = Snapshot::assemble(
            version,
            index.objects_for_snapshot(),
            &base_mesh,
            index.jwks(),
        );
        for (key, reason) in index.quarantined() {
            snapshot.findings.push(Finding::new(
                Severity::Error,
                REJECTED_BY_ENVOY,
                key,
                "",
                format!("left out until it changes: {reason}"),
            ));
        }
        out.metrics
            .quarantined
            .set(index.quarantined().count() as i64);
        for f in &snapshot.findings {
            tracing::warn!(finding = %f, "config finding");
        }
        let uris = snapshot.request_authentications.jwks_uris();
        out.jwks_wanted.send_if_modified(|wanted| {
            let changed = *wanted != uris;
            *wanted = uris;
            changed
        });
        let invalid = index.invalid();
        out.metrics.invalid_objects.set(invalid.len() as i64);
        *out.status.invalid.write() = invalid;
        out.metrics
            .services
            .set(snapshot.registry.services.len() as i64);
        let snapshot = Arc::new(snapshot);
        let changed = out.generator.set_snapshot(snapshot.clone());
        out.snapshots.send_replace(snapshot);
        // The first snapshot is news to everyone; after that, only what it changed is pushed.
        let types: &[&str] = if version == 1 {
            &type_url::PUSH_ORDER
        } else {
            &changed
        };
        if types.is_empty() {
            tracing::debug!(version, "the new snapshot changes nothing proxies hold");
        } else {
            out.metrics.push_triggers.inc();
            out.pusher.push(types, started);
        }
        if !out.status.ready.swap(true, Ordering::SeqCst) {
            tracing::info!(version, "all sources synced; serving");
        }
    }
}
