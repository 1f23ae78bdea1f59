//! `pilot_xds_config_size_bytes{type}`: the size of the config each push hands a proxy, measured
//! around the generator so neither the ADS server nor the generator carries the metric.

use std::sync::Arc;

use meshd_proto::type_url;
use meshd_xds::{ConnectionInfo, Generator, Nack, Names, Node, Resource, ResourceSet};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// istiod's buckets: 10 kB, 1 MB, the 4 MB gRPC default limit, 10 MB where config strains the
/// system, 40 MB as the upper bound of what works.
const BUCKETS: [f64; 6] = [
    1.0,
    10_000.0,
    1_000_000.0,
    4_000_000.0,
    10_000_000.0,
    40_000_000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    r#type: &'static str,
}

type Sizes = Family<TypeLabel, Histogram, fn() -> Histogram>;

/// A generator whose every answer is measured.
pub struct Metered<G> {
    inner: Arc<G>,
    sizes: Sizes,
}

impl<G> Metered<G> {
    pub fn new(inner: Arc<G>, registry: &mut Registry) -> Self {
        let sizes: Sizes = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "pilot_xds_config_size_bytes",
            "Distribution of configuration sizes pushed to clients",
            sizes.clone(),
        );
        Metered { inner, sizes }
    }
}

/// istiod's metric label for a type URL.
fn label(type_url: &str) -> &'static str {
    match type_url {
        type_url::CLUSTER => "cds",
        type_url::ENDPOINT => "eds",
        type_url::LISTENER => "lds",
        type_url::ROUTE => "rds",
        type_url::SECRET => "sds",
        _ => "other",
    }
}

impl<G: Generator> Generator for Metered<G> {
    type Proxy = G::Proxy;

    fn connect(&self, node: &Node, conn: &ConnectionInfo) -> Result<G::Proxy, tonic::Status> {
        self.inner.connect(node, conn)
    }

    fn generate(
        &self,
        proxy: &G::Proxy,
        type_url: &str,
        names: Option<&Names>,
    ) -> Vec<Arc<ResourceSet>> {
        let resources = self.inner.generate(proxy, type_url, names);
        // Per set, not per resource: the sizes are the sets' own.
        let bytes: usize = resources.iter().map(|set| set.encoded_len()).sum();
        self.sizes
            .get_or_create(&TypeLabel {
                r#type: label(type_url),
            })
            .observe(bytes as f64);
        resources
    }

    fn nacked(&self, proxy: &G::Proxy, type_url: &str, nack: &Nack, suspects: Vec<Arc<Resource>>) {
        self.inner.nacked(proxy, type_url, nack, suspects);
    }

    fn disconnect(&self, proxy: &G::Proxy) {
        self.inner.disconnect(proxy);
    }

    fn debug_scope(
        &self,
        node: &Node,
        conn: &ConnectionInfo,
    ) -> Result<meshd_xds::DebugScope, tonic::Status> {
        self.inner.debug_scope(node, conn)
    }

    fn control_plane(&self) -> Option<String> {
        self.inner.control_plane()
    }
}
