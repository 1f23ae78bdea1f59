//! Kinds meshd reads and the identity of an object: what every other module names objects by,
//! with no dependence on the objects' contents.

use std::fmt;

use serde::Serialize;

/// Every kind meshd reads. Serialized as it is displayed: the Kubernetes kind (`HTTPRoute`), the
/// Gateway API's Gateway qualified by its group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    Node,
    Service,
    Endpoints,
    EndpointSlice,
    Pod,
    ConfigMap,
    Secret,
    ServiceEntry,
    WorkloadEntry,
    VirtualService,
    DestinationRule,
    Gateway,
    Sidecar,
    PeerAuthentication,
    AuthorizationPolicy,
    RequestAuthentication,
    Telemetry,
    GatewayClass,
    KubeGateway,
    HttpRoute,
    GrpcRoute,
    TcpRoute,
    TlsRoute,
    ReferenceGrant,
}

impl Kind {
    pub const ALL: [Kind; 25] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::Sidecar,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
        Kind::Telemetry,
        Kind::GatewayClass,
        Kind::KubeGateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TcpRoute,
        Kind::TlsRoute,
        Kind::ReferenceGrant,
    ];

    /// API group, as in `apiVersion: <group>/<version>`; empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Namespace
            | Kind::Node
            | Kind::Service
            | Kind::Endpoints
            | Kind::Pod
            | Kind::ConfigMap
            | Kind::Secret => "",
            Kind::EndpointSlice => "discovery.k8s.io",
            Kind::ServiceEntry
            | Kind::WorkloadEntry
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::Sidecar => "networking.istio.io",
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::GatewayClass
            | Kind::KubeGateway
            | Kind::HttpRoute
            | Kind::GrpcRoute
            | Kind::TcpRoute
            | Kind::TlsRoute
            | Kind::ReferenceGrant => GATEWAY_API_GROUP,
        }
    }

    /// Versions served for the kind; a document in any other version is refused.
    pub fn versions(self) -> &'static [&'static str] {
        match self {
            Kind::GatewayClass | Kind::KubeGateway | Kind::HttpRoute => return &["v1", "v1beta1"],
            Kind::GrpcRoute => return &["v1", "v1alpha2"],
            Kind::ReferenceGrant => return &["v1beta1", "v1alpha2"],
            Kind::TcpRoute => return &["v1alpha2"],
            Kind::TlsRoute => return &["v1alpha2", "v1alpha3"],
            _ => {}
        }
        match self.group() {
            "" | "discovery.k8s.io" => &["v1"],
            "networking.istio.io" => &["v1", "v1beta1", "v1alpha3"],
            "telemetry.istio.io" => &["v1", "v1alpha1"],
            _ => &["v1", "v1beta1"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::Sidecar => "Sidecar",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::Telemetry => "Telemetry",
            Kind::GatewayClass => "GatewayClass",
            Kind::KubeGateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TcpRoute => "TCPRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
        }
    }

    /// Lower-case plural, as in API paths (`/apis/networking.istio.io/v1/namespaces/ns/virtualservices/x`).
    pub fn plural(self) -> String {
        match self {
            Kind::Endpoints => "endpoints".to_string(),
            Kind::Gateway | Kind::KubeGateway => "gateways".to_string(),
            Kind::GatewayClass => "gatewayclasses".to_string(),
            Kind::AuthorizationPolicy => "authorizationpolicies".to_string(),
            Kind::ServiceEntry => "serviceentries".to_string(),
            Kind::WorkloadEntry => "workloadentries".to_string(),
            Kind::Telemetry => "telemetries".to_string(),
            other => format!("{}s", other.name().to_ascii_lowercase()),
        }
    }

    /// The kind named `name`; where two groups share a name (`Gateway`), Istio's.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kind `name` of API group `group` (as in `apiVersion: <group>/<version>`).
    pub fn from_group_and_name(group: &str, name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == name && k.group() == group)
    }

    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node | Kind::GatewayClass)
    }

    /// A kind of the Kubernetes Gateway API.
    pub fn is_gateway_api(self) -> bool {
        self.group() == GATEWAY_API_GROUP
    }
}

/// The Kubernetes Gateway API's group.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The name, qualified by the group where another group has a kind of that name, as kubectl
/// writes it (`Gateway.gateway.networking.k8s.io`).
impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::KubeGateway => write!(f, "{}.{}", self.name(), self.group()),
            _ => f.write_str(self.name()),
        }
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Identity of an object: kind, namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Istio's config path, used in `filter_metadata.istio.config`.
    pub fn config_path(&self) -> String {
        let version = self.kind.versions()[0];
        let group = self.kind.group();
        let api = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        format!(
            "{api}/namespaces/{}/{}/{}",
            self.namespace,
            self.kind.plural(),
            self.name
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}
