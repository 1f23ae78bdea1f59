//! Which mutual-TLS mode a workload port accepts, resolved from PeerAuthentications the way Istio
//! does: a workload-selector policy in the workload's namespace, else the namespace-wide policy,
//! else the mesh-wide one in the root namespace; `portLevelMtls` (selector policies only) refines
//! per port; UNSET inherits from the next level up; the default is PERMISSIVE.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::finding::{Finding, Severity};
use crate::input::labels_match;
use crate::input::security::PeerAuthentication;
use crate::object::{Kind, Object, ObjectKey};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum MtlsMode {
    /// Plaintext and mutual TLS both accepted.
    Permissive,
    /// Mutual TLS only.
    Strict,
    /// Plaintext only.
    Disable,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerAuthModel {
    pub key: ObjectKey,
    pub selector: Option<BTreeMap<String, String>>,
    /// None: UNSET (inherit).
    pub mode: Option<MtlsMode>,
    pub ports: BTreeMap<u32, Option<MtlsMode>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PeerAuthentications {
    policies: Vec<Arc<PeerAuthModel>>,
    root_namespace: String,
}

/// The schema's enum: names as written, upper case.
fn parse_mode(text: &str) -> Result<Option<MtlsMode>, String> {
    match text {
        "" | "UNSET" => Ok(None),
        "PERMISSIVE" => Ok(Some(MtlsMode::Permissive)),
        "STRICT" => Ok(Some(MtlsMode::Strict)),
        "DISABLE" => Ok(Some(MtlsMode::Disable)),
        other => Err(format!(
            "unknown mode {other:?} (UNSET, DISABLE, PERMISSIVE, STRICT)"
        )),
    }
}

impl PeerAuthentications {
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        root_namespace: &str,
        findings: &mut Vec<Finding>,
    ) -> Self {
        let mut policies = Vec::new();
        for obj in objects.values() {
            let Object::PeerAuthentication(pa) = obj else {
                continue;
            };
            if let Some(model) = validate(pa, findings) {
                policies.push(Arc::new(model));
            }
        }
        PeerAuthentications {
            policies,
            root_namespace: root_namespace.to_string(),
        }
    }

    /// The accepted policy of that key, if it is one.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<PeerAuthModel>> {
        self.policies.iter().find(|p| &p.key == key)
    }

    /// The mode for `port` of a workload with `labels` in `namespace`.
    pub fn mode(&self, namespace: &str, labels: &BTreeMap<String, String>, port: u32) -> MtlsMode {
        let workload = self.policies.iter().find(|p| {
            p.key.namespace == namespace
                && p.selector.as_ref().is_some_and(|s| labels_match(s, labels))
        });
        let namespace_wide = self
            .policies
            .iter()
            .find(|p| p.key.namespace == namespace && p.selector.is_none());
        let mesh = self
            .policies
            .iter()
            .find(|p| p.key.namespace == self.root_namespace && p.selector.is_none());
        if let Some(Some(mode)) = workload.and_then(|w| w.ports.get(&port)) {
            return *mode;
        }
        [workload, namespace_wide, mesh]
            .into_iter()
            .flatten()
            .find_map(|p| p.mode)
            .unwrap_or(MtlsMode::Permissive)
    }
}

fn validate(pa: &PeerAuthentication, findings: &mut Vec<Finding>) -> Option<PeerAuthModel> {
    let key = ObjectKey::new(
        Kind::PeerAuthentication,
        pa.metadata.namespace.clone().unwrap_or_default(),
        pa.metadata.name.clone(),
    );
    let mut errors = Vec::new();
    let mode = match parse_mode(pa.spec.mtls.as_ref().map(|m| m.mode.as_str()).unwrap_or("")) {
        Ok(m) => m,
        Err(e) => {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                "spec.mtls.mode",
                e,
            ));
            None
        }
    };
    let selector = pa
        .spec
        .selector
        .as_ref()
        .map(|s| s.labels.clone())
        .filter(|l| !l.is_empty());
    if let Some(sel) = &pa.spec.selector {
        if let Err(e) = crate::syntax::selector(&sel.labels) {
            errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                "spec.selector.matchLabels",
                e,
            ));
        }
        if sel.labels.is_empty() {
            findings.push(Finding::new(
                Severity::Warning,
                "IST0106",
                &key,
                "spec.selector",
                "workload selector specified without labels".to_string(),
            ));
        }
    }
    let mut ports = BTreeMap::new();
    let port_level = pa.spec.port_level_mtls.as_ref();
    if port_level.is_some_and(BTreeMap::is_empty) {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            &key,
            "spec.portLevelMtls",
            "port level mTLS, if defined, must have at least one element".to_string(),
        ));
    }
    let port_level = port_level.into_iter().flatten();
    if port_level.clone().next().is_some() && selector.is_none() {
        errors.push(Finding::new(
            Severity::Error,
            "IST0106",
            &key,
            "spec.portLevelMtls",
            "mesh/namespace peer authentication cannot have port level mTLS (it needs a \
             workload selector)"
                .to_string(),
        ));
    }
    for (port, m) in port_level {
        let field = format!("spec.portLevelMtls.{port}");
        match (port.parse::<u32>(), parse_mode(&m.mode)) {
            (Ok(p), Ok(mode)) if (1..=65535).contains(&p) => {
                ports.insert(p, mode);
            }
            (_, Err(e)) => errors.push(Finding::new(Severity::Error, "IST0106", &key, &field, e)),
            _ => errors.push(Finding::new(
                Severity::Error,
                "IST0106",
                &key,
                &field,
                format!("port {port:?}: port must be in range 1..65535"),
            )),
        }
    }
    if !errors.is_empty() {
        findings.extend(errors);
        return None;
    }
    Some(PeerAuthModel {
        key,
        selector,
        mode,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(docs: Vec<serde_json::Value>) -> (PeerAuthentications, Vec<Finding>) {
        let objects = crate::object::objects_of(docs);
        let mut findings = Vec::new();
        (
            PeerAuthentications::build(&objects, "istio-system", &mut findings),
            findings,
        )
    }

    fn pa(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {"name": name, "namespace": ns}, "spec": spec})
    }

    #[test]
    fn the_most_specific_policy_wins_and_unset_inherits() {
        let (pas, findings) = build(vec![
            pa(
                "istio-system",
                "default",
                json!({"mtls": {"mode": "STRICT"}}),
            ),
            pa("legacy", "default", json!({"mtls": {"mode": "PERMISSIVE"}})),
            pa(
                "legacy",
                "db",
                json!({"selector": {"matchLabels": {"app": "db"}}, "mtls": {"mode": "UNSET"}, "portLevelMtls": {"9000": {"mode": "DISABLE"}}}),
            ),
        ]);
        assert!(findings.is_empty(), "{findings:?}");
        let db = BTreeMap::from([("app".to_string(), "db".to_string())]);
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert_eq!(pas.mode("prod", &web, 80), MtlsMode::Strict);
        assert_eq!(pas.mode("legacy", &web, 80), MtlsMode::Permissive);
        assert_eq!(pas.mode("legacy", &db, 5432), MtlsMode::Permissive);
        assert_eq!(pas.mode("legacy", &db, 9000), MtlsMode::Disable);
    }

    #[test]
    fn without_policies_everything_is_permissive() {
        let (pas, _) = build(vec![]);
        assert_eq!(
            pas.mode("default", &BTreeMap::new(), 8080),
            MtlsMode::Permissive
        );
    }

    #[test]
    fn port_level_without_selector_is_an_error() {
        let (_, findings) = build(vec![pa(
            "default",
            "bad",
            json!({"portLevelMtls": {"80": {"mode": "STRICT"}}}),
        )]);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].field, "spec.portLevelMtls");
    }
}
