//! Telemetry validation as istiod does it (`ValidateTelemetry`): the selector, provider references,
//! sampling, custom tags, access-log filters and metrics overrides; and the analyzers' findings about Telemetries that
//! compete for the same workloads (IST0160).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::finding::{Checks, Finding, REFERENCED_NOT_FOUND, SCHEMA_ERROR, Severity};
use crate::input::labels_match;
use crate::input::telemetry::{
    CustomTag, MetricSelector, Metrics, ModeSelector, ProviderRef, TagOverride as InputTagOverride,
    Telemetry,
};
use crate::mesh_config::MeshConfig;
use crate::object::{Kind, ObjectKey};
use crate::registry::Registry;
use crate::syntax;

use super::{
    AccessLoggingRule, IstioMetric, MetricMatch, MetricsOverride, MetricsRule, TagOverride,
    TelemetryModel, TracingRule, WorkloadMode,
};

/// Istio's analyzer code for several namespace-wide Telemetries in one namespace.
pub const MULTIPLE_WITHOUT_SELECTOR: &str = "IST0160";
/// Istio's analyzer code for access logging that names no provider while the mesh has no
/// default one: it logs nothing.
pub const INVALID_PROVIDER: &str = "IST0157";

/// The Telemetry validator's helpers.
#[derive(Debug)]
struct TelemetryRules;

type Check<'a> = Checks<'a, TelemetryRules>;

impl Check<'_> {
    fn mode(&mut self, selector: Option<&ModeSelector>, at: &str) -> WorkloadMode {
        self.mode_named(selector.map(|s| s.mode.as_str()).unwrap_or_default(), at)
    }

    fn mode_named(&mut self, mode: &str, at: &str) -> WorkloadMode {
        match mode {
            "" | "CLIENT_AND_SERVER" => WorkloadMode::ClientAndServer,
            "CLIENT" => WorkloadMode::Client,
            "SERVER" => WorkloadMode::Server,
            other => {
                self.error(
                    &format!("{at}.match.mode"),
                    format!("unknown mode {other:?} (CLIENT_AND_SERVER, CLIENT, SERVER)"),
                );
                WorkloadMode::ClientAndServer
            }
        }
    }

    /// `validateTelemetryProviders`: every reference names a provider.
    fn providers(&mut self, providers: &[ProviderRef], at: &str) -> Vec<String> {
        for (i, p) in providers.iter().enumerate() {
            if p.name.is_empty() {
                self.error(
                    &format!("{at}.providers[{i}].name"),
                    "providers.name may not be empty".to_string(),
                );
            }
        }
        providers.iter().map(|p| p.name.clone()).collect()
    }

    /// `validatePolicyTargetReference`: a name, and no other namespace.
    fn target_ref(&mut self, target: &serde_json::Value, at: &str) {
        let field = |k: &str| target.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if field("name").is_empty() {
            self.error(
                &format!("{at}.name"),
                "targetRef name must be set".to_string(),
            );
        }
        if !field("namespace").is_empty() {
            self.error(
                &format!("{at}.namespace"),
                "targetRef namespace must not be set; cross namespace referencing is not supported"
                    .to_string(),
            );
        }
    }

    /// `validateTelemetryMetrics` (provider names, tag overrides), and what the CRD's schema
    /// refuses (metric names, modes).
    fn metrics(&mut self, metrics: &Metrics, at: &str) -> MetricsRule {
        self.unknown_fields(at, &metrics.unknown);
        let providers = self.providers(&metrics.providers, at);
        if let Some(interval) = &metrics.reporting_interval {
            let field = format!("{at}.reportingInterval");
            match crate::duration::parse(interval) {
                Err(e) => self.error(&field, e),
                Ok(_) => self.warning(
                    &field,
                    "reportingInterval is not applied by meshd: TCP bytes are counted when a \
                     connection closes"
                        .to_string(),
                ),
            }
        }
        let mut overrides = Vec::new();
        for (i, o) in metrics.overrides.iter().enumerate() {
            let at = format!("{at}.overrides[{i}]");
            let Some(o) = o else {
                self.error(&at, "tagOverrides may not be null".to_string());
                continue;
            };
            self.unknown_fields(&at, &o.unknown);
            let selector = o.matches.clone().unwrap_or_default();
            self.unknown_fields(&format!("{at}.match"), &selector.unknown);
            let mode = self.mode_named(&selector.mode, &at);
            let metric = self.metric_match(&selector, &at);
            let tags = self.tag_overrides(&o.tag_overrides, &at);
            overrides.push(MetricsOverride {
                metric,
                mode,
                disabled: o.disabled,
                tags,
            });
        }
        MetricsRule {
            providers,
            overrides,
        }
    }

    fn metric_match(&mut self, selector: &MetricSelector, at: &str) -> MetricMatch {
        match (&selector.metric, &selector.custom_metric) {
            (Some(_), Some(_)) => {
                self.error(
                    &format!("{at}.match"),
                    "only one of metric or customMetric may be set".to_string(),
                );
                MetricMatch::All
            }
            (_, Some(custom)) if custom.is_empty() => {
                self.error(
                    &format!("{at}.match.customMetric"),
                    "customMetric may not be empty".to_string(),
                );
                MetricMatch::All
            }
            (_, Some(custom)) => {
                self.warning(
                    &format!("{at}.match.customMetric"),
                    format!(
                        "custom metric {custom:?} is not reported by meshd: only Istio's \
                         standard metrics are"
                    ),
                );
                MetricMatch::Custom(custom.clone())
            }
            (None, None) => MetricMatch::All,
            (Some(name), None) if name == "ALL_METRICS" => MetricMatch::All,
            (Some(name), None) => match IstioMetric::from_api_name(name) {
                Some(m) => MetricMatch::Istio(m),
                None => {
                    let known: Vec<&str> = IstioMetric::ALL.iter().map(|m| m.api_name()).collect();
                    self.error(
                        &format!("{at}.match.metric"),
                        format!(
                            "unknown metric {name:?} (ALL_METRICS, {})",
                            known.join(", ")
                        ),
                    );
                    MetricMatch::All
                }
            },
        }
    }

    fn tag_overrides(
        &mut self,
        tags: &BTreeMap<String, Option<InputTagOverride>>,
        at: &str,
    ) -> BTreeMap<String, TagOverride> {
        let mut out = BTreeMap::new();
        for (name, tag) in tags {
            let field = format!("{at}.tagOverrides.{name}");
            let Some(tag) = tag else {
                self.error(&field, "tagOverrides may not be null".to_string());
                continue;
            };
            self.unknown_fields(&field, &tag.unknown);
            let value = tag.value.clone().unwrap_or_default();
            match tag.operation.as_deref().unwrap_or("UPSERT") {
                "UPSERT" if value.is_empty() => self.error(
                    &format!("{field}.value"),
                    "tagOverrides.value must be set when operation is UPSERT".to_string(),
                ),
                "UPSERT" => {
                    self.warning(
                        &field,
                        format!(
                            "UPSERT is not applied by meshd: label {name:?} is neither \
                             added nor changed (REMOVE is applied)"
                        ),
                    );
                    out.insert(name.clone(), TagOverride::Upsert(value));
                }
                "REMOVE" if !value.is_empty() => self.error(
                    &format!("{field}.value"),
                    "tagOverrides.value may only be set when operation is UPSERT".to_string(),
                ),
                "REMOVE" => {
                    out.insert(name.clone(), TagOverride::Remove);
                }
                other => self.error(
                    &format!("{field}.operation"),
                    format!("unknown operation {other:?} (UPSERT, REMOVE)"),
                ),
            }
        }
        out
    }

    fn custom_tags(
        &mut self,
        tags: &BTreeMap<String, Option<CustomTag>>,
        at: &str,
    ) -> BTreeMap<String, CustomTag> {
        let mut out = BTreeMap::new();
        for (name, tag) in tags {
            let field = format!("{at}.customTags.{name}");
            if name.is_empty() {
                self.error(&field, "tag name may not be empty".to_string());
            }
            let Some(tag) = tag else {
                self.error(&field, format!("tag '{name}' may not have a nil value"));
                continue;
            };
            let set = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ];
            if set.iter().filter(|s| **s).count() > 1 {
                self.error(
                    &field,
                    "only one of literal, environment, header or formatter may be set".to_string(),
                );
            }
            if tag.literal.as_ref().is_some_and(|l| l.value.is_empty()) {
                self.error(
                    &format!("{field}.literal.value"),
                    "literal tag value may not be empty".to_string(),
                );
            }
            if let Some(h) = &tag.header {
                if h.name.is_empty() {
                    self.error(
                        &format!("{field}.header.name"),
                        "header tag name may not be empty".to_string(),
                    );
                } else if h.name.contains(['\0', '\r', '\n']) {
                    // Envoy's HTTP_HEADER_NAME rule refuses these (istiod does not look).
                    self.error(
                        &format!("{field}.header.name"),
                        format!("{:?} is not a valid header name", h.name),
                    );
                }
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                self.error(
                    &format!("{field}.environment.name"),
                    "environment tag name may not be empty".to_string(),
                );
            }
            if let Some(f) = &tag.formatter {
                let problem = if f.value.is_empty() {
                    Some("formatter tag value may not be empty".to_string())
                } else {
                    syntax::envoy_format::problem(&f.value)
                };
                if let Some(problem) = problem {
                    self.error(&format!("{field}.formatter.value"), problem);
                }
            }
            out.insert(name.clone(), tag.clone());
        }
        out
    }
}

pub(super) fn validate(
    telemetry: &Telemetry,
    findings: &mut Vec<Finding>,
) -> Option<TelemetryModel> {
    let key = ObjectKey::new(
        Kind::Telemetry,
        telemetry.metadata.namespace.clone().unwrap_or_default(),
        telemetry.metadata.name.clone(),
    );
    let mut check = Check::new(&key);
    let spec = &telemetry.spec;
    check.unknown_fields("spec", &spec.unknown);
    let targeted = spec.target_ref.is_some() || !spec.target_refs.is_empty();
    let selectors = [
        spec.selector.is_some(),
        spec.target_ref.is_some(),
        !spec.target_refs.is_empty(),
    ];
    if selectors.iter().filter(|s| **s).count() > 1 {
        check.error(
            "spec",
            "only one of targetRefs or workloadSelector can be set".to_string(),
        );
    }
    if let Some(selector) = &spec.selector {
        if let Err(e) = syntax::selector(&selector.labels) {
            check.error("spec.selector.matchLabels", e);
        }
        if selector.labels.is_empty() {
            check.warning(
                "spec.selector",
                "workload selector specified without labels".to_string(),
            );
        }
    }
    let refs = spec
        .target_ref
        .iter()
        .map(|r| ("spec.targetRef".to_string(), r))
        .chain(
            spec.target_refs
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("spec.targetRefs[{i}]"), r)),
        );
    let mut gateways = Vec::new();
    for (at, target) in refs {
        check.target_ref(target, &at);
        let field = |k: &str| target.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if field("group") == crate::object::GATEWAY_API_GROUP && field("kind") == "Gateway" {
            gateways.push(field("name").to_string());
        } else {
            check.warning(
                &at,
                format!(
                    "targetRef attaches the Telemetry to a {} (a waypoint), which meshd does not \
                     serve; only Gateway API Gateways are",
                    field("kind")
                ),
            );
        }
    }

    let mut access_logging = Vec::new();
    for (i, rule) in spec.access_logging.iter().enumerate() {
        let at = format!("spec.accessLogging[{i}]");
        check.unknown_fields(&at, &rule.unknown);
        let mode = check.mode(rule.matches.as_ref(), &at);
        let providers = check.providers(&rule.providers, &at);
        let filter = rule.filter.as_ref().map(|f| f.expression.clone());
        if let Some(expression) = &filter
            && let Err(e) = syntax::cel::parse(expression)
        {
            check.error(
                &format!("{at}.filter.expression"),
                format!("must be a valid CEL expression, {e}"),
            );
        }
        access_logging.push(AccessLoggingRule {
            mode,
            providers,
            disabled: rule.disabled,
            filter,
        });
    }

    if spec.tracing.len() > 1 {
        check.warning(
            "spec.tracing",
            "multiple tracing is not currently supported".to_string(),
        );
    }
    let mut tracing = Vec::new();
    for (i, rule) in spec.tracing.iter().enumerate() {
        let at = format!("spec.tracing[{i}]");
        check.unknown_fields(&at, &rule.unknown);
        let mode = check.mode(rule.matches.as_ref(), &at);
        if rule.providers.len() > 1 {
            check.warning(
                &format!("{at}.providers"),
                "multiple providers is not currently supported".to_string(),
            );
        }
        let providers = check.providers(&rule.providers, &at);
        if let Some(p) = rule.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            check.error(
                &format!("{at}.randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]".to_string(),
            );
        }
        let custom_tags = rule
            .custom_tags
            .as_ref()
            .map(|tags| check.custom_tags(tags, &at));
        tracing.push(TracingRule {
            mode,
            providers,
            random_sampling_percentage: rule.random_sampling_percentage,
            disable_span_reporting: rule.disable_span_reporting,
            custom_tags,
            use_request_id_for_trace_sampling: rule.use_request_id_for_trace_sampling,
            enable_istio_tags: rule.enable_istio_tags,
            disable_context_propagation: rule.disable_context_propagation,
        });
    }

    let metrics = spec
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| check.metrics(m, &format!("spec.metrics[{i}]")))
        .collect();

    if !check.finish(findings) {
        return None;
    }
    Some(TelemetryModel {
        key,
        selector: spec
            .selector
            .as_ref()
            .map(|s| s.labels.clone())
            .filter(|l| !l.is_empty()),
        targeted,
        gateways,
        access_logging,
        tracing,
        metrics,
    })
}

/// Istio's analyzer: more than one namespace-wide Telemetry in a namespace leaves it undefined
/// which applies (meshd takes the first by name).
pub(super) fn conflicts(telemetries: &[Arc<TelemetryModel>]) -> Vec<Finding> {
    let mut by_namespace: BTreeMap<&str, Vec<&TelemetryModel>> = BTreeMap::new();
    for t in telemetries
        .iter()
        .filter(|t| t.selector.is_none() && !t.targeted)
    {
        by_namespace.entry(&t.key.namespace).or_default().push(t);
    }
    let mut findings = Vec::new();
    for (namespace, list) in by_namespace.into_iter().filter(|(_, l)| l.len() > 1) {
        let names: Vec<&str> = list.iter().map(|t| t.key.name.as_str()).collect();
        for t in &list {
            findings.push(Finding::new(
                Severity::Error,
                MULTIPLE_WITHOUT_SELECTOR,
                &t.key,
                "spec.selector",
                format!(
                    "The Telemetries {names:?} in namespace {namespace:?} have no workload \
                     selector, which can lead to undefined behavior."
                ),
            ));
        }
    }
    findings
}

/// What Istio's analyzers say about accepted Telemetries' references: a selector that matches no
/// pod (IST0101), access logging without providers where the mesh has no default (IST0157); and,
/// beyond them, providers the mesh config does not define (istiod ignores them silently).
pub(super) fn references(
    telemetries: &[Arc<TelemetryModel>],
    mesh: &MeshConfig,
    registry: &Registry,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let warn = |t: &TelemetryModel, code, field: &str, message: String| {
        Finding::new(Severity::Warning, code, &t.key, field, message)
    };
    for t in telemetries {
        if let Some(selector) = &t.selector {
            let selects = registry
                .pods
                .values()
                .any(|p| p.namespace == t.key.namespace && labels_match(selector, &p.labels));
            if !selects {
                let labels: Vec<String> =
                    selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                findings.push(warn(
                    t,
                    REFERENCED_NOT_FOUND,
                    "spec.selector",
                    format!("Referenced selector not found: \"{}\"", labels.join(",")),
                ));
            }
        }
        if mesh.default_providers.access_logging.is_empty()
            && t.access_logging
                .iter()
                .any(|l| l.disabled != Some(true) && l.providers.is_empty())
        {
            findings.push(warn(
                t,
                INVALID_PROVIDER,
                "spec.accessLogging",
                format!(
                    "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                    t.key.name, t.key.namespace
                ),
            ));
        }
        let named = t
            .access_logging
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.providers
                    .iter()
                    .map(move |p| (format!("spec.accessLogging[{i}]"), p))
            })
            .chain(t.tracing.iter().enumerate().flat_map(|(i, r)| {
                r.providers
                    .iter()
                    .map(move |p| (format!("spec.tracing[{i}]"), p))
            }));
        let metrics = t.metrics.iter().enumerate().flat_map(|(i, r)| {
            r.providers
                .iter()
                .map(move |p| (format!("spec.metrics[{i}]"), p))
        });
        for (at, provider) in metrics.clone() {
            if mesh.provider(provider).is_some_and(|p| !p.is_prometheus()) {
                findings.push(warn(
                    t,
                    SCHEMA_ERROR,
                    &format!("{at}.providers"),
                    format!(
                        "provider {provider:?} is not a prometheus provider: meshd reports \
                         metrics only through prometheus providers, so it reports none for it"
                    ),
                ));
            }
        }
        for (at, provider) in named.chain(metrics) {
            if mesh.provider(provider).is_none() {
                findings.push(warn(
                    t,
                    REFERENCED_NOT_FOUND,
                    &format!("{at}.providers"),
                    format!(
                        "provider {provider:?} is not among the mesh config's extensionProviders; \
                         it is ignored"
                    ),
                ));
            }
        }
    }
    findings
}
