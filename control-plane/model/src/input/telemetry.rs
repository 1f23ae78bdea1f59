//! Istio's `Telemetry` (`telemetry.istio.io` v1 and v1alpha1 share one schema), as users write it:
//! which access loggers, tracers and metrics providers a workload, a namespace or (in the root
//! namespace) the whole mesh uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ObjectMeta, WorkloadSelector};
pub use crate::mesh_config::observability::{CustomTag, LiteralTag, NamedTag};

/// Names meshd does not know, kept so a misspelt field is reported instead of silently dropped
/// (a lost `disabled: true` would turn logging on where the user turned it off).
pub type UnknownFields = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Telemetry {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: TelemetrySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Waypoint and gateway attachment; kept only to tell that the object selects no sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<Tracing>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metrics>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<AccessLogging>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

/// A reference to an `extensionProviders` entry of the mesh config, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    #[serde(default)]
    pub name: String,
}

/// `match`: which side of a workload's traffic a rule is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeSelector {
    /// `CLIENT_AND_SERVER` (the default), `CLIENT` or `SERVER`.
    #[serde(default)]
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessLogging {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<ModeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AccessLogFilter>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

/// A CEL expression: only requests it is true for are logged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLogFilter {
    #[serde(default)]
    pub expression: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracing {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<ModeSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_sampling_percentage: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_span_reporting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_tags: Option<BTreeMap<String, Option<CustomTag>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_request_id_for_trace_sampling: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_istio_tags: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_context_propagation: Option<bool>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

/// `metrics`: which providers report Istio's standard metrics, and which metrics (or labels of
/// them) are turned off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderRef>,
    /// `null` entries are kept so they can be refused as istiod refuses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Option<MetricsOverrides>>,
    /// A Go duration (`15s`): how often long TCP connections are reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsOverrides {
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<MetricSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tag_overrides: BTreeMap<String, Option<TagOverride>>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

/// Which metrics an override is for: one of Istio's (`metric`, `ALL_METRICS` by default) or a
/// custom one by name, on which side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_metric: Option<String>,
    /// `CLIENT_AND_SERVER` (the default), `CLIENT` or `SERVER`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mode: String,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}

/// A label of a metric removed (`REMOVE`) or set to a CEL expression's value (`UPSERT`, the
/// default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(flatten, default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unknown: UnknownFields,
}
