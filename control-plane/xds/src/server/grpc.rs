//! The ADS service as tonic's router sees it: a `tower::Service` for the two ADS methods, written by
//! hand so responses go out as shared pieces ([`ResponseBody`]) rather than through tonic's
//! per-stream encode buffer. What tonic's generated server did besides is done here: gRPC status
//! for unknown methods and refused streams, the request size limit, no compression.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use tokio::sync::mpsc;
use tonic::Status;
use tonic::server::NamedService;

use super::body::ResponseBody;
use super::decode::RequestStream;
use super::{AdsServer, MAX_MESSAGE_SIZE, STREAM_QUEUE, delta, session, sotw};
use crate::request::{Decode, SotwRequest};
use crate::{ConnectionInfo, Generator};

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// Envoy's Aggregated Discovery Service, to add to a tonic `Server`.
pub struct AdsService<G: Generator> {
    server: AdsServer<G>,
}

impl<G: Generator> AdsService<G> {
    pub(super) fn new(server: AdsServer<G>) -> Self {
        Self { server }
    }
}

impl<G: Generator> Clone for AdsService<G> {
    fn clone(&self) -> Self {
        Self {
            server: self.server.clone(),
        }
    }
}

impl<G: Generator> std::fmt::Debug for AdsService<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService")
            .field("server", &self.server)
            .finish()
    }
}

impl<G: Generator> NamedService for AdsService<G> {
    const NAME: &'static str = SERVICE;
}

impl<G: Generator> tower::Service<Request> for AdsService<G> {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let response = match request.uri().path() {
            SOTW => self.open::<sotw::SotwStream<G>, SotwRequest>(request),
            DELTA => self.open::<delta::DeltaStream<G>, DeltaDiscoveryRequest>(request),
            _ => Err(Status::unimplemented("")),
        };
        ready(Ok(response.unwrap_or_else(Status::into_http)))
    }
}

impl<G: Generator> AdsService<G> {
    /// Admits a stream and starts its task; the response's body is what the task sends.
    fn open<P, R>(&self, request: Request) -> Result<Response, Status>
    where
        P: session::Protocol<Gen = G, Request = R>,
        R: Decode + Send + Sync + 'static,
    {
        if let Some(encoding) = request.headers().get("grpc-encoding")
            && encoding != "identity"
        {
            return Err(Status::unimplemented(format!(
                "Content is compressed with `{}` which isn't supported",
                String::from_utf8_lossy(encoding.as_bytes())
            )));
        }
        let (parts, body) = request.into_parts();
        let meta = tonic::Request::from_http(http::Request::from_parts(parts, ()));
        let info = self.server.admit(&meta)?;
        let requests = RequestStream::<R>::new(body, MAX_MESSAGE_SIZE);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(session::run::<P>(
            Arc::clone(&self.server.shared),
            info,
            requests,
            tx,
        ));
        let mut response = http::Response::new(tonic::body::Body::new(ResponseBody::new(rx)));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        Ok(response)
    }
}

impl<G: Generator> AdsServer<G> {
    fn admit(&self, request: &tonic::Request<()>) -> Result<ConnectionInfo, Status> {
        if *self.shared.shutdown.borrow() {
            return Err(Status::unavailable("server shutting down"));
        }
        if self.shared.pushes.borrow().epoch == 0 {
            return Err(Status::unavailable("sources not synced"));
        }
        Ok(ConnectionInfo {
            remote_addr: request.remote_addr(),
            secure: self.secure,
            metadata: request.metadata().clone(),
        })
    }
}
