//! An in-process ADS server on 127.0.0.1:0 over a fake generator, and scripted clients.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::pb::google::rpc::Status as RpcStatus;
use meshd_xds::{
    AdsServer, Any, ConnectionInfo, DebugScope, Generator, Names, Node, ProxyStatus, Push,
    Resource, ResourceSet,
};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Long enough for a loaded CI machine; every wait that succeeds returns as soon as it can.
pub const PATIENCE: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(200);

type ByType = BTreeMap<String, BTreeMap<String, Arc<Resource>>>;

/// Resources by type URL and name, which tests edit; the server filters by subscription itself.
/// Each type is one set, followed by a second one (a proxy's own resources) if any are `set_own`.
#[derive(Default)]
pub struct FakeGenerator {
    resources: Mutex<ByType>,
    own: Mutex<ByType>,
    refuse: Mutex<Option<Status>>,
    pub connects: AtomicUsize,
    pub disconnects: AtomicUsize,
    pub generates: AtomicUsize,
    /// `(node id, secure)` of every admitted connection.
    pub admitted: Mutex<Vec<(String, bool)>>,
    /// When set, every `generate` has another thread read every connection's status, as a debug
    /// request arriving mid-generation would, and counts the reads that were held up.
    pub read_statuses_while_generating: std::sync::OnceLock<meshd_xds::Connections>,
    pub status_reads_blocked: AtomicUsize,
    /// `(type URL, message, suspect names@versions)` of every NACK the server reported.
    pub nacks: Mutex<Vec<(String, String, Vec<String>)>>,
    /// What debug clients may read; `None` refuses them (the trait's default).
    pub debug: Mutex<Option<DebugScope>>,
}

/// The `ControlPlane.identifier` the fake generator reports, in istiod's JSON shape.
pub const CONTROL_PLANE: &str =
    r#"{"Component":"istiod","ID":"fake-0","Info":{"version":"0.1.0"}}"#;

impl FakeGenerator {
    pub fn set(&self, type_url: &str, name: &str, version: &str) {
        self.resources
            .lock()
            .entry(type_url.to_owned())
            .or_default()
            .insert(name.to_owned(), mk_resource(type_url, name, version));
    }

    /// A resource of the second set, which a name of the first hides.
    pub fn set_own(&self, type_url: &str, name: &str, version: &str) {
        self.own
            .lock()
            .entry(type_url.to_owned())
            .or_default()
            .insert(name.to_owned(), mk_resource(type_url, name, version));
    }

    pub fn remove(&self, type_url: &str, name: &str) {
        if let Some(of_type) = self.resources.lock().get_mut(type_url) {
            of_type.remove(name);
        }
    }

    pub fn refuse_with(&self, status: Status) {
        *self.refuse.lock() = Some(status);
    }
}

impl Generator for FakeGenerator {
    type Proxy = String;

    fn connect(&self, node: &Node, conn: &ConnectionInfo) -> Result<String, Status> {
        if let Some(status) = self.refuse.lock().clone() {
            return Err(status);
        }
        self.connects.fetch_add(1, Ordering::SeqCst);
        self.admitted.lock().push((node.id.clone(), conn.secure));
        Ok(node.id.clone())
    }

    fn generate(
        &self,
        _proxy: &String,
        type_url: &str,
        _names: Option<&Names>,
    ) -> Vec<Arc<ResourceSet>> {
        self.generates.fetch_add(1, Ordering::SeqCst);
        if let Some(connections) = self.read_statuses_while_generating.get() {
            let connections = connections.clone();
            let (done, read) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = done.send(connections.statuses().len());
            });
            if read.recv_timeout(Duration::from_secs(2)).is_err() {
                self.status_reads_blocked.fetch_add(1, Ordering::SeqCst);
            }
        }
        let set = |by_type: &ByType| -> Arc<ResourceSet> {
            Arc::new(
                by_type
                    .get(type_url)
                    .map(|of_type| of_type.values().cloned().collect())
                    .unwrap_or_else(ResourceSet::empty),
            )
        };
        let mut sets = vec![set(&self.resources.lock())];
        let own = self.own.lock();
        if own.contains_key(type_url) {
            sets.push(set(&own));
        }
        sets
    }

    fn nacked(
        &self,
        _proxy: &String,
        type_url: &str,
        nack: &meshd_xds::Nack,
        suspects: Vec<Arc<Resource>>,
    ) {
        let names = suspects
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body().value).into_owned())
            .collect();
        self.nacks
            .lock()
            .push((type_url.to_owned(), nack.message.clone(), names));
    }

    fn disconnect(&self, _proxy: &String) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }

    fn debug_scope(&self, _node: &Node, _conn: &ConnectionInfo) -> Result<DebugScope, Status> {
        self.debug
            .lock()
            .clone()
            .ok_or_else(|| Status::unauthenticated("authentication required"))
    }

    fn control_plane(&self) -> Option<String> {
        Some(CONTROL_PLANE.to_owned())
    }
}

/// A resource whose body says what it is, so tests can read names and versions off the wire.
pub fn mk_resource(type_url: &str, name: &str, version: &str) -> Arc<Resource> {
    Arc::new(Resource::new(
        name,
        &Any {
            type_url: type_url.to_owned(),
            value: format!("{name}@{version}").into_bytes(),
        },
    ))
}

/// `name@version` of every body in a SotW response, in order.
pub fn bodies(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| String::from_utf8_lossy(&any.value).into_owned())
        .collect()
}

/// `name@version` of every resource in a Delta response, in order (from the bodies, after checking
/// each carries its resource's name and version).
pub fn delta_bodies(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|r| {
            let body = r.resource.clone().unwrap_or_default();
            let text = String::from_utf8_lossy(&body.value).into_owned();
            let expected = mk_resource(
                &body.type_url,
                &r.name,
                text.rsplit('@').next().unwrap_or(""),
            );
            assert_eq!(r.version, expected.version_info(), "version of {text}");
            assert!(text.starts_with(&format!("{}@", r.name)), "name of {text}");
            text
        })
        .collect()
}

pub fn mk_node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "test".to_owned(),
        ..Default::default()
    }
}

/// A server with both a plaintext and a TLS-flagged listener over one generator and push channel.
pub struct Harness {
    pub addr: SocketAddr,
    pub secure_addr: SocketAddr,
    pub generator: Arc<FakeGenerator>,
    pub server: AdsServer<FakeGenerator>,
    pub registry: Registry,
    pushes: watch::Sender<Arc<Push>>,
    changed_at: Mutex<BTreeMap<String, u64>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Harness {
    /// A server whose sources are synced (epoch 1).
    pub async fn start() -> Self {
        let harness = Self::start_unsynced().await;
        harness.push(&[]);
        harness
    }

    /// A server still at epoch 0.
    pub async fn start_unsynced() -> Self {
        let generator = Arc::new(FakeGenerator::default());
        let (pushes, rx) = watch::channel(Arc::new(Push::unsynced()));
        let mut registry = Registry::default();
        let server = AdsServer::new(Arc::clone(&generator), rx, &mut registry);
        let (addr, plain) = serve(server.clone()).await;
        let (secure_addr, tls) = serve(server.clone().secure(true)).await;
        Self {
            addr,
            secure_addr,
            generator,
            server,
            registry,
            pushes,
            changed_at: Mutex::new(BTreeMap::new()),
            tasks: vec![plain, tls],
        }
    }

    /// Announces that `types` changed; returns the new epoch.
    pub fn push(&self, types: &[&str]) -> u64 {
        let epoch = self.pushes.borrow().epoch + 1;
        let mut changed_at = self.changed_at.lock();
        for type_url in types {
            changed_at.insert((*type_url).to_owned(), epoch);
        }
        self.pushes.send_replace(Arc::new(Push {
            epoch,
            changed_at: changed_at.clone(),
            triggered_at: Instant::now(),
        }));
        epoch
    }

    pub fn set(&self, type_url: &str, name: &str, version: &str) {
        self.generator.set(type_url, name, version);
    }

    pub async fn sotw(&self, node_id: &str) -> SotwClient {
        match SotwClient::connect(self.addr, node_id).await {
            Ok(client) => client,
            Err(status) => panic!("SotW stream refused: {status}"),
        }
    }

    pub async fn delta(&self, node_id: &str) -> DeltaClient {
        match DeltaClient::connect(self.addr, node_id).await {
            Ok(client) => client,
            Err(status) => panic!("Delta stream refused: {status}"),
        }
    }

    /// The status of the one connection of `node_id`, once it is registered.
    pub async fn status_of(&self, node_id: &str) -> ProxyStatus {
        let server = self.server.clone();
        let node_id = node_id.to_owned();
        wait_for(move || server.statuses().into_iter().find(|s| s.node.id == node_id)).await
    }

    /// The metrics exposition text.
    pub fn metrics(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            panic!("metrics encode: {error}");
        }
        text
    }
}

async fn serve(server: AdsServer<FakeGenerator>) -> (SocketAddr, JoinHandle<()>) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("bind: {error}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => panic!("local_addr: {error}"),
    };
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
        if let Err(error) = result {
            panic!("server: {error}");
        }
    });
    (addr, task)
}

/// Polls `check` until it returns something, or panics after [`PATIENCE`].
pub async fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met in {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = match Channel::from_shared(format!("http://{addr}")) {
        Ok(endpoint) => endpoint,
        Err(error) => panic!("endpoint: {error}"),
    };
    match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => panic!("connect: {error}"),
    }
}

/// A scripted SotW client: the node is sent on the first request only, as Envoy does.
pub struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Option<Node>,
}

impl SotwClient {
    pub async fn connect(addr: SocketAddr, node_id: &str) -> Result<Self, Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(16);
        let response = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            rx: response.into_inner(),
            node: Some(mk_node(node_id)),
        })
    }

    pub async fn send(&mut self, mut request: DiscoveryRequest) {
        if let Some(node) = self.node.take() {
            request.node = Some(node);
        }
        if self.tx.send(request).await.is_err() {
            panic!("request stream closed");
        }
    }

    /// Sends `request` as is, and no node later either.
    pub async fn send_without_node(&mut self, request: DiscoveryRequest) {
        self.node = None;
        self.send(request).await;
    }

    /// Sends a first request (empty nonce) for `type_url`.
    pub async fn request(&mut self, type_url: &str, names: &[&str]) {
        self.send(DiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// ACKs `response`, now asking for `names`.
    pub async fn ack(&mut self, response: &DiscoveryResponse, names: &[&str]) {
        self.send(DiscoveryRequest {
            version_info: response.version_info.clone(),
            type_url: response.type_url.clone(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// NACKs `response`.
    pub async fn nack(&mut self, response: &DiscoveryResponse, names: &[&str], message: &str) {
        self.send(DiscoveryRequest {
            version_info: String::new(),
            type_url: response.type_url.clone(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_owned(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        match self.next().await {
            Ok(response) => response,
            Err(status) => panic!("expected a response, got {status}"),
        }
    }

    /// The next response of `type_url`, panicking on any other.
    pub async fn recv_type(&mut self, type_url: &str) -> DiscoveryResponse {
        let response = self.recv().await;
        assert_eq!(response.type_url, type_url, "unexpected response type");
        response
    }

    /// The next message or the status the stream ended with.
    pub async fn next(&mut self) -> Result<DiscoveryResponse, Status> {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Ok(Some(response))) => Ok(response),
            Ok(Ok(None)) => Err(Status::ok("stream ended")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no response within {PATIENCE:?}"),
        }
    }

    /// Asserts nothing arrives for a while.
    pub async fn expect_silence(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected silence, got {message:?}");
        }
    }
}

/// A scripted Delta client.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Option<Node>,
}

impl DeltaClient {
    pub async fn connect(addr: SocketAddr, node_id: &str) -> Result<Self, Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(16);
        let response = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            tx,
            rx: response.into_inner(),
            node: Some(mk_node(node_id)),
        })
    }

    pub async fn send(&mut self, mut request: DeltaDiscoveryRequest) {
        if let Some(node) = self.node.take() {
            request.node = Some(node);
        }
        if self.tx.send(request).await.is_err() {
            panic!("request stream closed");
        }
    }

    /// A first request for `type_url`, declaring what the client already holds.
    pub async fn request(&mut self, type_url: &str, subscribe: &[&str], held: &[(&str, &str)]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            initial_resource_versions: held
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        })
        .await;
    }

    /// A spontaneous subscription change.
    pub async fn subscribe(&mut self, type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        })
        .await;
    }

    pub async fn ack(&mut self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    pub async fn nack(&mut self, response: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_owned(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        match tokio::time::timeout(PATIENCE, self.rx.message()).await {
            Ok(Ok(Some(response))) => response,
            Ok(Ok(None)) => panic!("stream ended"),
            Ok(Err(status)) => panic!("expected a response, got {status}"),
            Err(_) => panic!("no response within {PATIENCE:?}"),
        }
    }

    pub async fn recv_type(&mut self, type_url: &str) -> DeltaDiscoveryResponse {
        let response = self.recv().await;
        assert_eq!(response.type_url, type_url, "unexpected response type");
        response
    }

    pub async fn expect_silence(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.rx.message()).await {
            panic!("expected silence, got {message:?}");
        }
    }
}
