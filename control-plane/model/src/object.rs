//! Typed objects and their identity. Parsing turns one document (already decoded from YAML or JSON)
//! into an [`Object`], or a [`ParseError`] naming the object and the field that is wrong.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::kind::{GATEWAY_API_GROUP, Kind, ObjectKey};

use crate::input::ObjectMeta;
use crate::input::gateway_api::{
    GatewayClass, GrpcRoute, HttpRoute, KubeGateway, ReferenceGrant, TcpRoute, TlsRoute,
};
use crate::input::istio::{ServiceEntry, WorkloadEntry};
use crate::input::kube::{
    ConfigMap, EndpointSlice, Endpoints, Namespace, Node, Pod, Secret, Service,
};
use crate::input::networking::{DestinationRule, Gateway, Sidecar, VirtualService};
use crate::input::security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
use crate::input::telemetry::Telemetry;

/// One parsed object. Cheap to clone: the payload is shared.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    Service(Arc<Service>),
    Endpoints(Arc<Endpoints>),
    EndpointSlice(Arc<EndpointSlice>),
    Pod(Arc<Pod>),
    ConfigMap(Arc<ConfigMap>),
    Secret(Arc<Secret>),
    ServiceEntry(Arc<ServiceEntry>),
    WorkloadEntry(Arc<WorkloadEntry>),
    VirtualService(Arc<VirtualService>),
    DestinationRule(Arc<DestinationRule>),
    Gateway(Arc<Gateway>),
    Sidecar(Arc<Sidecar>),
    PeerAuthentication(Arc<PeerAuthentication>),
    AuthorizationPolicy(Arc<AuthorizationPolicy>),
    RequestAuthentication(Arc<RequestAuthentication>),
    Telemetry(Arc<Telemetry>),
    GatewayClass(Arc<GatewayClass>),
    KubeGateway(Arc<KubeGateway>),
    HttpRoute(Arc<HttpRoute>),
    GrpcRoute(Arc<GrpcRoute>),
    TcpRoute(Arc<TcpRoute>),
    TlsRoute(Arc<TlsRoute>),
    ReferenceGrant(Arc<ReferenceGrant>),
}

/// Why a document was not accepted. Always names what it could of the object, and the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("document has no `kind`")]
    MissingKind,
    #[error("{kind} {name}: unsupported apiVersion {api_version:?} (served: {served})")]
    UnsupportedVersion {
        kind: String,
        name: String,
        api_version: String,
        served: String,
    },
    #[error("{key}: field `{field}`: {message}")]
    InvalidField {
        key: ObjectKey,
        field: String,
        message: String,
    },
    #[error("{kind}: metadata.name is missing")]
    MissingName { kind: Kind },
}

impl ParseError {
    /// Kinds meshd does not read at all are skipped quietly, as istiod ignores what it does not watch.
    pub fn unknown_kind(value: &serde_json::Value) -> bool {
        value
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| Kind::from_name(k).is_none())
    }
}

impl Object {
    /// Parses one document. `Ok(None)` for kinds meshd does not read (e.g. a Deployment).
    pub fn parse(value: serde_json::Value) -> Result<Option<Object>, ParseError> {
        let kind_name = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or(ParseError::MissingKind)?;
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(kind) =
            Kind::from_group_and_name(group, kind_name).or_else(|| Kind::from_name(kind_name))
        else {
            return Ok(None);
        };
        let name = value
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            return Err(ParseError::MissingName { kind });
        }
        if group != kind.group() || !kind.versions().contains(&version) {
            let served = kind
                .versions()
                .iter()
                .map(|v| {
                    if kind.group().is_empty() {
                        v.to_string()
                    } else {
                        format!("{}/{v}", kind.group())
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ParseError::UnsupportedVersion {
                kind: kind.name().to_string(),
                name,
                api_version: api_version.to_string(),
                served,
            });
        }
        let namespace = if kind.namespaced() {
            value
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let key = ObjectKey::new(kind, namespace.clone(), name);
        let object = match kind {
            Kind::Namespace => Object::Namespace(typed(&key, value)?),
            Kind::Node => Object::Node(typed(&key, value)?),
            Kind::Service => Object::Service(typed(&key, value)?),
            Kind::Endpoints => Object::Endpoints(typed(&key, value)?),
            Kind::EndpointSlice => Object::EndpointSlice(typed(&key, value)?),
            Kind::Pod => Object::Pod(typed(&key, value)?),
            Kind::ConfigMap => Object::ConfigMap(typed(&key, value)?),
            Kind::Secret => Object::Secret(typed(&key, value)?),
            Kind::ServiceEntry => Object::ServiceEntry(typed(&key, value)?),
            Kind::WorkloadEntry => Object::WorkloadEntry(typed(&key, value)?),
            Kind::VirtualService => Object::VirtualService(typed(&key, value)?),
            Kind::DestinationRule => Object::DestinationRule(typed(&key, value)?),
            Kind::Gateway => Object::Gateway(typed(&key, value)?),
            Kind::Sidecar => Object::Sidecar(typed(&key, value)?),
            Kind::PeerAuthentication => Object::PeerAuthentication(typed(&key, value)?),
            Kind::AuthorizationPolicy => Object::AuthorizationPolicy(typed(&key, value)?),
            Kind::RequestAuthentication => Object::RequestAuthentication(typed(&key, value)?),
            Kind::Telemetry => Object::Telemetry(typed(&key, value)?),
            Kind::GatewayClass => Object::GatewayClass(typed(&key, value)?),
            Kind::KubeGateway => Object::KubeGateway(typed(&key, value)?),
            Kind::HttpRoute => Object::HttpRoute(typed(&key, value)?),
            Kind::GrpcRoute => Object::GrpcRoute(typed(&key, value)?),
            Kind::TcpRoute => Object::TcpRoute(typed(&key, value)?),
            Kind::TlsRoute => Object::TlsRoute(typed(&key, value)?),
            Kind::ReferenceGrant => Object::ReferenceGrant(typed(&key, value)?),
        };
        Ok(Some(object.with_namespace(&namespace)))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::Node(_) => Kind::Node,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::ServiceEntry(_) => Kind::ServiceEntry,
            Object::WorkloadEntry(_) => Kind::WorkloadEntry,
            Object::VirtualService(_) => Kind::VirtualService,
            Object::DestinationRule(_) => Kind::DestinationRule,
            Object::Gateway(_) => Kind::Gateway,
            Object::Sidecar(_) => Kind::Sidecar,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::RequestAuthentication(_) => Kind::RequestAuthentication,
            Object::Telemetry(_) => Kind::Telemetry,
            Object::GatewayClass(_) => Kind::GatewayClass,
            Object::KubeGateway(_) => Kind::KubeGateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
            Object::TcpRoute(_) => Kind::TcpRoute,
            Object::TlsRoute(_) => Kind::TlsRoute,
            Object::ReferenceGrant(_) => Kind::ReferenceGrant,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::Telemetry(o) => &o.metadata,
            Object::GatewayClass(o) => &o.metadata.meta,
            Object::KubeGateway(o) => &o.metadata.meta,
            Object::HttpRoute(o) => &o.metadata.meta,
            Object::GrpcRoute(o) => &o.metadata.meta,
            Object::TcpRoute(o) => &o.metadata.meta,
            Object::TlsRoute(o) => &o.metadata.meta,
            Object::ReferenceGrant(o) => &o.metadata.meta,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            self.kind(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone(),
        )
    }

    /// Objects without `metadata.namespace` live in `default`, as `kubectl apply` would put them.
    fn with_namespace(mut self, namespace: &str) -> Object {
        fn set(meta: &mut ObjectMeta, ns: &str) {
            if !ns.is_empty() {
                meta.namespace = Some(ns.to_string());
            }
        }
        match &mut self {
            Object::Namespace(_) | Object::Node(_) | Object::GatewayClass(_) => {}
            Object::Service(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Endpoints(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::EndpointSlice(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Pod(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::ConfigMap(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Secret(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::ServiceEntry(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::WorkloadEntry(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::VirtualService(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::DestinationRule(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Gateway(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Sidecar(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::PeerAuthentication(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::AuthorizationPolicy(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::RequestAuthentication(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::Telemetry(o) => set(&mut Arc::make_mut(o).metadata, namespace),
            Object::KubeGateway(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
            Object::HttpRoute(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
            Object::GrpcRoute(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
            Object::TcpRoute(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
            Object::TlsRoute(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
            Object::ReferenceGrant(o) => set(&mut Arc::make_mut(o).metadata.meta, namespace),
        }
        self
    }
}

fn typed<T: DeserializeOwned>(
    key: &ObjectKey,
    value: serde_json::Value,
) -> Result<Arc<T>, ParseError> {
    serde_path_to_error::deserialize(value)
        .map(Arc::new)
        .map_err(|e| ParseError::InvalidField {
            key: key.clone(),
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })
}

/// Objects keyed as sources hand them in, from JSON documents; for tests across the model.
#[cfg(test)]
pub(crate) fn objects_of(
    docs: Vec<serde_json::Value>,
) -> std::collections::BTreeMap<ObjectKey, Object> {
    docs.into_iter()
        .map(|d| {
            Object::parse(d)
                .expect("test document parses")
                .expect("test document is a kind meshd reads")
        })
        .map(|o| (o.key(), o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_without_namespace_lands_in_default() {
        let obj = Object::parse(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews"},
            "spec": {"ports": [{"port": 9080, "name": "http"}]}
        }))
        .unwrap()
        .unwrap();
        assert_eq!(
            obj.key(),
            ObjectKey::new(Kind::Service, "default", "reviews")
        );
    }

    #[test]
    fn wrong_field_type_names_object_and_field() {
        let err = Object::parse(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"ports": [{"port": "not-a-number"}]}
        }))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Service bookinfo/reviews"), "{text}");
        assert!(text.contains("spec.ports[0].port"), "{text}");
    }

    #[test]
    fn unknown_kinds_are_skipped_not_errors() {
        let parsed = Object::parse(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        );
        assert_eq!(parsed, Ok(None));
    }

    #[test]
    fn every_served_istio_version_is_accepted() {
        for v in ["v1", "v1beta1", "v1alpha3"] {
            let parsed = Object::parse(json!({
                "apiVersion": format!("networking.istio.io/{v}"), "kind": "ServiceEntry",
                "metadata": {"name": "ext"}, "spec": {"hosts": ["example.com"]}
            }));
            assert!(
                matches!(parsed, Ok(Some(Object::ServiceEntry(_)))),
                "{v}: {parsed:?}"
            );
        }
        let bad = Object::parse(json!({
            "apiVersion": "networking.istio.io/v2", "kind": "ServiceEntry", "metadata": {"name": "ext"}
        }));
        assert!(matches!(bad, Err(ParseError::UnsupportedVersion { .. })));
    }

    #[test]
    fn plurals_are_the_api_resource_names() {
        assert_eq!(Kind::ServiceEntry.plural(), "serviceentries");
        assert_eq!(Kind::WorkloadEntry.plural(), "workloadentries");
        assert_eq!(Kind::AuthorizationPolicy.plural(), "authorizationpolicies");
        assert_eq!(Kind::Endpoints.plural(), "endpoints");
        assert_eq!(Kind::VirtualService.plural(), "virtualservices");
        assert_eq!(Kind::Telemetry.plural(), "telemetries");
    }

    #[test]
    fn telemetry_is_read_in_v1_and_v1alpha1() {
        for v in ["v1", "v1alpha1"] {
            let parsed = Object::parse(json!({
                "apiVersion": format!("telemetry.istio.io/{v}"), "kind": "Telemetry",
                "metadata": {"name": "mesh-default", "namespace": "istio-system"},
                "spec": {"accessLogging": [{"providers": [{"name": "envoy"}]}]}
            }));
            assert!(
                matches!(parsed, Ok(Some(Object::Telemetry(_)))),
                "{v}: {parsed:?}"
            );
        }
        let key = ObjectKey::new(Kind::Telemetry, "istio-system", "mesh-default");
        assert_eq!(
            key.config_path(),
            "/apis/telemetry.istio.io/v1/namespaces/istio-system/telemetries/mesh-default"
        );
    }

    #[test]
    fn config_path_follows_istio() {
        let key = ObjectKey::new(Kind::VirtualService, "default", "reviews");
        assert_eq!(
            key.config_path(),
            "/apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews"
        );
    }
}
