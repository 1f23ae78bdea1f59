//! meshd's certificate authority. Workload certificates, SPIFFE identities and the
//! Istio certificate service land here; the crate is the home they grow into.

/// The SPIFFE id Istio gives a workload: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_id_follows_istio_layout() {
        assert_eq!(
            spiffe_id("cluster.local", "default", "bookinfo-productpage"),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
    }
}
