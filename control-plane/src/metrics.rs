//! `/metrics` under istiod's exact names, so Istio's control-plane dashboard and alerts work
//! unchanged: istiod's counters carry no `_total` suffix (`pilot_xds_pushes`,
//! `citadel_server_csr_count`; istiod exports them with OpenTelemetry's `WithoutCounterSuffixes`),
//! and it reports `istio_build{component="pilot"}`, the Kubernetes events it saw
//! (`pilot_k8s_reg_events`, `pilot_k8s_cfg_events`) and the size of what it pushes
//! (`pilot_xds_config_size_bytes`).
//!
//! Metrics register with `prometheus-client` as everywhere else; only the text it renders is put
//! into Prometheus' classic format (0.0.4) here, where a counter's samples may be named as its
//! family is. meshd's own metrics (`meshd_*`) and istiod's `sidecar_injection_*_total` keep the
//! suffix.

mod kube_events;
mod metered;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use kube_events::KubeEvents;
pub use metered::Metered;

/// Families named as istiod names them: their counters lose the `_total` suffix.
const ISTIOD_FAMILIES: [&str; 3] = ["pilot_", "citadel_", "galley_"];

/// `text/plain; version=0.0.4`: the format [`render`] writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `registry` in Prometheus' text format with istiod's metric names.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut openmetrics = String::new();
    prometheus_client::encoding::text::encode(&mut openmetrics, registry)?;
    Ok(istiod_names(&openmetrics))
}

/// OpenMetrics text as Prometheus' classic text: no `# EOF`, `# UNIT` or `_created` lines, and
/// each counter's samples named as istiod names them (its family name for istiod's families,
/// `<family>_total` otherwise, with the `# HELP`/`# TYPE` lines to match).
fn istiod_names(openmetrics: &str) -> String {
    let counters: std::collections::BTreeSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let istiod = |family: &str| ISTIOD_FAMILIES.iter().any(|p| family.starts_with(p));
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)))
        {
            let (prefix, rest) = rest;
            let (family, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(family) && !istiod(family) {
                format!("{prefix}{family}_total {tail}")
            } else {
                line.to_string()
            }
        } else if line.starts_with('#') {
            line.to_string()
        } else {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let (name, tail) = line.split_at(end);
            match (name.strip_suffix("_total"), name.strip_suffix("_created")) {
                (Some(family), _) if counters.contains(family) && istiod(family) => {
                    format!("{family}{tail}")
                }
                (_, Some(family)) if counters.contains(family) => continue,
                _ => line.to_string(),
            }
        };
        out.push_str(&renamed);
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    component: &'static str,
    tag: &'static str,
}

/// `istio_build{component="pilot",tag}`: which version runs, as istiod reports it.
pub fn register_build_info(registry: &mut Registry) {
    let build: Family<BuildLabels, Gauge> = Family::default();
    build
        .get_or_create(&BuildLabels {
            component: "pilot",
            tag: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register("istio_build", "Istio component build info", build);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct TypeLabel {
        r#type: &'static str,
    }

    #[test]
    fn istiods_counters_lose_the_suffix_and_meshds_keep_it() {
        let mut registry = Registry::default();
        let pushes: Family<TypeLabel, Counter> = Family::default();
        pushes.get_or_create(&TypeLabel { r#type: "cds" }).inc();
        registry.register("pilot_xds_pushes", "pushes", pushes);
        let csr = Counter::<u64>::default();
        csr.inc_by(3);
        registry.register("citadel_server_csr_count", "CSRs", csr);
        registry.register(
            "meshd_rejected_resources",
            "held back",
            Counter::<u64>::default(),
        );
        registry.register(
            "sidecar_injection_requests",
            "injections",
            Counter::<u64>::default(),
        );
        let gauge = Gauge::<i64>::default();
        gauge.set(2);
        registry.register("pilot_xds", "connected", gauge);
        let histogram = Histogram::new([0.1, 1.0]);
        histogram.observe(0.5);
        registry.register("pilot_xds_push_time", "push time", histogram);
        register_build_info(&mut registry);

        let text = render(&registry).unwrap();
        for line in [
            "# TYPE pilot_xds_pushes counter",
            "pilot_xds_pushes{type=\"cds\"} 1",
            "citadel_server_csr_count 3",
            "# TYPE meshd_rejected_resources_total counter",
            "meshd_rejected_resources_total 0",
            "sidecar_injection_requests_total 0",
            "pilot_xds 2",
            "pilot_xds_push_time_bucket{le=\"1.0\"} 1",
            "pilot_xds_push_time_count 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("istio_build{") && l.contains("component=\"pilot\"")),
            "{text}"
        );
        assert!(!text.contains("pilot_xds_pushes_total"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
