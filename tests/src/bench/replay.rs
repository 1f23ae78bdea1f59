//! The baseline server: answers every client with the same recorded responses (one sidecar's CDS,
//! EDS, LDS and RDS as meshd sent them), doing no work a control plane would do — no index, no
//! translation, no diffing. What it costs is the floor of serving those bytes over tonic/prost:
//! cloning the response, encoding it, HTTP/2 framing, reading and decoding the requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    Resource as WireResource,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::inspect::{Ty, inspect};

/// Writes responses as length-delimited protobuf, one after another.
pub fn save(path: &Path, responses: &BTreeMap<String, DiscoveryResponse>) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for response in responses.values() {
        response.encode_length_delimited(&mut buf)?;
    }
    std::fs::write(path, buf).with_context(|| format!("writing {}", path.display()))
}

fn load(path: &Path) -> anyhow::Result<BTreeMap<String, DiscoveryResponse>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rest = bytes.as_slice();
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        let response = DiscoveryResponse::decode_length_delimited(&mut rest)
            .with_context(|| format!("decoding {}", path.display()))?;
        out.insert(response.type_url.clone(), response);
    }
    Ok(out)
}

/// The recording, in both protocols' shapes.
struct Recorded {
    sotw: BTreeMap<String, DiscoveryResponse>,
    delta: BTreeMap<String, DeltaDiscoveryResponse>,
    nonce: AtomicU64,
}

impl Recorded {
    fn nonce(&self) -> String {
        self.nonce.fetch_add(1, Ordering::Relaxed).to_string()
    }
}

#[derive(Clone)]
struct Replay(Arc<Recorded>);

const STREAM_QUEUE: usize = 8;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Replay {
    type StreamAggregatedResourcesStream = ReceiverStream<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let recorded = Arc::clone(&self.0);
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            // Answer a type's first request, and any that changes its names; the rest are ACKs.
            let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
            while let Ok(Some(request)) = requests.message().await {
                let Some(recorded_response) = recorded.sotw.get(&request.type_url) else {
                    continue;
                };
                let changed = names.get(&request.type_url) != Some(&request.resource_names);
                if !(request.response_nonce.is_empty() || changed) {
                    continue;
                }
                names.insert(request.type_url.clone(), request.resource_names);
                let mut response = recorded_response.clone();
                response.nonce = recorded.nonce();
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let recorded = Arc::clone(&self.0);
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(async move {
            let mut answered: BTreeMap<String, ()> = BTreeMap::new();
            while let Ok(Some(request)) = requests.message().await {
                let Some(recorded_response) = recorded.delta.get(&request.type_url) else {
                    continue;
                };
                // Everything on the first request of a type; subscriptions after that are already
                // covered (one sidecar's recording holds every name any sidecar asks for).
                if answered.insert(request.type_url.clone(), ()).is_some() {
                    continue;
                }
                let mut response = recorded_response.clone();
                response.nonce = recorded.nonce();
                if tx.send(Ok(response)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn to_delta(response: &DiscoveryResponse) -> anyhow::Result<DeltaDiscoveryResponse> {
    let ty = Ty::of(&response.type_url).context("recorded response of an unknown type")?;
    let resources = response
        .resources
        .iter()
        .map(|any| {
            let name = inspect(ty, any).map_err(anyhow::Error::msg)?.name;
            Ok(WireResource {
                version: format!("{}-{name}", response.version_info),
                name,
                resource: Some(any.clone()),
                ..Default::default()
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(DeltaDiscoveryResponse {
        system_version_info: response.version_info.clone(),
        resources,
        type_url: response.type_url.clone(),
        ..Default::default()
    })
}

/// Serves the recording at `listen` until SIGTERM or Ctrl-C.
pub async fn serve(
    from: &Path,
    listen: SocketAddr,
    max_message_bytes: usize,
) -> anyhow::Result<()> {
    let sotw = load(from)?;
    let delta = sotw
        .iter()
        .map(|(k, v)| Ok((k.clone(), to_delta(v)?)))
        .collect::<anyhow::Result<_>>()?;
    let service = AggregatedDiscoveryServiceServer::new(Replay(Arc::new(Recorded {
        sotw,
        delta,
        nonce: AtomicU64::new(1),
    })))
    .max_decoding_message_size(max_message_bytes)
    .max_encoding_message_size(max_message_bytes);
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    // tokio's listener sets SO_REUSEADDR, so a restart right after a run can bind again.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    eprintln!("replay: serving {} on {listen}", from.display());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .context("replay server")
}
