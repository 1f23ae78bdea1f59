use std::collections::BTreeMap;

use meshd_model::{Kind, MeshConfig};
use meshd_proto::pb::envoy::config::core::v3::Metadata;
use meshd_proto::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use meshd_proto::pb::google::protobuf::{Struct, Value, value};

use super::*;
use crate::encode::resource;

fn snapshot_with(yaml: &str) -> Snapshot {
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

/// A route table whose two virtual hosts claim one domain (Envoy refuses it); the second one is
/// annotated as coming from `from`.
fn clashing_routes(from: &ObjectKey) -> RouteConfiguration {
    let annotated = Metadata {
        filter_metadata: [(
            "istio".to_string(),
            Struct {
                fields: [(
                    "config".to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(from.config_path())),
                    },
                )]
                .into(),
            },
        )]
        .into(),
        ..Default::default()
    };
    let vhost = |name: &str| VirtualHost {
        name: name.to_string(),
        domains: vec!["web.example.com".to_string()],
        ..Default::default()
    };
    let mut second = vhost("b");
    second.metadata = Some(annotated);
    RouteConfiguration {
        name: "80".to_string(),
        virtual_hosts: vec![vhost("a"), second],
        ..Default::default()
    }
}

#[test]
fn a_resource_envoy_would_reject_is_held_back_and_its_object_quarantined_once() {
    let vs = ObjectKey::new(Kind::VirtualService, "shop", "web");
    let snapshot = snapshot_with(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: web, namespace: shop}\nspec: {hosts: [web.example.com], http: [{route: [{destination: {host: web.example.com}}]}]}\n",
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rejected = Counter::default();
    let guard = Guard::new(tx, rejected.clone(), None);
    let bad = resource("80".to_string(), &clashing_routes(&vs));
    let good = resource(
        "81".to_string(),
        &RouteConfiguration {
            name: "81".to_string(),
            ..Default::default()
        },
    );
    let kept = guard.screen(&snapshot, type_url::ROUTE, vec![bad.clone(), good.clone()]);
    assert_eq!(kept.iter().map(|r| r.name()).collect::<Vec<_>>(), ["81"]);
    match rx.try_recv() {
        Ok(SourceEvent::Quarantine { key, reason }) => {
            assert_eq!(key, vs);
            assert!(reason.contains("RDS 80"), "{reason}");
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
    assert_eq!(rejected.get(), 1);
    // Another proxy with the same resource: the verdict is reused, nothing reported twice.
    let kept = guard.screen(&snapshot, type_url::ROUTE, vec![bad, good]);
    assert_eq!(kept.len(), 1);
    assert!(rx.try_recv().is_err());
    assert_eq!(rejected.get(), 1);
}

#[test]
fn a_rejection_quoting_a_value_blames_the_suspect_that_holds_it() {
    let faulty = ObjectKey::new(Kind::VirtualService, "shop", "faulty");
    let snapshot = snapshot_with("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let guard = Guard::new(tx, Counter::default(), None);
    let innocent = resource(
        "80".to_string(),
        &RouteConfiguration {
            name: "80".to_string(),
            ..Default::default()
        },
    );
    let mut routes = clashing_routes(&faulty);
    routes.virtual_hosts[1].domains = vec!["broken.(?=example".to_string()];
    let guilty = resource("81".to_string(), &routes);
    guard.nacked(
        &snapshot,
        "sidecar~10.0.0.1~web-0.shop~shop.svc.cluster.local",
        "invalid perl operator: (?=",
        &[innocent, guilty],
    );
    match rx.try_recv() {
        Ok(SourceEvent::Quarantine { key, reason }) => {
            assert_eq!(key, faulty);
            assert!(reason.contains("rejected 81"), "{reason}");
        }
        other => panic!("expected a quarantine, got {other:?}"),
    }
}

fn mk_listener(name: &str, port: u32) -> Arc<Resource> {
    use meshd_proto::pb::envoy::config::core::v3::{address, socket_address};
    let socket = meshd_proto::pb::envoy::config::core::v3::SocketAddress {
        address: "0.0.0.0".to_string(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
        ..Default::default()
    };
    let address = Some(address::Address::SocketAddress(socket));
    let listener = meshd_proto::pb::envoy::config::listener::v3::Listener {
        name: name.to_string(),
        address: Some(meshd_proto::pb::envoy::config::core::v3::Address { address }),
        ..Default::default()
    };
    resource(name.to_string(), &listener)
}

#[test]
fn a_proxys_own_resources_are_screened_against_the_shared_set_it_is_sent_with() {
    let snapshot = snapshot_with("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let rejected = Counter::default();
    let guard = Guard::new(mpsc::unbounded_channel().0, rejected.clone(), None);
    let shared = Arc::new(ResourceSet::new([
        mk_listener("out_80", 80),
        mk_listener("out_81", 81),
    ]));
    let names = |parts: &[Arc<ResourceSet>]| -> Vec<Vec<String>> {
        let names = |p: &Arc<ResourceSet>| p.iter().map(|r| r.name().to_string()).collect();
        parts.iter().map(names).collect()
    };
    // An own listener on an address of the shared set is held back; the shared set goes as it is.
    let own = vec![mk_listener("in_81", 81), mk_listener("in_82", 82)];
    let parts = guard.screen_parts(&snapshot, type_url::LISTENER, Arc::clone(&shared), own);
    assert_eq!(names(&parts), [vec!["out_80", "out_81"], vec!["in_82"]]);
    assert!(Arc::ptr_eq(&parts[0], &shared));
    assert_eq!(rejected.get(), 1);
    // A name in both: as over one response, every resource of that name goes.
    let own = vec![mk_listener("out_80", 90), mk_listener("in_82", 82)];
    let parts = guard.screen_parts(&snapshot, type_url::LISTENER, shared, own);
    assert_eq!(names(&parts), [vec!["in_82", "out_81"]]);
}

#[test]
fn equal_own_sets_of_different_proxies_are_one_copy() {
    let snapshot = snapshot_with("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    let guard = Guard::new(mpsc::unbounded_channel().0, Counter::default(), None);
    let shared = Arc::new(ResourceSet::new([mk_listener("out_80", 80)]));
    // Two pods with the same inbound listener, each generated on its own.
    let first = guard.screen_parts(
        &snapshot,
        type_url::LISTENER,
        Arc::clone(&shared),
        vec![mk_listener("in_8080", 8080)],
    );
    let second = guard.screen_parts(
        &snapshot,
        type_url::LISTENER,
        Arc::clone(&shared),
        vec![mk_listener("in_8080", 8080)],
    );
    assert!(
        Arc::ptr_eq(&first[1], &second[1]),
        "one copy of equal own sets"
    );
    // A pod with other ports gets its own.
    let other = guard.screen_parts(
        &snapshot,
        type_url::LISTENER,
        shared,
        vec![mk_listener("in_9090", 9090)],
    );
    assert!(!Arc::ptr_eq(&first[1], &other[1]));
}
