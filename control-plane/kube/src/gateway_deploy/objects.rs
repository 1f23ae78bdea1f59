//! The ServiceAccount, Deployment and Service of one automated gateway deployment, as meshd
//! applies them: a pure function of the model's [`GatewayDeployment`], so what would be applied
//! can be compared with what was applied last.
//!
//! The pods are shaped like the Helm chart's gateways (`templates/gateways.yaml`): they ask
//! meshd's injector for the `gateway` template and carry an `istio-proxy` container with
//! `image: auto`, which injection turns into a stock-Envoy router proxy.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Sysctl,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshd_model::gateway_api::{GATEWAY_NAME_LABEL, GatewayDeployment};
use meshd_model::object::GATEWAY_API_GROUP;
use meshd_model::revision::REVISION_LABEL;
use meshd_model::{Kind, Revision};
use serde_json::Value;

/// istiod's label on what it deploys for Gateways; meshd finds (and deletes) its own by it.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub const MANAGED_VALUE: &str = "istio.io-gateway-controller";

/// Envoy's readiness port (`/healthz/ready`), also the Service's `status-port`.
const STATUS_PORT: i32 = 15021;
/// Envoy's Prometheus port.
const PROMETHEUS_PORT: i32 = 15090;
/// The user Envoy runs as in injected pods.
const PROXY_UID: i64 = 1337;

/// Which of the three objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManagedKind {
    ServiceAccount,
    Deployment,
    Service,
}

impl ManagedKind {
    pub const ALL: [ManagedKind; 3] = [
        ManagedKind::ServiceAccount,
        ManagedKind::Deployment,
        ManagedKind::Service,
    ];
}

/// One object meshd manages: kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagedKey {
    pub kind: ManagedKind,
    pub namespace: String,
    pub name: String,
}

/// The three objects `d` needs, each as the JSON meshd applies.
pub fn objects_of(d: &GatewayDeployment, revision: &Revision) -> Vec<(ManagedKey, Value)> {
    let key = |kind| ManagedKey {
        kind,
        namespace: d.gateway.namespace.clone(),
        name: d.name.clone(),
    };
    // Serialising k8s-openapi's types cannot fail: they hold strings, numbers and maps only.
    let json = |value: Result<Value, serde_json::Error>| value.unwrap_or(Value::Null);
    vec![
        (
            key(ManagedKind::ServiceAccount),
            json(serde_json::to_value(service_account(d, revision))),
        ),
        (
            key(ManagedKind::Deployment),
            json(serde_json::to_value(deployment(d, revision))),
        ),
        (
            key(ManagedKind::Service),
            json(serde_json::to_value(service(d, revision))),
        ),
    ]
}

/// Name, namespace, the Gateway's labels, istiod's managed label and the revision's (so each
/// revision removes only its own), and the owner reference that lets the garbage collector
/// remove the object with its Gateway.
fn metadata(d: &GatewayDeployment, revision: &Revision) -> ObjectMeta {
    let mut labels = d.labels.clone();
    labels.insert(MANAGED_LABEL.to_owned(), MANAGED_VALUE.to_owned());
    if !revision.is_default() {
        labels.insert(REVISION_LABEL.to_owned(), revision.name().to_owned());
    }
    ObjectMeta {
        name: Some(d.name.clone()),
        namespace: Some(d.gateway.namespace.clone()),
        labels: Some(labels),
        owner_references: d.uid.as_ref().map(|uid| {
            vec![OwnerReference {
                api_version: format!("{GATEWAY_API_GROUP}/v1"),
                kind: Kind::KubeGateway.name().to_owned(),
                name: d.gateway.name.clone(),
                uid: uid.clone(),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        }),
        ..ObjectMeta::default()
    }
}

fn service_account(d: &GatewayDeployment, revision: &Revision) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(d, revision),
        ..ServiceAccount::default()
    }
}

/// What selects the Gateway's pods: its name label, which the model always sets.
fn selector(d: &GatewayDeployment) -> BTreeMap<String, String> {
    BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), d.gateway.name.clone())])
}

fn port_number(port: u32) -> i32 {
    i32::try_from(port).unwrap_or(i32::MAX)
}

fn deployment(d: &GatewayDeployment, revision: &Revision) -> Deployment {
    let mut labels = d.labels.clone();
    labels.insert("sidecar.istio.io/inject".to_owned(), "true".to_owned());
    // Another revision's injector would leave the pods alone; this one takes them.
    if !revision.is_default() {
        labels.insert(REVISION_LABEL.to_owned(), revision.name().to_owned());
    }
    let mut annotations = d.annotations.clone();
    for (key, value) in [
        ("inject.istio.io/templates", "gateway"),
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/port", "15090"),
        ("prometheus.io/path", "/stats/prometheus"),
    ] {
        annotations.insert(key.to_owned(), value.to_owned());
    }
    let tcp = |name: &str, port: i32| ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let mut ports = vec![tcp("http-envoy-prom", PROMETHEUS_PORT)];
    ports.extend(d.ports.iter().map(|p| tcp(&p.name, port_number(p.port))));
    let proxy = Container {
        name: "istio-proxy".to_owned(),
        // Filled in by meshd's injector (the `gateway` template).
        image: Some("auto".to_owned()),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/healthz/ready".to_owned()),
                port: IntOrString::Int(STATUS_PORT),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(2),
            failure_threshold: Some(30),
            ..Probe::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    Deployment {
        metadata: metadata(d, revision),
        spec: Some(DeploymentSpec {
            selector: LabelSelector {
                match_labels: Some(selector(d)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(d.name.clone()),
                    // Envoy runs as 1337 and binds the listeners' ports, 80 and 443 among them.
                    security_context: Some(PodSecurityContext {
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
                            value: "0".to_owned(),
                        }]),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![proxy],
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn service(d: &GatewayDeployment, revision: &Revision) -> Service {
    let port = |name: &str, port: i32| ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    };
    let mut ports = vec![port("status-port", STATUS_PORT)];
    ports.extend(d.ports.iter().map(|p| port(&p.name, port_number(p.port))));
    Service {
        metadata: metadata(d, revision),
        spec: Some(ServiceSpec {
            type_: Some(d.service_type.clone()),
            selector: Some(selector(d)),
            ports: Some(ports),
            // Only a load balancer has an address to ask for.
            load_balancer_ip: d
                .addresses
                .first()
                .filter(|_| d.service_type == "LoadBalancer")
                .cloned(),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshd_model::ObjectKey;
    use meshd_model::gateway_api::DeploymentPort;
    use serde_json::json;

    fn mk_deployment(uid: Option<&str>) -> GatewayDeployment {
        GatewayDeployment {
            gateway: ObjectKey::new(Kind::KubeGateway, "shop", "web"),
            uid: uid.map(str::to_owned),
            name: "web-istio".to_owned(),
            labels: BTreeMap::from([
                (GATEWAY_NAME_LABEL.to_owned(), "web".to_owned()),
                ("istio.io/gateway-name".to_owned(), "web".to_owned()),
            ]),
            annotations: BTreeMap::from([("team".to_owned(), "shop".to_owned())]),
            service_type: "ClusterIP".to_owned(),
            ports: vec![DeploymentPort {
                name: "http-80".to_owned(),
                port: 80,
            }],
            addresses: vec!["10.0.0.9".to_owned()],
        }
    }

    fn find(objects: &[(ManagedKey, Value)], kind: ManagedKind) -> &Value {
        &objects
            .iter()
            .find(|(k, _)| k.kind == kind)
            .expect("the object is built")
            .1
    }

    #[test]
    fn the_three_objects_are_named_labelled_and_owned_as_istiod_makes_them() {
        let objects = objects_of(&mk_deployment(Some("u-1")), &Revision::default());
        assert_eq!(objects.len(), 3);
        for (key, object) in &objects {
            assert_eq!(
                (key.namespace.as_str(), key.name.as_str()),
                ("shop", "web-istio")
            );
            assert_eq!(object["metadata"]["name"], "web-istio");
            assert_eq!(object["metadata"]["labels"][MANAGED_LABEL], MANAGED_VALUE);
            assert_eq!(
                object["metadata"]["ownerReferences"],
                json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "web", "uid": "u-1", "controller": true}])
            );
        }
        assert_eq!(
            find(&objects, ManagedKind::ServiceAccount)["kind"],
            "ServiceAccount"
        );
        // Without a uid (a Gateway from a file) there is nothing to own the objects.
        let unowned = objects_of(&mk_deployment(None), &Revision::default());
        assert!(unowned[0].1["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn the_deployment_asks_for_the_gateway_injection_template() {
        let objects = objects_of(&mk_deployment(Some("u-1")), &Revision::default());
        let deployment = find(&objects, ManagedKind::Deployment);
        assert_eq!(deployment["apiVersion"], "apps/v1");
        assert_eq!(
            deployment["spec"]["selector"]["matchLabels"],
            json!({GATEWAY_NAME_LABEL: "web"})
        );
        let template = &deployment["spec"]["template"];
        assert_eq!(
            template["metadata"]["labels"]["sidecar.istio.io/inject"],
            "true"
        );
        assert_eq!(
            template["metadata"]["labels"]["istio.io/gateway-name"],
            "web"
        );
        assert!(template["metadata"]["labels"].get("istio.io/rev").is_none());
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(annotations["inject.istio.io/templates"], "gateway");
        assert_eq!(annotations["team"], "shop");
        assert_eq!(annotations["prometheus.io/port"], "15090");
        let pod = &template["spec"];
        assert_eq!(pod["serviceAccountName"], "web-istio");
        assert_eq!(
            pod["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
        );
        let proxy = &pod["containers"][0];
        assert_eq!(
            (&proxy["name"], &proxy["image"]),
            (&json!("istio-proxy"), &json!("auto"))
        );
        let ports: Vec<(i64, &str)> = proxy["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .map(|p| {
                (
                    p["containerPort"].as_i64().unwrap_or(0),
                    p["name"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(ports, [(15090, "http-envoy-prom"), (80, "http-80")]);
        assert_eq!(proxy["readinessProbe"]["httpGet"]["port"], 15021);
        assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/healthz/ready");
        assert_eq!(proxy["securityContext"]["runAsUser"], 1337);

        assert!(
            deployment["metadata"]["labels"]
                .get("istio.io/rev")
                .is_none()
        );
        let canary = objects_of(&mk_deployment(None), &Revision::new(Some("canary")));
        let deployment = find(&canary, ManagedKind::Deployment);
        // The canary's injector takes the pods; the canary's sweep finds the objects its own.
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["istio.io/rev"], "canary");
        assert_eq!(deployment["metadata"]["labels"]["istio.io/rev"], "canary");
    }

    #[test]
    fn the_service_selects_the_gateways_pods_on_the_status_and_listener_ports() {
        let objects = objects_of(&mk_deployment(Some("u-1")), &Revision::default());
        let service = find(&objects, ManagedKind::Service);
        let spec = &service["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["selector"], json!({GATEWAY_NAME_LABEL: "web"}));
        // A ClusterIP Service has no load balancer to ask an address of.
        assert!(spec.get("loadBalancerIP").is_none());
        assert_eq!(
            spec["ports"],
            json!([
                {"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "http-80", "port": 80, "targetPort": 80, "protocol": "TCP"},
            ])
        );
        let mut balanced = mk_deployment(None);
        balanced.service_type = "LoadBalancer".to_owned();
        let objects = objects_of(&balanced, &Revision::default());
        let spec = &find(&objects, ManagedKind::Service)["spec"];
        assert_eq!(spec["type"], "LoadBalancer");
        assert_eq!(spec["loadBalancerIP"], "10.0.0.9");
        let mut without = balanced;
        without.addresses.clear();
        let objects = objects_of(&without, &Revision::default());
        assert!(
            find(&objects, ManagedKind::Service)["spec"]
                .get("loadBalancerIP")
                .is_none()
        );
    }
}
