//! Proving who a proxy is before it gets a certificate. A node id is a claim; only what the
//! connection itself shows is evidence.

use std::net::SocketAddr;

use meshd_ca::Identity;
use meshd_model::{Proxy, Snapshot};

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
