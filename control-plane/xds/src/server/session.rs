//! One stream's life: admission on the first request, then requests and pushes until either side
//! leaves. What a request or a push means is up to the protocol ([`Protocol`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use meshd_proto::type_url::{self, PUSH_ORDER};
use tokio::sync::mpsc;
use tonic::Status;

use super::Shared;
use super::debug::{self, DebugRequest};
use super::decode::RequestStream;
use crate::connections::{Connection, Registration};
use crate::request::Decode;
use crate::state::{Outcome, Reply, TypeState, served};
use crate::wire::Encoded;
use crate::{ConnectionInfo, Generator, Node, Push, ResourceSet};

/// The client stopped reading: its stream is over.
#[derive(Debug, thiserror::Error)]
#[error("client went away")]
pub(crate) struct ClientGone;

/// SotW or Delta, as seen by [`run`].
pub(crate) trait Protocol: Send + Sized + 'static {
    type Gen: Generator;
    type Request: Decode + Send + Sync + 'static;
    type State: TypeState<Request = Self::Request>;
    const DELTA: bool;

    fn node(request: &Self::Request) -> Option<&Node>;

    fn type_url(request: &Self::Request) -> &str;

    /// The request as a debug request, if it asks for an `istio.io/debug/` type this protocol
    /// answers.
    fn debug_request(_request: &Self::Request) -> Option<DebugRequest> {
        None
    }

    fn new(session: Session<Self::Gen, Self::State>) -> Self;

    fn session(&mut self) -> &mut Session<Self::Gen, Self::State>;

    /// Answers a request the shared prologue ([`on_request`]) decided to answer.
    fn answer_request(
        &mut self,
        type_url: &str,
        outcome: Outcome,
    ) -> impl Future<Output = Result<(), ClientGone>> + Send;

    /// Sends what `push` changed for this proxy: the types whose `changed_at` is above `since`.
    fn on_push(
        &mut self,
        push: &Push,
        since: u64,
    ) -> impl Future<Output = Result<(), ClientGone>> + Send;
}

/// Serves one stream until the client leaves, the push channel closes, or the server shuts down.
pub(crate) async fn run<P: Protocol>(
    shared: Arc<Shared<P::Gen>>,
    info: ConnectionInfo,
    mut requests: RequestStream<P::Request>,
    tx: mpsc::Sender<Result<Encoded, Status>>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let stopped = async move {
        // An error means the server itself is gone: stop as well.
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    let gone = tx.clone();

    let first = tokio::select! {
        () = gone.closed() => return,
        () = &mut stopped => return,
        first = requests.message() => first,
    };
    let first = match first {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(status) => {
            tracing::debug!(%status, "ADS stream failed before its first request");
            return;
        }
    };
    let Some(node) = P::node(&first).cloned() else {
        // Nothing to do if the client is already gone.
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first request must carry a node",
            )))
            .await;
        return;
    };
    if let Some(asked) = P::debug_request(&first) {
        drop(first);
        return debug::serve(shared, node, info, asked, requests, tx, P::debug_request).await;
    }
    let proxy = match shared.generator.connect(&node, &info) {
        Ok(proxy) => proxy,
        Err(status) => {
            tracing::info!(node = %node.id, %status, "ADS connection refused");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };

    let mut pushes = shared.pushes.clone();
    let epoch = pushes.borrow_and_update().epoch;
    let session = Session::open(Arc::clone(&shared), node, &info, proxy, P::DELTA, tx, epoch);
    let mut stream = P::new(session);
    if on_request(&mut stream, &first).await.is_err() {
        return;
    }
    // Not kept for the stream's life: a first request can be large.
    drop(first);

    loop {
        tokio::select! {
            biased;
            () = gone.closed() => break,
            () = &mut stopped => break,
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if on_request(&mut stream, &request).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) => {
                    tracing::debug!(
                        conn = %stream.session().conn.id,
                        %status,
                        "ADS stream failed",
                    );
                    break;
                }
            },
            changed = pushes.changed() => {
                if changed.is_err() {
                    break;
                }
                // Only the newest value is seen: a push that arrived while this one waited is
                // superseded, which is the per-proxy coalescing.
                let push = Arc::clone(&pushes.borrow_and_update());
                let session = stream.session();
                if push.epoch <= session.last_epoch {
                    continue;
                }
                let since = std::mem::replace(&mut session.last_epoch, push.epoch);
                let started = Instant::now();
                if stream.on_push(&push, since).await.is_err() {
                    break;
                }
                let session = stream.session();
                if session.sent_in_push {
                    session.sent_in_push = false;
                    session.shared.metrics.push_time(started.elapsed().as_secs_f64());
                }
            }
        }
    }
}

/// What every request goes through, SotW or Delta: the type's state reads it (ACK, NACK,
/// subscription changes), it is counted and logged, and answered if the state says so.
async fn on_request<P: Protocol>(stream: &mut P, request: &P::Request) -> Result<(), ClientGone> {
    let session = stream.session();
    let Some(type_url) = served(P::type_url(request)) else {
        // Keeping state for any type a client names would let one stream grow without bound.
        tracing::debug!(
            conn = %session.conn.id,
            type_url = P::type_url(request),
            "ADS request for a type not served ignored",
        );
        return Ok(());
    };
    let (outcome, suspects) = {
        let mut types = session.conn.types.lock();
        let state = types
            .entry(type_url)
            .or_insert_with(|| P::State::new(type_url));
        let outcome = state.on_request(request);
        let suspects = matches!(outcome.reply, Reply::Nack(_)).then(|| state.nack_suspects());
        (outcome, suspects)
    };
    session.record(type_url, &outcome.reply);
    if let (Reply::Nack(nack), Some(suspects)) = (&outcome.reply, suspects) {
        session
            .shared
            .generator
            .nacked(&session.proxy, type_url, nack, suspects);
    }
    if !outcome.respond {
        return Ok(());
    }
    stream.answer_request(type_url, outcome).await
}

/// An admitted proxy: what its stream task needs, and cleanup when the task ends however it ends.
pub(crate) struct Session<G: Generator, S> {
    pub(crate) shared: Arc<Shared<G>>,
    pub(crate) proxy: G::Proxy,
    pub(crate) conn: Arc<Connection<S>>,
    tx: mpsc::Sender<Result<Encoded, Status>>,
    /// The newest push epoch this stream has acted on.
    pub(crate) last_epoch: u64,
    /// Something was sent since the last push began (for `pilot_xds_push_time`).
    sent_in_push: bool,
    _registration: Registration,
}

impl<G: Generator, S: TypeState> Session<G, S> {
    fn open(
        shared: Arc<Shared<G>>,
        node: Node,
        info: &ConnectionInfo,
        proxy: G::Proxy,
        delta: bool,
        tx: mpsc::Sender<Result<Encoded, Status>>,
        epoch: u64,
    ) -> Self {
        let (conn, registration) = shared.connections.register(node, info.remote_addr, delta);
        shared.metrics.connected();
        tracing::info!(
            conn = %conn.id,
            remote = ?info.remote_addr,
            secure = info.secure,
            delta,
            "ADS proxy connected",
        );
        Self {
            shared,
            proxy,
            conn,
            tx,
            last_epoch: epoch,
            sent_in_push: false,
            _registration: registration,
        }
    }

    /// What the generator says this proxy should hold of `type_url`, for the names the stream
    /// is subscribed to. Generated outside the connection's lock (which `statuses()` readers
    /// take too): only the (shared) names are read under it. `None` when the type has no state.
    pub(crate) fn generate(&self, type_url: &str) -> Option<Vec<Arc<ResourceSet>>> {
        let names = {
            let types = self.conn.types.lock();
            types.get(type_url)?.names().cloned()
        };
        Some(
            self.shared
                .generator
                .generate(&self.proxy, type_url, names.as_deref()),
        )
    }

    /// Queues a response. `triggered_at` is set for responses caused by a push.
    pub(crate) async fn send(
        &mut self,
        type_url: &str,
        response: Encoded,
        triggered_at: Option<Instant>,
    ) -> Result<(), ClientGone> {
        self.tx.send(Ok(response)).await.map_err(|_| ClientGone)?;
        let metrics = &self.shared.metrics;
        metrics.pushed(type_url);
        if let Some(triggered_at) = triggered_at {
            metrics.converged(triggered_at.elapsed().as_secs_f64());
            self.sent_in_push = true;
        }
        tracing::debug!(conn = %self.conn.id, ty = type_url::short(type_url), "ADS sent");
        Ok(())
    }

    /// Counts and logs what a request said about the previous response.
    pub(crate) fn record(&self, type_url: &str, reply: &Reply) {
        let short = type_url::short(type_url);
        match reply {
            Reply::None => {
                tracing::debug!(conn = %self.conn.id, ty = short, "ADS request");
            }
            Reply::Ack => tracing::debug!(conn = %self.conn.id, ty = short, "ADS ACK"),
            Reply::Stale => {
                self.shared.metrics.expired_nonce(type_url);
                tracing::debug!(conn = %self.conn.id, ty = short, "ADS expired nonce");
            }
            Reply::Nack(nack) => {
                self.shared.metrics.rejected(type_url);
                tracing::warn!(
                    node = %self.conn.node.id,
                    conn = %self.conn.id,
                    ty = short,
                    version = %nack.version,
                    nonce = %nack.nonce,
                    message = %nack.message,
                    "ADS NACK: proxy rejected config",
                );
            }
        }
    }

    /// The types this stream has state for, in istiod's push order (only served types have state).
    pub(crate) fn push_order(&self) -> Vec<&'static str> {
        let types = self.conn.types.lock();
        PUSH_ORDER
            .iter()
            .copied()
            .filter(|t| types.contains_key(t))
            .collect()
    }
}

impl<G: Generator, S> Drop for Session<G, S> {
    fn drop(&mut self) {
        self.shared.metrics.disconnected();
        self.shared.generator.disconnect(&self.proxy);
        tracing::info!(conn = %self.conn.id, "ADS proxy disconnected");
    }
}

/// Whether `push` changed `type_url` after epoch `since`.
pub(crate) fn changed_since(push: &Push, type_url: &str, since: u64) -> bool {
    push.changed_at
        .get(type_url)
        .is_some_and(|epoch| *epoch > since)
}
