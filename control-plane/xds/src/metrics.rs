//! The ADS server's metrics, under istiod's names so existing dashboards keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// istiod's buckets for `pilot_proxy_convergence_time`, with finer ones below 100 ms.
const CONVERGENCE_BUCKETS: [f64; 11] =
    [0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];
const PUSH_TIME_BUCKETS: [f64; 10] = [0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 30.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    connected: Gauge,
    pushes: Family<TypeLabel, Counter>,
    total_rejects: Counter,
    cds_rejects: Counter,
    eds_rejects: Counter,
    lds_rejects: Counter,
    rds_rejects: Counter,
    sds_rejects: Counter,
    expired_nonce: Family<TypeLabel, Counter>,
    convergence: Histogram,
    push_time: Histogram,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let metrics = Self {
            connected: Gauge::default(),
            pushes: Family::default(),
            total_rejects: Counter::default(),
            cds_rejects: Counter::default(),
            eds_rejects: Counter::default(),
            lds_rejects: Counter::default(),
            rds_rejects: Counter::default(),
            sds_rejects: Counter::default(),
            expired_nonce: Family::default(),
            convergence: Histogram::new(CONVERGENCE_BUCKETS),
            push_time: Histogram::new(PUSH_TIME_BUCKETS),
        };
        registry.register(
            "pilot_xds",
            "Number of endpoints connected to this pilot using XDS",
            metrics.connected.clone(),
        );
        registry.register(
            "pilot_xds_pushes",
            "Pilot build and send errors for lds, rds, cds and eds",
            metrics.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Total number of XDS responses from pilot rejected by proxy",
            metrics.total_rejects.clone(),
        );
        for (name, counter) in [
            ("pilot_xds_cds_reject", &metrics.cds_rejects),
            ("pilot_xds_eds_reject", &metrics.eds_rejects),
            ("pilot_xds_lds_reject", &metrics.lds_rejects),
            ("pilot_xds_rds_reject", &metrics.rds_rejects),
            ("pilot_xds_sds_reject", &metrics.sds_rejects),
        ] {
            registry.register(name, "Pilot rejected xDS responses", counter.clone());
        }
        registry.register(
            "pilot_xds_expired_nonce",
            "Total number of XDS requests with an expired nonce",
            metrics.expired_nonce.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Delay in seconds between config change and a proxy receiving all required configuration",
            metrics.convergence.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Total time in seconds Pilot takes to push lds, rds, cds and eds",
            metrics.push_time.clone(),
        );
        metrics
    }

    pub(crate) fn connected(&self) {
        self.connected.inc();
    }

    pub(crate) fn disconnected(&self) {
        self.connected.dec();
    }

    pub(crate) fn pushed(&self, type_url: &str) {
        self.pushes
            .get_or_create(&TypeLabel {
                r#type: label(type_url),
            })
            .inc();
    }

    pub(crate) fn rejected(&self, type_url: &str) {
        self.total_rejects.inc();
        let counter = match type_url {
            CLUSTER => &self.cds_rejects,
            ENDPOINT => &self.eds_rejects,
            LISTENER => &self.lds_rejects,
            ROUTE => &self.rds_rejects,
            SECRET => &self.sds_rejects,
            _ => return,
        };
        counter.inc();
    }

    pub(crate) fn expired_nonce(&self, type_url: &str) {
        self.expired_nonce
            .get_or_create(&TypeLabel {
                r#type: label(type_url),
            })
            .inc();
    }

    pub(crate) fn converged(&self, seconds: f64) {
        self.convergence.observe(seconds);
    }

    pub(crate) fn push_time(&self, seconds: f64) {
        self.push_time.observe(seconds);
    }
}

/// istiod's metric label for a type URL.
fn label(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER => "cds",
        ENDPOINT => "eds",
        LISTENER => "lds",
        ROUTE => "rds",
        SECRET => "sds",
        _ => "other",
    }
}
