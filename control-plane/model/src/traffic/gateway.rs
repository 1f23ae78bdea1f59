//! Gateway validation as istiod does it: servers, their ports, hosts and TLS settings. A
//! Secret a server names that does not exist yet is a warning: it may still be created.

use std::collections::{BTreeMap, BTreeSet};

use crate::finding::{Checks, Finding};
use crate::input::networking::{Gateway, Server, ServerTls};
use crate::object::{Kind, Object, ObjectKey};
use crate::syntax;

use super::{GatewayModel, key_of};

/// The Gateway validator's helpers.
#[derive(Debug)]
struct GatewayRules;

type Check<'a> = Checks<'a, GatewayRules>;

const TLS_MODES: [&str; 5] = [
    "SIMPLE",
    "MUTUAL",
    "PASSTHROUGH",
    "AUTO_PASSTHROUGH",
    "ISTIO_MUTUAL",
];

fn is_http(protocol: &str) -> bool {
    ["HTTP", "HTTP2", "GRPC", "GRPC-WEB", "HTTP_PROXY"]
        .iter()
        .any(|p| p.eq_ignore_ascii_case(protocol))
}

fn is_tls(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("HTTPS") || protocol.eq_ignore_ascii_case("TLS")
}

impl Check<'_> {
    fn server(&mut self, s: &Server, at: &str, objects: &BTreeMap<ObjectKey, Object>) {
        if s.hosts.is_empty() {
            self.error(
                &format!("{at}.hosts"),
                "server config must contain at least one host".to_string(),
            );
        }
        for (j, h) in s.hosts.iter().enumerate() {
            if let Err(e) = syntax::namespace_slash_host(h, true) {
                self.error(&format!("{at}.hosts[{j}]"), e);
            }
        }
        let protocol = &s.port.protocol;
        let protocol_ok = syntax::protocol(protocol).is_ok();
        if !protocol_ok {
            self.error(
                &format!("{at}.port.protocol"),
                format!(
                    "invalid protocol {protocol:?}, supported protocols are HTTP, HTTP2, GRPC, \
                     GRPC-WEB, MONGO, REDIS, MYSQL, TCP"
                ),
            );
        }
        if let Err(e) = syntax::port(u64::from(s.port.number)) {
            self.error(&format!("{at}.port.number"), e);
        }
        if s.port.name.is_empty() {
            self.error(
                &format!("{at}.port.name"),
                "port name must be set".to_string(),
            );
        }
        if let Some(tls) = &s.tls
            && (is_tls(protocol) || tls.mode.is_some())
        {
            self.tls(tls, &format!("{at}.tls"), objects);
        }
        if !protocol_ok {
            return;
        }
        match &s.tls {
            None if is_tls(protocol) => self.error(
                &format!("{at}.tls"),
                "server must have TLS settings for HTTPS/TLS protocols".to_string(),
            ),
            Some(tls) if !is_tls(protocol) => {
                // Only an https redirect may be set on a plain-text HTTP server; istiod reads
                // an unset mode as PASSTHROUGH there.
                let redirect_only = matches!(
                    tls.mode.as_deref(),
                    None | Some("PASSTHROUGH" | "AUTO_PASSTHROUGH")
                ) && tls.credential_name.is_none()
                    && tls.server_certificate.is_none()
                    && tls.private_key.is_none()
                    && tls.ca_certificates.is_none();
                if !is_http(protocol) {
                    self.error(
                        &format!("{at}.tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports".to_string(),
                    );
                } else if !redirect_only {
                    self.error(
                        &format!("{at}.tls"),
                        "server cannot have TLS settings for plain text HTTP ports".to_string(),
                    );
                }
            }
            _ => {}
        }
        if s.tls.as_ref().is_some_and(|t| t.https_redirect) && !is_http(protocol) {
            self.warning(
                &format!("{at}.tls.httpsRedirect"),
                "tls.httpsRedirect should only be used with http servers".to_string(),
            );
        }
    }

    /// Server TLS: a known mode, and certificates from one source (a Secret in the gateway's
    /// namespace, or files) where the mode needs them.
    fn tls(&mut self, tls: &ServerTls, at: &str, objects: &BTreeMap<ObjectKey, Object>) {
        let mode = tls.mode.as_deref().unwrap_or("SIMPLE");
        if !TLS_MODES.contains(&mode) {
            self.error(
                &format!("{at}.mode"),
                format!("unknown TLS mode {mode:?} ({})", TLS_MODES.join(", ")),
            );
            return;
        }
        let files = [
            (&tls.server_certificate, "serverCertificate"),
            (&tls.private_key, "privateKey"),
            (&tls.ca_certificates, "caCertificates"),
            (&tls.credential_name, "credentialName"),
        ];
        match mode {
            "ISTIO_MUTUAL" => {
                for (value, name) in files {
                    if value.is_some() {
                        self.error(
                            &format!("{at}.{name}"),
                            format!("ISTIO_MUTUAL TLS cannot have associated {name}"),
                        );
                    }
                }
                return;
            }
            "PASSTHROUGH" | "AUTO_PASSTHROUGH" => {
                if files.iter().any(|(v, _)| v.is_some()) {
                    self.warning(
                        at,
                        format!("{mode} mode does not use certificates, they will be ignored"),
                    );
                }
                return;
            }
            _ => {}
        }
        let pair = tls.server_certificate.is_some() && tls.private_key.is_some();
        if pair && tls.credential_name.is_some() {
            self.error(
                at,
                "only one of credential_name, server_certificate/private_key should be specified"
                    .to_string(),
            );
        }
        if let Some(name) = &tls.credential_name {
            let key = self.key;
            let secret = ObjectKey::new(Kind::Secret, key.namespace.clone(), name.clone());
            if !objects.contains_key(&secret) {
                self.warn(
                    "IST0101",
                    &format!("{at}.credentialName"),
                    format!(
                        "referenced credential not found: Secret {}/{name}",
                        key.namespace
                    ),
                );
            }
            return;
        }
        let prefix = if mode == "MUTUAL" {
            "MUTUAL TLS"
        } else {
            "SIMPLE TLS"
        };
        if mode == "MUTUAL" && tls.ca_certificates.is_none() {
            self.error(
                &format!("{at}.caCertificates"),
                format!("{prefix} requires a client CA bundle"),
            );
        }
        if tls.server_certificate.is_none() {
            self.error(
                &format!("{at}.serverCertificate"),
                format!("{prefix} requires a server certificate"),
            );
        }
        if tls.private_key.is_none() {
            self.error(
                &format!("{at}.privateKey"),
                format!("{prefix} requires a private key"),
            );
        }
    }
}

pub(super) fn validate_gateway(
    gw: &Gateway,
    objects: &BTreeMap<ObjectKey, Object>,
    findings: &mut Vec<Finding>,
) -> Option<GatewayModel> {
    validate_as(key_of(Kind::Gateway, &gw.metadata), gw, objects, findings)
}

/// Validates `gw` as the object `key` says it came from (a Gateway API Gateway's servers).
pub(crate) fn validate_as(
    key: ObjectKey,
    gw: &Gateway,
    objects: &BTreeMap<ObjectKey, Object>,
    findings: &mut Vec<Finding>,
) -> Option<GatewayModel> {
    let mut check = Check::new(&key);
    if !syntax::is_dns1123_label(&key.name) {
        check.error(
            "metadata.name",
            format!("invalid gateway name: {:?}", key.name),
        );
    }
    if gw.spec.servers.is_empty() {
        check.error(
            "spec.servers",
            "gateway must have at least one server".to_string(),
        );
    }
    let mut names = BTreeSet::new();
    for (i, s) in gw.spec.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        check.server(s, &at, objects);
        if !names.insert(s.port.name.as_str()) {
            check.error(
                &format!("{at}.port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    s.port.name
                ),
            );
        }
    }
    if !check.finish(findings) {
        return None;
    }
    Some(GatewayModel {
        key,
        selector: gw.spec.selector.clone(),
        servers: gw.spec.servers.clone(),
    })
}
