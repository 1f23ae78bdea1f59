//! Locality load balancing as Istio does it: endpoints grouped by locality, then either weighted
//! per `distribute` or prioritised by closeness to the calling proxy (failover). Both depend on
//! where the proxy is, so such a cluster reads a per-locality assignment: its EDS name carries the
//! proxy's locality and the rule, and every proxy in that locality shares it. This module owns
//! what clusters and assignments agree on (the proxy's locality, the EDS name, the `distribute`
//! entry) and points clusters there; `endpoint::locality` builds the assignments.

use std::collections::BTreeMap;

use meshd_model::traffic::locality::Locality;
use meshd_model::traffic::{LocalityLbUse, PolicySettings};
use meshd_model::{ObjectKey, Proxy, Snapshot};

/// The proxy's locality (its Pod's: the `istio-locality` label, else its Node's topology labels,
/// trusted over the node's claim), when some rule balances by locality and some endpoint has one;
/// otherwise locality changes nothing.
pub(crate) fn proxy_locality(snapshot: &Snapshot, proxy: &Proxy) -> Option<String> {
    if !snapshot.traffic.destination_rules.locality_aware {
        return None;
    }
    match snapshot.pod_by_ip(&proxy.ip) {
        Some(pod) => pod.locality.clone(),
        None => Locality::of_labels(&proxy.labels),
    }
    .map(|l| l.to_string())
}

/// The EDS name of `cluster` as seen from `locality` under `rule`.
pub(crate) fn eds_name(cluster: &str, locality: &str, rule: &ObjectKey) -> String {
    format!("{cluster};{locality};{}/{}", rule.namespace, rule.name)
}

/// The `distribute` entry that applies to traffic from `proxy`: the first whose `from` matches.
pub(crate) fn distribute_entry<'a>(
    entries: &'a [(String, BTreeMap<String, u32>)],
    proxy: &Locality,
) -> Option<&'a BTreeMap<String, u32>> {
    entries
        .iter()
        .find(|(from, _)| proxy.matches(from))
        .map(|(_, to)| to)
}

/// Points a cluster at its per-locality assignment; with weights to apply, turns on Envoy's
/// locality-weighted balancing (the weights live in the assignment).
pub(crate) fn apply(
    c: &mut meshd_proto::pb::envoy::config::cluster::v3::Cluster,
    settings: &PolicySettings,
    proxy_locality: &str,
    rule: &ObjectKey,
) {
    use meshd_proto::pb::envoy::config::cluster::v3::cluster::common_lb_config;
    let Some(lb) = settings.locality_lb() else {
        return;
    };
    let name = eds_name(&c.name, proxy_locality, rule);
    let Some(eds) = c.eds_cluster_config.as_mut() else {
        return;
    };
    eds.service_name = name;
    let proxy = Locality::parse(proxy_locality).unwrap_or_default();
    if let LocalityLbUse::Distribute(entries) = lb
        && distribute_entry(entries, &proxy).is_some()
    {
        c.common_lb_config
            .get_or_insert_with(Default::default)
            .locality_config_specifier = Some(
            common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                common_lb_config::LocalityWeightedLbConfig {},
            ),
        );
    }
}
