//! Proving who a proxy is before it gets a certificate. A node id is a claim; only what the
//! connection itself shows is evidence.

use std::net::SocketAddr;
use std::sync::Arc;

use meshd_ca::Identity;
use meshd_model::{Proxy, Snapshot};

use meshd_kube::{ReviewError, ReviewedToken, TokenReviewer};
use meshd_xds::{ConnectionInfo, DebugScope};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("pod {0} is not known to the control plane")]
    UnknownPod(String),
    #[error("pod {pod} has no IP yet")]
    NoPodIp { pod: String },
    #[error("connection from {remote} does not come from pod {pod}'s address {pod_ip}")]
    WrongAddress {
        pod: String,
        pod_ip: String,
        remote: String,
    },
    #[error("no source address on the connection")]
    NoRemoteAddress,
    #[error("{0}")]
    Token(#[from] ReviewError),
    #[error("token of {token} does not belong to namespace {namespace} of pod {pod}")]
    WrongNamespace {
        pod: String,
        namespace: String,
        token: String,
    },
    #[error("pod {pod} runs as service account {pod_sa}, the token is {token}'s")]
    WrongServiceAccount {
        pod: String,
        pod_sa: String,
        token: String,
    },
    #[error("the token was issued for pod {token_pod}, not {pod}")]
    WrongPod { pod: String, token_pod: String },
}

/// How proxies on the TLS port prove who they are.
pub enum IdentityProof {
    /// File source: the connection's source address is the pod's IP.
    Address,
    /// Kubernetes source: a service-account token, reviewed by the API server.
    Token(Arc<TokenReviewer>),
}

impl IdentityProof {
    /// Who the proxy on this connection is, as far as the connection shows it.
    pub fn prove(
        &self,
        snapshot: &Snapshot,
        proxy: &Proxy,
        conn: &ConnectionInfo,
    ) -> Result<Identity, IdentityError> {
        match self {
            IdentityProof::Address => prove_by_address(snapshot, proxy, conn.remote_addr),
            IdentityProof::Token(reviewer) => {
                let bearer = meshd_kube::bearer(
                    conn.metadata
                        .get("authorization")
                        .and_then(|v| v.to_str().ok()),
                );
                prove_by_token(snapshot, proxy, reviewer.lookup(bearer))
            }
        }
    }
}

impl IdentityProof {
    /// Who may read the `istio.io/debug/` types over xDS (istioctl's `proxy-status` and
    /// `proxy-config`), as istiod decides it: only over TLS with a service-account token the API
    /// server vouches for; a caller from the root namespace reads every proxy, any other only the
    /// proxies of its own namespace. The file source has no tokens, so no debug client proves
    /// anything there (its debug HTTP port serves the same answers).
    pub fn debug_scope(
        &self,
        root_namespace: &str,
        conn: &ConnectionInfo,
    ) -> Result<DebugScope, tonic::Status> {
        let IdentityProof::Token(reviewer) = self else {
            return Err(tonic::Status::unauthenticated(
                "debug requests over xDS need the Kubernetes source: a service-account token shows who asks",
            ));
        };
        if !conn.secure {
            return Err(tonic::Status::unauthenticated(
                "authentication required: send debug requests over the TLS xDS port with a service-account token",
            ));
        }
        let bearer = meshd_kube::bearer(
            conn.metadata
                .get("authorization")
                .and_then(|v| v.to_str().ok()),
        );
        match reviewer.lookup(bearer) {
            Ok(who) if who.namespace == root_namespace => Ok(DebugScope::All),
            Ok(who) => Ok(DebugScope::Namespace(who.namespace)),
            Err(ReviewError::Unavailable(e)) => Err(tonic::Status::unavailable(format!(
                "token review unavailable: {e}"
            ))),
            Err(e) => Err(tonic::Status::unauthenticated(e.to_string())),
        }
    }
}

/// Kubernetes source: the token (reviewed by the API server) names a service account; the proxy
/// must be a Pod known to the control plane, in the token's namespace, running as that service
/// account — and, for a pod-bound token, the very pod it was issued for.
pub fn prove_by_token(
    snapshot: &Snapshot,
    proxy: &Proxy,
    reviewed: Result<ReviewedToken, ReviewError>,
) -> Result<Identity, IdentityError> {
    let who = reviewed?;
    let pod_name = proxy.short_id();
    let token = format!(
        "system:serviceaccount:{}:{}",
        who.namespace, who.service_account
    );
    if who.namespace != proxy.namespace {
        return Err(IdentityError::WrongNamespace {
            pod: pod_name,
            namespace: proxy.namespace.clone(),
            token,
        });
    }
    let pod = snapshot
        .pod(&proxy.namespace, &proxy.pod_name)
        .ok_or_else(|| IdentityError::UnknownPod(pod_name.clone()))?;
    if pod.service_account != who.service_account {
        return Err(IdentityError::WrongServiceAccount {
            pod: pod_name,
            pod_sa: pod.service_account.clone(),
            token,
        });
    }
    if let Some(bound) = &who.pod_name
        && *bound != pod.name
    {
        return Err(IdentityError::WrongPod {
            pod: pod_name,
            token_pod: bound.clone(),
        });
    }
    Ok(Identity::new(
        &snapshot.mesh.trust_domain,
        &pod.namespace,
        &pod.service_account,
    ))
}

/// File source: the connection must come from the IP of the Pod the node names, and the identity
/// is that Pod's service account — whatever the node's metadata says.
pub fn prove_by_address(
    snapshot: &Snapshot,
    proxy: &Proxy,
    remote: Option<SocketAddr>,
) -> Result<Identity, IdentityError> {
    let pod_name = proxy.short_id();
    let pod = snapshot
        .pod(&proxy.namespace, &proxy.pod_name)
        .ok_or_else(|| IdentityError::UnknownPod(pod_name.clone()))?;
    let pod_ip = pod.ip.clone().ok_or_else(|| IdentityError::NoPodIp {
        pod: pod_name.clone(),
    })?;
    let remote = remote.ok_or(IdentityError::NoRemoteAddress)?;
    // IPv4 peers may show up as IPv4-mapped IPv6 on dual-stack sockets.
    let remote_ip = match remote.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(remote.ip()),
        ip => ip,
    };
    if remote_ip.to_string() != pod_ip {
        return Err(IdentityError::WrongAddress {
            pod: pod_name,
            pod_ip,
            remote: remote_ip.to_string(),
        });
    }
    Ok(Identity::new(
        &snapshot.mesh.trust_domain,
        &pod.namespace,
        &pod.service_account,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn mk_snapshot() -> Snapshot {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: sleep, namespace: apps}\nspec: {serviceAccountName: sleeper}\nstatus: {podIP: 10.0.0.7}\n";
        let (objects, errors) = meshd_model::documents::parse(text, false);
        assert!(errors.is_empty());
        let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
        Snapshot::build(1, Arc::new(objects), Arc::default())
    }

    fn mk_proxy(pod: &str) -> Proxy {
        Proxy::from_node_id(&format!(
            "sidecar~10.0.0.7~{pod}.apps~apps.svc.cluster.local"
        ))
        .unwrap()
    }

    #[test]
    fn a_connection_from_the_pods_ip_proves_its_service_account() {
        let id = prove_by_address(
            &mk_snapshot(),
            &mk_proxy("sleep"),
            Some("10.0.0.7:40000".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/apps/sa/sleeper");
    }

    fn mk_token(ns: &str, sa: &str, pod: Option<&str>) -> Result<ReviewedToken, ReviewError> {
        Ok(ReviewedToken {
            namespace: ns.into(),
            service_account: sa.into(),
            pod_name: pod.map(str::to_string),
        })
    }

    #[test]
    fn a_token_of_the_pods_service_account_proves_it() {
        let snapshot = mk_snapshot();
        let proxy = mk_proxy("sleep");
        let id = prove_by_token(&snapshot, &proxy, mk_token("apps", "sleeper", None)).unwrap();
        assert_eq!(id.uri(), "spiffe://cluster.local/ns/apps/sa/sleeper");
        let id = prove_by_token(
            &snapshot,
            &proxy,
            mk_token("apps", "sleeper", Some("sleep")),
        );
        assert!(id.is_ok());
    }

    #[test]
    fn a_token_of_another_account_pod_or_namespace_proves_nothing() {
        let snapshot = mk_snapshot();
        let proxy = mk_proxy("sleep");
        let err = |t| prove_by_token(&snapshot, &proxy, t).unwrap_err();
        assert!(matches!(
            err(mk_token("apps", "other", None)),
            IdentityError::WrongServiceAccount { .. }
        ));
        assert!(matches!(
            err(mk_token("elsewhere", "sleeper", None)),
            IdentityError::WrongNamespace { .. }
        ));
        assert!(matches!(
            err(mk_token("apps", "sleeper", Some("sleep-2"))),
            IdentityError::WrongPod { .. }
        ));
        assert!(matches!(
            err(Err(ReviewError::Rejected("expired".into()))),
            IdentityError::Token(_)
        ));
        let unknown = prove_by_token(
            &snapshot,
            &mk_proxy("ghost"),
            mk_token("apps", "sleeper", None),
        );
        assert_eq!(
            unknown.unwrap_err(),
            IdentityError::UnknownPod("ghost.apps".into())
        );
    }

    #[test]
    fn a_connection_from_elsewhere_proves_nothing() {
        let err = prove_by_address(
            &mk_snapshot(),
            &mk_proxy("sleep"),
            Some("10.0.0.8:40000".parse().unwrap()),
        )
        .unwrap_err();
        assert!(matches!(err, IdentityError::WrongAddress { .. }), "{err}");
        let err = prove_by_address(
            &mk_snapshot(),
            &mk_proxy("other"),
            Some("10.0.0.7:1".parse().unwrap()),
        )
        .unwrap_err();
        assert_eq!(err, IdentityError::UnknownPod("other.apps".into()));
    }
}
