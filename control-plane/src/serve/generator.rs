//! The bridge between snapshots and the ADS server: builds each proxy's resources from the current
//! snapshot, once per scope for what proxies share, and hands them out as shared, encoded values.

use std::sync::Arc;

use meshd_ca::Identity;
use meshd_model::{Proxy, Snapshot};
use meshd_proto::pb::google::protobuf::{Struct, value};
use meshd_proto::type_url;
use meshd_translate::Scope;
use meshd_translate::changes::SnapshotDiff;
use meshd_translate::tls::{CREDENTIAL_PREFIX, SECRET_DEFAULT, SECRET_ROOTCA};
use prometheus_client::metrics::counter::Counter;

use super::built::{Built, Shared};
use super::guard::Guard;
use super::secrets::Secrets;
use crate::connected::{ConnectedAddresses, Registration};
use crate::encode::resource;
use crate::identity;
use meshd_xds::{ConnectionInfo, DebugScope, Names, Node, Resource, ResourceSet};
use parking_lot::RwLock;

pub struct MeshGenerator {
    built: RwLock<Arc<Built>>,
    secrets: Arc<Secrets>,
    identity_rejections: Counter,
    proof: identity::IdentityProof,
    guard: Guard,
    connected: Arc<ConnectedAddresses>,
    /// `ControlPlane.identifier` of debug answers: istiod's JSON naming this replica.
    instance: String,
}

impl MeshGenerator {
    /// `proof`: how proxies on the TLS port prove who they are.
    pub fn new(
        snapshot: Arc<Snapshot>,
        secrets: Arc<Secrets>,
        identity_rejections: Counter,
        proof: identity::IdentityProof,
        guard: Guard,
    ) -> Self {
        MeshGenerator {
            built: RwLock::new(Arc::new(Built::new(snapshot, &guard))),
            secrets,
            identity_rejections,
            proof,
            guard,
            connected: Arc::default(),
            instance: control_plane_identifier("meshd"),
        }
    }

    /// Names this replica (its pod) in answers to istioctl.
    pub fn with_instance(mut self, instance: &str) -> Self {
        self.instance = control_plane_identifier(instance);
        self
    }

    /// Makes `snapshot` the one proxies are served from, keeping what it does not change of what
    /// was built for the one before, and returns the resource types proxies must regenerate.
    pub fn set_snapshot(&self, snapshot: Arc<Snapshot>) -> Vec<&'static str> {
        self.guard.next_generation();
        let old = self.built.read().clone();
        let diff = SnapshotDiff::between(&old.snapshot, &snapshot);
        let built = Arc::new(old.next(snapshot, &diff, &self.guard));
        *self.built.write() = Arc::clone(&built);
        // Read after the new snapshot is in place: a proxy that connects from now on builds from
        // it, so only those already connected can hold what it changes.
        let types = diff.pushed_types(built.endpoints_changed(), |address| {
            self.connected.contains(address)
        });
        built.mark_pushed(&types);
        tracing::debug!(
            version = built.snapshot.version,
            ?diff,
            ?types,
            "snapshot changes"
        );
        types
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.built.read().snapshot.clone()
    }

    /// What was built for the current snapshot: for tests of what is kept across snapshots.
    #[cfg(test)]
    pub(crate) fn built(&self) -> Arc<Built> {
        self.built.read().clone()
    }

    /// A proxy that may be sent config: counted at its address while its stream lasts.
    pub fn admit(&self, proxy: Proxy, identity: Option<Identity>) -> ConnectedProxy {
        let connected = self.connected.register(&proxy.ip);
        ConnectedProxy {
            proxy,
            identity,
            _connected: connected,
        }
    }

    fn shared(&self, built: &Built, type_url: &'static str, scope: &Scope) -> Shared {
        built.outbound(&self.guard, type_url, scope)
    }

    fn endpoints(&self, built: &Built) -> Shared {
        built.endpoints()
    }
}

impl MeshGenerator {
    /// A proxy's own certificate and the trust bundle, and only to a proxy that proved who it is.
    fn secrets_for(&self, proxy: &ConnectedProxy, names: Option<&Names>) -> Vec<Arc<Resource>> {
        let Some(identity) = &proxy.identity else {
            return Vec::new();
        };
        let wants = |name: &str| names.is_none_or(|n| n.contains(name));
        let mut out = Vec::new();
        if wants(SECRET_DEFAULT)
            && let Some(issued) = self.secrets.workload(identity)
        {
            out.push(issued.resource.clone());
        }
        if wants(SECRET_ROOTCA) {
            out.push(self.secrets.root());
        }
        // Gateway credentials: only routers, only Secrets of their own namespace.
        if proxy.proxy.node_type == meshd_model::NodeType::Router
            && let Some(names) = names
        {
            let snapshot = self.snapshot();
            for name in names.iter().filter(|n| n.starts_with(CREDENTIAL_PREFIX)) {
                match meshd_translate::secret::gateway_credential(
                    &snapshot,
                    &proxy.proxy.namespace,
                    name,
                ) {
                    Some(secret) => out.push(resource(name.to_owned(), &secret)),
                    None => {
                        tracing::warn!(proxy = %proxy.proxy.id, secret = %name, "gateway credential not found in the gateway's namespace")
                    }
                }
            }
        }
        out
    }
}

/// A connected proxy: what its node says, parsed once, and the identity it proved (TLS port only).
pub struct ConnectedProxy {
    pub proxy: Proxy,
    pub identity: Option<Identity>,
    _connected: Registration,
}

/// What istiod puts in `ControlPlane.identifier`: component, instance and build, as JSON.
fn control_plane_identifier(instance: &str) -> String {
    let version = env!("CARGO_PKG_VERSION");
    serde_json::json!({
        "Component": "istiod",
        "ID": instance,
        "Info": {"version": version, "revision": "", "golang_version": "", "status": "Clean", "tag": version},
    })
    .to_string()
}

fn struct_string(s: &Struct, key: &str) -> Option<String> {
    match s.fields.get(key)?.kind.as_ref()? {
        value::Kind::StringValue(v) => Some(v.clone()),
        _ => None,
    }
}

impl meshd_xds::Generator for MeshGenerator {
    type Proxy = ConnectedProxy;

    fn connect(&self, node: &Node, conn: &ConnectionInfo) -> Result<ConnectedProxy, tonic::Status> {
        let mut proxy = Proxy::from_node_id(&node.id)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if let Some(meta) = &node.metadata {
            if let Some(value::Kind::StructValue(labels)) =
                meta.fields.get("LABELS").and_then(|v| v.kind.as_ref())
            {
                proxy.labels = labels
                    .fields
                    .iter()
                    .filter_map(|(k, v)| match &v.kind {
                        Some(value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect();
            }
            proxy.service_account = struct_string(meta, "SERVICE_ACCOUNT");
        }
        // Only the TLS port hands out certificates, so only there must a proxy prove who it is.
        let identity = if conn.secure {
            let snapshot = self.snapshot();
            let proven = self.proof.prove(&snapshot, &proxy, conn);
            match proven {
                Ok(id) => Some(id),
                // The API server could not be asked: not a verdict, the proxy should retry.
                Err(identity::IdentityError::Token(meshd_kube::ReviewError::Unavailable(e))) => {
                    tracing::warn!(proxy = %proxy.id, error = %e, "refusing proxy for now: token review unavailable");
                    return Err(tonic::Status::unavailable(format!(
                        "identity not proven yet: {e}"
                    )));
                }
                Err(e) => {
                    self.identity_rejections.inc();
                    tracing::warn!(proxy = %proxy.id, error = %e, "refusing proxy: identity not proven");
                    return Err(tonic::Status::permission_denied(format!(
                        "identity not proven: {e}"
                    )));
                }
            }
        } else {
            None
        };
        proxy.mtls = identity.is_some();
        tracing::info!(proxy = %proxy.id, identity = identity.as_ref().map(|i| i.uri()), "proxy connected");
        Ok(self.admit(proxy, identity))
    }

    fn generate(
        &self,
        proxy: &ConnectedProxy,
        type_url: &str,
        names: Option<&Names>,
    ) -> Vec<Arc<ResourceSet>> {
        if type_url == type_url::SECRET {
            return vec![Arc::new(ResourceSet::new(self.secrets_for(proxy, names)))];
        }
        let built = self.built.read().clone();
        let snap = &built.snapshot;
        // What the proxy's outbound config depends on, resolved against this snapshot.
        let scope = Scope::for_proxy(snap, &proxy.proxy);
        let (type_url, inbound): (&'static str, Vec<Arc<Resource>>) = match type_url {
            type_url::CLUSTER => (
                type_url::CLUSTER,
                meshd_translate::inbound_clusters(snap, &proxy.proxy)
                    .iter()
                    .map(|c| resource(c.name.clone(), c))
                    .collect(),
            ),
            type_url::LISTENER => (
                type_url::LISTENER,
                meshd_translate::inbound_listeners(snap, &proxy.proxy)
                    .iter()
                    .map(|l| resource(l.name.clone(), l))
                    .collect(),
            ),
            type_url::ROUTE => return vec![self.shared(&built, type_url::ROUTE, &scope)],
            type_url::ENDPOINT => return vec![self.endpoints(&built)],
            _ => return Vec::new(),
        };
        let outbound = self.shared(&built, type_url, &scope);
        let inbound = self.guard.screen(snap, type_url, inbound);
        // Outbound and inbound together must hold no clashing names or addresses either.
        self.guard.screen_parts(snap, type_url, outbound, inbound)
    }

    fn nacked(
        &self,
        proxy: &ConnectedProxy,
        _type_url: &str,
        nack: &meshd_xds::Nack,
        suspects: Vec<Arc<Resource>>,
    ) {
        let snapshot = self.snapshot();
        self.guard
            .nacked(&snapshot, &proxy.proxy.id, &nack.message, &suspects);
    }

    fn disconnect(&self, proxy: &ConnectedProxy) {
        tracing::info!(proxy = %proxy.proxy.id, "proxy disconnected");
    }

    fn debug_scope(
        &self,
        _node: &Node,
        conn: &ConnectionInfo,
    ) -> Result<DebugScope, tonic::Status> {
        let root = self.snapshot().mesh.root_namespace.clone();
        self.proof.debug_scope(&root, conn)
    }

    fn control_plane(&self) -> Option<String> {
        Some(self.instance.clone())
    }
}

#[cfg(test)]
mod tests;
