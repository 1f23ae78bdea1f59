//! The registry of connected proxies, shared by every server instance, read by debug endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::state::TypeState;
use crate::{Node, ProxyStatus};

/// Every proxy connected to any [`crate::AdsServer`] built from the same `new` call.
///
/// Cheap to clone. Reading takes one short lock on the registry and one on each connection, so
/// debug endpoints never hold up a stream for longer than copying its state.
#[derive(Clone, Default)]
pub struct Connections {
    inner: Arc<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: AtomicU64,
    live: Mutex<BTreeMap<u64, Arc<dyn Snapshot>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("connected", &self.connected())
            .finish()
    }
}

impl Connections {
    /// A snapshot of every connected proxy, in connection order.
    pub fn statuses(&self) -> Vec<ProxyStatus> {
        let live: Vec<Arc<dyn Snapshot>> = self.inner.live.lock().values().cloned().collect();
        live.iter().map(|c| c.snapshot()).collect()
    }

    /// The status of one connection, by [`ProxyStatus::connection_id`].
    pub fn status(&self, connection_id: &str) -> Option<ProxyStatus> {
        self.statuses()
            .into_iter()
            .find(|s| s.connection_id == connection_id)
    }

    pub fn connected(&self) -> usize {
        self.inner.live.lock().len()
    }

    /// Registers a connection until the returned guard is dropped.
    pub(crate) fn register<S: TypeState>(
        &self,
        node: Node,
        remote_addr: Option<SocketAddr>,
        delta: bool,
    ) -> (Arc<Connection<S>>, Registration) {
        let key = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let connection = Arc::new(Connection {
            id: format!("{}-{key}", node.id),
            node,
            remote_addr,
            delta,
            connected_at: SystemTime::now(),
            types: Mutex::new(BTreeMap::new()),
        });
        self.inner
            .live
            .lock()
            .insert(key, Arc::clone(&connection) as Arc<dyn Snapshot>);
        let registration = Registration {
            connections: self.clone(),
            key,
        };
        (connection, registration)
    }
}

/// Removes its connection from the registry when dropped.
pub(crate) struct Registration {
    connections: Connections,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.connections.inner.live.lock().remove(&self.key);
    }
}

/// One connected proxy and its per-type protocol state.
pub(crate) struct Connection<S> {
    pub(crate) id: String,
    pub(crate) node: Node,
    remote_addr: Option<SocketAddr>,
    delta: bool,
    connected_at: SystemTime,
    /// Locked by the stream task while it handles one request or one type of a push (never across an
    /// `.await`), and by `statuses()` to copy the state out.
    pub(crate) types: Mutex<BTreeMap<&'static str, S>>,
}

trait Snapshot: Send + Sync {
    fn snapshot(&self) -> ProxyStatus;
}

impl<S: TypeState> Snapshot for Connection<S> {
    fn snapshot(&self) -> ProxyStatus {
        let types = self
            .types
            .lock()
            .iter()
            .map(|(type_url, state)| ((*type_url).to_owned(), state.snapshot()))
            .collect();
        ProxyStatus {
            connection_id: self.id.clone(),
            node: self.node.clone(),
            remote_addr: self.remote_addr,
            delta: self.delta,
            connected_at: self.connected_at,
            types,
        }
    }
}
