//! The debug HTTP API: readiness, metrics, and what every proxy was sent and said about it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshd_proto::type_url;
use meshd_xds::{ProxyStatus, SyncState};
use serde_json::{Value, json};

use super::generator::MeshGenerator;
use super::publish::Status;
use crate::documents::invalid_object_json;

/// What the debug API reads.
pub struct Shared {
    pub generator: Arc<MeshGenerator>,
    pub ads: meshd_xds::AdsServer<crate::metrics::Metered<MeshGenerator>>,
    pub status: Arc<Status>,
    pub registry: prometheus_client::registry::Registry,
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/version", get(version))
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/registryz", get(registryz))
        .route("/debug/configz", get(configz))
        .with_state(shared)
}

async fn ready(State(s): State<Arc<Shared>>) -> Response {
    if s.status.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "sources not synced\n").into_response()
    }
}

/// istiod's build info shape; Kiali and `meshd version` read the version from it.
async fn version() -> Response {
    let version = env!("CARGO_PKG_VERSION");
    axum::Json(json!({"version": version, "revision": "", "golang_version": "", "status": "Clean", "tag": version}))
        .into_response()
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    match crate::metrics::render(&s.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub fn state_name(state: SyncState) -> &'static str {
    match state {
        SyncState::Synced => "SYNCED",
        SyncState::Stale => "STALE",
        SyncState::Nacked => "NACKED",
        SyncState::NotSent => "NOT SENT",
    }
}

fn short_id(node_id: &str) -> String {
    meshd_model::Proxy::from_node_id(node_id)
        .map(|p| p.short_id())
        .unwrap_or_else(|_| node_id.to_string())
}

fn sync_entry(p: &ProxyStatus) -> Value {
    let mut types = serde_json::Map::new();
    for t in type_url::PUSH_ORDER {
        let status = p.types.get(t).cloned().unwrap_or_default();
        types.insert(
            type_url::short(t).to_string(),
            json!({
                "state": state_name(status.state()),
                "sent_version": status.sent_version,
                "acked_version": status.acked_version,
                "nack": status.nack.as_ref().map(|n| n.message.clone()),
                "resources": status.resources.len(),
            }),
        );
    }
    let metadata_string = |key: &str| -> Option<String> {
        let meta = p.node.metadata.as_ref()?;
        match meta.fields.get(key)?.kind.as_ref()? {
            meshd_proto::pb::google::protobuf::value::Kind::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    };
    let mut entry = json!({
        "proxy": short_id(&p.node.id),
        "node_id": p.node.id,
        "connection_id": p.connection_id,
        "cluster_id": metadata_string("CLUSTER_ID").unwrap_or_else(|| "Kubernetes".to_string()),
        "proxy_type": p.node.id.split('~').next().unwrap_or_default(),
        "proxy_version": metadata_string("ISTIO_VERSION"),
        "istio_version": metadata_string("ISTIO_VERSION"),
        "envoy_version": envoy_version(&p.node),
        "remote_addr": p.remote_addr.map(|a| a.to_string()),
        "delta": p.delta,
        "types": types,
        "control_plane": format!("meshd-{}", env!("CARGO_PKG_VERSION")),
    });
    // istiod's own fields (what Kiali reads): the nonce last sent and last ACKed per type,
    // left out when empty as istiod leaves them out.
    for (t, field) in [
        (type_url::CLUSTER, "cluster"),
        (type_url::LISTENER, "listener"),
        (type_url::ROUTE, "route"),
        (type_url::ENDPOINT, "endpoint"),
    ] {
        let Some(status) = p.types.get(t) else {
            continue;
        };
        for (suffix, nonce) in [("sent", &status.sent_nonce), ("acked", &status.acked_nonce)] {
            if !nonce.is_empty() {
                entry[format!("{field}_{suffix}")] = json!(nonce);
            }
        }
    }
    entry
}

/// The Envoy build a proxy reports in its node (`user_agent_build_version`), as `1.40.0`.
fn envoy_version(node: &meshd_xds::Node) -> Option<String> {
    use meshd_proto::pb::envoy::config::core::v3::node::UserAgentVersionType;
    match node.user_agent_version_type.as_ref()? {
        UserAgentVersionType::UserAgentBuildVersion(build) => {
            let v = build.version.as_ref()?;
            Some(format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
        }
        UserAgentVersionType::UserAgentVersion(v) => Some(v.clone()),
    }
}

async fn syncz(State(s): State<Arc<Shared>>) -> Response {
    let mut statuses = s.ads.statuses();
    statuses.sort_by(|a, b| a.node.id.cmp(&b.node.id));
    axum::Json(Value::Array(statuses.iter().map(sync_entry).collect())).into_response()
}

/// Finds a connected proxy by `POD.NAMESPACE`, full node id or connection id; the newest connection
/// wins when a proxy is briefly connected twice.
pub fn find_proxy(statuses: Vec<ProxyStatus>, id: &str) -> Option<ProxyStatus> {
    statuses
        .into_iter()
        .filter(|p| p.node.id == id || p.connection_id == id || short_id(&p.node.id) == id)
        .max_by_key(|p| p.connected_at)
}

async fn config_dump(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(id) = q.get("proxyID") else {
        return (StatusCode::BAD_REQUEST, "proxyID is required\n").into_response();
    };
    let Some(p) = find_proxy(s.ads.statuses(), id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("proxy {id} is not connected\n"),
        )
            .into_response();
    };
    let mut out = serde_json::Map::new();
    out.insert("proxy".into(), json!(p.node.id));
    for (t, key) in [
        (type_url::CLUSTER, "clusters"),
        (type_url::ENDPOINT, "endpoints"),
        (type_url::LISTENER, "listeners"),
        (type_url::ROUTE, "routes"),
        (type_url::SECRET, "secrets"),
    ] {
        let list: Vec<Value> = p
            .types
            .get(t)
            .map(|status| {
                status
                    .resources
                    .values()
                    .map(|r| {
                        let mut body = meshd_proto::json::any_to_json(&r.body())
                            .unwrap_or_else(|e| json!({"error": e.to_string()}));
                        redact_private_key(&mut body);
                        json!({"name": r.name(), "version": r.version_info(), "resource": body})
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(key.into(), Value::Array(list));
    }
    axum::Json(Value::Object(out)).into_response()
}

/// Keys never leave meshd through the debug API, whoever asks; certificates are summarised.
fn redact_private_key(secret: &mut Value) {
    if let Some(key) = secret
        .get_mut("tls_certificate")
        .and_then(|t| t.get_mut("private_key"))
    {
        *key = json!({"inline_string": "[redacted]"});
    }
    let pem = secret
        .pointer("/tls_certificate/certificate_chain/inline_string")
        .or_else(|| secret.pointer("/validation_context/trusted_ca/inline_string"))
        .and_then(|p| p.as_str())
        .map(String::from);
    if let (Some(pem), Value::Object(map)) = (pem, secret) {
        let certs: Vec<Value> = meshd_ca::describe_pem(&pem)
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let now = std::time::SystemTime::now();
                json!({
                    "serial": c.serial, "subject": c.subject, "issuer": c.issuer, "uri_sans": c.uri_sans,
                    "not_before": crate::rfc3339::format(c.not_before), "not_after": crate::rfc3339::format(c.not_after),
                    "valid": c.not_before <= now && now < c.not_after,
                })
            })
            .collect();
        map.insert("certificates".to_string(), Value::Array(certs));
    }
}

async fn registryz(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.generator.snapshot();
    let services: Vec<Value> = snap
        .registry
        .services
        .values()
        .map(|svc| {
            let ports: Vec<Value> = svc
                .ports
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name, "port": p.port, "protocol": p.protocol.name(),
                        "endpoints": snap.registry.endpoints(&svc.hostname, p.port),
                    })
                })
                .collect();
            json!({
                "hostname": svc.hostname, "namespace": svc.namespace, "source": svc.source.to_string(),
                "addresses": svc.addresses, "resolution": svc.resolution, "mesh_external": svc.mesh_external,
                "ports": ports,
            })
        })
        .collect();
    axum::Json(json!({"version": snap.version, "services": services})).into_response()
}

async fn configz(State(s): State<Arc<Shared>>) -> Response {
    let snap = s.generator.snapshot();
    let objects: Vec<Value> = snap
        .objects
        .iter()
        // Display qualifies the Gateway API's `Gateway`, which shares its name with Istio's.
        .map(|(k, o)| json!({"kind": k.kind.to_string(), "namespace": k.namespace, "name": k.name, "object": o}))
        .collect();
    let errors: Vec<Value> = s.status.invalid().iter().map(invalid_object_json).collect();
    let findings: Vec<Value> = snap.findings.iter().map(|f| json!(f)).collect();
    axum::Json(json!({"version": snap.version, "mesh": snap.mesh, "objects": objects, "errors": errors, "findings": findings})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_entry_carries_istiods_fields_for_kiali() {
        let mut types = std::collections::BTreeMap::new();
        let sent = |nonce: &str, acked: &str| meshd_xds::TypeStatus {
            sent_nonce: nonce.into(),
            acked_nonce: acked.into(),
            ..Default::default()
        };
        types.insert(type_url::CLUSTER.to_owned(), sent("4", "4"));
        types.insert(type_url::LISTENER.to_owned(), sent("5", ""));
        let status = ProxyStatus {
            connection_id: "c1".into(),
            node: meshd_xds::Node {
                id: "router~10.0.0.9~gw-1.istio-system~istio-system.svc.cluster.local".into(),
                ..Default::default()
            },
            remote_addr: None,
            delta: false,
            connected_at: std::time::SystemTime::now(),
            types,
        };
        let entry = sync_entry(&status);
        assert_eq!(entry["proxy"], "gw-1.istio-system");
        assert_eq!(entry["proxy_type"], "router");
        assert_eq!(entry["cluster_id"], "Kubernetes");
        assert_eq!(
            (&entry["cluster_sent"], &entry["cluster_acked"]),
            (&json!("4"), &json!("4"))
        );
        assert_eq!(entry["listener_sent"], "5");
        // Nothing ACKed, nothing asked: left out, as istiod leaves them out.
        assert!(entry.get("listener_acked").is_none());
        assert!(entry.get("route_sent").is_none());
        assert_eq!(entry["types"]["LDS"]["state"], "STALE");
    }
}
