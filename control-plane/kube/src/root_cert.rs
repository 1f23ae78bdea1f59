//! Root certificate distribution: ConfigMap `istio-ca-root-cert` (key `root-cert.pem`) in every
//! namespace, as istiod keeps it, so workloads (and injected sidecars) can verify meshd.
//!
//! Every replica watches Namespaces and these ConfigMaps; only the leader writes, and only what
//! differs: a missing ConfigMap is created, one with another root (CA rotation, or someone
//! editing it) is patched. The trust bundle is read from the CA every few seconds, so a rotated
//! root reaches every namespace without a restart. Namespaces being deleted are left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};

use crate::TrustBundle;
use crate::backoff::with_backoff;
use crate::client::{KubeContext, is_conflict};

pub const CONFIGMAP: &str = "istio-ca-root-cert";
pub const KEY: &str = "root-cert.pem";
/// How often the CA's trust bundle is compared with what was distributed.
const ROOT_CHECK: Duration = Duration::from_secs(2);

/// What the controller knows of the cluster.
#[derive(Default)]
struct View {
    /// Namespace → being deleted.
    namespaces: BTreeMap<String, bool>,
    /// Namespace → the `root-cert.pem` its ConfigMap holds (`None`: the ConfigMap has no such key).
    configmaps: BTreeMap<String, Option<String>>,
    namespaces_listed: bool,
    configmaps_listed: bool,
}

/// What has to be written for `root` to be everywhere: (namespace, exists already).
fn plan(view: &View, root: &str) -> Vec<(String, bool)> {
    view.namespaces
        .iter()
        .filter(|(_, terminating)| !**terminating)
        .filter_map(|(ns, _)| match view.configmaps.get(ns) {
            Some(Some(have)) if have == root => None,
            Some(_) => Some((ns.clone(), true)),
            None => Some((ns.clone(), false)),
        })
        .collect()
}

/// Keeps the ConfigMap current in every namespace while this replica leads.
pub fn spawn(ctx: KubeContext, bundle: TrustBundle) {
    tokio::spawn(run(ctx, bundle));
}

async fn run(mut ctx: KubeContext, bundle: TrustBundle) {
    let namespaces = with_backoff(watcher::watcher(
        Api::<Namespace>::all(ctx.client.clone()),
        watcher::Config::default(),
    ))
    .boxed();
    let configmaps = with_backoff(watcher::watcher(
        Api::<ConfigMap>::all(ctx.client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP}")),
    ))
    .boxed();
    let mut namespaces = namespaces.fuse();
    let mut configmaps = configmaps.fuse();
    let mut view = View::default();
    let mut ns_buffer: Option<BTreeMap<String, bool>> = None;
    let mut cm_buffer: Option<BTreeMap<String, Option<String>>> = None;
    let mut tick = tokio::time::interval(ROOT_CHECK);
    let mut dirty = true;
    loop {
        tokio::select! {
            event = namespaces.next() => {
                let Some(event) = event else { return };
                dirty |= on_namespace(event, &mut view, &mut ns_buffer);
            }
            event = configmaps.next() => {
                let Some(event) = event else { return };
                dirty |= on_configmap(event, &mut view, &mut cm_buffer);
            }
            changed = ctx.leader.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            _ = tick.tick() => {
                // Also retries writes that failed.
                dirty = true;
            }
        }
        if !dirty || !*ctx.leader.borrow() || !view.namespaces_listed || !view.configmaps_listed {
            continue;
        }
        dirty = false;
        let root = bundle();
        for (namespace, exists) in plan(&view, &root) {
            match write(&ctx.client, &namespace, &root, exists).await {
                Ok(()) => {
                    tracing::info!(%namespace, "{CONFIGMAP} written");
                    // The watch will confirm; until then, do not write it again.
                    view.configmaps.insert(namespace, Some(root.clone()));
                }
                Err(e) => {
                    tracing::warn!(%namespace, error = %e, "writing {CONFIGMAP} failed; retrying");
                }
            }
        }
    }
}

fn on_namespace(
    event: Result<Event<Namespace>, watcher::Error>,
    view: &mut View,
    buffer: &mut Option<BTreeMap<String, bool>>,
) -> bool {
    let entry = |ns: &Namespace| {
        let terminating = ns.metadata.deletion_timestamp.is_some()
            || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
        (ns.metadata.name.clone().unwrap_or_default(), terminating)
    };
    match event {
        Ok(Event::Init) => *buffer = Some(BTreeMap::new()),
        Ok(Event::InitApply(ns)) => {
            let (name, t) = entry(&ns);
            buffer.get_or_insert_with(BTreeMap::new).insert(name, t);
        }
        Ok(Event::InitDone) => {
            view.namespaces = buffer.take().unwrap_or_default();
            view.namespaces_listed = true;
        }
        Ok(Event::Apply(ns)) => {
            let (name, t) = entry(&ns);
            view.namespaces.insert(name, t);
        }
        Ok(Event::Delete(ns)) => {
            view.namespaces.remove(&entry(&ns).0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "root certificate distribution: namespace watch failed");
            return false;
        }
    }
    true
}

fn on_configmap(
    event: Result<Event<ConfigMap>, watcher::Error>,
    view: &mut View,
    buffer: &mut Option<BTreeMap<String, Option<String>>>,
) -> bool {
    let entry = |cm: &ConfigMap| {
        (
            cm.metadata.namespace.clone().unwrap_or_default(),
            cm.data.as_ref().and_then(|d| d.get(KEY)).cloned(),
        )
    };
    match event {
        Ok(Event::Init) => *buffer = Some(BTreeMap::new()),
        Ok(Event::InitApply(cm)) => {
            let (ns, root) = entry(&cm);
            buffer.get_or_insert_with(BTreeMap::new).insert(ns, root);
        }
        Ok(Event::InitDone) => {
            view.configmaps = buffer.take().unwrap_or_default();
            view.configmaps_listed = true;
        }
        Ok(Event::Apply(cm)) => {
            let (ns, root) = entry(&cm);
            view.configmaps.insert(ns, root);
        }
        Ok(Event::Delete(cm)) => {
            view.configmaps.remove(&entry(&cm).0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "root certificate distribution: ConfigMap watch failed");
            return false;
        }
    }
    true
}

async fn write(
    client: &kube::Client,
    namespace: &str,
    root: &str,
    exists: bool,
) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    if !exists {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP.to_string()),
                namespace: Some(namespace.to_string()),
                labels: Some(BTreeMap::from([
                    ("istio.io/config".to_string(), "true".to_string()),
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "meshd".to_string(),
                    ),
                ])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(KEY.to_string(), root.to_string())])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &cm).await {
            Ok(_) => return Ok(()),
            // Created meanwhile (by a previous leader, say): fall through to update it.
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let patch = serde_json::json!({ "data": { KEY: root } });
    api.patch(CONFIGMAP, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_is_missing_or_stale_and_skips_terminating_namespaces() {
        let mut view = View::default();
        for (ns, terminating) in [("a", false), ("b", false), ("c", false), ("gone", true)] {
            view.namespaces.insert(ns.to_string(), terminating);
        }
        view.configmaps.insert("a".into(), Some("ROOT".into()));
        view.configmaps.insert("b".into(), Some("OLD".into()));
        assert_eq!(
            plan(&view, "ROOT"),
            vec![("b".to_string(), true), ("c".to_string(), false)]
        );
        view.configmaps.insert("c".into(), None);
        assert_eq!(plan(&view, "ROOT")[1], ("c".to_string(), true));
    }
}
