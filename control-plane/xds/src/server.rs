//! The gRPC edge: admission, one task per stream, and the handle the control plane keeps.

mod body;
mod debug;
mod decode;
mod delta;
mod grpc;
mod session;
mod sotw;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use grpc::AdsService;

use crate::metrics::Metrics;
use crate::{Connections, Generator, ProxyStatus, Push};

/// Envoy's resources can be large (a gateway's RDS, a mesh's CDS); gRPC's 4 MiB default is not.
const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Responses a stream may have queued before its task waits for the client to read. Bounded so a
/// stalled client holds back only its own task.
const STREAM_QUEUE: usize = 8;

/// Envoy's Aggregated Discovery Service over a [`Generator`].
///
/// Clones share everything (generator, push channel, connection registry, metrics) except the
/// [`secure`](Self::secure) flag, so a plaintext and a TLS listener can serve the same proxies and
/// [`statuses`](Self::statuses) shows both.
pub struct AdsServer<G: Generator> {
    shared: Arc<Shared<G>>,
    secure: bool,
}

/// What every stream task of every clone of an [`AdsServer`] shares.
pub(crate) struct Shared<G: Generator> {
    pub(crate) generator: Arc<G>,
    pub(crate) pushes: watch::Receiver<Arc<Push>>,
    pub(crate) connections: Connections,
    pub(crate) metrics: Metrics,
    pub(crate) shutdown: watch::Sender<bool>,
}

impl<G: Generator> Clone for AdsServer<G> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            secure: self.secure,
        }
    }
}

impl<G: Generator> std::fmt::Debug for AdsServer<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("secure", &self.secure)
            .field("connections", &self.shared.connections)
            .finish_non_exhaustive()
    }
}

impl<G: Generator> AdsServer<G> {
    /// A server whose streams are refused until `pushes` carries an epoch above 0. Dropping the
    /// push sender ends every stream. Registers the xDS metrics on `metrics`; build further
    /// listeners with `clone().secure(..)`, not `new`.
    pub fn new(
        generator: Arc<G>,
        pushes: watch::Receiver<Arc<Push>>,
        metrics: &mut Registry,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                generator,
                pushes,
                connections: Connections::default(),
                metrics: Metrics::new(metrics),
                shutdown,
            }),
            secure: false,
        }
    }

    /// Marks streams served by this handle as arriving over TLS ([`ConnectionInfo::secure`]).
    pub fn secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// The service to add to a tonic `Server`, with a request size limit fit for Envoy.
    pub fn service(&self) -> AdsService<G> {
        AdsService::new(self.clone())
    }

    /// A snapshot of every connected proxy, for `/debug/syncz` and `config_dump`.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        self.shared.connections.statuses()
    }

    /// How many proxies are connected.
    pub fn connected(&self) -> usize {
        self.shared.connections.connected()
    }

    /// The connection registry, for readers that should not depend on the generator type.
    pub fn connections(&self) -> Connections {
        self.shared.connections.clone()
    }

    /// Ends every stream (clients see the stream close and reconnect elsewhere) and refuses new
    /// ones, so a graceful server shutdown does not wait on streams that never end by themselves.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}
