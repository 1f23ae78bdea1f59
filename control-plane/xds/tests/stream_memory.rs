//! What a stream keeps after a large request and a large response, measured: the heap of this
//! process (server and lean clients) with many streams open and idle after each sent a request of
//! ≈70 KiB and received a response of ≈1 MiB, next to a plain tonic server sending the same
//! message. tonic keeps a decode and an encode buffer per stream, each grown to the largest message;
//! the ADS server keeps neither.
//!
//! Run with `--nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::type_url::ROUTE;
use meshd_xds::{
    AdsServer, Any, ConnectionInfo, Generator, Names, Node, Push, Resource, ResourceSet,
};
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// Live bytes on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded as is.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded as is.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const STREAMS: usize = 64;
/// Route tables of one proxy: a few large resources, ≈1 MiB in all.
const TABLES: usize = 4;
const TABLE_BYTES: usize = 256 * 1024;
/// Names each request lists besides the tables.
const REQUESTED: usize = 1300;
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

fn route_tables() -> Arc<ResourceSet> {
    Arc::new(
        (0..TABLES)
            .map(|i| {
                let body = Any {
                    type_url: ROUTE.to_owned(),
                    value: vec![i as u8; TABLE_BYTES],
                };
                Arc::new(Resource::new(format!("{}", 8080 + i), &body))
            })
            .collect(),
    )
}

/// Hands every proxy the same shared set, as the control plane's generator does.
struct OneSet(Arc<ResourceSet>);

impl Generator for OneSet {
    type Proxy = ();

    fn connect(&self, _: &Node, _: &ConnectionInfo) -> Result<(), Status> {
        Ok(())
    }

    fn generate(&self, _: &(), _: &str, _: Option<&Names>) -> Vec<Arc<ResourceSet>> {
        vec![Arc::clone(&self.0)]
    }
}

/// tonic's generated server answering the first request with a prebuilt response.
struct Tonic(DiscoveryResponse);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Tonic {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let response = self.0.clone();
        tokio::spawn(async move {
            if let Ok(Some(_)) = requests.message().await {
                let _ = tx.send(Ok(response)).await;
            }
            // Hold the stream open, as an xDS stream stays.
            while let Ok(Some(_)) = requests.message().await {}
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(""))
    }
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(error) => panic!("bind: {error}"),
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => panic!("local_addr: {error}"),
    };
    (listener, addr)
}

/// Accepted connections without Nagle's delay, which would hold each window's last segment back
/// until the client's delayed ACK.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// One stream that asked for route tables and read the whole response, kept open.
struct Stream {
    _client: h2::client::SendRequest<Bytes>,
    _requests: h2::SendStream<Bytes>,
    _responses: h2::RecvStream,
}

/// A client that keeps nothing of what it reads, on its own connection as Envoy is.
async fn open_and_read(addr: SocketAddr) -> (Stream, usize) {
    let tcp = match TcpStream::connect(addr).await {
        Ok(tcp) => tcp,
        Err(error) => panic!("connect: {error}"),
    };
    // Window updates are small writes: without this, each waits out a delayed ACK.
    if let Err(error) = tcp.set_nodelay(true) {
        panic!("nodelay: {error}");
    }
    let (mut client, connection) = match h2::client::handshake(tcp).await {
        Ok(pair) => pair,
        Err(error) => panic!("handshake: {error}"),
    };
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{SOTW}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(());
    let request = match request {
        Ok(request) => request,
        Err(error) => panic!("request: {error}"),
    };
    let (response, mut requests) = match client.send_request(request, false) {
        Ok(pair) => pair,
        Err(error) => panic!("send_request: {error}"),
    };
    let message = DiscoveryRequest {
        node: Some(Node {
            id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".to_owned(),
            ..Default::default()
        }),
        type_url: ROUTE.to_owned(),
        // The tables, and as many names again as an Envoy's EDS request lists (≈70 KiB).
        resource_names: (0..TABLES)
            .map(|i| format!("{}", 8080 + i))
            .chain(
                (0..REQUESTED)
                    .map(|i| format!("outbound|8080||svc-{i}.ns-{}.svc.cluster.local", i % 100)),
            )
            .collect(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    if let Err(error) = requests.send_data(frame.freeze(), false) {
        panic!("send: {error}");
    }
    let mut responses = match response.await {
        Ok(response) => response.into_body(),
        Err(error) => panic!("response: {error}"),
    };
    let mut received = 0;
    let mut expected = None;
    let mut header = Vec::new();
    while expected.is_none_or(|len| received < len) {
        let chunk = match responses.data().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => panic!("read: {error}"),
            None => panic!("stream ended after {received} bytes"),
        };
        let _ = responses.flow_control().release_capacity(chunk.len());
        if header.len() < 5 {
            header.extend(chunk.iter().take(5 - header.len()));
            if header.len() == 5 {
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
                expected = Some(5 + len as usize);
            }
        }
        received += chunk.len();
    }
    let stream = Stream {
        _client: client,
        _requests: requests,
        _responses: responses,
    };
    (stream, received)
}

/// Heap per open stream once `STREAMS` clients have each read one response from `addr`.
async fn per_stream(addr: SocketAddr) -> (isize, usize) {
    // One stream first, so what is allocated once (runtime, server state) is not counted.
    let (warm, _) = open_and_read(addr).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = LIVE.load(Ordering::Relaxed);
    let mut streams = Vec::new();
    let mut received = 0;
    for _ in 0..STREAMS {
        let (stream, bytes) = open_and_read(addr).await;
        streams.push(stream);
        received = bytes;
    }
    // Every server task sees its response through, sooner or later on a busy machine: what a
    // stream keeps is the lowest heap seen over a while, not the heap at one instant.
    let mut after = LIVE.load(Ordering::Relaxed);
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = after.min(LIVE.load(Ordering::Relaxed));
    }
    drop(streams);
    drop(warm);
    ((after - before) / STREAMS as isize, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_keeps_no_buffer_after_a_large_response() {
    let tables = route_tables();
    let message = DiscoveryResponse {
        version_info: "v".to_owned(),
        resources: tables.iter().map(|r| r.body()).collect(),
        type_url: ROUTE.to_owned(),
        nonce: "n".to_owned(),
        ..Default::default()
    };

    let (listener, tonic_addr) = listen().await;
    let service = AggregatedDiscoveryServiceServer::new(Tonic(message));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming(listener)),
    );

    let (pushes, rx) = watch::channel(Arc::new(Push::unsynced()));
    pushes.send_replace(Arc::new(Push {
        epoch: 1,
        ..Push::unsynced()
    }));
    let server = AdsServer::new(Arc::new(OneSet(tables)), rx, &mut Registry::default());
    let (listener, ours_addr) = listen().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming(incoming(listener)),
    );

    let (tonic_bytes, tonic_received) = per_stream(tonic_addr).await;
    let (ours_bytes, ours_received) = per_stream(ours_addr).await;
    println!(
        "heap per open stream after a request of ≈70 KiB and a response of {} KiB: tonic's \
         generated server {} KiB, meshd-xds {} KiB ({STREAMS} streams, each on its own \
         connection; lean clients included)",
        ours_received / 1024,
        tonic_bytes / 1024,
        ours_bytes / 1024,
    );
    assert!(tonic_received >= TABLES * TABLE_BYTES);
    assert!(ours_received >= TABLES * TABLE_BYTES);
    // tonic keeps a buffer the size of the response per stream; this server keeps none.
    assert!(
        tonic_bytes > (TABLES * TABLE_BYTES) as isize,
        "the baseline no longer shows the pinned buffer: {tonic_bytes} bytes per stream"
    );
    assert!(
        ours_bytes < 96 * 1024,
        "{ours_bytes} bytes per stream kept after the request and the response"
    );
    drop(pushes);
    drop(server);
}
