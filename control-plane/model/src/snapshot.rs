//! The immutable view of the mesh every proxy's config is computed from.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::authz::AuthorizationPolicies;
use crate::authz::jwt::RequestAuthentications;
use crate::mesh_config::MeshConfig;
use crate::object::{Object, ObjectKey};
use crate::peer_auth::PeerAuthentications;
use crate::registry::{PodInfo, Registry};
use crate::sidecar_scope::Sidecars;
use crate::traffic::Traffic;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Info => "Info",
            Severity::Warning => "Warning",
            Severity::Error => "Error",
        })
    }
}

/// A validation result about one object, with Istio's analyzer code where one exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    pub code: &'static str,
    pub object: ObjectKey,
    pub field: String,
    pub message: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        code: &'static str,
        object: &ObjectKey,
        field: &str,
        message: String,
    ) -> Self {
        Finding {
            severity,
            code,
            object: object.clone(),
            field: field.to_string(),
            message,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}: {}",
            self.severity, self.code, self.object, self.field, self.message
        )
    }
}

/// Everything translation reads, frozen. Built once per (debounced) change; shared by `Arc`.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Strictly increasing across builds of one process.
    pub version: u64,
    pub mesh: Arc<MeshConfig>,
    #[serde(skip)]
    pub objects: Arc<BTreeMap<ObjectKey, Object>>,
    pub registry: Registry,
    pub traffic: Traffic,
    pub peer_authentications: PeerAuthentications,
    pub sidecars: Sidecars,
    pub authorization_policies: AuthorizationPolicies,
    pub request_authentications: RequestAuthentications,
    pub findings: Vec<Finding>,
}

impl Snapshot {
    /// Validates `objects` and derives the registry. Objects with errors are reported in `findings`
    /// and left out of what is derived; everything else is kept.
    pub fn build(
        version: u64,
        objects: Arc<BTreeMap<ObjectKey, Object>>,
        mesh: Arc<MeshConfig>,
    ) -> Snapshot {
        let mut findings = Vec::new();
        let registry = Registry::build(&objects, &mut findings);
        let traffic = Traffic::build(&objects, &registry, &mut findings);
        let peer_authentications =
            PeerAuthentications::build(&objects, &mesh.root_namespace, &mut findings);
        let authorization_policies =
            AuthorizationPolicies::build(&objects, &mesh.root_namespace, &mut findings);
        let request_authentications =
            RequestAuthentications::build(&objects, &mesh.root_namespace, &mut findings);
        let sidecars = Sidecars::build(&objects, &mesh.root_namespace, &mut findings);
        Snapshot {
            version,
            mesh,
            objects,
            registry,
            traffic,
            peer_authentications,
            authorization_policies,
            request_authentications,
            sidecars,
            findings,
        }
    }

    /// The Pod a proxy runs in, by its IP (as istiod maps proxies to workloads).
    pub fn pod_by_ip(&self, ip: &str) -> Option<&Arc<PodInfo>> {
        self.registry.pods_by_ip.get(ip)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<PodInfo>> {
        self.registry
            .pods
            .get(&(namespace.to_string(), name.to_string()))
    }
}
