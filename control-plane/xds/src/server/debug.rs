//! A stream whose first request asks for an `istio.io/debug/` type: a debug client (istioctl),
//! not a proxy. It is not admitted as one — nothing is generated for it and it is not listed —
//! and each of its requests is answered once from the connection registry; a request carrying
//! the nonce of the last answer of its type is that answer's ACK.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::Shared;
use super::decode::RequestStream;
use crate::debug::{self, DEBUG_PREFIX};
use crate::request::Decode;
use crate::wire::Encoded;
use crate::{ConnectionInfo, Generator, Node};

/// What a debug request asks.
pub(crate) struct DebugRequest {
    pub(crate) type_url: String,
    pub(crate) names: Vec<String>,
    pub(crate) nonce: String,
}

impl DebugRequest {
    /// `Some` for a request of a debug type; `names` are read only then.
    pub(crate) fn of(
        type_url: &str,
        names: impl FnOnce() -> Vec<String>,
        nonce: &str,
    ) -> Option<Self> {
        type_url.starts_with(DEBUG_PREFIX).then(|| Self {
            type_url: type_url.to_owned(),
            names: names(),
            nonce: nonce.to_owned(),
        })
    }
}

/// Serves the debug stream until the client leaves or the server shuts down; `debug_request`
/// reads a request of the stream's protocol as a debug request.
pub(crate) async fn serve<G: Generator, R: Decode>(
    shared: Arc<Shared<G>>,
    node: Node,
    info: ConnectionInfo,
    first: DebugRequest,
    mut requests: RequestStream<R>,
    tx: mpsc::Sender<Result<Encoded, Status>>,
    debug_request: fn(&R) -> Option<DebugRequest>,
) {
    let scope = match shared.generator.debug_scope(&node, &info) {
        Ok(scope) => scope,
        Err(status) => {
            tracing::info!(node = %node.id, remote = ?info.remote_addr, %status, "ADS debug request refused");
            let _ = tx.send(Err(status)).await;
            return;
        }
    };
    tracing::info!(node = %node.id, remote = ?info.remote_addr, ?scope, "ADS debug client connected");
    let control_plane = shared.generator.control_plane();
    let mut shutdown = shared.shutdown.subscribe();
    let mut answered: BTreeMap<String, String> = BTreeMap::new();
    let mut next = 0u64;
    let mut request = Some(first);
    loop {
        if let Some(asked) = request.take()
            && answered.get(&asked.type_url) != Some(&asked.nonce)
        {
            next += 1;
            let nonce = format!("debug-{next}");
            let resources = debug::resources(
                shared.connections.statuses(),
                &scope,
                &asked.type_url,
                &asked.names,
            );
            let response = debug::response(
                &asked.type_url,
                resources,
                nonce.clone(),
                control_plane.as_deref(),
            );
            if tx.send(Ok(Encoded::message(&response))).await.is_err() {
                return;
            }
            answered.insert(asked.type_url, nonce);
        }
        tokio::select! {
            () = tx.closed() => return,
            _ = shutdown.wait_for(|stop| *stop) => return,
            message = requests.message() => match message {
                Ok(Some(message)) => request = debug_request(&message),
                Ok(None) | Err(_) => return,
            },
        }
    }
}
