//! Localities (`region/zone/subzone`) of proxies and endpoints, as Istio reads and matches them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::registry::Endpoint;

/// Istio's pod label naming the pod's locality, `region.zone.subzone` (labels cannot hold `/`).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// Any part may be empty (unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// `region/zone/subzone` (a WorkloadEntry's `locality`) or `region.zone.subzone` (the label);
    /// `None` when empty.
    pub fn parse(text: &str) -> Option<Locality> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let separator = if text.contains('/') { '/' } else { '.' };
        let mut parts = text.splitn(3, separator).map(str::to_string);
        Some(Locality {
            region: parts.next().unwrap_or_default(),
            zone: parts.next().unwrap_or_default(),
            subzone: parts.next().unwrap_or_default(),
        })
    }

    /// From a workload's labels (`istio-locality`).
    pub fn of_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
        labels.get(LOCALITY_LABEL).and_then(|l| Locality::parse(l))
    }

    /// Istio's locality match: `pattern` is `region[/zone[/subzone]]`, each part possibly `*`;
    /// parts left out match anything.
    pub fn matches(&self, pattern: &str) -> bool {
        let mut parts = pattern.split('/');
        for own in [&self.region, &self.zone, &self.subzone] {
            match parts.next() {
                None | Some("*") => return true,
                Some(p) if p == own => {}
                Some(_) => return false,
            }
        }
        true
    }

    /// How close an endpoint in `other` is to a proxy here: 0 same subzone, 1 same zone, 2 same
    /// region, 3 elsewhere (Istio's failover priorities).
    pub fn priority_of(&self, other: &Locality) -> u32 {
        if self.region != other.region {
            3
        } else if self.zone != other.zone {
            2
        } else if self.subzone != other.subzone {
            1
        } else {
            0
        }
    }
}

/// An endpoint's locality: its WorkloadEntry's `locality`, else its pod's `istio-locality` label.
pub fn endpoint_locality(e: &Endpoint) -> Option<Locality> {
    e.locality
        .as_deref()
        .and_then(Locality::parse)
        .or_else(|| Locality::of_labels(&e.labels))
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.region, self.zone, self.subzone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localities_parse_from_labels_and_entries_and_match_patterns() {
        let l = Locality::parse("us-east.zone-a").unwrap();
        assert_eq!(l.to_string(), "us-east/zone-a/");
        assert_eq!(Locality::parse("us-east/zone-a/s1").unwrap().subzone, "s1");
        assert!(l.matches("us-east/*"));
        assert!(l.matches("us-east"));
        assert!(l.matches("*"));
        assert!(l.matches("us-east/zone-a"));
        assert!(!l.matches("us-east/zone-b"));
        assert!(!l.matches("us-west/*"));
        let near = Locality::parse("us-east/zone-a/s2").unwrap();
        assert_eq!(l.priority_of(&near), 1);
        assert_eq!(l.priority_of(&Locality::parse("us-west").unwrap()), 3);
    }
}
