//! SDS secrets of clusters that Envoy initializes at startup (every type but EDS) become static
//! secrets of the validation bootstrap. In validate mode Envoy crashes (SIGSEGV, Envoy 1.40) on a
//! static cluster whose TLS context waits for SDS over ADS — a proxy gets those clusters over CDS
//! and their secrets over SDS, which validate mode cannot model — so their secret references are
//! pointed at static secrets of the same names, built from the campaign's certificate files.
//! Everything else in the cluster stays as meshd made it.

use std::collections::BTreeMap;

use meshd_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use meshd_proto::pb::envoy::config::core::v3::{DataSource, TransportSocket, data_source};
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, TlsCertificate,
    UpstreamTlsContext, common_tls_context, secret,
};
use meshd_proto::{pack, unpack};

use super::atoms::{CA_FILE, CERT_DIR, CERT_FILE, KEY_FILE};

fn file(name: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(format!(
            "{CERT_DIR}/{name}"
        ))),
        ..Default::default()
    })
}

fn certificate_secret(name: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: file(CERT_FILE),
            private_key: file(KEY_FILE),
            ..Default::default()
        })),
    }
}

fn validation_secret(name: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: file(CA_FILE),
                ..Default::default()
            },
        )),
    }
}

/// `config` without its SDS source: a reference to the static secret of its name.
fn to_static(config: &mut SdsSecretConfig) {
    config.sds_config = None;
}

fn localize(context: &mut CommonTlsContext, secrets: &mut BTreeMap<String, Secret>) {
    for config in &mut context.tls_certificate_sds_secret_configs {
        if config.sds_config.is_some() {
            secrets
                .entry(config.name.clone())
                .or_insert_with(|| certificate_secret(&config.name));
            to_static(config);
        }
    }
    let validation = match &mut context.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(c)) => {
            Some(c)
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
            c.validation_context_sds_secret_config.as_mut()
        }
        _ => None,
    };
    if let Some(config) = validation.filter(|c| c.sds_config.is_some()) {
        secrets
            .entry(config.name.clone())
            .or_insert_with(|| validation_secret(&config.name));
        to_static(config);
    }
}

fn localize_socket(socket: &mut TransportSocket, secrets: &mut BTreeMap<String, Secret>) {
    let Some(meshd_proto::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = &mut socket.config_type
    else {
        return;
    };
    let Some(mut tls) = unpack::<UpstreamTlsContext>(any) else {
        return;
    };
    if let Some(context) = tls.common_tls_context.as_mut() {
        localize(context, secrets);
    }
    *any = pack(&tls);
}

/// Points `cluster`'s SDS references at static secrets (added to `secrets`) when Envoy would
/// initialize it at startup.
pub fn localize_cluster(cluster: &mut Cluster, secrets: &mut BTreeMap<String, Secret>) {
    let eds = matches!(
        cluster.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(t)) if t == cluster::DiscoveryType::Eds as i32
    );
    if eds {
        return;
    }
    if let Some(socket) = cluster.transport_socket.as_mut() {
        localize_socket(socket, secrets);
    }
    for m in &mut cluster.transport_socket_matches {
        if let Some(socket) = m.transport_socket.as_mut() {
            localize_socket(socket, secrets);
        }
    }
}
