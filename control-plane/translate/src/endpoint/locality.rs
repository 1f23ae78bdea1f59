//! Per-locality assignments: for each cluster that balances by locality, one assignment per
//! locality a calling proxy may be in, with the endpoints grouped, weighted or prioritised for it.

use std::collections::{BTreeMap, BTreeSet};

use meshd_model::traffic::LocalityLbUse;
use meshd_model::traffic::locality::Locality;
use meshd_model::{Endpoint, Resolution, ServiceModel, Snapshot};
use meshd_proto::pb::envoy::config::core::v3::Locality as EnvoyLocality;
use meshd_proto::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};

use super::lb_endpoint;
use crate::locality::{distribute_entry, eds_name};
use crate::names::outbound_cluster;
use crate::util::u32_value;

/// The localities a pod of the mesh is in, while some rule balances by locality; empty otherwise
/// (then no per-locality assignment exists).
pub(crate) fn callers(snapshot: &Snapshot) -> BTreeSet<Locality> {
    if !snapshot.traffic.destination_rules.locality_aware {
        return BTreeSet::new();
    }
    snapshot
        .registry
        .pods
        .values()
        .filter_map(|pod| pod.locality.clone())
        .collect()
}

/// Every per-locality assignment some proxy may read of one service: for each rule for its host
/// that balances by locality, each port and subset, and each locality in `callers`.
pub(crate) fn service_assignments(
    snapshot: &Snapshot,
    svc: &ServiceModel,
    callers: &BTreeSet<Locality>,
) -> Vec<ClusterLoadAssignment> {
    let mut out = Vec::new();
    if callers.is_empty() || svc.resolution != Resolution::ClientSideLb {
        return out;
    }
    for rule in snapshot.traffic.destination_rules.for_host(&svc.hostname) {
        let subsets = std::iter::once(None).chain(rule.subsets.iter().map(Some));
        for subset in subsets {
            let subset_name = subset.map_or("", |s| s.name.as_str());
            for sp in &svc.ports {
                let settings = rule.settings(subset_name, sp.port);
                let Some(lb) = settings.locality_lb() else {
                    continue;
                };
                let eps: Vec<&Endpoint> = snapshot
                    .registry
                    .endpoints(&svc.hostname, sp.port)
                    .iter()
                    .filter(|e| {
                        subset
                            .is_none_or(|s| meshd_model::input::labels_match(&s.labels, &e.labels))
                    })
                    .collect();
                let cluster = outbound_cluster(sp.port, subset_name, &svc.hostname);
                for caller in callers {
                    let name = eds_name(&cluster, &caller.to_string(), &rule.key);
                    out.push(assignment(snapshot, name, &eps, caller, lb));
                }
            }
        }
    }
    out
}

fn assignment(
    snapshot: &Snapshot,
    cluster_name: String,
    eps: &[&Endpoint],
    proxy: &Locality,
    lb: LocalityLbUse<'_>,
) -> ClusterLoadAssignment {
    let mut groups: BTreeMap<Locality, Vec<&Endpoint>> = BTreeMap::new();
    for e in eps {
        groups
            .entry(e.locality().unwrap_or_default())
            .or_default()
            .push(e);
    }
    let localities: Vec<Locality> = groups.keys().cloned().collect();
    let mut endpoints: Vec<LocalityLbEndpoints> = groups
        .iter()
        .map(|(locality, eps)| LocalityLbEndpoints {
            locality: Some(EnvoyLocality {
                region: locality.region.clone(),
                zone: locality.zone.clone(),
                sub_zone: locality.subzone.clone(),
            }),
            lb_endpoints: eps.iter().map(|e| lb_endpoint(snapshot, e)).collect(),
            load_balancing_weight: u32_value(eps.iter().map(|e| e.weight.max(1)).sum()),
            ..Default::default()
        })
        .collect();
    match lb {
        LocalityLbUse::Distribute(entries) => {
            if let Some(to) = distribute_entry(entries, proxy) {
                distribute(&mut endpoints, &localities, to);
            }
        }
        LocalityLbUse::Failover(failover) => {
            prioritise(&mut endpoints, &localities, proxy, failover)
        }
    }
    ClusterLoadAssignment {
        cluster_name,
        endpoints,
        ..Default::default()
    }
}

/// Each `to` pattern's weight shared by the localities it matches (first pattern wins a
/// locality), in proportion to their own weights; localities no pattern names get no traffic.
fn distribute(
    endpoints: &mut [LocalityLbEndpoints],
    localities: &[Locality],
    to: &BTreeMap<String, u32>,
) {
    let own: Vec<u64> = endpoints
        .iter()
        .map(|e| e.load_balancing_weight.map_or(1, |w| u64::from(w.value)))
        .collect();
    let mut unmatched: BTreeSet<usize> = (0..endpoints.len()).collect();
    for (pattern, weight) in to {
        let matched: Vec<usize> = unmatched
            .iter()
            .copied()
            .filter(|i| localities[*i].matches(pattern))
            .collect();
        let total: u64 = matched.iter().map(|i| own[*i]).sum();
        for i in matched {
            unmatched.remove(&i);
            let share = (own[i] * u64::from(*weight)).div_ceil(total.max(1));
            if share > 0 {
                endpoints[i].load_balancing_weight =
                    u32_value(u32::try_from(share).unwrap_or(u32::MAX));
            }
        }
    }
    for i in unmatched {
        endpoints[i].lb_endpoints.clear();
    }
}

/// Priorities by closeness (same subzone, zone, region, elsewhere); with a failover entry for
/// the proxy's region, its target region comes before the rest. Then renumbered without gaps, as
/// Envoy wants them.
fn prioritise(
    endpoints: &mut [LocalityLbEndpoints],
    localities: &[Locality],
    proxy: &Locality,
    failover: &[(String, String)],
) {
    let raw: Vec<u32> = localities
        .iter()
        .map(|l| {
            let p = proxy.priority_of(l);
            match failover.iter().find(|(from, _)| *from == proxy.region) {
                Some((_, to)) if p == 3 && l.region != *to => 4,
                _ => p,
            }
        })
        .collect();
    let levels: Vec<u32> = raw
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for (e, p) in endpoints.iter_mut().zip(raw) {
        e.priority = u32::try_from(levels.iter().position(|l| *l == p).unwrap_or_default())
            .unwrap_or_default();
    }
}
