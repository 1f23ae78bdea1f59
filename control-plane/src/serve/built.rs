//! Resources built from one snapshot and shared by every proxy that reads them, and what the next
//! snapshot keeps of them. Outbound clusters, listeners and routes are built per scope when a
//! proxy first asks; a new snapshot keeps the lists of each type its changes do not touch
//! ([`SnapshotDiff::outbound`]). Endpoints (EDS) are built per service as soon as a snapshot
//! arrives, so a change rebuilds only the services it touched and tells exactly whether EDS
//! changed at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use meshd_model::Snapshot;
use meshd_proto::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meshd_proto::type_url;
use meshd_translate::Scope;
use meshd_translate::changes::SnapshotDiff;
use meshd_xds::{Interner, Resource, ResourceSet};
use parking_lot::Mutex;

use super::guard::Guard;
use crate::encode::resource;

pub type Shared = Arc<ResourceSet>;

/// The outbound types built per scope.
const SCOPED: [&str; 3] = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE];

/// One type's outbound resources for one scope.
struct ScopeEntry {
    list: Shared,
    /// The newest [`Built::seq`] under which a proxy asked for it.
    asked: AtomicU64,
}

/// Resources built from one snapshot.
pub struct Built {
    pub snapshot: Arc<Snapshot>,
    /// Counts snapshots, so entries can tell when they were last asked for.
    seq: u64,
    by_scope: Mutex<HashMap<(&'static str, Scope), Arc<ScopeEntry>>>,
    /// For each scoped type, the `seq` of the snapshot whose push last announced it: every
    /// connected proxy asks for its scope's list again after that.
    pushed: Mutex<BTreeMap<&'static str, u64>>,
    endpoints: Endpoints,
    /// The assignments differ from those of the snapshot before.
    endpoints_changed: bool,
    /// Scopes' equal sets are one, across snapshots too.
    interner: Arc<Interner>,
}

/// EDS of one snapshot: each service's assignments, encoded and checked, and all of them.
struct Endpoints {
    by_host: HashMap<String, Arc<ServiceEndpoints>>,
    /// Every service's plain assignments in hostname order, then the per-locality ones: what
    /// [`meshd_translate::endpoints`] builds, minus what the guard held back.
    all: Shared,
}

/// One service's assignments.
struct ServiceEndpoints {
    plain: Vec<Arc<Resource>>,
    locality: Vec<Arc<Resource>>,
}

impl Built {
    /// Everything built anew from `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>, guard: &Guard) -> Self {
        let endpoints = Endpoints::build(&snapshot, None, guard);
        Built {
            snapshot,
            seq: 0,
            by_scope: Mutex::default(),
            pushed: Mutex::new(SCOPED.iter().map(|t| (*t, 0)).collect()),
            endpoints,
            endpoints_changed: true,
            interner: Arc::default(),
        }
    }

    /// What `snapshot` needs, keeping of `self` what `diff` (from `self.snapshot` to
    /// `snapshot`) leaves valid.
    pub fn next(&self, snapshot: Arc<Snapshot>, diff: &SnapshotDiff, guard: &Guard) -> Self {
        let endpoints = Endpoints::build(&snapshot, Some((&self.endpoints, diff)), guard);
        let endpoints_changed = !Arc::ptr_eq(&endpoints.all, &self.endpoints.all);
        let pushed = self.pushed.lock().clone();
        let by_scope: HashMap<_, _> = self
            .by_scope
            .lock()
            .iter()
            .filter(|((ty, _), entry)| {
                if diff.outbound(ty) {
                    return false;
                }
                // Every connected proxy asks for its list again after its type is pushed: a list
                // nobody asked for since is nobody's (a scope that is gone). Unless that push came
                // with this very snapshot, and proxies may not have got to it yet.
                let pushed = pushed.get(ty).copied().unwrap_or_default();
                pushed == self.seq || entry.asked.load(Ordering::Relaxed) >= pushed
            })
            .map(|(key, entry)| (key.clone(), Arc::clone(entry)))
            .collect();
        Built {
            snapshot,
            seq: self.seq + 1,
            by_scope: Mutex::new(by_scope),
            pushed: Mutex::new(pushed),
            endpoints,
            endpoints_changed,
            interner: Arc::clone(&self.interner),
        }
    }

    /// The assignments differ from those of the snapshot before (always true for the first).
    pub fn endpoints_changed(&self) -> bool {
        self.endpoints_changed
    }

    /// Records which types the push for this snapshot announced.
    pub fn mark_pushed(&self, types: &[&str]) {
        let mut pushed = self.pushed.lock();
        for (ty, seq) in pushed.iter_mut() {
            if types.contains(ty) {
                *seq = self.seq;
            }
        }
    }

    /// Every assignment, shared by all proxies.
    pub fn endpoints(&self) -> Shared {
        Arc::clone(&self.endpoints.all)
    }

    /// Outbound resources of one type for a scope: built (and checked) by the first proxy that
    /// asks, shared after, and kept by later snapshots that do not change them.
    pub fn outbound(&self, guard: &Guard, type_url: &'static str, scope: &Scope) -> Shared {
        let key = (type_url, scope.clone());
        if let Some(hit) = self.by_scope.lock().get(&key) {
            hit.asked.fetch_max(self.seq, Ordering::Relaxed);
            return Arc::clone(&hit.list);
        }
        // Built outside the lock: two proxies racing on a cold scope both build; one result is kept.
        let snap = &self.snapshot;
        let list: Vec<Arc<Resource>> = match type_url {
            type_url::CLUSTER => meshd_translate::outbound_clusters(snap, scope)
                .iter()
                .map(|c| resource(c.name.clone(), c))
                .collect(),
            type_url::LISTENER => meshd_translate::outbound_listeners(snap, scope)
                .iter()
                .map(|l| resource(l.name.clone(), l))
                .collect(),
            type_url::ROUTE => meshd_translate::outbound_routes(snap, scope)
                .iter()
                .map(|r| resource(r.name.clone(), r))
                .collect(),
            _ => Vec::new(),
        };
        let mut list = guard.screen(snap, type_url, list);
        if type_url != type_url::ROUTE {
            // What one response may not hold together is checked once per set, not per proxy.
            list = guard.screen_set(snap, type_url, list);
        }
        let entry = Arc::new(ScopeEntry {
            list: self.interner.set(list),
            asked: AtomicU64::new(self.seq),
        });
        let mut by_scope = self.by_scope.lock();
        Arc::clone(&by_scope.entry(key).or_insert(entry).list)
    }

    /// The shared list for `type_url` and `scope`, if built: for tests of what is kept.
    #[cfg(test)]
    pub fn cached(&self, type_url: &'static str, scope: &Scope) -> Option<Shared> {
        let key = (type_url, scope.clone());
        self.by_scope.lock().get(&key).map(|e| Arc::clone(&e.list))
    }

    /// One service's plain assignments, if it has any: for tests of what is kept.
    #[cfg(test)]
    pub fn service_endpoints(&self, host: &str) -> Option<Vec<Arc<Resource>>> {
        self.endpoints.by_host.get(host).map(|e| e.plain.clone())
    }
}

impl Endpoints {
    /// Every service's assignments; with `previous` (and the diff since), those of services the
    /// diff leaves alone are taken from there. Shares `previous.all` when nothing differs.
    fn build(
        snapshot: &Snapshot,
        previous: Option<(&Endpoints, &SnapshotDiff)>,
        guard: &Guard,
    ) -> Endpoints {
        let encode = |list: Vec<ClusterLoadAssignment>| {
            let list = list
                .iter()
                .map(|e| resource(e.cluster_name.clone(), e))
                .collect();
            guard.screen(snapshot, type_url::ENDPOINT, list)
        };
        let locality_kept = previous.is_some_and(|(_, diff)| !diff.all_locality_endpoints());
        let mut callers = None;
        let services = &snapshot.registry.services;
        let mut by_host = HashMap::with_capacity(services.len());
        let (mut plain, mut locality) = (encode(meshd_translate::proxy_endpoints()), Vec::new());
        for (host, svc) in services {
            let before = previous.and_then(|(old, diff)| {
                let touched = diff.all_endpoints() || diff.eds_hosts.contains(host);
                old.by_host.get(host).filter(|_| !touched)
            });
            let entry = match before {
                Some(entry) if locality_kept => Arc::clone(entry),
                _ => {
                    let callers =
                        callers.get_or_insert_with(|| meshd_translate::caller_localities(snapshot));
                    Arc::new(ServiceEndpoints {
                        plain: match before {
                            Some(entry) => entry.plain.clone(),
                            None => encode(meshd_translate::service_endpoints(snapshot, svc)),
                        },
                        locality: encode(meshd_translate::service_locality_endpoints(
                            snapshot, svc, callers,
                        )),
                    })
                }
            };
            plain.extend(entry.plain.iter().cloned());
            locality.extend(entry.locality.iter().cloned());
            by_host.insert(host.clone(), entry);
        }
        plain.extend(locality);
        // In the set's own (name) order, so an unchanged list compares equal to the set before.
        plain.sort_by(|a, b| a.name().cmp(b.name()));
        // Unchanged as a whole: the same list, so nobody needs to look at it again.
        let all = match previous {
            Some((old, _)) if same_versions(old.all.resources(), &plain) => Arc::clone(&old.all),
            _ => Arc::new(ResourceSet::new(plain)),
        };
        Endpoints { by_host, all }
    }
}

/// The same names at the same versions, in the same order.
fn same_versions(a: &[Arc<Resource>], b: &[Arc<Resource>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.name() == b.name() && a.version() == b.version())
}
