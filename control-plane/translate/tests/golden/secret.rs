//! SDS secret goldens: the workload certificate, the trust bundle and credentials from Kubernetes
//! Secrets, reviewed in `golden/secret/secrets.json` and loaded by the real Envoy as static
//! secrets that TLS listeners use (so the certificates and keys are parsed, not just read). The
//! PEMs under `golden/pki` are test-only, made for these tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use meshd_model::{MeshConfig, Snapshot};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use meshd_translate::secret::{gateway_credential, trust_bundle, workload_certificate};
use serde_json::{Value, json};

use super::{checker_accepts, envoy_accepts, matches_golden};

fn pki(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/pki")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A Secret with `stringData`, each value a literal block.
fn kube_secret(namespace: &str, name: &str, data: &[(&str, String)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\nstringData:\n"
    );
    for (key, value) in data {
        out.push_str(&format!("  {key}: |\n"));
        for line in value.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// Gateway credentials in istio-system: `shop-cert` under Kubernetes' key names with its CA
/// inside; `legacy` under Istio's, with its CA in a Secret of its own; `incomplete` without a
/// key. `elsewhere` lives in another namespace.
fn snapshot() -> Snapshot {
    let (cert, key, ca) = (
        pki("gateway-cert.pem"),
        pki("gateway-key.pem"),
        pki("root-cert.pem"),
    );
    let docs = [
        kube_secret(
            "istio-system",
            "shop-cert",
            &[
                ("tls.crt", cert.clone()),
                ("tls.key", key.clone()),
                ("ca.crt", ca.clone()),
            ],
        ),
        kube_secret(
            "istio-system",
            "legacy",
            &[("cert", cert.clone()), ("key", key.clone())],
        ),
        kube_secret("istio-system", "legacy-cacert", &[("cacert", ca)]),
        kube_secret("istio-system", "incomplete", &[("tls.crt", cert.clone())]),
        kube_secret("shop", "elsewhere", &[("tls.crt", cert), ("tls.key", key)]),
    ];
    let (objects, errors) = meshd_model::documents::parse(&docs.join("---\n"), false);
    assert!(errors.is_empty(), "{errors:?}");
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    Snapshot::build(1, Arc::new(objects), Arc::new(MeshConfig::default()))
}

fn credential(snapshot: &Snapshot, sds_name: &str) -> Secret {
    gateway_credential(snapshot, "istio-system", sds_name)
        .unwrap_or_else(|| panic!("no credential {sds_name}"))
}

/// Static secrets, and listeners whose TLS contexts use each of them by name.
fn validation_bootstrap(secrets: &Value) -> Value {
    let sds = |name: &str| json!({ "name": name });
    let chain = |server_name: &str, cert: &str, ca: &str| {
        json!({
            "filter_chain_match": { "server_names": [server_name] },
            "filters": [{ "name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": "check", "cluster": "nowhere",
            } }],
            "transport_socket": { "name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [sds(cert)],
                    "validation_context_sds_secret_config": sds(ca),
                },
            } },
        })
    };
    let listener = |i: u32, chains: Vec<Value>| {
        json!({
            "name": format!("sds-check-{i}"),
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": 30000 + i } },
            "bind_to_port": false,
            "filter_chains": chains,
        })
    };
    json!({
        "node": { "id": "validate~127.0.0.1~check.default~default.svc.cluster.local", "cluster": "check" },
        "static_resources": {
            "secrets": secrets,
            "clusters": [{ "name": "nowhere", "type": "STATIC", "connect_timeout": "1s" }],
            "listeners": [
                listener(0, vec![chain("mesh.example.com", "default", "ROOTCA")]),
                listener(1, vec![
                    chain("shop.example.com", "kubernetes://shop-cert", "kubernetes://shop-cert-cacert"),
                    chain("legacy.example.com", "kubernetes://legacy", "kubernetes://legacy-cacert"),
                ]),
            ],
        },
    })
}

#[test]
fn sds_secrets_match_golden_and_envoy_accepts_them() {
    let snapshot = snapshot();
    let secrets = [
        workload_certificate(&pki("workload-cert.pem"), &pki("workload-key.pem")),
        trust_bundle(&pki("root-cert.pem")),
        credential(&snapshot, "kubernetes://shop-cert"),
        credential(&snapshot, "kubernetes://shop-cert-cacert"),
        credential(&snapshot, "kubernetes://legacy"),
        credential(&snapshot, "kubernetes://legacy-cacert"),
    ];
    let json = Value::Array(
        secrets
            .iter()
            .map(|s| meshd_proto::json::to_json(s).unwrap())
            .collect(),
    );
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/secret/secrets.json");
    matches_golden(&json, &file);
    envoy_accepts(&validation_bootstrap(&json), "secrets");
    let packed = secrets.iter().map(meshd_proto::pack).collect();
    checker_accepts(&[(meshd_proto::type_url::SECRET, packed)], "secrets");
}

#[test]
fn the_workload_certificate_and_trust_bundle_use_the_mesh_sds_names() {
    let cert = workload_certificate("CHAIN", "KEY");
    assert_eq!(cert.name, "default");
    let Some(secret::Type::TlsCertificate(tls)) = cert.r#type else {
        panic!("a TLS certificate expected");
    };
    assert!(tls.certificate_chain.is_some() && tls.private_key.is_some());
    let roots = trust_bundle("ROOTS");
    assert_eq!(roots.name, "ROOTCA");
    assert!(matches!(
        roots.r#type,
        Some(secret::Type::ValidationContext(_))
    ));
}

#[test]
fn a_credentials_ca_comes_from_its_own_secret_or_else_from_the_credential() {
    let snapshot = snapshot();
    let trusted_ca = |name: &str| match credential(&snapshot, name).r#type {
        Some(secret::Type::ValidationContext(v)) => {
            meshd_proto::json::to_json(&v).unwrap()["trusted_ca"]["inline_string"].clone()
        }
        other => panic!("{name}: a validation context expected, got {other:?}"),
    };
    let root = json!(pki("root-cert.pem"));
    assert_eq!(trusted_ca("kubernetes://shop-cert-cacert"), root);
    assert_eq!(trusted_ca("kubernetes://legacy-cacert"), root);
}

#[test]
fn credentials_are_served_only_from_the_proxys_namespace_by_their_sds_name() {
    let snapshot = snapshot();
    let find = |namespace: &str, name: &str| gateway_credential(&snapshot, namespace, name);
    assert!(find("shop", "kubernetes://elsewhere").is_some());
    assert!(find("istio-system", "kubernetes://elsewhere").is_none());
    assert!(
        find("istio-system", "shop-cert").is_none(),
        "not an SDS name"
    );
    assert!(find("istio-system", "kubernetes://absent").is_none());
    assert!(
        find("istio-system", "kubernetes://incomplete").is_none(),
        "a certificate without its key"
    );
    assert!(
        find("istio-system", "kubernetes://incomplete-cacert").is_none(),
        "no CA anywhere"
    );
}
