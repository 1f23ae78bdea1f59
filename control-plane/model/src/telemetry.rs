//! Telemetry resources: which access loggers, tracer and metrics a workload's proxy uses, resolved
//! as istiod does. A proxy gets the namespace-wide Telemetry of the root namespace (mesh-wide), then the
//! namespace-wide one of its own namespace, then every Telemetry in its namespace whose `selector`
//! matches it; each later, more specific one overrides what it sets. Where no Telemetry (and no
//! `defaultProviders`) says anything, the mesh config's `accessLogFile` and `defaultConfig.tracing`
//! apply; metrics are on unless `defaultProviders.metrics` or a Telemetry turns them off
//! (`telemetry/metrics.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use crate::finding::Finding;
use crate::input::labels_match;
use crate::input::telemetry::CustomTag;
use crate::mesh_config::MeshConfig;
use crate::object::{Object, ObjectKey};
use crate::registry::Registry;

mod metrics;
mod validate;
pub use metrics::{
    IstioMetric, MetricLabels, MetricMatch, MetricsChoice, MetricsOverride, MetricsRule,
    SideMetrics, TagOverride,
};
use validate::validate;

/// Which side of a workload's traffic a rule is for: its own requests out (`CLIENT`: sidecar
/// outbound, gateways) or requests to it (`SERVER`: sidecar inbound).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub enum WorkloadMode {
    #[default]
    ClientAndServer,
    Client,
    Server,
}

impl WorkloadMode {
    /// A rule for `self` applies to traffic on `side` (`Client` or `Server`).
    fn covers(self, side: WorkloadMode) -> bool {
        self == WorkloadMode::ClientAndServer || self == side
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccessLoggingRule {
    pub mode: WorkloadMode,
    pub providers: Vec<String>,
    pub disabled: Option<bool>,
    /// A CEL expression; only requests it holds for are logged.
    pub filter: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TracingRule {
    pub mode: WorkloadMode,
    pub providers: Vec<String>,
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    pub custom_tags: Option<BTreeMap<String, CustomTag>>,
    pub use_request_id_for_trace_sampling: Option<bool>,
    pub enable_istio_tags: Option<bool>,
    pub disable_context_propagation: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TelemetryModel {
    pub key: ObjectKey,
    /// Workload labels it selects; `None` is namespace-wide (or mesh-wide in the root namespace).
    pub selector: Option<BTreeMap<String, String>>,
    /// Attached to waypoints or gateways by `targetRef(s)`: applies to no sidecar.
    pub targeted: bool,
    /// The Gateway API Gateways (in its namespace) it targets: it applies to their router
    /// proxies, as a selector of their `gateway.networking.k8s.io/gateway-name` would.
    pub gateways: Vec<String>,
    pub access_logging: Vec<AccessLoggingRule>,
    pub tracing: Vec<TracingRule>,
    pub metrics: Vec<MetricsRule>,
}

impl TelemetryModel {
    /// It selects a workload with `labels` in its namespace: by `selector`, or as the router of
    /// a Gateway it targets.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| labels_match(s, labels))
            || labels
                .get(crate::gateway_api::GATEWAY_NAME_LABEL)
                .is_some_and(|g| self.gateways.contains(g))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Telemetries {
    telemetries: Vec<Arc<TelemetryModel>>,
    root_namespace: String,
}

/// The Telemetries that apply to one workload, least specific first.
#[derive(Clone, Debug, Default)]
pub struct AppliedTelemetry<'a> {
    pub levels: Vec<&'a TelemetryModel>,
}

/// One access-log provider a proxy writes to (or, `disabled`, explicitly does not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggingChoice {
    pub provider: String,
    pub disabled: bool,
    pub filter: Option<String>,
}

/// The tracing of one side of a proxy's traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSpec {
    /// The extension provider to report to; `None` means none was found.
    pub provider: Option<String>,
    pub disabled: bool,
    pub random_sampling_percentage: Option<f64>,
    pub custom_tags: Option<BTreeMap<String, CustomTag>>,
    pub use_request_id_for_trace_sampling: bool,
    pub enable_istio_tags: bool,
    pub disable_context_propagation: bool,
}

impl Default for TracingSpec {
    fn default() -> Self {
        TracingSpec {
            provider: None,
            disabled: false,
            random_sampling_percentage: None,
            custom_tags: None,
            use_request_id_for_trace_sampling: true,
            enable_istio_tags: true,
            disable_context_propagation: false,
        }
    }
}

/// Tracing from Telemetry or `defaultProviders`, per side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TracingChoice {
    pub client: TracingSpec,
    pub server: TracingSpec,
}

impl Telemetries {
    /// Validates every Telemetry of `objects`; also reports what Istio's analyzers report about
    /// accepted ones (competing namespace-wide ones, selectors without workloads, providers the
    /// mesh config lacks).
    pub fn build(
        objects: &BTreeMap<ObjectKey, Object>,
        mesh: &MeshConfig,
        registry: &Registry,
        findings: &mut Vec<Finding>,
    ) -> Self {
        let telemetries: Vec<Arc<TelemetryModel>> = objects
            .values()
            .filter_map(|o| match o {
                Object::Telemetry(t) => validate(t, findings).map(Arc::new),
                _ => None,
            })
            .collect();
        findings.extend(validate::conflicts(&telemetries));
        findings.extend(validate::references(&telemetries, mesh, registry));
        Telemetries {
            telemetries,
            root_namespace: mesh.root_namespace.clone(),
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<TelemetryModel>> {
        self.telemetries.iter().find(|t| &t.key == key)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<TelemetryModel>> {
        self.telemetries.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.telemetries.is_empty()
    }

    /// The Telemetries that apply to a workload with `labels` in `namespace`: the mesh-wide one,
    /// the namespace-wide one, then every one whose selector matches (in name order). With several
    /// namespace-wide ones in a namespace (an IST0160 error), the first by name is used.
    pub fn for_workload(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> AppliedTelemetry<'_> {
        let namespace_wide = |ns: &str| {
            self.telemetries
                .iter()
                .find(|t| t.key.namespace == ns && t.selector.is_none() && !t.targeted)
                .map(Arc::as_ref)
        };
        let mut levels: Vec<&TelemetryModel> = Vec::new();
        levels.extend(namespace_wide(&self.root_namespace));
        if namespace != self.root_namespace {
            levels.extend(namespace_wide(namespace));
        }
        levels.extend(
            self.telemetries
                .iter()
                .filter(|t| t.key.namespace == namespace && t.selects(labels))
                .map(Arc::as_ref),
        );
        AppliedTelemetry { levels }
    }

    /// The selector-matched Telemetries of a workload: what, beyond its namespace, its config
    /// depends on.
    pub fn workload_keys(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<ObjectKey> {
        self.telemetries
            .iter()
            .filter(|t| t.key.namespace == namespace && t.selects(labels))
            .map(|t| t.key.clone())
            .collect()
    }
}

impl AppliedTelemetry<'_> {
    /// The access-log providers for `side` (`Client` or `Server`), as istiod merges them
    /// (`mergeLogs`). `None` when no Telemetry configures logging and the mesh has no default
    /// access-log provider: then the mesh config's `accessLogFile` decides. Providers the mesh
    /// config does not define are left out.
    pub fn access_logging(
        &self,
        mesh: &MeshConfig,
        side: WorkloadMode,
    ) -> Option<Vec<LoggingChoice>> {
        let levels: Vec<&[AccessLoggingRule]> = self
            .levels
            .iter()
            .map(|t| t.access_logging.as_slice())
            .filter(|rules| !rules.is_empty())
            .collect();
        let defaults = &mesh.default_providers.access_logging;
        if levels.is_empty() && defaults.is_empty() {
            return None;
        }
        let merged = merge_logs(&levels, defaults, side);
        Some(
            merged
                .into_iter()
                .filter(|(name, _)| mesh.provider(name).is_some())
                .map(|(provider, (disabled, filter))| LoggingChoice {
                    provider,
                    disabled,
                    filter,
                })
                .collect(),
        )
    }

    /// Tracing as Telemetry and `defaultProviders` set it (istiod's `Telemetries.Tracing`); `None`
    /// when neither says anything, and the mesh config's `defaultConfig.tracing` decides.
    pub fn tracing(&self, mesh: &MeshConfig) -> Option<TracingChoice> {
        let rules: Vec<&TracingRule> = self.levels.iter().flat_map(|t| &t.tracing).collect();
        let default_provider = mesh.default_providers.tracing.first();
        if rules.is_empty() && default_provider.is_none() {
            return None;
        }
        let found = |name: &String| mesh.provider(name).map(|p| p.name.clone());
        let mut choice = TracingChoice::default();
        if let Some(name) = default_provider {
            choice.client.provider = found(name);
            choice.server.provider = found(name);
        }
        for rule in rules {
            let specs: Vec<&mut TracingSpec> = match rule.mode {
                WorkloadMode::Client => vec![&mut choice.client],
                WorkloadMode::Server => vec![&mut choice.server],
                WorkloadMode::ClientAndServer => vec![&mut choice.client, &mut choice.server],
            };
            for spec in specs {
                if let Some(name) = rule.providers.first() {
                    spec.provider = found(name);
                }
                if let Some(v) = rule.disable_span_reporting {
                    spec.disabled = v;
                }
                if let Some(tags) = &rule.custom_tags {
                    spec.custom_tags = Some(tags.clone());
                }
                if let Some(v) = rule.random_sampling_percentage {
                    spec.random_sampling_percentage = Some(v);
                }
                if let Some(v) = rule.use_request_id_for_trace_sampling {
                    spec.use_request_id_for_trace_sampling = v;
                }
                if let Some(v) = rule.enable_istio_tags {
                    spec.enable_istio_tags = v;
                }
                if let Some(v) = rule.disable_context_propagation {
                    spec.disable_context_propagation = v;
                }
            }
        }
        for spec in [&mut choice.client, &mut choice.server] {
            if spec.provider.is_none() {
                spec.disabled = true;
            }
        }
        Some(choice)
    }

    /// Which of Istio's standard metrics each side reports (istiod's `mergeMetrics`), through
    /// the first `prometheus` provider in scope; with no Telemetry `metrics`, the mesh config's
    /// `defaultProviders.metrics` decide.
    pub fn metrics(&self, mesh: &MeshConfig) -> MetricsChoice {
        let rules: Vec<&MetricsRule> = self.levels.iter().flat_map(|t| &t.metrics).collect();
        metrics::merge(&rules, mesh)
    }
}

/// istiod's `mergeLogs`: the providers in scope are those the most specific level naming any
/// (for this side) names; each level's rules then enable, filter or disable them, a rule without
/// providers acting on its parent's. Value: (disabled, filter) per provider.
fn merge_logs(
    levels: &[&[AccessLoggingRule]],
    defaults: &[String],
    side: WorkloadMode,
) -> BTreeMap<String, (bool, Option<String>)> {
    let mut providers = BTreeMap::new();
    if levels.is_empty() {
        for p in defaults {
            providers.insert(p.clone(), (false, None));
        }
        return providers;
    }
    let mut in_scope: Vec<String> = defaults.to_vec();
    let mut filters: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for rules in levels {
        let mut names = BTreeSet::new();
        for rule in rules.iter().filter(|r| r.mode.covers(side)) {
            for p in &rule.providers {
                names.insert(p.clone());
                filters.insert(p, rule.filter.clone());
            }
        }
        if !names.is_empty() {
            in_scope = names.into_iter().collect();
        }
    }
    let mut parent: Vec<String> = defaults.to_vec();
    for rules in levels {
        for rule in rules.iter() {
            let names = if rule.providers.is_empty() {
                parent.clone()
            } else {
                rule.providers.clone()
            };
            parent.clone_from(&names);
            if !rule.mode.covers(side) {
                continue;
            }
            for p in names.iter().filter(|p| in_scope.contains(p)) {
                let spec = if rule.disabled == Some(true) {
                    (true, None)
                } else {
                    (false, filters.get(p.as_str()).cloned().flatten())
                };
                providers.insert(p.clone(), spec);
            }
        }
    }
    providers
}

#[cfg(test)]
mod tests;
