//! Localities (`region/zone/subzone`) of proxies and endpoints, as Istio reads and matches them.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Istio's pod label naming the pod's locality, `region.zone.subzone` (labels cannot hold `/`).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// Kubernetes' topology labels on a Node (and their deprecated beta names), and Istio's subzone.
const REGION_LABELS: [&str; 2] = [
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/region",
];
const ZONE_LABELS: [&str; 2] = [
    "topology.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/zone",
];
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

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

    /// Where a Node is, from its topology labels; `None` when it has none.
    pub fn of_node_labels(labels: &BTreeMap<String, String>) -> Option<Locality> {
        let first = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| labels.get(*k))
                .cloned()
                .unwrap_or_default()
        };
        let locality = Locality {
            region: first(&REGION_LABELS),
            zone: first(&ZONE_LABELS),
            subzone: first(&[SUBZONE_LABEL]),
        };
        (locality != Locality::default()).then_some(locality)
    }

    /// A pod's locality as istiod finds it: its `istio-locality` label, else its Node's (from
    /// [`Locality::of_node_labels`]).
    pub fn of_pod(labels: &BTreeMap<String, String>, node: Option<&Locality>) -> Option<Locality> {
        Locality::of_labels(labels).or_else(|| node.cloned())
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
        let node: BTreeMap<String, String> = [
            ("topology.kubernetes.io/region", "eu"),
            ("failure-domain.beta.kubernetes.io/zone", "eu-1b"),
            ("kubernetes.io/hostname", "n1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            Locality::of_node_labels(&node).unwrap().to_string(),
            "eu/eu-1b/"
        );
        assert_eq!(Locality::of_node_labels(&BTreeMap::new()), None);
        // The pod's own label wins over its Node's.
        let pod: BTreeMap<String, String> =
            [("istio-locality".to_owned(), "us.a".to_owned())].into();
        assert_eq!(
            Locality::of_pod(&pod, Locality::of_node_labels(&node).as_ref())
                .unwrap()
                .to_string(),
            "us/a/"
        );
        assert_eq!(
            Locality::of_pod(&BTreeMap::new(), Locality::of_node_labels(&node).as_ref())
                .unwrap()
                .zone,
            "eu-1b"
        );
        let near = Locality::parse("us-east/zone-a/s2").unwrap();
        assert_eq!(l.priority_of(&near), 1);
        assert_eq!(l.priority_of(&Locality::parse("us-west").unwrap()), 3);
    }
}
