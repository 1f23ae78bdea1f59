//! What `meshd analyze` adds to validation: it builds the config the mesh's proxies would get —
//! every pod's sidecar (one per distinct [`Scope`]) and a gateway for every Gateway's selector —
//! checks every resource as the server does before sending, and names the object behind each one
//! Envoy would reject. The server leaves such objects out (quarantine); analyze says so first.

use std::collections::{BTreeMap, HashSet};

use meshd_model::{NodeType, ObjectKey, Proxy, Snapshot};
use meshd_proto::pb::google::protobuf::Any;
use meshd_proto::{pack, type_url};

use crate::Scope;
use crate::blame::culprits;
use crate::check::{check_resource, check_set};

/// Objects whose config Envoy would reject, with the first reason found for each.
pub fn audit(snapshot: &Snapshot) -> BTreeMap<ObjectKey, String> {
    let mut found = BTreeMap::new();
    let mut seen: HashSet<Scope> = HashSet::new();
    for proxy in proxies(snapshot) {
        // Outbound config depends only on the scope: one proxy per scope is enough for it, but
        // inbound config is every pod's own.
        let fresh_scope = seen.insert(Scope::for_proxy(snapshot, &proxy));
        let config = crate::generate(snapshot, &proxy);
        let sets: [(&str, Vec<(String, Any)>); 4] = [
            (
                type_url::CLUSTER,
                named(&config.clusters, |c| c.name.clone()),
            ),
            (
                type_url::LISTENER,
                named(&config.listeners, |l| l.name.clone()),
            ),
            (type_url::ROUTE, named(&config.routes, |r| r.name.clone())),
            (
                type_url::ENDPOINT,
                named(&config.endpoints, |e| e.cluster_name.clone()),
            ),
        ];
        for (type_url, resources) in sets {
            if !fresh_scope && matches!(type_url, type_url::ROUTE | type_url::ENDPOINT) {
                continue;
            }
            for (name, body) in &resources {
                if let Some(first) = check_resource(type_url, body).first() {
                    blame(snapshot, &mut found, body, &first.path, || {
                        format!("{} {name}: {first}", type_url::short(type_url))
                    });
                }
            }
            let bodies: Vec<Any> = resources.iter().map(|(_, b)| b.clone()).collect();
            for (name, violation) in check_set(type_url, &bodies) {
                if let Some((_, body)) = resources.iter().find(|(n, _)| *n == name) {
                    blame(snapshot, &mut found, body, &violation.path, || {
                        format!("{} {name}: {violation}", type_url::short(type_url))
                    });
                }
            }
        }
    }
    found
}

fn named<M: prost::Name>(items: &[M], name: impl Fn(&M) -> String) -> Vec<(String, Any)> {
    items.iter().map(|m| (name(m), pack(m))).collect()
}

fn blame(
    snapshot: &Snapshot,
    found: &mut BTreeMap<ObjectKey, String>,
    body: &Any,
    path: &str,
    reason: impl FnOnce() -> String,
) {
    if let Some(key) = culprits(snapshot, body, Some(path)).into_iter().next() {
        found.entry(key).or_insert_with(reason);
    }
}

/// A sidecar for every pod with an address, and a gateway for every Gateway's selector.
fn proxies(snapshot: &Snapshot) -> Vec<Proxy> {
    let mut out = Vec::new();
    for pod in snapshot.registry.pods.values() {
        let Some(ip) = &pod.ip else { continue };
        let id = format!(
            "sidecar~{ip}~{}.{ns}~{ns}.svc.cluster.local",
            pod.name,
            ns = pod.namespace
        );
        if let Ok(mut proxy) = Proxy::from_node_id(&id) {
            proxy.labels = pod.labels.clone();
            out.push(proxy);
        }
    }
    for gateway in &snapshot.traffic.gateways {
        let ns = &gateway.key.namespace;
        let id = format!(
            "router~0.0.0.0~{}-gateway.{ns}~{ns}.svc.cluster.local",
            gateway.key.name
        );
        if let Ok(mut proxy) = Proxy::from_node_id(&id) {
            proxy.node_type = NodeType::Router;
            proxy.labels = gateway.selector.clone();
            out.push(proxy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use meshd_model::{Kind, MeshConfig};

    use super::*;

    const WEB: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.1.1, selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec: {containers: [{name: app, ports: [{containerPort: 80}]}]}
status: {podIP: 10.1.0.5}
";

    fn snapshot_of(yaml: &str) -> Snapshot {
        let (objects, errors) = meshd_model::documents::parse(yaml, false);
        assert!(errors.is_empty(), "{errors:?}");
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        Snapshot::assemble(
            1,
            Arc::new(objects),
            &MeshConfig::default(),
            &BTreeMap::new(),
        )
    }

    #[test]
    fn an_object_whose_config_envoy_would_reject_is_named() {
        let routes = "---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-routes, namespace: shop}
spec:
  hosts: [web]
  http: [{match: [{uri: {regex: '/v[0-9]+'}}], route: [{destination: {host: web}}]}]
";
        let mut snapshot = snapshot_of(&format!("{WEB}{routes}"));
        assert!(audit(&snapshot).is_empty());
        // What validation let through, broken afterwards: as if a rule were missing.
        let vs = Arc::make_mut(&mut snapshot.traffic.virtual_services[0]);
        vs.http[0].matches[0].uri = Some(meshd_model::input::networking::StringMatch {
            regex: Some("(?=v)".to_string()),
            ..Default::default()
        });
        let found = audit(&snapshot);
        let key = ObjectKey::new(Kind::VirtualService, "shop", "web-routes");
        let reason = found.get(&key).expect("the VirtualService is named");
        assert!(reason.starts_with("RDS 80:"), "{reason}");
    }

    #[test]
    fn valid_config_audits_clean() {
        let gateway = "---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
";
        let snapshot = snapshot_of(&format!("{WEB}{gateway}"));
        assert_eq!(proxies(&snapshot).len(), 2, "a sidecar and a gateway");
        assert!(audit(&snapshot).is_empty());
    }
}
