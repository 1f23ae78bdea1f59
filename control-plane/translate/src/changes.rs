//! What a new snapshot changes in the resources translation builds, found by comparing it part by
//! part with the snapshot before it: which resource types proxies must regenerate, which
//! outbound lists (shared per [`Scope`](crate::Scope)) stay valid, which services' assignments
//! (EDS) to rebuild, and which workload addresses' inbound config differs. A control plane that
//! keeps what was built for the previous snapshot rebuilds and pushes only that.
//!
//! The parts are the snapshot's derived models (registry, traffic, policies), not the input kinds:
//! one kind feeds several parts (Pods become endpoints' labels and service accounts), and
//! comparing what translation reads is what keeps a skipped rebuild correct. What each resource
//! type reads is written down once, in [`SnapshotDiff`]'s methods, beside the builders it
//! describes: a builder that starts reading another part of the snapshot must be added there
//! (`tests/incremental.rs` rebuilds after random edits and compares).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

use meshd_model::registry::Registry;
use meshd_model::{Endpoint, Kind, Object, ObjectKey, Resolution, Snapshot};
use meshd_proto::type_url;

/// The parts of the snapshot that differ from the one before, in the detail the caches need.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// The mesh config (every type reads some of it).
    pub mesh: bool,
    /// Some service was added, removed or changed.
    pub services: bool,
    /// Hosts whose assignments (EDS) must be rebuilt: their service, some port's endpoints or the
    /// DestinationRules for them (subsets, locality balancing) differ.
    pub eds_hosts: BTreeSet<String>,
    /// An endpoint change outbound clusters see: the identities behind a service port (mTLS
    /// SANs) or the addresses of a DNS-resolved service.
    pub cluster_endpoints: bool,
    /// The localities callers may be in (each has its own per-locality assignments).
    pub caller_localities: bool,
    /// Addresses whose Pod appeared, went or changed: the workload a proxy there is.
    pub pods: BTreeSet<String>,
    /// Addresses whose served ports (inbound clusters and listeners) differ.
    pub served_ports: BTreeSet<String>,
    pub virtual_services: bool,
    pub destination_rules: bool,
    pub gateways: bool,
    pub sidecars: bool,
    pub peer_authentications: bool,
    pub authorization_policies: bool,
    /// RequestAuthentications, including the JWKS documents fetched for them.
    pub request_authentications: bool,
    /// Kubernetes Secrets (gateway credentials over SDS).
    pub secrets: bool,
    /// Telemetries: the access logs and tracers of every listener's connection managers and
    /// TCP proxies, and the proxies' scopes.
    pub telemetry: bool,
}

impl SnapshotDiff {
    /// Compares `new` with `old`. Costs a walk over both registries (no translation).
    pub fn between(old: &Snapshot, new: &Snapshot) -> SnapshotDiff {
        let (old_reg, new_reg) = (&old.registry, &new.registry);
        let mut diff = SnapshotDiff {
            mesh: old.mesh != new.mesh,
            services: old_reg.services != new_reg.services,
            pods: changed_keys(&old_reg.pods_by_ip, &new_reg.pods_by_ip),
            served_ports: changed_keys(&old_reg.served_ports, &new_reg.served_ports),
            caller_localities: crate::caller_localities(old) != crate::caller_localities(new),
            virtual_services: old.traffic.virtual_services != new.traffic.virtual_services,
            destination_rules: old.traffic.destination_rules != new.traffic.destination_rules,
            gateways: old.traffic.gateways != new.traffic.gateways,
            sidecars: old.sidecars != new.sidecars,
            peer_authentications: old.peer_authentications != new.peer_authentications,
            authorization_policies: old.authorization_policies != new.authorization_policies,
            request_authentications: old.request_authentications != new.request_authentications,
            secrets: !Arc::ptr_eq(&old.objects, &new.objects)
                && !of_kind(&old.objects, Kind::Secret).eq(of_kind(&new.objects, Kind::Secret)),
            // What listeners make of Telemetries is not tracked finer yet (the property test
            // in tests/incremental.rs found listeners of a Telemetry mesh changing under a diff
            // that saw nothing): while any Telemetry exists, every new snapshot rebuilds and
            // pushes listeners.
            // The same while the mesh config itself logs or traces.
            telemetry: !of_kind(&old.objects, Kind::Telemetry)
                .eq(of_kind(&new.objects, Kind::Telemetry))
                || of_kind(&new.objects, Kind::Telemetry).next().is_some()
                || observes(&new.mesh)
                || observes(&old.mesh),
            ..SnapshotDiff::default()
        };
        if diff.services {
            diff.eds_hosts
                .extend(changed_keys(&old_reg.services, &new_reg.services));
        }
        diff.endpoints(old_reg, new_reg);
        if diff.destination_rules {
            let rules = |s: &Snapshot, host: &str| -> Vec<_> {
                s.traffic
                    .destination_rules
                    .for_host(host)
                    .cloned()
                    .collect()
            };
            for host in new_reg.services.keys() {
                if rules(old, host) != rules(new, host) {
                    diff.eds_hosts.insert(host.clone());
                }
            }
        }
        diff
    }

    /// The endpoints of every (host, port) that differ: their hosts' assignments, and whether
    /// outbound clusters see the difference.
    fn endpoints(&mut self, old: &Registry, new: &Registry) {
        let none: &[Endpoint] = &[];
        let changed = new
            .endpoints
            .iter()
            .filter(|(key, eps)| old.endpoints.get(*key) != Some(*eps))
            .map(|(key, eps)| {
                (
                    key,
                    old.endpoints.get(key).map_or(none, |e| e),
                    eps.as_slice(),
                )
            });
        let gone = old
            .endpoints
            .iter()
            .filter(|(key, _)| !new.endpoints.contains_key(*key))
            .map(|(key, eps)| (key, eps.as_slice(), none));
        for ((host, _), before, after) in changed.chain(gone) {
            self.eds_hosts.insert(host.clone());
            let dns = [old, new].iter().any(|r| {
                r.services.get(host).is_some_and(|s| {
                    matches!(s.resolution, Resolution::DnsLb | Resolution::DnsRoundRobin)
                })
            });
            self.cluster_endpoints |= identities(before) != identities(after)
                || (dns && !before.iter().map(target).eq(after.iter().map(target)));
        }
    }

    /// Every service's assignments must be rebuilt: what each endpoint's metadata depends on
    /// (mTLS by PeerAuthentication) changed, or the mesh config did.
    pub fn all_endpoints(&self) -> bool {
        self.mesh || self.peer_authentications
    }

    /// The per-locality assignments of every service must be rebuilt.
    pub fn all_locality_endpoints(&self) -> bool {
        self.all_endpoints() || self.caller_localities
    }

    /// Outbound resources of `type_url`, shared per scope, may differ for some scope: the lists
    /// built for the previous snapshot are stale. What each type's outbound builders read:
    /// clusters — services, endpoints' identities and DNS targets, DestinationRules, Sidecars,
    /// Gateways (AUTO_PASSTHROUGH twins); listeners — services, VirtualServices (TCP and TLS
    /// routes), Sidecars, Gateways; routes — services, VirtualServices, DestinationRules
    /// (consistent hashing), Sidecars, Gateways. All of them read the mesh config.
    pub fn outbound(&self, type_url: &str) -> bool {
        let shared = self.mesh || self.services || self.sidecars || self.gateways;
        match type_url {
            type_url::CLUSTER => shared || self.cluster_endpoints || self.destination_rules,
            type_url::LISTENER => shared || self.virtual_services || self.telemetry,
            type_url::ROUTE => shared || self.virtual_services || self.destination_rules,
            _ => true,
        }
    }

    /// The resource types proxies must regenerate, in push order. `endpoints_changed`: the
    /// assignments built for the new snapshot differ from the old ones. `connected`: whether a
    /// proxy at that address is connected (inbound config and scopes are per workload; one that
    /// connects later builds from the new snapshot anyway).
    pub fn pushed_types(
        &self,
        endpoints_changed: bool,
        connected: impl Fn(&str) -> bool,
    ) -> Vec<&'static str> {
        let any_connected = |addresses: &BTreeSet<String>| addresses.iter().any(|a| connected(a));
        let pods = any_connected(&self.pods);
        // A proxy's scope (the key of its shared outbound lists) reads its Pod's labels, the
        // Sidecars, the `sourceLabels` of VirtualServices and the selectors of DestinationRules:
        // when they differ, a proxy may now read another scope's lists.
        // Scopes also name the Telemetries that select the workload.
        let scopes = pods
            || self.sidecars
            || self.virtual_services
            || self.destination_rules
            || self.telemetry;
        // Inbound clusters: the workload's served ports; listeners also its Pod and the policies
        // that select it.
        let inbound_clusters = self.mesh || any_connected(&self.served_ports);
        let inbound_listeners = inbound_clusters
            || self.telemetry
            || pods
            || self.peer_authentications
            || self.authorization_policies
            || self.request_authentications;
        type_url::PUSH_ORDER
            .into_iter()
            .filter(|t| match *t {
                type_url::CLUSTER => self.outbound(t) || scopes || inbound_clusters,
                type_url::ENDPOINT => endpoints_changed,
                type_url::LISTENER => self.outbound(t) || scopes || inbound_listeners,
                type_url::ROUTE => self.outbound(t) || scopes,
                type_url::SECRET => self.secrets,
                _ => true,
            })
            .collect()
    }
}

/// The mesh config asks for access logs or tracers of its own.
fn observes(mesh: &meshd_model::MeshConfig) -> bool {
    !mesh.access_log_file.is_empty()
        || mesh
            .default_config
            .tracing
            .as_ref()
            .is_some_and(|t| t.zipkin.is_some())
        || !mesh.default_providers.tracing.is_empty()
        || !mesh.default_providers.access_logging.is_empty()
}

/// Keys whose values differ between two maps, or that only one of them has.
fn changed_keys<K: Clone + Ord, V: PartialEq>(
    old: &impl Map<K, V>,
    new: &impl Map<K, V>,
) -> BTreeSet<K> {
    let mut keys: BTreeSet<K> = new
        .entries()
        .filter(|(k, v)| old.value(k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(
        old.entries()
            .filter(|(k, _)| new.value(k).is_none())
            .map(|(k, _)| k.clone()),
    );
    keys
}

/// The maps the registry keeps, as [`changed_keys`] reads them.
trait Map<K, V> {
    fn value(&self, key: &K) -> Option<&V>;
    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a;
}

impl<K: Eq + Hash, V> Map<K, V> for HashMap<K, V> {
    fn value(&self, key: &K) -> Option<&V> {
        self.get(key)
    }
    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter()
    }
}

impl<K: Ord, V> Map<K, V> for BTreeMap<K, V> {
    fn value(&self, key: &K) -> Option<&V> {
        self.get(key)
    }
    fn entries<'a>(&'a self) -> impl Iterator<Item = (&'a K, &'a V)>
    where
        K: 'a,
        V: 'a,
    {
        self.iter()
    }
}

/// The objects of one kind, in key order.
fn of_kind(
    objects: &BTreeMap<ObjectKey, Object>,
    kind: Kind,
) -> impl Iterator<Item = (&ObjectKey, &Object)> {
    objects
        .range(ObjectKey::new(kind, "", "")..)
        .take_while(move |(k, _)| k.kind == kind)
}

/// What mTLS SANs are made of: the (namespace, service account) of each endpoint that has one.
fn identities(endpoints: &[Endpoint]) -> BTreeSet<(&str, &str)> {
    endpoints
        .iter()
        .filter_map(|e| Some((e.namespace.as_str(), e.service_account.as_deref()?)))
        .collect()
}

/// What a DNS cluster resolves: the endpoint's address and port.
fn target(e: &Endpoint) -> (&str, u32) {
    (e.address.as_str(), e.port)
}

#[cfg(test)]
mod tests;
