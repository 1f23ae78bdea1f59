use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_proto::pb::envoy::config::core::v3::DataSource;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::TlsCertificate;
use meshd_proto::pb::google::protobuf::Struct;

use super::*;
use crate::Resource;

fn mk_status(node_id: &str, namespace: Option<&str>) -> ProxyStatus {
    let mut metadata = Struct::default();
    if let Some(ns) = namespace {
        metadata
            .fields
            .insert("NAMESPACE".into(), string(ns.into()));
    }
    ProxyStatus {
        connection_id: format!("{node_id}-1"),
        node: Node {
            id: node_id.into(),
            metadata: Some(metadata),
            ..Default::default()
        },
        remote_addr: None,
        delta: false,
        connected_at: SystemTime::now(),
        types: BTreeMap::new(),
    }
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(text.into())),
        ..Default::default()
    }
}

#[test]
fn proxies_are_named_as_istiod_names_them() {
    assert_eq!(
        proxy_id("sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local"),
        "web-1.shop"
    );
    assert_eq!(proxy_id("not-an-istio-node"), "not-an-istio-node");
}

#[test]
fn a_namespace_scope_reads_the_node_metadata_before_the_id() {
    let scope = DebugScope::Namespace("shop".into());
    assert!(scope.covers(&mk_status(
        "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local",
        None
    )));
    // The metadata is what the proxy's bootstrap says of its namespace.
    assert!(!scope.covers(&mk_status(
        "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local",
        Some("other")
    )));
    assert!(!scope.covers(&mk_status(
        "router~10.0.0.2~gw.istio-system~istio-system.svc.cluster.local",
        None
    )));
    assert!(DebugScope::All.covers(&mk_status("anything", None)));
}

#[test]
fn private_keys_never_leave_in_a_config_dump() {
    let secret = Secret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline("-----BEGIN CERTIFICATE-----")),
            private_key: Some(inline("-----BEGIN PRIVATE KEY-----secret")),
            ..Default::default()
        })),
    };
    let mut status = mk_status("sidecar~10.0.0.1~a.shop~shop.svc.cluster.local", None);
    let resource = Arc::new(Resource::new("default", &pack(&secret)));
    let mut t = TypeStatus {
        sent_nonce: "1".into(),
        ..Default::default()
    };
    t.resources.insert("default".into(), resource);
    status.types.insert(type_url::SECRET.into(), t);

    let dump = resources(
        vec![status],
        &DebugScope::All,
        CONFIG_DUMP,
        &["a.shop".into()],
    );
    let secrets: SecretsConfigDump = meshd_proto::unpack(&dump[5]).expect("secrets section");
    let sent = secrets.dynamic_active_secrets[0]
        .secret
        .as_ref()
        .expect("secret");
    let sent: Secret = meshd_proto::unpack(sent).expect("a Secret");
    let Some(secret::Type::TlsCertificate(cert)) = sent.r#type else {
        panic!("not a certificate: {sent:?}");
    };
    assert_eq!(cert.private_key, Some(inline("[redacted]")));
    assert_eq!(
        cert.certificate_chain,
        Some(inline("-----BEGIN CERTIFICATE-----"))
    );
}
