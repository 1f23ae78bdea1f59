//! The Kubernetes source: kube-runtime watchers feeding the same index the file source feeds.
//!
//! One origin per watched kind (`kube:Service`, …): a (re-)list (`Init…InitDone`) replaces
//! that origin atomically, `Apply`/`Delete` update single objects. The source reports `Synced`
//! once every kind found at start has been listed completely. Watch errors are logged and
//! retried with kube-runtime's default backoff; objects stay as they were meanwhile, so an
//! API-server or etcd outage costs freshness, never state.
//!
//! What is read, and why no more:
//! - Namespace, Service, Pod (shrunk to name, namespace, labels, annotations, service account,
//!   container ports and IP before parsing), and EndpointSlice discovery.k8s.io/v1 — or, when
//!   the server has no v1 slices (Kubernetes < 1.21), Endpoints v1;
//! - ConfigMap `istio` in the root namespace only (mesh config);
//! - Secrets only under the names Gateways reference — an Istio Gateway's `credentialName` (and
//!   `<name>-cacert`), a Gateway API Gateway's listener `certificateRefs` —
//!   each through a watch with a `metadata.name` field selector: meshd never lists, caches or
//!   sees any other Secret's data. (RBAC cannot express "referenced Secrets", so the role still
//!   grants get/list/watch on secrets; what meshd actually reads is the referenced set.)
//! - every Istio and Gateway API kind meshd knows whose CRD the server serves (Gateway API objects
//!   with their `status`, which the leader compares with what it would write), at the group's
//!   preferred version when it serves the kind (else the most stable version meshd reads). The
//!   API server converts, so objects stored at any served version arrive. Kinds whose CRD is missing are skipped and
//!   picked up by a discovery re-run when the CRD appears; a removed CRD drops its objects.
//!
//! A custom resource meshd cannot parse is skipped and reported — logged, and in the same error
//! map the file source uses (`/debug/configz`) — never fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kube::api::ListParams;
use meshd_model::{InvalidObject, Kind, Object, Revision, SourceEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::convert::{Converted, convert};
use crate::discover::{
    REDISCOVERY, WatchSpec, config_kinds, config_spec, discover, origin, plan, secret_origin,
    secret_spec,
};
use crate::watch::{Credentials, SyncTracker, run_watch};

/// A task aborted when its handle is dropped.
pub(crate) struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the source: discovery (retried until the server answers), one watcher per kind, the
/// referenced-Secrets watchers, and periodic re-discovery.
pub fn spawn_source(
    client: kube::Client,
    root_namespace: String,
    revision: Revision,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    tokio::spawn(run(client, root_namespace, revision, tx));
}

pub(crate) async fn run(
    client: kube::Client,
    root_namespace: String,
    revision: Revision,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    let mut delay = Duration::from_millis(500);
    let mut found = loop {
        match discover(&client).await {
            Ok(found) => break found,
            Err(e) => {
                tracing::warn!(error = %e, "Kubernetes API discovery failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    };
    let specs = plan(&found, &root_namespace, Some(&revision));
    tracing::info!(
        kinds = ?specs.iter().map(|s| format!("{}:{}", s.kind, s.resource.api_version)).collect::<Vec<_>>(),
        "Kubernetes source: watching"
    );
    let tracker = Arc::new(SyncTracker {
        pending: Mutex::new(specs.iter().map(|s| s.origin.clone()).collect()),
        tx: tx.clone(),
    });
    let (credentials_tx, credentials_rx) = watch::channel(Credentials::new());
    let credentials_tx = Arc::new(credentials_tx);
    let _secrets = Task(tokio::spawn(run_secrets(
        client.clone(),
        credentials_rx,
        tx.clone(),
    )));
    let mut running: BTreeMap<Kind, (WatchSpec, Task)> = BTreeMap::new();
    for spec in specs {
        let task = spawn_watch(&client, &spec, &tx, Some(tracker.clone()), &credentials_tx);
        running.insert(spec.kind, (spec, task));
    }
    loop {
        tokio::time::sleep(REDISCOVERY).await;
        if tx.is_closed() {
            return;
        }
        let now = match discover(&client).await {
            Ok(now) => now,
            Err(e) => {
                tracing::debug!(error = %e, "Kubernetes API re-discovery failed");
                continue;
            }
        };
        if now == found {
            continue;
        }
        for kind in config_kinds() {
            let was = running.get(&kind).map(|(s, _)| s.resource.clone());
            let is = now.kinds.get(&kind).cloned();
            if was == is {
                continue;
            }
            if running.remove(&kind).is_some() {
                tracing::info!(%kind, "CRD gone or changed: dropping its objects");
                let _ = tx.send(SourceEvent::Reset {
                    origin: origin(kind),
                    objects: Vec::new(),
                    errors: Vec::new(),
                });
            }
            if let Some(resource) = is {
                tracing::info!(%kind, api_version = %resource.api_version, "CRD found: watching");
                let spec = config_spec(kind, resource, Some(&revision));
                let task = spawn_watch(&client, &spec, &tx, None, &credentials_tx);
                running.insert(kind, (spec, task));
            }
        }
        found = now;
    }
}

pub(crate) fn spawn_watch(
    client: &kube::Client,
    spec: &WatchSpec,
    tx: &mpsc::UnboundedSender<SourceEvent>,
    tracker: Option<Arc<SyncTracker>>,
    credentials: &Arc<watch::Sender<Credentials>>,
) -> Task {
    let references_secrets = matches!(spec.kind, Kind::Gateway | Kind::KubeGateway);
    let credentials = references_secrets.then(|| credentials.clone());
    Task(tokio::spawn(run_watch(
        client.clone(),
        spec.clone(),
        tx.clone(),
        tracker,
        credentials,
    )))
}

/// Watches exactly the Secrets Gateways reference, by name, in every namespace (the gateway's
/// proxies may live in another namespace than the Gateway; the generator only ever hands a
/// gateway the Secrets of its own namespace).
pub(crate) async fn run_secrets(
    client: kube::Client,
    mut names: watch::Receiver<Credentials>,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    let mut running: BTreeMap<String, Task> = BTreeMap::new();
    loop {
        let wanted: BTreeSet<String> = names
            .borrow_and_update()
            .values()
            .flatten()
            .cloned()
            .collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            running.remove(&name);
            let _ = tx.send(SourceEvent::Reset {
                origin: secret_origin(&name),
                objects: Vec::new(),
                errors: Vec::new(),
            });
        }
        for name in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let spec = secret_spec(&name);
            tracing::info!(secret = %name, "watching a referenced gateway credential");
            let task = Task(tokio::spawn(run_watch(
                client.clone(),
                spec,
                tx.clone(),
                None,
                None,
            )));
            running.insert(name, task);
        }
        if names.changed().await.is_err() {
            return;
        }
    }
}

/// Everything the source would read, listed once (for `meshd analyze --kubeconfig`).
pub async fn list_once(
    client: &kube::Client,
    root_namespace: &str,
) -> anyhow::Result<(Vec<Object>, Vec<InvalidObject>)> {
    let found = discover(client).await?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut credentials = BTreeSet::new();
    for spec in plan(&found, root_namespace, None) {
        for c in list_all(client, &spec).await? {
            credentials.extend(c.credentials);
            match c.result {
                Ok(o) => objects.push(o),
                Err(e) => errors.push(e),
            }
        }
    }
    // Referenced gateway credentials, so "credential not found" findings are real.
    for name in credentials {
        let spec = secret_spec(&name);
        for c in list_all(client, &spec).await? {
            if let Ok(o) = c.result {
                objects.push(o);
            }
        }
    }
    Ok((objects, errors))
}

pub(crate) async fn list_all(
    client: &kube::Client,
    spec: &WatchSpec,
) -> anyhow::Result<Vec<Converted>> {
    use anyhow::Context as _;
    let api = spec.api(client.clone());
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(500);
    if let Some(fields) = &spec.field_selector {
        params = params.fields(fields);
    }
    loop {
        let page = api
            .list(&params)
            .await
            .with_context(|| format!("listing {}", spec.resource.plural))?;
        out.extend(
            page.items
                .into_iter()
                .map(|o| convert(spec, o))
                .filter(|c| !c.foreign),
        );
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}
