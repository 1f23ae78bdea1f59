//! Injection of gateway pods: what Istio's `gateway` injection template does for the pods of its
//! `istio/gateway` Helm chart, with stock Envoy.
//!
//! Such a pod asks for the template (`inject.istio.io/templates: gateway`) and brings its own
//! `istio-proxy` container with `image: auto` (ports, probes, resources and security context are
//! the chart's), for the injector to fill in. A gateway captures no traffic — it listens on the
//! Gateway servers' ports itself — so there is no `istio-init`; `istio-bootstrap` writes a router
//! bootstrap (`MESHD_NODE_TYPE=router`), and `istio-proxy` becomes stock Envoy on it.

use serde_json::{Value, json};

use super::lifecycle::{self, Lifecycle};
use super::{
    BOOTSTRAP_CONTAINER, InjectConfig, JsonPatch, PROXY_CONTAINER, add, bootstrap_container,
    containers, pointer, proxy_container, string_map,
};
use json_patch::{PatchOperation, ReplaceOperation};

/// Pod annotation naming the injection templates, as in Istio (comma separated).
pub const TEMPLATES_ANNOTATION: &str = "inject.istio.io/templates";
const GATEWAY_TEMPLATE: &str = "gateway";
/// The image the `istio/gateway` chart leaves for the injector to choose.
const AUTO_IMAGE: &str = "auto";

/// Where the pod's own `istio-proxy` container is, when the pod is a gateway to inject.
pub(super) fn gateway_proxy(pod: &Value) -> Option<usize> {
    let annotations = string_map(&pod["metadata"]["annotations"]);
    let templates = annotations.get(TEMPLATES_ANNOTATION)?;
    if !templates.split(',').any(|t| t.trim() == GATEWAY_TEMPLATE) {
        return None;
    }
    containers(pod, "containers")
        .iter()
        .position(|c| c["name"] == PROXY_CONTAINER && c["image"] == AUTO_IMAGE)
}

/// The patch turning a gateway-chart pod into a router proxy; `index` is its `istio-proxy`.
pub(super) fn inject(
    pod: &Value,
    index: usize,
    config: &InjectConfig,
    resources: Value,
    life: &Lifecycle,
) -> (JsonPatch, Value) {
    let labels = string_map(&pod["metadata"]["labels"]);
    let mut bootstrap = bootstrap_container(config, &labels, &Default::default());
    if let Some(env) = bootstrap["env"].as_array_mut() {
        env.push(json!({ "name": "MESHD_NODE_TYPE", "value": "router" }));
    }
    let mut ops = Vec::new();
    if containers(pod, "initContainers").is_empty() {
        ops.push(add(pointer(["spec", "initContainers"]), json!([bootstrap])));
    } else {
        ops.push(add(pointer(["spec", "initContainers", "0"]), bootstrap));
    }
    let theirs = &containers(pod, "containers")[index];
    let mut ours = proxy_container(config, resources);
    lifecycle::apply(&mut ours, life);
    ops.push(PatchOperation::Replace(ReplaceOperation {
        path: pointer(["spec", "containers", &index.to_string()]),
        value: merged_proxy(theirs, ours),
    }));
    let status = json!({
        "initContainers": [BOOTSTRAP_CONTAINER],
        "containers": [PROXY_CONTAINER],
        "templates": [GATEWAY_TEMPLATE],
    });
    (ops, status)
}

/// Ours, with what the chart's container says about ports, environment, probes, resources and
/// security winning (the chart knows the gateway's ports and the privileges it was given), and
/// both sets of volume mounts.
fn merged_proxy(theirs: &Value, mut ours: Value) -> Value {
    for field in [
        "ports",
        "env",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "resources",
        "securityContext",
        "imagePullPolicy",
    ] {
        if let Some(value) = theirs.get(field).filter(|v| !v.is_null()) {
            ours[field] = value.clone();
        }
    }
    if let (Some(mounts), Some(extra)) = (
        ours["volumeMounts"].as_array_mut(),
        theirs["volumeMounts"].as_array(),
    ) {
        mounts.extend(extra.iter().cloned());
    }
    ours
}
