//! istiod's automated deployment: what a Gateway of a class meshd controls needs to run.

use std::collections::{BTreeMap, BTreeSet};

use crate::input::gateway_api::KubeGateway;
use crate::object::{Object, ObjectKey};

use super::{
    DEFAULT_CLASS, DeploymentPort, GATEWAY_NAME_LABEL, GatewayDeployment, SERVICE_TYPE_ANNOTATION,
    controls_class,
};

/// istiod's own copy of the gateway-name label on the pods it deploys.
const ISTIO_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";

/// The Deployment `gw` needs, when its class is one meshd controls.
pub(super) fn of(
    gw: &KubeGateway,
    objects: &BTreeMap<ObjectKey, Object>,
) -> Option<GatewayDeployment> {
    let class = gw.spec.gateway_class_name.as_str();
    if !controls_class(class, objects) {
        return None;
    }
    let meta = &gw.metadata.meta;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let mut labels = gw
        .spec
        .infrastructure
        .as_ref()
        .map(|i| i.labels.clone())
        .unwrap_or_default();
    labels.insert(GATEWAY_NAME_LABEL.to_string(), meta.name.clone());
    labels.insert(ISTIO_GATEWAY_NAME_LABEL.to_string(), meta.name.clone());
    let annotations = gw
        .spec
        .infrastructure
        .as_ref()
        .map(|i| i.annotations.clone())
        .unwrap_or_default();
    let service_type = meta
        .annotations
        .get(SERVICE_TYPE_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| "LoadBalancer".to_string());
    let mut seen = BTreeSet::new();
    let ports = gw
        .spec
        .listeners
        .iter()
        .filter(|l| seen.insert(l.port))
        .map(|l| DeploymentPort {
            name: format!("{}-{}", l.protocol.to_ascii_lowercase(), l.port),
            port: l.port,
        })
        .collect();
    let addresses = gw
        .spec
        .addresses
        .iter()
        .filter(|a| a.kind.as_deref().is_none_or(|k| k == "IPAddress"))
        .map(|a| a.value.clone())
        .collect();
    Some(GatewayDeployment {
        gateway: ObjectKey::new(crate::Kind::KubeGateway, namespace, meta.name.clone()),
        uid: gw.metadata.uid.clone(),
        name: format!(
            "{}-{}",
            meta.name,
            if class.is_empty() {
                DEFAULT_CLASS
            } else {
                class
            }
        ),
        labels,
        annotations,
        service_type,
        ports,
        addresses,
    })
}
