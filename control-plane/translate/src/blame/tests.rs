use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::{MeshConfig, Proxy};
use meshd_proto::pack;

use super::*;

const OBJECTS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api-routes, namespace: default}
spec:
  hosts: [api.example.com]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: api.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api-policy, namespace: default}
spec:
  host: api.example.com
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
";

fn snapshot() -> Snapshot {
    let (objects, errors) = meshd_model::documents::parse(OBJECTS, false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    Snapshot::assemble(
        1,
        Arc::new(objects),
        &MeshConfig::default(),
        &BTreeMap::new(),
    )
}

fn client() -> Proxy {
    Proxy::from_node_id("sidecar~10.0.0.9~client.default~default.svc.cluster.local")
        .expect("a node id")
}

#[test]
fn a_route_is_blamed_on_the_virtual_service_it_came_from() {
    let snapshot = snapshot();
    let config = crate::generate(&snapshot, &client());
    let table = config
        .routes
        .iter()
        .find(|r| r.name == "80")
        .expect("a route table for port 80");
    let (vhost, _) = table
        .virtual_hosts
        .iter()
        .enumerate()
        .find(|(_, v)| v.domains.iter().any(|d| d == "api.example.com"))
        .expect("the service's virtual host");
    let path = format!("virtual_hosts[{vhost}].routes[0].match");
    let culprits = culprits(&snapshot, &pack(table), Some(&path));
    assert_eq!(
        culprits.first(),
        Some(&ObjectKey::new(
            Kind::VirtualService,
            "default",
            "api-routes"
        ))
    );
}

#[test]
fn a_cluster_is_blamed_on_its_destination_rule_before_its_service_entry() {
    let snapshot = snapshot();
    let config = crate::generate(&snapshot, &client());
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == "outbound|80||api.example.com")
        .expect("the service's cluster");
    let culprits = culprits(&snapshot, &pack(cluster), None);
    assert_eq!(
        culprits,
        [
            ObjectKey::new(Kind::DestinationRule, "default", "api-policy"),
            ObjectKey::new(Kind::ServiceEntry, "default", "api"),
        ]
    );
}

#[test]
fn config_paths_name_their_objects() {
    let key = ObjectKey::new(Kind::VirtualService, "shop", "web");
    assert_eq!(object_of_config_path(&key.config_path()), Some(key));
    let svc = ObjectKey::new(Kind::Service, "shop", "web");
    assert_eq!(object_of_config_path(&svc.config_path()), Some(svc));
    assert_eq!(object_of_config_path("/apis/x/v1/things/y"), None);
}

#[test]
fn a_rejection_quoting_a_route_value_is_blamed_on_that_route() {
    let snapshot = snapshot();
    let config = crate::generate(&snapshot, &client());
    let table = config
        .routes
        .iter()
        .find(|r| r.name == "80")
        .expect("a route table for port 80");
    let message = "Error adding/updating route 80: bad prefix /v2 in the match";
    assert_eq!(
        locate(&pack(table), "cut short: /v2x").map(|(len, _)| len),
        Some(3)
    );
    let (_, path) = locate(&pack(table), message).expect("the message quotes the route");
    let culprits = culprits(&snapshot, &pack(table), Some(&path));
    assert_eq!(
        culprits.first(),
        Some(&ObjectKey::new(
            Kind::VirtualService,
            "default",
            "api-routes"
        ))
    );
}
