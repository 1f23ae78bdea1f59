//! Builders the unit tests of several modules share.

use kube::api::{ApiResource, DynamicObject};
use meshd_model::Kind;
use serde_json::Value;

use crate::discover::{WatchSpec, origin, resource};

pub(crate) fn mk_spec(kind: Kind, resource: ApiResource) -> WatchSpec {
    WatchSpec {
        kind,
        origin: origin(kind),
        resource,
        namespace: None,
        field_selector: None,
        revision: None,
    }
}

pub(crate) fn mk_dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a Kubernetes object")
}

pub(crate) fn vs_resource() -> ApiResource {
    resource(
        "networking.istio.io",
        "v1",
        Kind::VirtualService,
        "virtualservices",
    )
}
