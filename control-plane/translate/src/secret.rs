//! SDS secrets as Envoy takes them: the proxy's own certificate (`default`), the trust bundle
//! (`ROOTCA`), and credentials kept in Kubernetes Secrets (`kubernetes://<name>`, and
//! `kubernetes://<name>-cacert` for their CA). Minting, caching and rotation are the server's.

use meshd_model::input::kube::Secret as KubeSecret;
use meshd_model::{Kind, Object, ObjectKey, Snapshot};
use meshd_proto::pb::envoy::config::core::v3::{DataSource, data_source};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};

use crate::tls::{CREDENTIAL_CA_SUFFIX, CREDENTIAL_PREFIX, SECRET_DEFAULT, SECRET_ROOTCA};

/// Keys a Secret may keep each part under: Kubernetes' TLS Secret names, then Istio's.
const CERT_KEYS: [&str; 2] = ["tls.crt", "cert"];
const KEY_KEYS: [&str; 2] = ["tls.key", "key"];
const CA_KEYS: [&str; 2] = ["ca.crt", "cacert"];

fn inline(text: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(text.to_string())),
        ..Default::default()
    })
}

fn certificate(name: &str, cert_chain_pem: &str, key_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(cert_chain_pem),
            private_key: inline(key_pem),
            ..Default::default()
        })),
    }
}

fn validation_context(name: &str, ca_pem: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(ca_pem),
                ..Default::default()
            },
        )),
    }
}

/// `default`: the proxy's certificate chain and private key.
pub fn workload_certificate(cert_chain_pem: &str, key_pem: &str) -> Secret {
    certificate(SECRET_DEFAULT, cert_chain_pem, key_pem)
}

/// `ROOTCA`: every root the mesh trusts, so a root rotation keeps old and new trusted.
pub fn trust_bundle(roots_pem: &str) -> Secret {
    validation_context(SECRET_ROOTCA, roots_pem)
}

/// `kubernetes://<name>` (certificate and key) or `kubernetes://<name>-cacert` (CA) from the
/// Secrets in `namespace`, under either Kubernetes' or Istio's key names. The CA is a Secret
/// `<name>-cacert` of its own, or else the CA key of `<name>`. `None` for other names, and when
/// the Secret or a key is missing.
pub fn gateway_credential(snapshot: &Snapshot, namespace: &str, sds_name: &str) -> Option<Secret> {
    let name = sds_name.strip_prefix(CREDENTIAL_PREFIX)?;
    let lookup = |n: &str| match snapshot
        .objects
        .get(&ObjectKey::new(Kind::Secret, namespace, n))
    {
        Some(Object::Secret(s)) => Some(s),
        _ => None,
    };
    let first = |s: &KubeSecret, keys: &[&str]| keys.iter().find_map(|k| s.value(k));
    if let Some(base) = name.strip_suffix(CREDENTIAL_CA_SUFFIX) {
        let ca = lookup(name)
            .and_then(|s| first(s, &CA_KEYS))
            .or_else(|| lookup(base).and_then(|s| first(s, &CA_KEYS)))?;
        return Some(validation_context(sds_name, &ca));
    }
    let s = lookup(name)?;
    Some(certificate(
        sds_name,
        &first(s, &CERT_KEYS)?,
        &first(s, &KEY_KEYS)?,
    ))
}
