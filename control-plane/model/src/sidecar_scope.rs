//! Sidecar resources: which services a workload's proxy sees, and its outbound policy. A proxy
//! gets the Sidecar in its namespace whose `workloadSelector` matches it, else the one without a
//! selector, else the mesh default in the root namespace; none means it sees everything.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::finding::Finding;
use crate::input::labels_match;
use crate::mesh_config::OutboundPolicy;
use crate::object::{Object, ObjectKey};
use crate::registry::ServiceModel;
use crate::traffic::host_matches;

mod validate;
use validate::validate;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EgressRule {
    /// Only this port of the selected services; all ports when unset.
    pub port: Option<u32>,
    /// (namespace pattern, host pattern) pairs; `.` is already resolved to the Sidecar's namespace.
    pub hosts: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SidecarModel {
    pub key: ObjectKey,
    pub selector: Option<BTreeMap<String, String>>,
    pub egress: Vec<EgressRule>,
    pub outbound_policy: Option<OutboundPolicy>,
}

impl SidecarModel {
    /// The service's port is in this Sidecar's egress scope.
    pub fn sees(&self, svc: &ServiceModel, port: u32) -> bool {
        if self.egress.is_empty() {
            return true;
        }
        self.egress.iter().any(|rule| {
            rule.port.is_none_or(|p| p == port)
                && rule.hosts.iter().any(|(ns, host)| {
                    (ns == "*" || *ns == svc.namespace) && host_matches(host, &svc.hostname)
                })
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Sidecars {
    sidecars: Vec<Arc<SidecarModel>>,
    root_namespace: String,
}

impl Sidecars {
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        root_namespace: &str,
        findings: &mut Vec<Finding>,
    ) -> Self {
        let sidecars = objects
            .values()
            .filter_map(|o| match o {
                Object::Sidecar(s) => validate(s, findings).map(Arc::new),
                _ => None,
            })
            .collect();
        Sidecars {
            sidecars,
            root_namespace: root_namespace.to_string(),
        }
    }

    /// The Sidecar that applies to a workload with `labels` in `namespace`.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<&Arc<SidecarModel>> {
        let find = |ns: &str, selected: &dyn Fn(&SidecarModel) -> bool| {
            self.sidecars
                .iter()
                .find(|s| s.key.namespace == ns && selected(s))
        };
        find(namespace, &|s| {
            s.selector
                .as_ref()
                .is_some_and(|sel| labels_match(sel, labels))
        })
        .or_else(|| find(namespace, &|s| s.selector.is_none()))
        .or_else(|| find(&self.root_namespace, &|s| s.selector.is_none()))
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<SidecarModel>> {
        self.sidecars.iter().find(|s| &s.key == key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Kind;
    use serde_json::json;

    fn build(docs: Vec<serde_json::Value>) -> (Sidecars, Vec<Finding>) {
        let objects = crate::object::objects_of(docs);
        let mut findings = Vec::new();
        (
            Sidecars::build(&objects, "istio-system", &mut findings),
            findings,
        )
    }

    fn sidecar(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    fn svc(host: &str, ns: &str) -> ServiceModel {
        ServiceModel {
            hostname: host.into(),
            namespace: ns.into(),
            name: host.into(),
            source: ObjectKey::new(Kind::Service, ns, host),
            addresses: vec![],
            ports: vec![],
            resolution: crate::Resolution::ClientSideLb,
            mesh_external: false,
            selector: None,
        }
    }

    #[test]
    fn the_workload_sidecar_wins_over_namespace_and_mesh_defaults() {
        let (sidecars, findings) = build(vec![
            sidecar(
                "istio-system",
                "default",
                json!({"egress": [{"hosts": ["istio-system/*"]}]}),
            ),
            sidecar(
                "shop",
                "default",
                json!({"egress": [{"hosts": ["./*", "istio-system/*"]}]}),
            ),
            sidecar(
                "shop",
                "cart",
                json!({"workloadSelector": {"labels": {"app": "cart"}}, "egress": [{"hosts": ["./payments.shop.svc.cluster.local"]}]}),
            ),
        ]);
        assert!(findings.is_empty(), "{findings:?}");
        let cart = BTreeMap::from([("app".to_string(), "cart".to_string())]);
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert_eq!(
            sidecars.for_workload("shop", &cart).unwrap().key.name,
            "cart"
        );
        assert_eq!(
            sidecars.for_workload("shop", &web).unwrap().key.name,
            "default"
        );
        assert_eq!(
            sidecars.for_workload("blog", &web).unwrap().key.namespace,
            "istio-system"
        );
        let shop = sidecars.for_workload("shop", &web).unwrap();
        assert!(shop.sees(&svc("reviews.shop.svc.cluster.local", "shop"), 80));
        assert!(!shop.sees(&svc("reviews.blog.svc.cluster.local", "blog"), 80));
        let only = sidecars.for_workload("shop", &cart).unwrap();
        assert!(only.sees(&svc("payments.shop.svc.cluster.local", "shop"), 80));
        assert!(!only.sees(&svc("reviews.shop.svc.cluster.local", "shop"), 80));
    }

    #[test]
    fn hosts_without_a_namespace_are_reported() {
        let (_, findings) = build(vec![sidecar(
            "shop",
            "bad",
            json!({"egress": [{"hosts": ["reviews"]}]}),
        )]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].field, "spec.egress[0].hosts[0]");
    }
}
