//! Nothing Envoy would reject leaves meshd. Every resource is checked against Envoy's own rules
//! (`meshd_translate::check`) before it is sent; one that fails is held back, and the object it
//! came from (`meshd_translate::blame`) is left out of the next snapshot, so the rest of its type
//! keeps flowing. A NACK that gets through anyway is handled the same way. Each resource is
//! checked once: proxies share them, and so do the verdicts.

use std::collections::HashMap;
use std::sync::Arc;

use meshd_model::{ObjectKey, Snapshot, SourceEvent};
use meshd_proto::type_url;
use meshd_translate::check::AddressIndex;
use meshd_xds::{Interner, Resource, ResourceSet};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

/// Verdicts by resource version (a content hash), kept for this generation and the one before;
/// likewise the listener addresses of shared sets, by set version.
#[derive(Default)]
struct Verdicts {
    generation: u64,
    by_version: HashMap<u64, (bool, u64)>,
    addresses: HashMap<u64, (Arc<AddressIndex>, u64)>,
}

pub struct Guard {
    quarantine: mpsc::UnboundedSender<SourceEvent>,
    rejected: Counter,
    verdicts: Mutex<Verdicts>,
    /// Proxies' own (inbound) sets: equal ones — the pods of one workload, usually — share one
    /// copy of their bytes.
    own_sets: Interner,
    /// Test-only fault: routes built from this object are broken after they passed the checks.
    fault: Option<ObjectKey>,
}

impl Guard {
    pub fn new(
        quarantine: mpsc::UnboundedSender<SourceEvent>,
        rejected: Counter,
        fault: Option<ObjectKey>,
    ) -> Self {
        Guard {
            quarantine,
            rejected,
            verdicts: Mutex::default(),
            own_sets: Interner::default(),
            fault,
        }
    }

    /// A new snapshot: verdicts no resource of the last two generations used are dropped.
    pub fn next_generation(&self) {
        let mut verdicts = self.verdicts.lock();
        verdicts.generation += 1;
        let oldest = verdicts.generation.saturating_sub(1);
        verdicts.by_version.retain(|_, (_, used)| *used >= oldest);
        verdicts.addresses.retain(|_, (_, used)| *used >= oldest);
    }

    /// `resources` of `type_url` without those Envoy would reject, each checked once; the
    /// objects behind rejected ones are left out of the next snapshot.
    pub fn screen(
        &self,
        snapshot: &Snapshot,
        type_url: &str,
        resources: Vec<Arc<Resource>>,
    ) -> Vec<Arc<Resource>> {
        let mut kept = Vec::with_capacity(resources.len());
        for resource in resources {
            let known = {
                let mut verdicts = self.verdicts.lock();
                let generation = verdicts.generation;
                verdicts
                    .by_version
                    .get_mut(&resource.version())
                    .map(|(ok, used)| {
                        *used = generation;
                        *ok
                    })
            };
            let ok = known.unwrap_or_else(|| {
                let violations = meshd_translate::check::check_resource(type_url, &resource.body());
                if let Some(first) = violations.first() {
                    let reason = format!(
                        "{} {}: {}: {}",
                        type_url::short(type_url),
                        resource.name(),
                        first.path,
                        first.message
                    );
                    self.reject(snapshot, &resource, Some(&first.path), reason);
                }
                let mut verdicts = self.verdicts.lock();
                let generation = verdicts.generation;
                verdicts
                    .by_version
                    .insert(resource.version(), (violations.is_empty(), generation));
                violations.is_empty()
            });
            if ok {
                kept.push(self.with_fault(type_url, resource));
            }
        }
        kept
    }

    /// Drops what one response may not hold together (two listeners on one address, repeated
    /// names), keeping the first of each clash.
    pub fn screen_set(
        &self,
        snapshot: &Snapshot,
        type_url: &str,
        resources: Vec<Arc<Resource>>,
    ) -> Vec<Arc<Resource>> {
        let bodies: Vec<_> = resources.iter().map(|r| r.body()).collect();
        let clashes = meshd_translate::check::check_set(type_url, &bodies);
        self.drop_clashes(snapshot, type_url, resources, clashes)
    }

    /// A proxy's response as parts: the `shared` set (screened when built), then its `own`
    /// (inbound, screened) resources without what clashes — [`Self::screen_set`]'s verdicts over
    /// both, without decoding the shared set per proxy.
    pub fn screen_parts(
        &self,
        snapshot: &Snapshot,
        type_url: &str,
        shared: Arc<ResourceSet>,
        own: Vec<Arc<Resource>>,
    ) -> Vec<Arc<ResourceSet>> {
        if own.iter().any(|r| shared.get(r.name()).is_some()) {
            // Rare: a name in both. As over one response, every resource of that name goes.
            let all = shared.iter().cloned().chain(own).collect();
            let all = self.screen_set(snapshot, type_url, all);
            return vec![self.own_sets.set(all)];
        }
        let own = self.screen_set(snapshot, type_url, own);
        let own = if type_url == type_url::LISTENER {
            let bodies: Vec<_> = own.iter().map(|r| r.body()).collect();
            let clashes = self.addresses(&shared).clashes(&bodies);
            self.drop_clashes(snapshot, type_url, own, clashes)
        } else {
            own
        };
        vec![shared, self.own_sets.set(own)]
    }

    /// The listener addresses of a shared set, indexed once per set version (under the lock: a
    /// few hundred small decodes, once per scope).
    fn addresses(&self, shared: &ResourceSet) -> Arc<AddressIndex> {
        let mut verdicts = self.verdicts.lock();
        let generation = verdicts.generation;
        let (index, used) = verdicts
            .addresses
            .entry(shared.version())
            .or_insert_with(|| {
                let bodies: Vec<_> = shared.iter().map(|r| r.body()).collect();
                (Arc::new(AddressIndex::of(&bodies)), generation)
            });
        *used = generation;
        Arc::clone(index)
    }

    /// `resources` without those `clashes` name, each rejected and blamed.
    fn drop_clashes(
        &self,
        snapshot: &Snapshot,
        type_url: &str,
        resources: Vec<Arc<Resource>>,
        clashes: Vec<(String, meshd_translate::check::Violation)>,
    ) -> Vec<Arc<Resource>> {
        if clashes.is_empty() {
            return resources;
        }
        let mut dropped = Vec::new();
        for (name, violation) in clashes {
            if let Some(resource) = resources.iter().find(|r| r.name() == name) {
                let reason = format!(
                    "{} {name}: {}: {}",
                    type_url::short(type_url),
                    violation.path,
                    violation.message
                );
                self.reject(snapshot, resource, Some(&violation.path), reason);
                dropped.push(name);
            }
        }
        resources
            .into_iter()
            .filter(|r| !dropped.iter().any(|d| d == r.name()))
            .collect()
    }

    /// A proxy rejected a response anyway: leave out what the suspect most likely at fault came
    /// from — the one whose values Envoy's message quotes most of; without a quote, the first
    /// (if that was not it, the next rejection names the next).
    pub fn nacked(
        &self,
        snapshot: &Snapshot,
        proxy: &str,
        message: &str,
        suspects: &[Arc<Resource>],
    ) {
        let located = suspects
            .iter()
            .filter_map(|r| Some((r, meshd_translate::blame::locate(&r.body(), message)?)))
            .max_by_key(|(_, (len, _))| *len);
        let (resource, path) = match located {
            Some((resource, (_, path))) => (resource, Some(path)),
            None => match suspects.first() {
                Some(resource) => (resource, None),
                None => return,
            },
        };
        let reason = format!("proxy {proxy} rejected {}: {message}", resource.name());
        let culprits =
            meshd_translate::blame::culprits(snapshot, &resource.body(), path.as_deref());
        self.quarantine_first(&culprits, resource, reason);
    }

    fn reject(&self, snapshot: &Snapshot, resource: &Resource, path: Option<&str>, reason: String) {
        self.rejected.inc();
        tracing::warn!(resource = %resource.name(), %reason, "held back config Envoy would reject");
        self.blame(snapshot, resource, path, reason);
    }

    fn blame(&self, snapshot: &Snapshot, resource: &Resource, path: Option<&str>, reason: String) {
        let culprits = meshd_translate::blame::culprits(snapshot, &resource.body(), path);
        self.quarantine_first(&culprits, resource, reason);
    }

    /// Leaves out the likeliest culprit; if the next snapshot still fails, the next one is.
    fn quarantine_first(&self, culprits: &[ObjectKey], resource: &Resource, reason: String) {
        match culprits.first() {
            Some(key) => {
                tracing::warn!(object = %key, %reason, "quarantining the object the config came from");
                let _ = self.quarantine.send(SourceEvent::Quarantine {
                    key: key.clone(),
                    reason,
                });
            }
            None => tracing::warn!(resource = %resource.name(), %reason, "no object to blame"),
        }
    }

    /// The test-only fault, if it applies: the object's routes get a regex RE2 refuses.
    fn with_fault(&self, type_url: &str, resource: Arc<Resource>) -> Arc<Resource> {
        let Some(target) = &self.fault else {
            return resource;
        };
        if type_url != type_url::ROUTE {
            return resource;
        }
        match meshd_translate::fault::break_routes_of(&resource.body(), target) {
            Some(broken) => crate::encode::resource(resource.name().to_owned(), &broken),
            None => resource,
        }
    }
}

#[cfg(test)]
mod tests;
