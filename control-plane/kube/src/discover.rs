//! Which kinds to watch, and at which version: discovery of the Istio and Gateway API groups the
//! API server serves, and the plan of watches (core kinds, EndpointSlice v1 or Endpoints, the
//! mesh ConfigMap, every Istio and Gateway API kind whose CRD is installed).

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject};
use meshd_model::Kind;
use meshd_model::Revision;
use meshd_model::snapshot::{MESH_CONFIGMAP, mesh_configmap};

/// How often the API groups are looked at again for CRDs installed (or removed) later.
pub(crate) const REDISCOVERY: Duration = Duration::from_secs(30);

/// Every config kind meshd reads whose CRD may come and go: Istio's and the Gateway API's.
pub(crate) fn config_kinds() -> impl Iterator<Item = Kind> {
    Kind::ALL
        .into_iter()
        .filter(|k| k.group().ends_with(ISTIO_GROUP_SUFFIX) || k.is_gateway_api())
}

const ISTIO_GROUP_SUFFIX: &str = "istio.io";

/// One watch: a kind, where its objects go, and what to ask the server for.
#[derive(Clone, Debug)]
pub(crate) struct WatchSpec {
    pub(crate) kind: Kind,
    pub(crate) origin: String,
    pub(crate) resource: ApiResource,
    pub(crate) namespace: Option<String>,
    pub(crate) field_selector: Option<String>,
    /// For Istio config under `meshd serve --revision`: objects labelled for another revision
    /// are not this control plane's ([`Revision::owns_config`]). `None` reads everything.
    pub(crate) revision: Option<Revision>,
}

impl WatchSpec {
    pub(crate) fn api(&self, client: kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &self.resource),
            None => Api::all_with(client, &self.resource),
        }
    }
}

pub(crate) fn origin(kind: Kind) -> String {
    format!("kube:{kind}")
}

pub(crate) fn secret_origin(name: &str) -> String {
    format!("kube:Secret/{name}")
}

pub(crate) fn core_resource(kind: Kind) -> ApiResource {
    use k8s_openapi::api::core::v1;
    match kind {
        Kind::Namespace => ApiResource::erase::<v1::Namespace>(&()),
        Kind::Node => ApiResource::erase::<v1::Node>(&()),
        Kind::Service => ApiResource::erase::<v1::Service>(&()),
        Kind::Endpoints => ApiResource::erase::<v1::Endpoints>(&()),
        Kind::Pod => ApiResource::erase::<v1::Pod>(&()),
        Kind::ConfigMap => ApiResource::erase::<v1::ConfigMap>(&()),
        _ => ApiResource::erase::<v1::Secret>(&()),
    }
}

pub(crate) fn resource(group: &str, version: &str, kind: Kind, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: format!("{group}/{version}"),
        kind: kind.name().to_string(),
        plural: plural.to_string(),
    }
}

/// A Gateway API kind at its most stable version: where meshd writes (status, GatewayClass
/// `istio`), which every Gateway API install serves.
pub(crate) fn gateway_api_resource(kind: Kind) -> ApiResource {
    resource(
        meshd_model::object::GATEWAY_API_GROUP,
        kind.versions()[0],
        kind,
        &kind.plural(),
    )
}

/// The watch of one referenced Secret, by name, in every namespace.
pub(crate) fn secret_spec(name: &str) -> WatchSpec {
    WatchSpec {
        kind: Kind::Secret,
        origin: secret_origin(name),
        resource: core_resource(Kind::Secret),
        namespace: None,
        field_selector: Some(format!("metadata.name={name}")),
        revision: None,
    }
}

/// What the server serves of the groups meshd reads beyond the core group.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Discovered {
    /// Kind → resource at the version to watch.
    pub(crate) kinds: BTreeMap<Kind, ApiResource>,
}

/// Asks the server which Istio and Gateway API kinds (and whether EndpointSlice v1) it serves.
pub(crate) async fn discover(client: &kube::Client) -> Result<Discovered, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut found = Discovered::default();
    for group in &groups.groups {
        let wanted: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.group() == group.name && !k.group().is_empty())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // Preferred version first, then the server's order (most stable first).
        let mut versions: Vec<&str> = Vec::new();
        if let Some(p) = &group.preferred_version {
            versions.push(&p.version);
        }
        for v in &group.versions {
            if !versions.contains(&v.version.as_str()) {
                versions.push(&v.version);
            }
        }
        for version in versions {
            let accepted: Vec<Kind> = wanted
                .iter()
                .copied()
                .filter(|k| k.versions().contains(&version) && !found.kinds.contains_key(k))
                .collect();
            if accepted.is_empty() {
                continue;
            }
            let list = client
                .list_api_group_resources(&format!("{}/{version}", group.name))
                .await?;
            for r in &list.resources {
                // Subresources (`virtualservices/status`) share the kind; skip them.
                if r.name.contains('/') {
                    continue;
                }
                if let Some(kind) = accepted.iter().find(|k| k.name() == r.kind) {
                    found
                        .kinds
                        .insert(*kind, resource(&group.name, version, *kind, &r.name));
                }
            }
        }
    }
    Ok(found)
}

/// The watch of an Istio or Gateway API config kind: filtered by `revision` when there is one,
/// as istiod filters all the config it reads.
pub(crate) fn config_spec(
    kind: Kind,
    resource: ApiResource,
    revision: Option<&Revision>,
) -> WatchSpec {
    WatchSpec {
        kind,
        origin: origin(kind),
        resource,
        namespace: None,
        field_selector: None,
        revision: revision.cloned(),
    }
}

/// The watches for what the server has: core kinds, then what discovery found. `revision`:
/// the control plane's, whose mesh ConfigMap is read and whose Istio config is kept; `None`
/// reads the default mesh ConfigMap and every revision's config (`meshd analyze`).
pub(crate) fn plan(
    found: &Discovered,
    root_namespace: &str,
    revision: Option<&Revision>,
) -> Vec<WatchSpec> {
    let spec = |kind: Kind, resource: ApiResource| WatchSpec {
        kind,
        origin: origin(kind),
        resource,
        namespace: None,
        field_selector: None,
        revision: None,
    };
    let mesh_configmap = revision.map_or_else(|| MESH_CONFIGMAP.to_owned(), mesh_configmap);
    let mut out = vec![
        spec(Kind::Namespace, core_resource(Kind::Namespace)),
        // Where pods run: their Nodes' topology labels are their locality.
        spec(Kind::Node, core_resource(Kind::Node)),
        spec(Kind::Service, core_resource(Kind::Service)),
        spec(Kind::Pod, core_resource(Kind::Pod)),
    ];
    match found.kinds.get(&Kind::EndpointSlice) {
        Some(r) => out.push(spec(Kind::EndpointSlice, r.clone())),
        None => out.push(spec(Kind::Endpoints, core_resource(Kind::Endpoints))),
    }
    out.push(WatchSpec {
        namespace: Some(root_namespace.to_string()),
        field_selector: Some(format!("metadata.name={mesh_configmap}")),
        ..spec(Kind::ConfigMap, core_resource(Kind::ConfigMap))
    });
    for kind in config_kinds() {
        if let Some(r) = found.kinds.get(&kind) {
            out.push(config_spec(kind, r.clone(), revision));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_watched_only_without_v1_slices() {
        let found = Discovered::default();
        let kinds: Vec<Kind> = plan(&found, "istio-system", None)
            .iter()
            .map(|s| s.kind)
            .collect();
        assert!(kinds.contains(&Kind::Endpoints) && !kinds.contains(&Kind::EndpointSlice));
        let mut found = Discovered::default();
        found.kinds.insert(
            Kind::EndpointSlice,
            resource(
                "discovery.k8s.io",
                "v1",
                Kind::EndpointSlice,
                "endpointslices",
            ),
        );
        let specs = plan(&found, "istio-system", None);
        let kinds: Vec<Kind> = specs.iter().map(|s| s.kind).collect();
        assert!(!kinds.contains(&Kind::Endpoints) && kinds.contains(&Kind::EndpointSlice));
        let mesh = specs.iter().find(|s| s.kind == Kind::ConfigMap).unwrap();
        assert_eq!(mesh.namespace.as_deref(), Some("istio-system"));
        assert_eq!(mesh.field_selector.as_deref(), Some("metadata.name=istio"));
    }

    #[test]
    fn gateway_api_kinds_are_watched_when_served_under_their_own_origins() {
        let mut found = Discovered::default();
        let group = meshd_model::object::GATEWAY_API_GROUP;
        for (kind, version, plural) in [
            (Kind::Gateway, "v1", "gateways"),
            (Kind::KubeGateway, "v1", "gateways"),
            (Kind::GatewayClass, "v1", "gatewayclasses"),
            (Kind::TcpRoute, "v1alpha2", "tcproutes"),
        ] {
            let group = if kind == Kind::Gateway {
                "networking.istio.io"
            } else {
                group
            };
            found
                .kinds
                .insert(kind, resource(group, version, kind, plural));
        }
        let canary = Revision::new(Some("canary"));
        let specs = plan(&found, "istio-system", Some(&canary));
        let watched = |kind: Kind| {
            specs
                .iter()
                .find(|s| s.kind == kind)
                .unwrap_or_else(|| panic!("{kind} is not watched"))
        };
        let istio = watched(Kind::Gateway);
        let kube = watched(Kind::KubeGateway);
        // One kind name, two groups: two watches, two origins.
        assert_ne!(istio.origin, kube.origin);
        assert_eq!(kube.resource.api_version, format!("{group}/v1"));
        assert_eq!(kube.revision.as_ref(), Some(&canary));
        assert_eq!(watched(Kind::GatewayClass).namespace, None);
        assert_eq!(
            watched(Kind::TcpRoute).resource.api_version,
            format!("{group}/v1alpha2")
        );
        assert!(!specs.iter().any(|s| s.kind == Kind::HttpRoute));
    }
}
