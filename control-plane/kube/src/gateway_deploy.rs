//! istiod's automated deployment, leader only: for each Gateway of a class meshd serves, a
//! ServiceAccount, a Deployment and a Service named `<gateway>-<class>` in the Gateway's
//! namespace ([`objects`]), owned by the Gateway; and GatewayClass `istio`, created when it is
//! missing.
//!
//! Fed with the snapshots the index loop publishes, the latest only. An object is applied
//! (server-side apply, field manager `meshd`) only when what meshd would apply differs from what
//! it applied last, so new snapshots that change nothing here write nothing. Objects labelled
//! `gateway.istio.io/managed` whose Gateway no longer needs them are deleted: the garbage
//! collector would do it through the owner reference, but not every API server runs one, and a
//! Gateway whose class meshd stopped serving keeps existing. Everything is applied again on
//! becoming leader and every [`RESYNC`], so objects edited or deleted behind meshd's back come
//! back.
//!
//! Revisions, as istiod has them: a Gateway labelled `istio.io/rev` is deployed by that revision,
//! an unlabelled one by the default revision; another revision's objects carry its label and
//! are neither applied nor deleted here.

pub mod objects;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use meshd_model::gateway_api::{CONTROLLER_NAME, DEFAULT_CLASS};
use meshd_model::revision::REVISION_LABEL;
use meshd_model::{Kind, ObjectKey, Revision, Snapshot};
use serde_json::Value;
use tokio::sync::watch;

use crate::client::{KubeContext, is_conflict, is_not_found};
use crate::discover::gateway_api_resource;
use objects::{MANAGED_LABEL, MANAGED_VALUE, ManagedKey, ManagedKind, objects_of};

/// The field manager of meshd's server-side applies.
pub const FIELD_MANAGER: &str = "meshd";
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How often everything is applied again, whatever meshd remembers having applied.
const RESYNC: Duration = Duration::from_secs(300);
/// How long after an attempt to create GatewayClass `istio` another one may follow, while the
/// snapshot does not show it (the watch has not delivered it, or its CRD is not installed).
const CLASS_RETRY: Duration = Duration::from_secs(60);

/// Keeps the Gateways' deployments as the snapshots say, while this replica leads.
pub fn spawn(ctx: KubeContext, revision: Revision, snapshots: watch::Receiver<Arc<Snapshot>>) {
    tokio::spawn(run(ctx, revision, snapshots));
}

async fn run(
    mut ctx: KubeContext,
    revision: Revision,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
) {
    let mut deployer = Deployer::new(ctx.client.clone(), revision);
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resynced = Instant::now();
    let mut dirty = true;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            changed = ctx.leader.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new leader cannot know what the previous one left behind.
                deployer.forget();
                dirty = true;
            }
            _ = tick.tick() => {
                if resynced.elapsed() >= RESYNC {
                    resynced = Instant::now();
                    deployer.forget();
                    dirty = true;
                }
            }
        }
        if !dirty || !*ctx.leader.borrow() {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        // Version 0 is the empty snapshot before every source was read: it would delete
        // everything.
        if snapshot.version == 0 {
            continue;
        }
        dirty = !deployer.reconcile(&snapshot).await;
    }
}

/// What the leader remembers of its writes.
struct Deployer {
    client: kube::Client,
    revision: Revision,
    /// What was applied last, per object.
    applied: BTreeMap<ManagedKey, Value>,
    /// The objects wanted when stale ones were last deleted; `None`: look again.
    swept: Option<BTreeSet<ManagedKey>>,
    /// Namespaces where meshd deployed something, to look for what became stale there.
    namespaces: BTreeSet<String>,
    class_tried: Option<Instant>,
}

impl Deployer {
    fn new(client: kube::Client, revision: Revision) -> Deployer {
        Deployer {
            client,
            revision,
            applied: BTreeMap::new(),
            swept: None,
            namespaces: BTreeSet::new(),
            class_tried: None,
        }
    }

    /// Applies everything again at the next reconcile.
    fn forget(&mut self) {
        self.applied.clear();
        self.swept = None;
        self.class_tried = None;
    }

    /// Brings the cluster to what `snapshot` wants; false when a write failed (retried soon).
    async fn reconcile(&mut self, snapshot: &Snapshot) -> bool {
        let mut ok = true;
        let wanted: Vec<(ManagedKey, Value)> = snapshot
            .gateway_api
            .deployments
            .iter()
            .filter(|d| {
                let labels = snapshot
                    .objects
                    .get(&d.gateway)
                    .map(|g| &g.metadata().labels);
                deploys(&self.revision, labels.unwrap_or(&BTreeMap::new()))
            })
            .flat_map(|d| objects_of(d, &self.revision))
            .collect();
        for (key, value) in to_apply(&wanted, &self.applied) {
            self.namespaces.insert(key.namespace.clone());
            match apply(&self.client, key, value).await {
                Ok(()) => {
                    tracing::info!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, "gateway deployment applied");
                    self.applied.insert(key.clone(), value.clone());
                }
                Err(e) => {
                    tracing::warn!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, error = %e, "applying a gateway deployment failed; retrying");
                    ok = false;
                }
            }
        }
        let keys: BTreeSet<ManagedKey> = wanted.into_iter().map(|(key, _)| key).collect();
        if self.swept.as_ref() != Some(&keys) {
            if self.sweep(snapshot, &keys).await {
                self.swept = Some(keys);
            } else {
                ok = false;
            }
        }
        ok & self.ensure_class(snapshot).await
    }

    /// Deletes managed objects no Gateway wants, in every namespace that has or had a Gateway.
    async fn sweep(&mut self, snapshot: &Snapshot, wanted: &BTreeSet<ManagedKey>) -> bool {
        let start = ObjectKey::new(Kind::KubeGateway, "", "");
        let gateway_namespaces = snapshot
            .objects
            .range(start..)
            .take_while(|(key, _)| key.kind == Kind::KubeGateway)
            .map(|(key, _)| key.namespace.clone());
        let mut namespaces: BTreeSet<String> = wanted.iter().map(|k| k.namespace.clone()).collect();
        namespaces.extend(gateway_namespaces);
        namespaces.extend(self.namespaces.iter().cloned());
        let mut ok = true;
        for namespace in namespaces {
            let mut existing = Vec::new();
            for kind in ManagedKind::ALL {
                match list_managed(&self.client, &self.revision, kind, &namespace).await {
                    Ok(names) => existing.extend(names.into_iter().map(|name| ManagedKey {
                        kind,
                        namespace: namespace.clone(),
                        name,
                    })),
                    Err(e) => {
                        tracing::warn!(%namespace, kind = ?kind, error = %e, "listing managed gateway objects failed; retrying");
                        ok = false;
                    }
                }
            }
            for key in stale(&existing, wanted) {
                match delete(&self.client, &key).await {
                    Ok(()) => {
                        tracing::info!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, "gateway deployment deleted: its Gateway needs it no more");
                        self.applied.remove(&key);
                    }
                    Err(e) => {
                        tracing::warn!(kind = ?key.kind, namespace = %key.namespace, name = %key.name, error = %e, "deleting a gateway deployment failed; retrying");
                        ok = false;
                    }
                }
            }
            if ok && !wanted.iter().any(|k| k.namespace == namespace) {
                self.namespaces.remove(&namespace);
            }
        }
        self.applied.retain(|key, _| wanted.contains(key));
        ok
    }

    /// Creates GatewayClass `istio` when the snapshot does not have it, as istiod does. True
    /// unless the attempt failed in a way worth retrying soon.
    async fn ensure_class(&mut self, snapshot: &Snapshot) -> bool {
        let key = ObjectKey::new(Kind::GatewayClass, "", DEFAULT_CLASS);
        if snapshot.objects.contains_key(&key)
            || self
                .class_tried
                .is_some_and(|tried| tried.elapsed() < CLASS_RETRY)
        {
            return true;
        }
        self.class_tried = Some(Instant::now());
        match create_class(&self.client).await {
            Ok(()) => {
                tracing::info!("GatewayClass {DEFAULT_CLASS} created");
                true
            }
            Err(e) if is_conflict(&e) => true,
            // No Gateway API CRDs: nothing to create yet; looked at again after a resync.
            Err(e) if is_not_found(&e) => true,
            Err(e) => {
                tracing::warn!(error = %e, "creating GatewayClass {DEFAULT_CLASS} failed");
                false
            }
        }
    }
}

/// Whether `revision` deploys the Gateway (or owns the managed object) with these labels, as
/// istiod decides it: the revision its `istio.io/rev` label names, else the default revision.
fn deploys(revision: &Revision, labels: &BTreeMap<String, String>) -> bool {
    match labels.get(REVISION_LABEL) {
        Some(name) => Revision::new(Some(name)) == *revision,
        None => revision.is_default(),
    }
}

/// What differs from what was applied last.
fn to_apply<'a>(
    wanted: &'a [(ManagedKey, Value)],
    applied: &BTreeMap<ManagedKey, Value>,
) -> Vec<(&'a ManagedKey, &'a Value)> {
    wanted
        .iter()
        .filter(|(key, value)| applied.get(key) != Some(value))
        .map(|(key, value)| (key, value))
        .collect()
}

/// Managed objects that exist and are not wanted.
fn stale(existing: &[ManagedKey], wanted: &BTreeSet<ManagedKey>) -> Vec<ManagedKey> {
    existing
        .iter()
        .filter(|key| !wanted.contains(*key))
        .cloned()
        .collect()
}

/// The API of `kind`'s objects in `namespace`.
fn managed_api(client: &kube::Client, kind: ManagedKind, namespace: &str) -> Api<DynamicObject> {
    let resource = match kind {
        ManagedKind::ServiceAccount => ApiResource::erase::<ServiceAccount>(&()),
        ManagedKind::Deployment => ApiResource::erase::<Deployment>(&()),
        ManagedKind::Service => ApiResource::erase::<Service>(&()),
    };
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn apply(client: &kube::Client, key: &ManagedKey, value: &Value) -> Result<(), kube::Error> {
    // Force: these objects are meshd's; a field someone else set is taken back.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    managed_api(client, key.kind, &key.namespace)
        .patch(&key.name, &params, &Patch::Apply(value))
        .await
        .map(drop)
}

/// Names of `revision`'s managed objects of `kind` in `namespace`.
async fn list_managed(
    client: &kube::Client,
    revision: &Revision,
    kind: ManagedKind,
    namespace: &str,
) -> Result<Vec<String>, kube::Error> {
    let params = ListParams::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
    let items = managed_api(client, kind, namespace)
        .list_metadata(&params)
        .await?
        .items;
    Ok(items
        .into_iter()
        .map(|item| item.metadata)
        .filter(|meta| deploys(revision, meta.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .filter_map(|meta| meta.name)
        .collect())
}

async fn delete(client: &kube::Client, key: &ManagedKey) -> Result<(), kube::Error> {
    let result = managed_api(client, key.kind, &key.namespace)
        .delete(&key.name, &DeleteParams::background())
        .await
        .map(drop);
    match result {
        Err(e) if is_not_found(&e) => Ok(()),
        other => other,
    }
}

async fn create_class(client: &kube::Client) -> Result<(), kube::Error> {
    let resource = gateway_api_resource(Kind::GatewayClass);
    let class: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": {"name": DEFAULT_CLASS},
        "spec": {
            "controllerName": CONTROLLER_NAME,
            "description": "The default Istio GatewayClass, served by meshd",
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .create(&PostParams::default(), &class)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(kind: ManagedKind, name: &str) -> ManagedKey {
        ManagedKey {
            kind,
            namespace: "shop".to_owned(),
            name: name.to_owned(),
        }
    }

    #[test]
    fn only_what_differs_from_the_last_apply_is_applied_again() {
        let wanted = vec![
            (key(ManagedKind::Deployment, "web-istio"), json!({"v": 2})),
            (key(ManagedKind::Service, "web-istio"), json!({"v": 1})),
            (
                key(ManagedKind::ServiceAccount, "web-istio"),
                json!({"v": 1}),
            ),
        ];
        let applied = BTreeMap::from([
            (key(ManagedKind::Deployment, "web-istio"), json!({"v": 1})),
            (key(ManagedKind::Service, "web-istio"), json!({"v": 1})),
        ]);
        let kinds: Vec<ManagedKind> = to_apply(&wanted, &applied)
            .into_iter()
            .map(|(key, _)| key.kind)
            .collect();
        assert_eq!(
            kinds,
            [ManagedKind::Deployment, ManagedKind::ServiceAccount]
        );
        let all: BTreeMap<ManagedKey, Value> = wanted.iter().cloned().collect();
        assert!(to_apply(&wanted, &all).is_empty());
    }

    #[test]
    fn managed_objects_no_gateway_wants_are_stale() {
        let wanted = BTreeSet::from([key(ManagedKind::Service, "web-istio")]);
        let existing = vec![
            key(ManagedKind::Service, "web-istio"),
            key(ManagedKind::Service, "old-istio"),
            key(ManagedKind::Deployment, "web-istio"),
        ];
        assert_eq!(
            stale(&existing, &wanted),
            [
                key(ManagedKind::Service, "old-istio"),
                key(ManagedKind::Deployment, "web-istio")
            ]
        );
    }

    #[test]
    fn a_gateway_is_deployed_by_the_revision_it_names_else_by_the_default_one() {
        let default = Revision::default();
        let canary = Revision::new(Some("canary"));
        let unlabelled = BTreeMap::new();
        let for_canary = BTreeMap::from([(REVISION_LABEL.to_owned(), "canary".to_owned())]);
        assert!(deploys(&default, &unlabelled) && !deploys(&canary, &unlabelled));
        assert!(!deploys(&default, &for_canary) && deploys(&canary, &for_canary));
    }

    #[test]
    fn the_default_class_is_created_at_the_gateway_api_v1_path() {
        let resource = gateway_api_resource(Kind::GatewayClass);
        assert_eq!(resource.api_version, "gateway.networking.k8s.io/v1");
        assert_eq!(resource.plural, "gatewayclasses");
        assert_eq!(resource.kind, "GatewayClass");
    }
}
