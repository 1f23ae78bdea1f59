//! SPIFFE identities as Istio lays them out: `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.

use std::fmt;
use std::str::FromStr;

use crate::CaError;

const SCHEME: &str = "spiffe://";

/// The SPIFFE id Istio gives a workload: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A workload identity: a service account in a namespace of a trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

impl Identity {
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn uri(&self) -> String {
        spiffe_id(&self.trust_domain, &self.namespace, &self.service_account)
    }

    /// Parses Istio's layout strictly: exactly `ns/<ns>/sa/<sa>` under a valid trust domain.
    pub fn parse(uri: &str) -> Result<Identity, CaError> {
        let invalid = |reason| CaError::InvalidIdentity {
            uri: uri.to_string(),
            reason,
        };
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| invalid("not a spiffe:// URI"))?;
        let mut parts = rest.split('/');
        let (Some(trust_domain), Some("ns"), Some(namespace), Some("sa"), Some(account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(invalid("path is not /ns/<namespace>/sa/<service-account>"));
        };
        if !valid_trust_domain(trust_domain) {
            return Err(invalid(
                "trust domain must be lower-case letters, digits, '.', '-' or '_'",
            ));
        }
        if !valid_segment(namespace) || !valid_segment(account) {
            return Err(invalid(
                "namespace and service account must be letters, digits, '.', '-' or '_'",
            ));
        }
        Ok(Identity::new(trust_domain, namespace, account))
    }
}

/// SPIFFE: a trust domain holds lower-case letters, digits, dots, dashes and underscores.
fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty()
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

/// SPIFFE: a path segment holds letters, digits, dots, dashes and underscores, and is not `.`/`..`.
fn valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

impl FromStr for Identity {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Identity::parse(s)
    }
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

    #[test]
    fn identity_round_trips_through_its_uri() {
        let id = Identity::new("cluster.local", "default", "bookinfo-productpage");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
        );
        assert_eq!(Identity::parse(&id.uri()).unwrap(), id);
        assert_eq!(id.uri().parse::<Identity>().unwrap(), id);
    }

    #[test]
    fn identities_outside_istio_layout_are_refused() {
        for uri in [
            "http://cluster.local/ns/default/sa/x",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/x/extra",
            "spiffe://cluster.local/sa/x/ns/default",
            "spiffe:///ns/default/sa/x",
            "spiffe://Cluster.Local/ns/default/sa/x",
            "spiffe://cluster.local/ns//sa/x",
            "spiffe://cluster.local/ns/../sa/x",
            "spiffe://cluster.local/ns/default/sa/x y",
        ] {
            assert!(Identity::parse(uri).is_err(), "{uri} should be refused");
        }
    }

    #[test]
    fn an_identity_built_from_parts_with_slashes_does_not_parse_back() {
        let id = Identity::new("cluster.local", "a/sa/b", "c");
        assert!(Identity::parse(&id.uri()).is_err());
    }
}
