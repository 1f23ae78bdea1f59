//! The immutable view of the mesh every proxy's config is computed from.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::authz::AuthorizationPolicies;
use crate::authz::jwt::RequestAuthentications;
use crate::finding::Finding;
use crate::finding::{SCHEMA_ERROR, Severity};
use crate::gateway_api::GatewayApi;
use crate::mesh_config::MeshConfig;
use crate::object::{Kind, Object, ObjectKey};
use crate::peer_auth::PeerAuthentications;
use crate::registry::{PodInfo, Registry};
use crate::sidecar_scope::Sidecars;
use crate::source::JwksState;
use crate::telemetry::Telemetries;
use crate::traffic::Traffic;

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
    /// Gateway API status and automated deployments (routes themselves are in `traffic`).
    pub gateway_api: GatewayApi,
    pub peer_authentications: PeerAuthentications,
    pub sidecars: Sidecars,
    pub authorization_policies: AuthorizationPolicies,
    pub request_authentications: RequestAuthentications,
    pub telemetries: Telemetries,
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
        let mut traffic = Traffic::build(&objects, &registry, &mut findings);
        let gateway_api = GatewayApi::build(&objects, &registry, &mut traffic, &mut findings);
        let peer_authentications =
            PeerAuthentications::build(&objects, &mesh.root_namespace, &mut findings);
        let authorization_policies =
            AuthorizationPolicies::build(&objects, &mesh.root_namespace, &mut findings);
        let request_authentications =
            RequestAuthentications::build(&objects, &mesh.root_namespace, &mut findings);
        let sidecars = Sidecars::build(&objects, &mesh.root_namespace, &mut findings);
        let telemetries = Telemetries::build(&objects, &mesh, &registry, &mut findings);
        Snapshot {
            version,
            mesh,
            objects,
            registry,
            traffic,
            gateway_api,
            peer_authentications,
            authorization_policies,
            request_authentications,
            sidecars,
            telemetries,
            findings,
        }
    }

    /// The snapshot `meshd serve`, `meshd analyze` and the admission webhook all judge by:
    /// `objects` with the mesh config they hold (ConfigMap `istio` in `base`'s root namespace
    /// overrides `base`, as istiod reads it; an invalid one is a finding and `base` stays), and
    /// the JWKS documents fetched so far for `jwksUri`s.
    pub fn assemble(
        version: u64,
        objects: Arc<BTreeMap<ObjectKey, Object>>,
        base: &MeshConfig,
        jwks: &BTreeMap<String, JwksState>,
    ) -> Snapshot {
        let (mesh, mesh_finding) = mesh_from_objects(&objects, base);
        let mut snapshot = Snapshot::build(version, objects, Arc::new(mesh));
        snapshot.findings.extend(mesh_finding);
        let jwks_findings = snapshot.request_authentications.apply_fetched_jwks(jwks);
        snapshot.findings.extend(jwks_findings);
        snapshot
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

/// Istio keeps the mesh config under key `mesh` of this ConfigMap in the root namespace
/// (`istio-<revision>` for a revision other than the default: [`mesh_configmap`]).
pub const MESH_CONFIGMAP: &str = "istio";

/// The name of the ConfigMap holding the mesh config of `revision`.
pub fn mesh_configmap(revision: &crate::Revision) -> String {
    revision.suffixed(MESH_CONFIGMAP)
}
const MESH_KEY: &str = "mesh";

/// The mesh config `objects` hold, else `base`; an unusable one is reported and ignored.
fn mesh_from_objects(
    objects: &BTreeMap<ObjectKey, Object>,
    base: &MeshConfig,
) -> (MeshConfig, Option<Finding>) {
    let key = ObjectKey::new(
        Kind::ConfigMap,
        base.root_namespace.clone(),
        mesh_configmap(&base.revision),
    );
    let Some(Object::ConfigMap(cm)) = objects.get(&key) else {
        return (base.clone(), None);
    };
    let Some(text) = cm.data.get(MESH_KEY) else {
        return (base.clone(), None);
    };
    match MeshConfig::from_yaml(text) {
        Ok(mesh) => (
            MeshConfig {
                revision: base.revision.clone(),
                ..mesh
            },
            None,
        ),
        Err(e) => {
            let finding = Finding::new(
                Severity::Error,
                SCHEMA_ERROR,
                &key,
                "data.mesh",
                format!("{e}; the mesh config of the flags is used instead"),
            );
            (base.clone(), Some(finding))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh_config::OutboundPolicy;

    fn objects(values: Vec<serde_json::Value>) -> Arc<BTreeMap<ObjectKey, Object>> {
        Arc::new(
            values
                .into_iter()
                .filter_map(|v| Object::parse(v).ok().flatten())
                .map(|o| (o.key(), o))
                .collect(),
        )
    }

    fn mesh_configmap(namespace: &str, mesh: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": namespace},
            "data": {"mesh": mesh},
        })
    }

    #[test]
    fn the_istio_configmap_in_the_root_namespace_overrides_the_base_mesh_config() {
        let base = MeshConfig::default();
        let objs = objects(vec![mesh_configmap(
            "istio-system",
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
        )]);
        let snapshot = Snapshot::assemble(1, objs, &base, &BTreeMap::new());
        assert_eq!(
            snapshot.mesh.outbound_traffic_policy.mode,
            OutboundPolicy::RegistryOnly
        );
        assert!(snapshot.findings.is_empty(), "{:?}", snapshot.findings);
        // Elsewhere it is just a ConfigMap.
        let objs = objects(vec![mesh_configmap(
            "default",
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n",
        )]);
        let snapshot = Snapshot::assemble(1, objs, &base, &BTreeMap::new());
        assert_eq!(
            snapshot.mesh.outbound_traffic_policy.mode,
            OutboundPolicy::AllowAny
        );
    }

    #[test]
    fn an_unusable_mesh_config_is_a_finding_and_the_base_stays() {
        let base = MeshConfig {
            trust_domain: "base.example".to_string(),
            ..MeshConfig::default()
        };
        let objs = objects(vec![mesh_configmap(
            "istio-system",
            "connectTimeout: soon\n",
        )]);
        let snapshot = Snapshot::assemble(1, objs, &base, &BTreeMap::new());
        assert_eq!(snapshot.mesh.trust_domain, "base.example");
        assert_eq!(snapshot.findings.len(), 1, "{:?}", snapshot.findings);
        let f = &snapshot.findings[0];
        assert_eq!(
            (f.severity, f.code, f.field.as_str()),
            (Severity::Error, SCHEMA_ERROR, "data.mesh")
        );
        assert_eq!(f.object.to_string(), "ConfigMap istio-system/istio");
    }

    #[test]
    fn a_revision_reads_its_own_configmap_only() {
        let canary = MeshConfig {
            revision: crate::Revision::new(Some("canary")),
            ..MeshConfig::default()
        };
        let mut theirs = mesh_configmap("istio-system", "trustDomain: default.example\n");
        let mut ours = mesh_configmap("istio-system", "trustDomain: canary.example\n");
        ours["metadata"]["name"] = "istio-canary".into();
        let snapshot = Snapshot::assemble(
            1,
            objects(vec![theirs.clone(), ours]),
            &canary,
            &BTreeMap::new(),
        );
        assert_eq!(snapshot.mesh.trust_domain, "canary.example");
        assert_eq!(snapshot.mesh.revision.name(), "canary");
        // Without its own ConfigMap a revision keeps its base, whatever the default one says.
        theirs["data"]["mesh"] = "trustDomain: other.example\n".into();
        let snapshot = Snapshot::assemble(1, objects(vec![theirs]), &canary, &BTreeMap::new());
        assert_eq!(snapshot.mesh.trust_domain, "cluster.local");
    }
}
