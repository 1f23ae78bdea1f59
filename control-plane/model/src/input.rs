//! The objects users write, as they write them: Kubernetes core/discovery kinds and Istio's
//! networking kinds, and the Kubernetes Gateway API. Only the fields meshd reads are typed; everything else is ignored.

pub mod gateway_api;
pub mod istio;
pub mod kube;
pub mod networking;
pub mod security;
pub mod telemetry;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.selector.matchLabels`-less selectors as Istio writes them: `{labels: {...}}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSelector {
    #[serde(default, rename = "labels", alias = "matchLabels")]
    pub labels: BTreeMap<String, String>,
}

/// True when every selector label is present with the same value.
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
