//! One simulated sidecar: an ADS stream (SotW or Delta) that subscribes in Envoy's order, decodes
//! every resource, and ACKs (or NACKs) every response.
//!
//! Envoy's order, reproduced: CDS (wildcard) first; after each CDS response the EDS request for the
//! EDS clusters it named goes out before the CDS ACK; LDS (wildcard) only once the first endpoints
//! arrived (Envoy initialises listeners after the cluster manager warmed); after each LDS response
//! the RDS request for the route configs its HTTP connection managers name, if that set changed,
//! then the LDS ACK. ACKs always carry the current names, as Envoy's do.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use meshd_proto::pb::envoy::config::core::v3::Node;
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::pb::google::protobuf::{Struct, Value, value};
use meshd_proto::pb::google::rpc::Status as RpcStatus;
use parking_lot::Mutex;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::inspect::{Ty, contains, inspect};
use crate::synth::{self, MeshShape, PodRef};

/// What clients tell the coordinator.
#[derive(Debug)]
pub enum Event {
    /// The stream is open.
    Connected { at: Instant },
    /// A response was processed and answered (ACK or NACK).
    Answered { at: Instant },
    /// Every type has been ACKed at least once.
    Ready { at: Instant },
    /// On a stream opened again after one failed, every type has been ACKed.
    Resynced { at: Instant },
    /// Every marker of the phase was seen, and the responses carrying them ACKed.
    Changed { phase: usize, at: Instant },
    /// The stream failed or ended; the client reconnects.
    Reconnecting { client: usize, error: String },
    /// The client gave up after failing to reconnect.
    Failed { client: usize, error: String },
}

/// A resource that must show up (by name, containing `needle` if set) once a change is pushed.
#[derive(Clone, Debug)]
pub struct Marker {
    pub ty: Ty,
    pub name: String,
    pub needle: Option<String>,
}

/// What the coordinator is waiting for; index 0 is the initial push (no markers).
#[derive(Clone, Debug, Default)]
pub struct Phase {
    pub index: usize,
    pub markers: Vec<Marker>,
}

#[derive(Default)]
pub struct TypeCounters {
    responses: AtomicU64,
    resources: AtomicU64,
    removed: AtomicU64,
    bytes: AtomicU64,
}

/// Totals across clients, by type.
#[derive(Default)]
pub struct Counters {
    types: [TypeCounters; 5],
    nacks: AtomicU64,
    requests: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TypeTotals {
    pub responses: u64,
    pub resources: u64,
    pub removed: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub by_type: BTreeMap<&'static str, TypeTotals>,
    pub responses: u64,
    pub resources: u64,
    pub bytes: u64,
    pub requests: u64,
    pub nacks: u64,
}

impl Counters {
    fn response(&self, ty: Ty, bytes: usize, resources: usize, removed: usize) {
        let c = &self.types[ty.index()];
        c.responses.fetch_add(1, Ordering::Relaxed);
        c.resources.fetch_add(resources as u64, Ordering::Relaxed);
        c.removed.fetch_add(removed as u64, Ordering::Relaxed);
        c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            requests: self.requests.load(Ordering::Relaxed),
            nacks: self.nacks.load(Ordering::Relaxed),
            ..Default::default()
        };
        for ty in Ty::ALL {
            let c = &self.types[ty.index()];
            let tt = TypeTotals {
                responses: c.responses.load(Ordering::Relaxed),
                resources: c.resources.load(Ordering::Relaxed),
                removed: c.removed.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
            };
            t.responses += tt.responses;
            t.resources += tt.resources;
            t.bytes += tt.bytes;
            t.by_type.insert(ty.short(), tt);
        }
        t
    }
}

impl Totals {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Totals {
        let mut t = Totals {
            responses: self.responses - earlier.responses,
            resources: self.resources - earlier.resources,
            bytes: self.bytes - earlier.bytes,
            requests: self.requests - earlier.requests,
            nacks: self.nacks - earlier.nacks,
            ..Default::default()
        };
        for (k, now) in &self.by_type {
            let before = earlier.by_type.get(k).copied().unwrap_or_default();
            t.by_type.insert(
                k,
                TypeTotals {
                    responses: now.responses - before.responses,
                    resources: now.resources - before.resources,
                    removed: now.removed - before.removed,
                    bytes: now.bytes - before.bytes,
                },
            );
        }
        t
    }
}

/// Sorted name lists, shared between clients that hold equal ones (all sidecars of a mesh without
/// `Sidecar` scoping subscribe to the same EDS clusters): 2,000 copies would dominate our memory.
#[derive(Default)]
pub struct Interner {
    lists: Mutex<HashSet<Arc<Vec<String>>>>,
}

impl Interner {
    fn list(&self, names: Vec<String>) -> Arc<Vec<String>> {
        let mut lists = self.lists.lock();
        if let Some(hit) = lists.get(&names) {
            return Arc::clone(hit);
        }
        let list = Arc::new(names);
        lists.insert(Arc::clone(&list));
        list
    }
}

/// Endpoint churn: which changes have reached every client that sees them, and when.
///
/// Change `seq` puts [`synth::churn_address`]`(seq)` into namespace `seq % namespaces`'s `svc-0`
/// Endpoints; a client that ACKs endpoints holding a later change of that namespace has had every
/// earlier one (they were superseded, as the control plane is allowed to).
pub struct Churn {
    namespaces: usize,
    /// Per namespace: clients that see its `svc-0`.
    needed: Vec<u32>,
    /// Per change: clients that have ACKed it (or a later change of its namespace).
    reached: Vec<AtomicU32>,
    /// Per change: when its last client ACKed it.
    done: Vec<OnceLock<Instant>>,
}

impl Churn {
    pub fn new(shape: &MeshShape, pods: &[PodRef], changes: usize) -> Churn {
        let needed = (0..shape.namespaces)
            .map(|ns| pods.iter().filter(|p| shape.sees(p, ns)).count() as u32)
            .collect();
        Churn {
            namespaces: shape.namespaces,
            needed,
            reached: (0..changes).map(|_| AtomicU32::new(0)).collect(),
            done: (0..changes).map(|_| OnceLock::new()).collect(),
        }
    }

    /// When every client that sees change `seq` had ACKed it.
    pub fn done(&self, seq: usize) -> Option<Instant> {
        self.done.get(seq)?.get().copied()
    }

    /// The churned namespace and change an ACKed ClusterLoadAssignment shows, if it is one.
    fn observe(&self, cluster: &str, bytes: &[u8]) -> Option<(usize, usize)> {
        let host = cluster.strip_prefix("outbound|8080||")?;
        let (service, rest) = host.split_once('.')?;
        if service != synth::CHURNED_SERVICE {
            return None;
        }
        let ns = MeshShape::namespace_index(rest.split_once('.')?.0)?;
        Some((ns, synth::churn_seq(bytes)?))
    }

    /// A client that had seen change `from` of namespace `ns` ACKed change `to`.
    fn reached(&self, ns: usize, from: Option<usize>, to: usize, at: Instant) {
        let mut seq = from.map_or(ns, |f| f + self.namespaces);
        while seq <= to && seq < self.reached.len() {
            if self.reached[seq].fetch_add(1, Ordering::Relaxed) + 1 == self.needed[ns] {
                let _ = self.done[seq].set(at);
            }
            seq += self.namespaces;
        }
    }
}

/// Everything client tasks share.
pub struct Ctx {
    /// The xDS servers (replicas); client `id` starts at `id % len` and moves to the next one
    /// whenever its stream fails.
    pub endpoints: Vec<tonic::transport::Endpoint>,
    /// Over TLS: bind to the pod's address (the file source's proof) and subscribe to secrets.
    pub secure: bool,
    pub churn: Option<Churn>,
    pub max_message_bytes: usize,
    pub counters: Counters,
    pub events: mpsc::UnboundedSender<Event>,
    pub phase: watch::Receiver<Arc<Phase>>,
    /// Limits how many clients are between "connect" and "stream open" at once.
    pub ramp: Arc<Semaphore>,
    pub interner: Interner,
    /// Client 0's latest SotW response per type, kept when recording for the replay baseline.
    pub record: Option<Mutex<BTreeMap<String, DiscoveryResponse>>>,
}

/// Consecutive failed streams after which a client gives up (Envoy never does; a benchmark should).
const MAX_RETRIES: u32 = 8;

/// Runs client `id` as `pod` for as long as the process runs. Like Envoy, a client whose stream
/// fails reconnects (with back-off) and subscribes again to what it held; it gives up only after
/// [`MAX_RETRIES`] streams in a row failed before a response arrived.
pub async fn run(ctx: Arc<Ctx>, id: usize, pod: PodRef, delta: bool) {
    let node = node(&pod);
    let progress = Progress::new(&ctx, id, Arc::clone(&ctx.phase.borrow()));
    let mut sotw = SotwClient::new(&ctx, progress.clone());
    let mut incremental = DeltaClient::new(&ctx, progress);
    let mut failures = 0u32;
    let mut server = id % ctx.endpoints.len();
    let local = pod.ip.parse().ok().filter(|_| ctx.secure);
    loop {
        let endpoint = ctx.endpoints[server].clone().local_address(local);
        let (result, answered) = if delta {
            let result = incremental.stream(&node, endpoint).await;
            (result, std::mem::take(&mut incremental.answered_on_stream))
        } else {
            let result = sotw.stream(&node, endpoint).await;
            (result, std::mem::take(&mut sotw.answered_on_stream))
        };
        server = (server + 1) % ctx.endpoints.len();
        let error = match result {
            Ok(()) => "stream ended by the server".to_string(),
            Err(e) => format!("{e:#}"),
        };
        failures = if answered { 1 } else { failures + 1 };
        if failures > MAX_RETRIES {
            let _ = ctx.events.send(Event::Failed { client: id, error });
            return;
        }
        let _ = ctx.events.send(Event::Reconnecting { client: id, error });
        // Envoy's default: 500 ms base, exponential, jittered.
        let backoff = 500u64 << (failures - 1).min(5);
        let jitter = (id as u64 * 7919) % backoff;
        tokio::time::sleep(std::time::Duration::from_millis(backoff / 2 + jitter / 2)).await;
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(value::Kind::StringValue(s.to_string())),
    }
}

/// The node an Istio sidecar sends: id, cluster, and the metadata istiod reads.
fn node(pod: &PodRef) -> Node {
    let labels = Struct {
        fields: [
            ("app", pod.app.as_str()),
            ("version", "v1"),
            ("security.istio.io/tlsMode", "istio"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), string_value(v)))
        .collect(),
    };
    let mut fields: BTreeMap<String, Value> = [
        ("NAME", pod.name.as_str()),
        ("NAMESPACE", pod.namespace.as_str()),
        ("SERVICE_ACCOUNT", pod.app.as_str()),
        ("CLUSTER_ID", "Kubernetes"),
        ("ISTIO_VERSION", "1.24.0"),
        ("INSTANCE_IPS", pod.ip.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), string_value(v)))
    .collect();
    fields.insert(
        "LABELS".to_string(),
        Value {
            kind: Some(value::Kind::StructValue(labels)),
        },
    );
    Node {
        id: pod.node_id(),
        cluster: format!("{}.{}", pod.app, pod.namespace),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        user_agent_name: "envoy".to_string(),
        ..Default::default()
    }
}

async fn connect(
    ctx: &Ctx,
    endpoint: tonic::transport::Endpoint,
) -> anyhow::Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>> {
    let channel = endpoint
        .connect()
        .await
        .context("connecting to the xDS server")?;
    Ok(AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(ctx.max_message_bytes)
        .max_encoding_message_size(ctx.max_message_bytes))
}

/// Progress every client keeps, whatever its protocol and across reconnects.
#[derive(Clone)]
struct Progress {
    id: usize,
    /// How many of [`Ty::ALL`] the client subscribes to (secrets only over TLS).
    types: usize,
    acked: [bool; 5],
    ready: bool,
    /// Types ACKed on the current stream, and whether it is not the first.
    acked_on_stream: [bool; 5],
    reopened: bool,
    resync_reported: bool,
    phase: Arc<Phase>,
    seen: Vec<bool>,
    phase_reported: bool,
    /// Per namespace, the latest churn change ACKed.
    churn_seen: Vec<Option<usize>>,
}

impl Progress {
    fn new(ctx: &Ctx, id: usize, phase: Arc<Phase>) -> Self {
        Self {
            id,
            types: if ctx.secure { 5 } else { 4 },
            acked: [false; 5],
            ready: false,
            acked_on_stream: [false; 5],
            reopened: false,
            resync_reported: false,
            seen: vec![false; phase.markers.len()],
            phase,
            phase_reported: false,
            churn_seen: vec![None; ctx.churn.as_ref().map_or(0, |c| c.namespaces)],
        }
    }

    /// A stream opens: after the first, the client reports once it has everything again.
    fn stream_opened(&mut self) {
        self.reopened = self.acked.iter().any(|a| *a);
        self.acked_on_stream = [false; 5];
        self.resync_reported = false;
    }

    /// The churn changes an ACKed endpoints response carried, recorded as reached.
    fn churned(&mut self, ctx: &Ctx, seen: &[(usize, usize)]) {
        let Some(churn) = &ctx.churn else {
            return;
        };
        let at = Instant::now();
        for &(ns, seq) in seen {
            let from = self.churn_seen[ns];
            if from.is_none_or(|f| seq > f) {
                churn.reached(ns, from, seq, at);
                self.churn_seen[ns] = Some(seq);
            }
        }
    }

    /// The churn change a decoded endpoints resource shows, if any.
    fn churn_of(ctx: &Ctx, ty: Ty, name: &str, bytes: &[u8]) -> Option<(usize, usize)> {
        if ty != Ty::Eds {
            return None;
        }
        ctx.churn.as_ref()?.observe(name, bytes)
    }

    /// Picks up a new phase before a response is looked at.
    fn refresh(&mut self, ctx: &Ctx) {
        let current = Arc::clone(&ctx.phase.borrow());
        if current.index != self.phase.index {
            self.seen = vec![false; current.markers.len()];
            self.phase = current;
            self.phase_reported = false;
        }
    }

    fn check(&mut self, ty: Ty, name: &str, bytes: &[u8]) {
        for (i, m) in self.phase.markers.iter().enumerate() {
            if m.ty == ty
                && m.name == name
                && m.needle
                    .as_deref()
                    .is_none_or(|n| contains(bytes, n.as_bytes()))
            {
                self.seen[i] = true;
            }
        }
    }

    /// After a response was answered: ACKed (`ok`) or NACKed.
    fn answered(&mut self, ctx: &Ctx, ty: Ty, ok: bool) {
        let at = Instant::now();
        let _ = ctx.events.send(Event::Answered { at });
        if !ok {
            return;
        }
        self.acked[ty.index()] = true;
        self.acked_on_stream[ty.index()] = true;
        if !self.ready && self.acked[..self.types].iter().all(|a| *a) {
            self.ready = true;
            let _ = ctx.events.send(Event::Ready { at });
        }
        if self.reopened
            && !self.resync_reported
            && self.acked_on_stream[..self.types].iter().all(|a| *a)
        {
            self.resync_reported = true;
            let _ = ctx.events.send(Event::Resynced { at });
        }
        if self.phase.index > 0 && !self.phase_reported && self.seen.iter().all(|s| *s) {
            self.phase_reported = true;
            let _ = ctx.events.send(Event::Changed {
                phase: self.phase.index,
                at,
            });
        }
    }
}

#[derive(Default)]
struct SotwType {
    version: String,
    nonce: String,
    names: Arc<Vec<String>>,
    requested: bool,
}

struct SotwClient<'a> {
    ctx: &'a Ctx,
    /// The current stream's requests.
    tx: Option<mpsc::UnboundedSender<DiscoveryRequest>>,
    types: [SotwType; 5],
    progress: Progress,
    /// A response was answered on the current stream.
    answered_on_stream: bool,
}

impl<'a> SotwClient<'a> {
    fn new(ctx: &'a Ctx, progress: Progress) -> Self {
        Self {
            ctx,
            tx: None,
            types: Default::default(),
            progress,
            answered_on_stream: false,
        }
    }

    /// One stream: subscribes to what is held (everything on a reconnect, as Envoy does), then
    /// answers responses until the stream ends.
    async fn stream(
        &mut self,
        node: &Node,
        endpoint: tonic::transport::Endpoint,
    ) -> anyhow::Result<()> {
        let permit = self.ctx.ramp.acquire().await.context("ramp closed")?;
        let mut client = connect(self.ctx, endpoint).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        self.progress.stream_opened();
        for state in &mut self.types {
            // Nonces belong to the stream that sent them.
            state.nonce.clear();
        }
        // Only the first request carries the node, as Istio's bootstrap asks of Envoy.
        let mut first = Some(node.clone());
        for ty in Ty::ALL {
            let state = &self.types[ty.index()];
            if ty == Ty::Cds || state.requested {
                let node = first.take();
                self.request_with(ty, node)?;
            }
        }
        let mut responses = client
            .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await
            .context("opening the ADS stream")?
            .into_inner();
        drop(permit);
        let _ = self
            .ctx
            .events
            .send(Event::Connected { at: Instant::now() });
        while let Some(response) = responses.message().await.context("ADS stream")? {
            self.handle(response)?;
        }
        Ok(())
    }

    fn send(&self, request: DiscoveryRequest) -> anyhow::Result<()> {
        self.ctx.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.tx
            .as_ref()
            .context("no stream")?
            .send(request)
            .map_err(|_| anyhow::anyhow!("request stream closed"))
    }

    /// A request for `ty` at its current names, version and nonce (an ACK if those are the last
    /// response's, a subscription change otherwise).
    fn request(&mut self, ty: Ty) -> anyhow::Result<()> {
        self.request_with(ty, None)
    }

    fn request_with(&mut self, ty: Ty, node: Option<Node>) -> anyhow::Result<()> {
        let state = &mut self.types[ty.index()];
        state.requested = true;
        let request = DiscoveryRequest {
            node,
            version_info: state.version.clone(),
            resource_names: state.names.as_ref().clone(),
            type_url: ty.url().to_string(),
            response_nonce: state.nonce.clone(),
            ..Default::default()
        };
        self.send(request)
    }

    fn handle(&mut self, response: DiscoveryResponse) -> anyhow::Result<()> {
        let Some(ty) = Ty::of(&response.type_url) else {
            return Ok(());
        };
        self.ctx
            .counters
            .response(ty, response.encoded_len(), response.resources.len(), 0);
        self.progress.refresh(self.ctx);
        let mut eds = Vec::new();
        let mut routes = BTreeSet::new();
        let mut churned = Vec::new();
        let mut error = None;
        for any in &response.resources {
            match inspect(ty, any) {
                Ok(found) => {
                    self.progress.check(ty, &found.name, &any.value);
                    churned.extend(Progress::churn_of(self.ctx, ty, &found.name, &any.value));
                    if found.eds {
                        eds.push(found.name);
                    }
                    routes.extend(found.routes);
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(message) = error {
            // Envoy keeps the previous version and says why.
            self.ctx.counters.nacks.fetch_add(1, Ordering::Relaxed);
            let state = &self.types[ty.index()];
            let nack = DiscoveryRequest {
                version_info: state.version.clone(),
                resource_names: state.names.as_ref().clone(),
                type_url: ty.url().to_string(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message,
                    details: Vec::new(),
                }),
                ..Default::default()
            };
            self.send(nack)?;
            self.progress.answered(self.ctx, ty, false);
            return Ok(());
        }
        let state = &mut self.types[ty.index()];
        state.version = response.version_info.clone();
        state.nonce = response.nonce.clone();
        match ty {
            Ty::Cds => {
                eds.sort();
                eds.dedup();
                let names = self.ctx.interner.list(eds);
                let has_eds = !names.is_empty();
                if has_eds {
                    self.types[Ty::Eds.index()].names = names;
                    self.request(Ty::Eds)?;
                }
                self.request(Ty::Cds)?;
                if !has_eds && !self.types[Ty::Lds.index()].requested {
                    self.request(Ty::Lds)?;
                }
                if self.ctx.secure && !self.types[Ty::Sds.index()].requested {
                    self.types[Ty::Sds.index()].names = self.ctx.interner.list(secret_names());
                    self.request(Ty::Sds)?;
                }
            }
            Ty::Eds => {
                self.request(Ty::Eds)?;
                if !self.types[Ty::Lds.index()].requested {
                    self.request(Ty::Lds)?;
                }
            }
            Ty::Lds => {
                let names = self.ctx.interner.list(routes.into_iter().collect());
                let rds = &self.types[Ty::Rds.index()];
                if !rds.requested || rds.names != names {
                    self.types[Ty::Rds.index()].names = names;
                    self.request(Ty::Rds)?;
                }
                self.request(Ty::Lds)?;
            }
            Ty::Rds | Ty::Sds => self.request(ty)?,
        }
        self.progress.churned(self.ctx, &churned);
        if let Some(record) = &self.ctx.record
            && self.progress.id == 0
        {
            record.lock().insert(response.type_url.clone(), response);
        }
        self.progress.answered(self.ctx, ty, true);
        self.answered_on_stream = true;
        Ok(())
    }
}

struct DeltaClient<'a> {
    ctx: &'a Ctx,
    /// The current stream's requests.
    tx: Option<mpsc::UnboundedSender<DeltaDiscoveryRequest>>,
    /// EDS clusters CDS named, which are also our EDS subscriptions.
    eds: BTreeSet<String>,
    /// Route configs by the listener that names them.
    listener_routes: BTreeMap<String, Vec<String>>,
    rds: BTreeSet<String>,
    lds_requested: bool,
    sds_requested: bool,
    progress: Progress,
    /// A response was answered on the current stream.
    answered_on_stream: bool,
}

impl<'a> DeltaClient<'a> {
    fn new(ctx: &'a Ctx, progress: Progress) -> Self {
        Self {
            ctx,
            tx: None,
            eds: BTreeSet::new(),
            listener_routes: BTreeMap::new(),
            rds: BTreeSet::new(),
            lds_requested: false,
            sds_requested: false,
            progress,
            answered_on_stream: false,
        }
    }

    /// One stream: subscribes to what is held (everything on a reconnect; without
    /// `initial_resource_versions`, so the server sends it all again), then answers responses.
    async fn stream(
        &mut self,
        node: &Node,
        endpoint: tonic::transport::Endpoint,
    ) -> anyhow::Result<()> {
        let permit = self.ctx.ramp.acquire().await.context("ramp closed")?;
        let mut client = connect(self.ctx, endpoint).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        self.progress.stream_opened();
        self.send(DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: Ty::Cds.url().to_string(),
            ..Default::default()
        })?;
        self.subscribe(Ty::Eds, self.eds.iter().cloned().collect(), Vec::new())?;
        if self.lds_requested {
            self.send(DeltaDiscoveryRequest {
                type_url: Ty::Lds.url().to_string(),
                ..Default::default()
            })?;
        }
        self.subscribe(Ty::Rds, self.rds.iter().cloned().collect(), Vec::new())?;
        if self.sds_requested {
            self.subscribe(Ty::Sds, secret_names(), Vec::new())?;
        }
        let mut responses = client
            .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await
            .context("opening the Delta ADS stream")?
            .into_inner();
        drop(permit);
        let _ = self
            .ctx
            .events
            .send(Event::Connected { at: Instant::now() });
        while let Some(response) = responses.message().await.context("Delta ADS stream")? {
            self.handle(response)?;
        }
        Ok(())
    }

    fn send(&self, request: DeltaDiscoveryRequest) -> anyhow::Result<()> {
        self.ctx.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.tx
            .as_ref()
            .context("no stream")?
            .send(request)
            .map_err(|_| anyhow::anyhow!("request stream closed"))
    }

    fn subscribe(&self, ty: Ty, add: Vec<String>, remove: Vec<String>) -> anyhow::Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        self.send(DeltaDiscoveryRequest {
            type_url: ty.url().to_string(),
            resource_names_subscribe: add,
            resource_names_unsubscribe: remove,
            ..Default::default()
        })
    }

    fn request_lds(&mut self) -> anyhow::Result<()> {
        if self.lds_requested {
            return Ok(());
        }
        self.lds_requested = true;
        self.send(DeltaDiscoveryRequest {
            type_url: Ty::Lds.url().to_string(),
            ..Default::default()
        })
    }

    fn handle(&mut self, response: DeltaDiscoveryResponse) -> anyhow::Result<()> {
        let Some(ty) = Ty::of(&response.type_url) else {
            return Ok(());
        };
        self.ctx.counters.response(
            ty,
            response.encoded_len(),
            response.resources.len(),
            response.removed_resources.len(),
        );
        self.progress.refresh(self.ctx);
        let mut decoded = Vec::with_capacity(response.resources.len());
        let mut churned = Vec::new();
        let mut error = None;
        for resource in &response.resources {
            let Some(any) = &resource.resource else {
                continue;
            };
            match inspect(ty, any) {
                Ok(found) => {
                    self.progress.check(ty, &found.name, &any.value);
                    churned.extend(Progress::churn_of(self.ctx, ty, &found.name, &any.value));
                    decoded.push(found);
                }
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(message) = error {
            self.ctx.counters.nacks.fetch_add(1, Ordering::Relaxed);
            self.send(DeltaDiscoveryRequest {
                type_url: ty.url().to_string(),
                response_nonce: response.nonce.clone(),
                error_detail: Some(RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message,
                    details: Vec::new(),
                }),
                ..Default::default()
            })?;
            self.progress.answered(self.ctx, ty, false);
            return Ok(());
        }
        match ty {
            Ty::Cds => {
                let (mut add, mut remove) = (Vec::new(), Vec::new());
                for found in decoded {
                    if found.eds {
                        if self.eds.insert(found.name.clone()) {
                            add.push(found.name);
                        }
                    } else if self.eds.remove(&found.name) {
                        remove.push(found.name);
                    }
                }
                for name in &response.removed_resources {
                    if self.eds.remove(name) {
                        remove.push(name.clone());
                    }
                }
                self.subscribe(Ty::Eds, add, remove)?;
                if self.ctx.secure && !self.sds_requested {
                    self.sds_requested = true;
                    self.subscribe(Ty::Sds, secret_names(), Vec::new())?;
                }
            }
            Ty::Lds => {
                for found in decoded {
                    if found.routes.is_empty() {
                        self.listener_routes.remove(&found.name);
                    } else {
                        self.listener_routes.insert(found.name, found.routes);
                    }
                }
                for name in &response.removed_resources {
                    self.listener_routes.remove(name);
                }
                let wanted: BTreeSet<String> =
                    self.listener_routes.values().flatten().cloned().collect();
                let add = wanted.difference(&self.rds).cloned().collect();
                let remove = self.rds.difference(&wanted).cloned().collect();
                self.rds = wanted;
                self.subscribe(Ty::Rds, add, remove)?;
            }
            Ty::Eds | Ty::Rds | Ty::Sds => {}
        }
        self.send(DeltaDiscoveryRequest {
            type_url: ty.url().to_string(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })?;
        self.progress.churned(self.ctx, &churned);
        if ty == Ty::Eds || (ty == Ty::Cds && self.eds.is_empty()) {
            self.request_lds()?;
        }
        self.progress.answered(self.ctx, ty, true);
        self.answered_on_stream = true;
        Ok(())
    }
}

/// The secrets a sidecar's TLS contexts name over SDS: its certificate and the mesh's roots.
fn secret_names() -> Vec<String> {
    vec!["ROOTCA".to_string(), "default".to_string()]
}
