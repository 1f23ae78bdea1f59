//! A watched object as meshd keeps it: parsed into the model at the watched version, shrunk to
//! what the mesh reads, or an [`InvalidObject`] naming it.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use meshd_model::{InvalidObject, Kind, Object, ObjectKey};
use serde_json::Value;

use crate::discover::WatchSpec;

/// One watched object, parsed.
pub(crate) struct Converted {
    pub(crate) key: ObjectKey,
    pub(crate) result: Result<Object, InvalidObject>,
    /// Secrets a Gateway references: an Istio Gateway's `credentialName` and its `-cacert`, a
    /// Gateway API Gateway's listeners' `certificateRefs` to Secrets of its own namespace.
    pub(crate) credentials: BTreeSet<String>,
    /// Istio config labelled for another control-plane revision: as good as absent here.
    pub(crate) foreign: bool,
}

pub(crate) fn convert(spec: &WatchSpec, obj: DynamicObject) -> Converted {
    let namespace = if spec.kind.namespaced() {
        obj.metadata.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = ObjectKey::new(spec.kind, namespace, name);
    let foreign = spec.revision.as_ref().is_some_and(|revision| {
        !revision.owns_config(obj.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
    });
    let error = |message: String| InvalidObject::kube(key.clone(), message);
    let result = match serde_json::to_value(&obj) {
        Ok(mut value) => {
            value["apiVersion"] = Value::String(spec.resource.api_version.clone());
            value["kind"] = Value::String(spec.resource.kind.clone());
            let value = shrink(spec.kind, value);
            match Object::parse(value) {
                Ok(Some(object)) => Ok(object),
                Ok(None) => Err(error(format!("kind {} is not read", spec.kind))),
                Err(e) => Err(error(e.to_string())),
            }
        }
        Err(e) => Err(error(format!("cannot encode: {e}"))),
    };
    let credentials = match &result {
        Ok(Object::Gateway(gw)) => gw
            .spec
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref()?.credential_name.clone())
            .filter(|n| is_object_name(n))
            .flat_map(|n| [format!("{n}-cacert"), n])
            .collect(),
        Ok(Object::KubeGateway(gw)) => gw
            .spec
            .listeners
            .iter()
            .filter_map(|l| l.tls.as_ref())
            .flat_map(|tls| &tls.certificate_refs)
            .filter(|r| {
                r.is_secret() && r.namespace.as_deref().is_none_or(|ns| ns == key.namespace)
            })
            .map(|r| r.name.clone())
            .filter(|n| is_object_name(n))
            .collect(),
        _ => BTreeSet::new(),
    };
    Converted {
        key,
        result,
        credentials,
        foreign,
    }
}

/// A DNS-1123 subdomain: safe inside a field selector.
pub(crate) fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Drops what meshd never reads before it is parsed and kept: server-side bookkeeping on every
/// kind, for Pods everything but identity, labels, node, ports and address, for Nodes all but
/// their labels.
pub(crate) fn shrink(kind: Kind, mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if kind == Kind::Node {
        // Only where it is: a Node's status (images, conditions) is large and changes often.
        let mut metadata = serde_json::Map::new();
        for field in ["name", "labels"] {
            if let Some(v) = value.pointer(&format!("/metadata/{field}")) {
                metadata.insert(field.to_string(), v.clone());
            }
        }
        return serde_json::json!({
            "apiVersion": value.get("apiVersion").cloned().unwrap_or(Value::Null),
            "kind": value.get("kind").cloned().unwrap_or(Value::Null),
            "metadata": metadata,
        });
    }
    if kind != Kind::Pod {
        return value;
    }
    let pick = |pointer: &str| value.pointer(pointer).cloned().unwrap_or(Value::Null);
    let containers: Vec<Value> = value
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.get("name").cloned().unwrap_or(Value::Null),
                        "ports": c.get("ports").cloned().unwrap_or(Value::Array(Vec::new())),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut metadata = serde_json::Map::new();
    for field in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = value.pointer(&format!("/metadata/{field}")) {
            metadata.insert(field.to_string(), v.clone());
        }
    }
    let mut spec = serde_json::Map::new();
    for field in ["serviceAccountName", "nodeName"] {
        if let Some(v) = value.pointer(&format!("/spec/{field}")) {
            spec.insert(field.to_string(), v.clone());
        }
    }
    spec.insert("containers".to_string(), Value::Array(containers));
    let mut status = serde_json::Map::new();
    if let Some(ip) = value.pointer("/status/podIP") {
        status.insert("podIP".to_string(), ip.clone());
    }
    serde_json::json!({
        "apiVersion": pick("/apiVersion"),
        "kind": pick("/kind"),
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::core_resource;
    use crate::test_support::{mk_dynamic, mk_spec, vs_resource};
    use serde_json::json;

    #[test]
    fn pods_are_shrunk_to_what_the_mesh_reads() {
        let pod = mk_dynamic(json!({
            "metadata": {
                "name": "web-0", "namespace": "apps", "uid": "1234", "resourceVersion": "77",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}", "a": "b"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {
                "serviceAccountName": "web",
                "containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"name": "http", "containerPort": 8080}]}],
                "volumes": [{"name": "v"}],
            },
            "status": {"podIP": "10.0.0.5", "phase": "Running", "conditions": []},
        }));
        let spec = mk_spec(Kind::Pod, core_resource(Kind::Pod));
        let value = shrink(Kind::Pod, serde_json::to_value(&pod).unwrap());
        assert_eq!(value["metadata"]["annotations"], json!({"a": "b"}));
        assert!(value["metadata"].get("uid").is_none());
        assert!(value["spec"].get("volumes").is_none());
        assert_eq!(
            value["spec"]["containers"],
            json!([{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}])
        );
        let c = convert(&spec, pod);
        assert_eq!(c.key, ObjectKey::new(Kind::Pod, "apps", "web-0"));
        let Ok(Object::Pod(pod)) = c.result else {
            panic!("not a pod: {:?}", c.result.err())
        };
        assert_eq!(pod.status.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(pod.spec.service_account_name.as_deref(), Some("web"));
    }

    #[test]
    fn list_items_without_type_fields_parse_at_the_watched_version() {
        // List responses carry apiVersion/kind on the list, not on each item.
        let vs = mk_dynamic(json!({
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
        }));
        let c = convert(&mk_spec(Kind::VirtualService, vs_resource()), vs);
        assert!(matches!(c.result, Ok(Object::VirtualService(_))));
    }

    #[test]
    fn a_malformed_custom_resource_is_an_error_naming_it_not_a_failure() {
        let vs = mk_dynamic(json!({
            "metadata": {"name": "broken", "namespace": "bookinfo"},
            "spec": {"hosts": "reviews", "http": 7},
        }));
        let c = convert(&mk_spec(Kind::VirtualService, vs_resource()), vs);
        let err = c.result.unwrap_err();
        assert_eq!(
            err.origin,
            meshd_model::ObjectOrigin::Kube(ObjectKey::new(
                Kind::VirtualService,
                "bookinfo",
                "broken"
            ))
        );
        assert!(err.message.contains("broken"), "{}", err.message);
    }

    #[test]
    fn config_labelled_for_another_revision_is_foreign_under_a_revision_only() {
        let vs = |labels: serde_json::Value| {
            mk_dynamic(json!({
                "metadata": {"name": "reviews", "namespace": "bookinfo", "labels": labels},
                "spec": {"hosts": ["reviews"]},
            }))
        };
        let canary = meshd_model::Revision::new(Some("canary"));
        let mut spec = mk_spec(Kind::VirtualService, vs_resource());
        // Without a revision (meshd analyze) everything is read.
        assert!(!convert(&spec, vs(json!({"istio.io/rev": "blue"}))).foreign);
        spec.revision = Some(canary);
        assert!(convert(&spec, vs(json!({"istio.io/rev": "blue"}))).foreign);
        assert!(!convert(&spec, vs(json!({"istio.io/rev": "canary"}))).foreign);
        assert!(!convert(&spec, vs(json!({"app": "reviews"}))).foreign);
    }
}
