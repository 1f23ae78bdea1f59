//! Envoy's Aggregated Discovery Service, State-of-the-World and Delta, for any resource generator.
//!
//! The server knows nothing of Istio or Kubernetes. It asks a [`Generator`] for the resources a proxy
//! should have, diffs them against what that proxy already holds (by resource version), and sends the
//! difference in istiod's order (CDS, EDS, LDS, RDS, SDS). Pushes are announced on a `watch` channel, so
//! a newer [`Push`] always supersedes one a connection has not processed yet.
//!
//! What makes it light with thousands of proxies: resources are encoded once and shared
//! ([`Resource`], [`ResourceSet`]); a response is written around their bytes, not re-encoded
//! (`wire`), and goes out without a per-stream buffer (`server/body.rs`); a proxy's state is a few
//! pointers to shared sets and interned subscriptions ([`Names`]), not maps of names.

mod connections;
pub mod debug;
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
mod names;
mod protobuf;
mod request;
mod resource;
mod server;
mod state;
mod version;
mod wire;

pub use connections::Connections;
pub use debug::DebugScope;
pub use names::Names;
pub use resource::{Interner, Resource, ResourceSet};
pub use server::{AdsServer, AdsService};
pub use version::{content_version, format_version, parse_version};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

pub use meshd_proto::pb::envoy::config::core::v3::Node;
pub use meshd_proto::pb::google::protobuf::Any;

/// What a stream's first request and its transport say about the peer.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The stream arrived on the TLS port.
    pub secure: bool,
    /// gRPC metadata of the stream (e.g. `authorization`).
    pub metadata: tonic::metadata::MetadataMap,
}

/// Builds resources for proxies. Implemented by the control plane; pure with respect to the server.
pub trait Generator: Send + Sync + 'static {
    /// Whatever the generator needs to remember about an admitted proxy.
    type Proxy: Send + Sync + 'static;

    /// Admits a stream; `Err` refuses it with that status.
    fn connect(&self, node: &Node, conn: &ConnectionInfo) -> Result<Self::Proxy, tonic::Status>;

    /// The resources of `type_url` this proxy should hold now, as shared sets: built once for every
    /// proxy they apply to (a scope's outbound set, the mesh's endpoints) and handed out again, so
    /// what the server derives from a set (its version, what a subscription selects of it) is
    /// derived once. A name in an earlier set hides the same name in a later one. For named types
    /// the server passes the subscribed names and sends only those; generators may return more.
    fn generate(
        &self,
        proxy: &Self::Proxy,
        type_url: &str,
        names: Option<&Names>,
    ) -> Vec<Arc<ResourceSet>>;

    /// The proxy rejected a response of `type_url` (`nack` says how); `suspects` are the resources
    /// that response brought which the proxy had not accepted before — what the rejection can be
    /// about. The server does not send a rejected set again until something in it changes; a
    /// generator that finds the cause can change it.
    fn nacked(
        &self,
        _proxy: &Self::Proxy,
        _type_url: &str,
        _nack: &Nack,
        _suspects: Vec<Arc<Resource>>,
    ) {
    }

    /// The stream ended.
    fn disconnect(&self, _proxy: &Self::Proxy) {}

    /// Whether a stream asking for `istio.io/debug/` types ([`debug`]: istioctl's
    /// `proxy-status` and `proxy-config`) may read them, and whose proxies. Such a stream is not
    /// admitted as a proxy. Refused unless the generator says otherwise.
    fn debug_scope(
        &self,
        _node: &Node,
        _conn: &ConnectionInfo,
    ) -> Result<DebugScope, tonic::Status> {
        Err(tonic::Status::unauthenticated("authentication required"))
    }

    /// `ControlPlane.identifier` of `istio.io/debug/syncz` responses: which control plane
    /// instance answered (istioctl prints its `ID` and `Info.version`).
    fn control_plane(&self) -> Option<String> {
        None
    }
}

/// An announcement that resources may have changed.
#[derive(Clone, Debug)]
pub struct Push {
    /// Strictly increasing; 0 means "sources not synced yet": streams are refused with `Unavailable`.
    pub epoch: u64,
    /// For each type URL, the epoch at which its resources last changed. A connection that has
    /// processed epoch `e` regenerates only the types whose entry is greater than `e`.
    pub changed_at: BTreeMap<String, u64>,
    /// When the change that caused this push was first seen (for convergence-time metrics).
    pub triggered_at: Instant,
}

/// Per-type sync state, as `proxy-status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncState {
    Synced,
    Stale,
    Nacked,
    NotSent,
}

/// The last NACK a proxy sent for a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    pub version: String,
    pub nonce: String,
    pub message: String,
}

impl Push {
    /// The value a push channel starts with: sources not synced, streams refused.
    pub fn unsynced() -> Self {
        Self {
            epoch: 0,
            changed_at: BTreeMap::new(),
            triggered_at: Instant::now(),
        }
    }
}

/// What a proxy holds, and what it said about it, for one type.
#[derive(Clone, Debug, Default)]
pub struct TypeStatus {
    pub sent_version: String,
    pub sent_nonce: String,
    pub acked_version: String,
    pub acked_nonce: String,
    pub nack: Option<Nack>,
    /// `None`: wildcard subscription.
    pub subscribed: Option<BTreeSet<String>>,
    /// What the proxy holds now (last sent, by name). Resources a Delta client declared in
    /// `initial_resource_versions` and was not sent again have an empty `body()`.
    pub resources: BTreeMap<String, Arc<Resource>>,
    pub last_sent: Option<SystemTime>,
}

impl TypeStatus {
    pub fn state(&self) -> SyncState {
        if self.sent_nonce.is_empty() {
            SyncState::NotSent
        } else if self
            .nack
            .as_ref()
            .is_some_and(|n| n.nonce == self.sent_nonce)
        {
            SyncState::Nacked
        } else if self.acked_nonce == self.sent_nonce {
            SyncState::Synced
        } else {
            SyncState::Stale
        }
    }
}

/// One connected proxy.
#[derive(Clone, Debug)]
pub struct ProxyStatus {
    pub connection_id: String,
    pub node: Node,
    pub remote_addr: Option<SocketAddr>,
    pub delta: bool,
    pub connected_at: SystemTime,
    pub types: BTreeMap<String, TypeStatus>,
}
