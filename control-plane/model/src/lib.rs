//! meshd's domain: the Kubernetes and Istio objects it reads, their validation, and the immutable
//! [`Snapshot`] every later stage works from. No I/O, no async, no clients: sources hand objects in,
//! translation reads snapshots out.

pub mod authz;
pub mod documents;
pub mod duration;
pub mod finding;
pub mod gateway_api;
pub mod input;
pub mod kind;
pub mod locality;
pub mod mesh_config;
pub mod object;
pub mod peer_auth;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod revision;
pub mod sidecar_scope;
pub mod snapshot;
pub mod source;
pub mod syntax;
pub mod telemetry;
pub mod traffic;

pub use authz::jwt::{JwksSource, JwtRuleModel, RequestAuthentications};
pub use authz::{
    Attribute, AuthorizationPolicies, AuthzAction, AuthzPolicyModel, AuthzRule, Condition,
};
pub use finding::{Checks, Finding, Report, Severity};
pub use mesh_config::{MeshConfig, OutboundPolicy};
pub use object::{Kind, Object, ObjectKey, ParseError};
pub use peer_auth::{MtlsMode, PeerAuthentications};
pub use protocol::Protocol;
pub use proxy::{NodeType, Proxy};
pub use registry::{Endpoint, Resolution, ServedPort, ServiceModel, ServicePort};
pub use revision::Revision;
pub use snapshot::Snapshot;
pub use source::{InvalidObject, JwksState, ObjectOrigin, SourceEvent};
pub use traffic::{DestinationRuleModel, GatewayModel, Traffic, VirtualServiceModel};
