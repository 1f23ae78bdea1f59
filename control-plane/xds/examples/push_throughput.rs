//! Push throughput of the ADS server next to tonic streaming the same bytes.
//!
//! Many clients (lean HTTP/2 clients that count what they read, each on its own connection, as
//! Envoys are) each ask for CDS, EDS, LDS and RDS and read the four responses; resources have the
//! sizes of the benchmark mesh's (about 1.4 MB per client). Served once by `AdsServer` over a
//! generator handing out prebuilt shared sets (no translation: the serving path only), once by
//! tonic's generated server answering with the same messages, prebuilt. Prints wall time, bytes per
//! second and this process's CPU time for each (the clients' share is the same in both).
//!
//! `cargo run --release -p meshd-xds --example push_throughput -- [clients] [rounds]`

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use meshd_xds::{
    AdsServer, Any, ConnectionInfo, Generator, Names, Node, Push, Resource, ResourceSet,
};
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// `(type URL, count, bytes each)`: clusters, endpoints, listeners, route tables.
const SHAPE: [(&str, usize, usize); 4] = [
    (CLUSTER, 1300, 520),
    (ENDPOINT, 1300, 190),
    (LISTENER, 210, 900),
    (ROUTE, 3, 100_000),
];

fn sets() -> Vec<(&'static str, Arc<ResourceSet>)> {
    SHAPE
        .iter()
        .map(|(type_url, count, bytes)| {
            let set = (0..*count)
                .map(|i| {
                    let body = Any {
                        type_url: (*type_url).to_owned(),
                        value: vec![(i % 251) as u8; *bytes],
                    };
                    Arc::new(Resource::new(format!("{type_url}/{i:05}"), &body))
                })
                .collect();
            (*type_url, Arc::new(set))
        })
        .collect()
}

/// Hands every proxy the same shared sets, as the control plane's generator does per scope.
struct Prebuilt(Vec<(&'static str, Arc<ResourceSet>)>);

impl Generator for Prebuilt {
    type Proxy = ();

    fn connect(&self, _: &Node, _: &ConnectionInfo) -> Result<(), Status> {
        Ok(())
    }

    fn generate(&self, _: &(), type_url: &str, _: Option<&Names>) -> Vec<Arc<ResourceSet>> {
        self.0
            .iter()
            .filter(|(t, _)| *t == type_url)
            .map(|(_, set)| Arc::clone(set))
            .collect()
    }
}

/// tonic's generated server answering each first request of a type with a prebuilt response.
struct Tonic(Vec<DiscoveryResponse>);

#[tonic::async_trait]
impl AggregatedDiscoveryService for Tonic {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut requests = request.into_inner();
        let responses = self.0.clone();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if !request.response_nonce.is_empty() {
                    continue;
                }
                let found = responses.iter().find(|r| r.type_url == request.type_url);
                if let Some(response) = found
                    && tx.send(Ok(response.clone())).await.is_err()
                {
                    return;
                }
            }
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

fn frame(message: &DiscoveryRequest) -> Bytes {
    let body = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + body.len());
    frame.put_u8(0);
    frame.put_u32(body.len() as u32);
    frame.put_slice(&body);
    frame.freeze()
}

/// Connections being opened at once: a storm of them overflows the listener's queue (Linux resets
/// what does not fit), which would measure the kernel, not the server.
const RAMP: usize = 64;

/// One client: asks for every type, reads the four responses; the bytes read.
async fn client(
    addr: SocketAddr,
    requests: Arc<Vec<Bytes>>,
    ramp: Arc<Semaphore>,
) -> Result<usize, String> {
    let permit = ramp.acquire_owned().await.map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (mut sender, connection) = h2::client::handshake(tcp)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{SOTW}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = sender
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    for request in requests.iter() {
        send.send_data(request.clone(), false)
            .map_err(|e| e.to_string())?;
    }
    let mut body = response
        .await
        .map_err(|e| format!("awaiting the response: {e}"))?
        .into_body();
    drop(permit);
    let (mut received, mut messages, mut next) = (0usize, 0, 0usize);
    let mut header = Vec::with_capacity(5);
    while messages < SHAPE.len() {
        let chunk = match body.data().await {
            Some(chunk) => chunk.map_err(|e| format!("reading after {received} bytes: {e}"))?,
            None => return Err(format!("stream ended after {messages} responses")),
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        let mut at = 0;
        while at < chunk.len() {
            if next == 0 {
                let take = (5 - header.len()).min(chunk.len() - at);
                header.extend_from_slice(&chunk[at..at + take]);
                at += take;
                if header.len() == 5 {
                    next =
                        u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                    header.clear();
                    if next == 0 {
                        messages += 1;
                    }
                }
            } else {
                let take = next.min(chunk.len() - at);
                next -= take;
                at += take;
                if next == 0 {
                    messages += 1;
                }
            }
        }
        received += chunk.len();
    }
    Ok(received)
}

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of the whole line; 100 ticks a second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// What one push to every client took.
struct Pushed {
    wall: Duration,
    bytes: usize,
    cpu: f64,
    failed: Vec<String>,
}

/// Every client at once against `addr`.
async fn push(addr: SocketAddr, clients: usize, requests: &Arc<Vec<Bytes>>) -> Pushed {
    let cpu = cpu_seconds();
    let started = Instant::now();
    let ramp = Arc::new(Semaphore::new(RAMP));
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(client(addr, Arc::clone(requests), Arc::clone(&ramp))))
        .collect();
    let (mut bytes, mut failed) = (0, Vec::new());
    for task in tasks {
        match task.await {
            Ok(Ok(received)) => bytes += received,
            Ok(Err(error)) => failed.push(error),
            Err(error) => failed.push(error.to_string()),
        }
    }
    Pushed {
        wall: started.elapsed(),
        bytes,
        cpu: cpu_seconds() - cpu,
        failed,
    }
}

async fn listen() -> std::io::Result<(TcpIncoming, SocketAddr)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((TcpIncoming::from(listener).with_nodelay(Some(true)), addr))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let clients: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(3);
    let sets = sets();
    let node = Node {
        id: "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local".to_owned(),
        ..Default::default()
    };
    let requests: Arc<Vec<Bytes>> = Arc::new(
        sets.iter()
            .enumerate()
            .map(|(i, (type_url, set))| {
                let named = matches!(*type_url, ENDPOINT | ROUTE);
                frame(&DiscoveryRequest {
                    node: (i == 0).then(|| node.clone()),
                    type_url: (*type_url).to_owned(),
                    resource_names: if named {
                        set.iter().map(|r| r.name().to_owned()).collect()
                    } else {
                        Vec::new()
                    },
                    ..Default::default()
                })
            })
            .collect(),
    );
    let messages = sets
        .iter()
        .map(|(type_url, set)| DiscoveryResponse {
            version_info: "0123456789abcdef".to_owned(),
            resources: set.iter().map(|r| r.body()).collect(),
            type_url: (*type_url).to_owned(),
            nonce: "00000000-1".to_owned(),
            ..Default::default()
        })
        .collect();

    let (incoming, tonic_addr) = listen().await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(Tonic(messages)))
            .serve_with_incoming(incoming),
    );
    let (pushes, rx) = watch::channel(Arc::new(Push {
        epoch: 1,
        ..Push::unsynced()
    }));
    let server = AdsServer::new(Arc::new(Prebuilt(sets)), rx, &mut Registry::default());
    let (incoming, ours_addr) = listen().await?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server.service())
            .serve_with_incoming(incoming),
    );

    let per_client: usize = SHAPE.iter().map(|(_, n, b)| n * (b + 40)).sum();
    println!("{clients} clients, {rounds} rounds each, alternating");
    let (mut tonic_total, mut ours_total) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (name, addr, totals) in [
            ("tonic", tonic_addr, &mut tonic_total),
            ("meshd-xds", ours_addr, &mut ours_total),
        ] {
            let pushed = push(addr, clients, &requests).await;
            let wall = pushed.wall.as_secs_f64();
            println!(
                "round {round} {name:>9}: {wall:6.2} s, {:7.1} MB/s, {:6.2} CPU-s ({} MB{})",
                pushed.bytes as f64 / 1e6 / wall,
                pushed.cpu,
                pushed.bytes / 1_000_000,
                match pushed.failed.first() {
                    Some(first) => format!("; {} clients failed: {first}", pushed.failed.len()),
                    None => String::new(),
                }
            );
            // Throughput of what was delivered.
            totals.push((
                wall * (clients * per_client) as f64 / pushed.bytes.max(1) as f64,
                pushed.cpu,
            ));
            // Let the round's connections close before the next.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let median = |v: &Vec<(f64, f64)>, cpu: bool| {
        let mut x: Vec<f64> = v.iter().map(|(w, c)| if cpu { *c } else { *w }).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let (tw, ow) = (median(&tonic_total, false), median(&ours_total, false));
    let (tc, oc) = (median(&tonic_total, true), median(&ours_total, true));
    println!(
        "median: meshd-xds throughput {:.0} % of tonic's; CPU (clients included) {:.2}× tonic's",
        100.0 * tw / ow,
        oc / tc
    );
    drop(pushes);
    Ok(())
}
