//! The proxy a request comes from, as its Envoy node describes it.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum NodeType {
    Sidecar,
    Router,
}

/// A connected proxy. Built from the node id (`sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`) and
/// its metadata; identity-bearing fields are checked against the registry before they are trusted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Proxy {
    pub id: String,
    pub node_type: NodeType,
    pub ip: String,
    pub pod_name: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub service_account: Option<String>,
    /// The proxy holds a mesh certificate (it came over the TLS port with a proven identity), so it
    /// can originate and terminate mesh mTLS.
    pub mtls: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} is not <sidecar|router>~<ip>~<pod>.<namespace>~<domain>")]
pub struct InvalidNodeId(pub String);

impl Proxy {
    pub fn from_node_id(id: &str) -> Result<Proxy, InvalidNodeId> {
        let bad = || InvalidNodeId(id.to_string());
        let mut parts = id.split('~');
        let node_type = match parts.next() {
            Some("sidecar") => NodeType::Sidecar,
            Some("router") => NodeType::Router,
            _ => return Err(bad()),
        };
        let ip = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(bad)?
            .to_string();
        let pod_ns = parts.next().ok_or_else(bad)?;
        let (pod_name, namespace) = pod_ns.rsplit_once('.').ok_or_else(bad)?;
        if pod_name.is_empty() || namespace.is_empty() || parts.next().is_none() {
            return Err(bad());
        }
        Ok(Proxy {
            id: id.to_string(),
            node_type,
            ip,
            pod_name: pod_name.to_string(),
            namespace: namespace.to_string(),
            labels: BTreeMap::new(),
            service_account: None,
            mtls: false,
        })
    }

    /// `POD.NAMESPACE`, the short id `proxy-status` prints.
    pub fn short_id(&self) -> String {
        format!("{}.{}", self.pod_name, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_parses_like_istio() {
        let p = Proxy::from_node_id(
            "sidecar~10.1.2.3~productpage-v1-abc.bookinfo~bookinfo.svc.cluster.local",
        )
        .unwrap();
        assert_eq!(p.node_type, NodeType::Sidecar);
        assert_eq!(p.ip, "10.1.2.3");
        assert_eq!(p.pod_name, "productpage-v1-abc");
        assert_eq!(p.namespace, "bookinfo");
        assert_eq!(p.short_id(), "productpage-v1-abc.bookinfo");
    }

    #[test]
    fn malformed_node_ids_are_refused() {
        for id in [
            "",
            "sidecar",
            "gateway~1.2.3.4~a.b~c",
            "sidecar~~a.b~c",
            "sidecar~1.2.3.4~nodot~c",
        ] {
            assert!(Proxy::from_node_id(id).is_err(), "{id}");
        }
    }
}
