//! istiod's debug types over ADS: what `istioctl proxy-status` (`istio.io/debug/syncz`) and
//! `istioctl proxy-config`/`proxy-status POD` (`istio.io/debug/config_dump`) ask a control plane
//! for on its xDS ports. The answers are built from the same per-proxy state `proxy-status`
//! shows; only a client the generator lets in ([`crate::Generator::debug_scope`]) gets them, and
//! only for the proxies its scope covers.

use std::time::{SystemTime, UNIX_EPOCH};

use meshd_proto::pack;
use meshd_proto::pb::envoy::admin::v3::{
    BootstrapConfigDump, ClustersConfigDump, EcdsConfigDump, ListenersConfigDump, RoutesConfigDump,
    ScopedRoutesConfigDump, SecretsConfigDump, UpdateFailureState,
    clusters_config_dump::DynamicCluster,
    listeners_config_dump::{DynamicListener, DynamicListenerState},
    routes_config_dump::DynamicRouteConfig,
    secrets_config_dump::DynamicSecret,
};
use meshd_proto::pb::envoy::config::core::v3::data_source::Specifier;
use meshd_proto::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryResponse;
use meshd_proto::pb::envoy::service::status::v3::{
    ClientConfig, ConfigStatus, client_config::GenericXdsConfig,
};
use meshd_proto::pb::google::protobuf::{Struct, Timestamp, Value, value::Kind};
use meshd_proto::type_url;

use crate::{Any, Node, ProxyStatus, SyncState, TypeStatus};

/// What every debug type URL starts with.
pub const DEBUG_PREFIX: &str = "istio.io/debug/";
/// Every connected proxy's sync state, one `envoy.service.status.v3.ClientConfig` each.
pub const SYNCZ: &str = "istio.io/debug/syncz";
/// The config one proxy (the request's only resource name, `POD.NAMESPACE`) was sent, as the
/// `envoy.admin.v3` config dump sections Envoy's admin `/config_dump` prints.
pub const CONFIG_DUMP: &str = "istio.io/debug/config_dump";

/// Whose proxies a debug client may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DebugScope {
    /// Every proxy (a caller from the mesh's root namespace).
    All,
    /// Only proxies of this namespace.
    Namespace(String),
}

impl DebugScope {
    fn covers(&self, status: &ProxyStatus) -> bool {
        match self {
            DebugScope::All => true,
            DebugScope::Namespace(ns) => proxy_namespace(&status.node).as_deref() == Some(ns),
        }
    }
}

/// The resources of a debug response for `type_url` (empty for a type or proxy it does not know,
/// as istiod answers).
pub(crate) fn resources(
    statuses: Vec<ProxyStatus>,
    scope: &DebugScope,
    type_url: &str,
    names: &[String],
) -> Vec<Any> {
    match type_url {
        SYNCZ => {
            let mut statuses: Vec<ProxyStatus> =
                statuses.into_iter().filter(|s| scope.covers(s)).collect();
            statuses.sort_by(|a, b| a.node.id.cmp(&b.node.id));
            statuses.iter().map(|s| pack(&client_config(s))).collect()
        }
        CONFIG_DUMP => {
            let [name] = names else {
                return Vec::new();
            };
            statuses
                .into_iter()
                .filter(|s| proxy_id(&s.node.id) == name || s.node.id == *name)
                .filter(|s| scope.covers(s))
                // A proxy briefly connected twice: the newer stream is the one that counts.
                .max_by_key(|s| s.connected_at)
                .map(|s| config_dump(&s))
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// A debug response as istiod sends it: the control plane's identity only with `syncz`.
pub(crate) fn response(
    type_url: &str,
    resources: Vec<Any>,
    nonce: String,
    control_plane: Option<&str>,
) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos().to_string())
            .unwrap_or_default(),
        resources,
        type_url: type_url.to_owned(),
        nonce,
        control_plane: control_plane
            .filter(|_| type_url == SYNCZ)
            .map(
                |identifier| meshd_proto::pb::envoy::config::core::v3::ControlPlane {
                    identifier: identifier.to_owned(),
                },
            ),
        ..Default::default()
    }
}

/// `POD.NAMESPACE` of an Istio node id (`TYPE~IP~POD.NAMESPACE~DOMAIN`), as istiod names proxies.
pub fn proxy_id(node_id: &str) -> &str {
    node_id.split('~').nth(2).unwrap_or(node_id)
}

/// The proxy's namespace: the node's `NAMESPACE` metadata, else the one its id's domain names.
fn proxy_namespace(node: &Node) -> Option<String> {
    metadata_string(node, "NAMESPACE").or_else(|| {
        let domain = node.id.split('~').nth(3)?;
        domain.split('.').next().map(str::to_owned)
    })
}

fn metadata_string(node: &Node, key: &str) -> Option<String> {
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn string(value: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(value)),
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// One proxy's entry of `syncz`: its node (id; cluster, namespace and version metadata, which
/// `istioctl proxy-status` prints) and a status per type it asked for.
fn client_config(status: &ProxyStatus) -> ClientConfig {
    let mut metadata = Struct::default();
    let cluster =
        metadata_string(&status.node, "CLUSTER_ID").unwrap_or_else(|| "Kubernetes".into());
    metadata.fields.insert("CLUSTER_ID".into(), string(cluster));
    if let Some(ns) = proxy_namespace(&status.node) {
        metadata.fields.insert("NAMESPACE".into(), string(ns));
    }
    if let Some(version) = metadata_string(&status.node, "ISTIO_VERSION") {
        metadata
            .fields
            .insert("ISTIO_VERSION".into(), string(version));
    }
    // `types` is keyed by type URL, so the configs come out sorted by it, as istiod sorts them.
    let generic_xds_configs = status
        .types
        .iter()
        .map(|(type_url, t)| GenericXdsConfig {
            type_url: type_url.clone(),
            version_info: t.sent_version.clone(),
            last_updated: t.last_sent.map(timestamp),
            config_status: config_status(t) as i32,
            error_state: t.nack.as_ref().map(|nack| UpdateFailureState {
                last_update_attempt: t.last_sent.map(timestamp),
                details: nack.message.clone(),
                version_info: nack.version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ClientConfig {
        node: Some(Node {
            id: status.node.id.clone(),
            metadata: Some(metadata),
            ..Default::default()
        }),
        generic_xds_configs,
        ..Default::default()
    }
}

fn config_status(t: &TypeStatus) -> ConfigStatus {
    match t.state() {
        SyncState::Synced => ConfigStatus::Synced,
        SyncState::Stale => ConfigStatus::Stale,
        SyncState::Nacked => ConfigStatus::Error,
        SyncState::NotSent => ConfigStatus::NotSent,
    }
}

/// The sections of Envoy's `/config_dump` istiod answers with (endpoints left out, as istiod
/// leaves them out to match Envoy's default dump), from what the proxy was last sent.
fn config_dump(status: &ProxyStatus) -> Vec<Any> {
    let sent = |type_url: &str| -> Vec<(String, String, Any)> {
        let Some(t) = status.types.get(type_url) else {
            return Vec::new();
        };
        t.resources
            .values()
            // A Delta client's declared resources the server never sent: nothing to show.
            .filter(|r| r.encoded_len() > 0)
            .map(|r| (r.name().to_owned(), r.version_info(), r.body()))
            .collect()
    };
    let version = |type_url: &str| {
        status
            .types
            .get(type_url)
            .map(|t| t.sent_version.clone())
            .unwrap_or_default()
    };
    let clusters = ClustersConfigDump {
        version_info: version(type_url::CLUSTER),
        dynamic_active_clusters: sent(type_url::CLUSTER)
            .into_iter()
            .map(|(_, version_info, cluster)| DynamicCluster {
                version_info,
                cluster: Some(cluster),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let listeners = ListenersConfigDump {
        version_info: version(type_url::LISTENER),
        dynamic_listeners: sent(type_url::LISTENER)
            .into_iter()
            .map(|(name, version_info, listener)| DynamicListener {
                name,
                active_state: Some(DynamicListenerState {
                    version_info,
                    listener: Some(listener),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let routes = RoutesConfigDump {
        dynamic_route_configs: sent(type_url::ROUTE)
            .into_iter()
            .map(|(_, version_info, route_config)| DynamicRouteConfig {
                version_info,
                route_config: Some(route_config),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let secrets = SecretsConfigDump {
        dynamic_active_secrets: sent(type_url::SECRET)
            .into_iter()
            .map(|(name, version_info, secret)| DynamicSecret {
                name,
                version_info,
                secret: Some(redacted(secret)),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    vec![
        pack(&BootstrapConfigDump::default()),
        pack(&clusters),
        pack(&listeners),
        pack(&ScopedRoutesConfigDump::default()),
        pack(&routes),
        pack(&secrets),
        pack(&EcdsConfigDump::default()),
    ]
}

/// A secret with its private key replaced as Envoy's own config dump replaces it: keys never
/// leave the control plane, whoever asks.
fn redacted(body: Any) -> Any {
    let Some(mut secret) = meshd_proto::unpack::<Secret>(&body) else {
        return body;
    };
    if let Some(secret::Type::TlsCertificate(cert)) = &mut secret.r#type
        && cert.private_key.is_some()
    {
        cert.private_key = Some(meshd_proto::pb::envoy::config::core::v3::DataSource {
            specifier: Some(Specifier::InlineString("[redacted]".into())),
            ..Default::default()
        });
    }
    pack(&secret)
}

#[cfg(test)]
mod tests;
