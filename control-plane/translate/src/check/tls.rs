//! TLS settings Envoy hands to BoringSSL when it builds a context
//! (`source/common/tls/context_impl.cc`, `server_context_config_impl.cc`): cipher suites and
//! curves BoringSSL knows, and a server context with a certificate. Envoy builds a context once
//! its secrets are there, so with SDS a mistake surfaces only then, and the update that brings
//! the secret is refused.

use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, TlsParameters,
};

use super::{Violation, join};

/// BoringSSL's cipher suite names and aliases, each accepted alone by Envoy 1.40.
const CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-RSA-AES128-SHA256",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
    "ALL",
    "kRSA",
    "RSA",
    "kECDHE",
    "kEECDH",
    "ECDH",
    "kPSK",
    "aRSA",
    "aECDSA",
    "ECDSA",
    "aPSK",
    "ECDHE",
    "EECDH",
    "PSK",
    "3DES",
    "AES128",
    "AES256",
    "AES",
    "AESGCM",
    "CHACHA20",
    "SHA1",
    "SHA",
    "HIGH",
    "FIPS",
    "SSLv3",
    "TLSv1",
    "TLSv1.2",
    "DEFAULT",
];

/// Curve names BoringSSL accepts for `ecdh_curves`.
const CURVES: &[&str] = &[
    "X25519",
    "P-256",
    "P-384",
    "P-521",
    "prime256v1",
    "X25519MLKEM768",
];

/// TLS 1.3 suites are not configurable in BoringSSL; Envoy drops their names from the list.
const TLS13_CIPHERS: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

pub(super) fn parameters(params: &TlsParameters, path: &str, out: &mut Vec<Violation>) {
    let ciphers = &params.cipher_suites;
    let at = join(path, "cipher_suites");
    // What is left once TLS 1.3 names are dropped must select something: an entry that is not
    // an edit (`!`, `-`, `+` only change what the others selected).
    let selecting =
        |c: &&String| !c.starts_with(['!', '-', '+']) && !TLS13_CIPHERS.contains(&c.as_str());
    if !ciphers.is_empty() && !ciphers.iter().any(|c| selecting(&c)) {
        out.push(Violation::new(
            at.clone(),
            "Failed to initialize cipher suites: the list selects no TLS 1.2 cipher",
        ));
    }
    let grouped = ciphers.iter().any(|c| c.starts_with('['));
    for (i, cipher) in ciphers.iter().enumerate() {
        let edit = cipher.strip_prefix(['!', '-', '+']);
        let names: Vec<&str> = match edit {
            Some(name) => vec![name],
            None => cipher
                .strip_prefix('[')
                .and_then(|g| g.strip_suffix(']'))
                .map_or_else(|| vec![cipher.as_str()], |g| g.split('|').collect()),
        };
        let known = names
            .iter()
            .all(|n| CIPHERS.contains(n) || (edit.is_none() && TLS13_CIPHERS.contains(n)));
        let problem = if !known {
            Some(format!("BoringSSL does not take {cipher:?}"))
        } else if edit.is_some() && grouped {
            // BoringSSL refused an edit next to an equal-preference group in every list tried.
            Some(format!(
                "{cipher:?} edits a list with an equal-preference group"
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            out.push(Violation::new(
                join(&at, &format!("[{i}]")),
                format!("Failed to initialize cipher suites: {problem}"),
            ));
        }
    }
    for (i, curve) in params.ecdh_curves.iter().enumerate() {
        if !CURVES.contains(&curve.as_str()) {
            out.push(Violation::new(
                join(path, &format!("ecdh_curves[{i}]")),
                format!("Failed to initialize ECDH curves: BoringSSL does not take {curve:?}"),
            ));
        }
    }
}

/// A server context needs a certificate from somewhere.
pub(super) fn downstream(context: &DownstreamTlsContext, path: &str, out: &mut Vec<Violation>) {
    let Some(common) = &context.common_tls_context else {
        out.push(Violation::new(
            path,
            "No TLS certificates found for server context",
        ));
        return;
    };
    let has_certificate = has_certificate(common);
    if !has_certificate {
        out.push(Violation::new(
            join(path, "common_tls_context"),
            "No TLS certificates found for server context",
        ));
    }
}

// Envoy 1.40 still reads the deprecated certificate-provider fields, so they count.
#[allow(deprecated)]
fn has_certificate(common: &CommonTlsContext) -> bool {
    !common.tls_certificates.is_empty()
        || !common.tls_certificate_sds_secret_configs.is_empty()
        || common.tls_certificate_provider_instance.is_some()
        || common.custom_tls_certificate_selector.is_some()
        || common.tls_certificate_certificate_provider.is_some()
        || common
            .tls_certificate_certificate_provider_instance
            .is_some()
}
