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
//! - Secrets only under the names Gateways reference in `credentialName` (and `<name>-cacert`),
//!   each through a watch with a `metadata.name` field selector: meshd never lists, caches or
//!   sees any other Secret's data. (RBAC cannot express "referenced Secrets", so the role still
//!   grants get/list/watch on secrets; what meshd actually reads is the referenced set.)
//! - every Istio kind meshd knows whose CRD the server serves, at the group's preferred version
//!   when it serves the kind (else the most stable version meshd reads). The API server converts,
//!   so objects stored at any served version arrive. Kinds whose CRD is missing are skipped and
//!   picked up by a discovery re-run when the CRD appears; a removed CRD drops its objects.
//!
//! A custom resource meshd cannot parse is skipped and reported — logged, and in the same error
//! map the file source uses (`/debug/configz`) — never fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::runtime::watcher as watch_stream;
use kube::runtime::watcher::{self, Event};
use meshd_model::{Kind, Object, ObjectKey};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::SourceEvent;
use crate::documents::DocumentError;

/// The name this source reports `Synced` under.
pub const SOURCE: &str = "kube";

/// How often the API groups are looked at again for Istio CRDs installed (or removed) later.
const REDISCOVERY: Duration = Duration::from_secs(30);

const ISTIO_KINDS: [Kind; 9] = [
    Kind::ServiceEntry,
    Kind::WorkloadEntry,
    Kind::VirtualService,
    Kind::DestinationRule,
    Kind::Gateway,
    Kind::Sidecar,
    Kind::PeerAuthentication,
    Kind::AuthorizationPolicy,
    Kind::RequestAuthentication,
];

/// The Istio mesh config lives in this ConfigMap of the root namespace.
const MESH_CONFIGMAP: &str = "istio";

/// One watch: a kind, where its objects go, and what to ask the server for.
#[derive(Clone, Debug)]
struct WatchSpec {
    kind: Kind,
    origin: String,
    resource: ApiResource,
    namespace: Option<String>,
    field_selector: Option<String>,
}

impl WatchSpec {
    fn api(&self, client: kube::Client) -> Api<DynamicObject> {
        match &self.namespace {
            Some(ns) => Api::namespaced_with(client, ns, &self.resource),
            None => Api::all_with(client, &self.resource),
        }
    }
}

fn origin(kind: Kind) -> String {
    format!("kube:{kind}")
}

fn secret_origin(name: &str) -> String {
    format!("kube:Secret/{name}")
}

fn core_resource(kind: Kind) -> ApiResource {
    use k8s_openapi::api::core::v1;
    match kind {
        Kind::Namespace => ApiResource::erase::<v1::Namespace>(&()),
        Kind::Service => ApiResource::erase::<v1::Service>(&()),
        Kind::Endpoints => ApiResource::erase::<v1::Endpoints>(&()),
        Kind::Pod => ApiResource::erase::<v1::Pod>(&()),
        Kind::ConfigMap => ApiResource::erase::<v1::ConfigMap>(&()),
        _ => ApiResource::erase::<v1::Secret>(&()),
    }
}

fn resource(group: &str, version: &str, kind: Kind, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: format!("{group}/{version}"),
        kind: kind.name().to_string(),
        plural: plural.to_string(),
    }
}

/// What the server serves of the groups meshd reads beyond the core group.
#[derive(Debug, Default, PartialEq)]
struct Discovered {
    /// Kind → resource at the version to watch.
    kinds: BTreeMap<Kind, ApiResource>,
}

/// Asks the server which Istio kinds (and whether EndpointSlice v1) it serves.
async fn discover(client: &kube::Client) -> Result<Discovered, kube::Error> {
    let groups = client.list_api_groups().await?;
    let mut found = Discovered::default();
    for group in &groups.groups {
        let wanted: Vec<Kind> = Kind::ALL
            .into_iter()
            .filter(|k| k.group() == group.name && !k.group().is_empty())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // Preferred version first, then the server's order (most stable first).
        let mut versions: Vec<&str> = Vec::new();
        if let Some(p) = &group.preferred_version {
            versions.push(&p.version);
        }
        for v in &group.versions {
            if !versions.contains(&v.version.as_str()) {
                versions.push(&v.version);
            }
        }
        for version in versions {
            let accepted: Vec<Kind> = wanted
                .iter()
                .copied()
                .filter(|k| k.versions().contains(&version) && !found.kinds.contains_key(k))
                .collect();
            if accepted.is_empty() {
                continue;
            }
            let list = client
                .list_api_group_resources(&format!("{}/{version}", group.name))
                .await?;
            for r in &list.resources {
                // Subresources (`virtualservices/status`) share the kind; skip them.
                if r.name.contains('/') {
                    continue;
                }
                if let Some(kind) = accepted.iter().find(|k| k.name() == r.kind) {
                    found
                        .kinds
                        .insert(*kind, resource(&group.name, version, *kind, &r.name));
                }
            }
        }
    }
    Ok(found)
}

/// The watches for what the server has: core kinds, then what discovery found.
fn plan(found: &Discovered, root_namespace: &str) -> Vec<WatchSpec> {
    let spec = |kind: Kind, resource: ApiResource| WatchSpec {
        kind,
        origin: origin(kind),
        resource,
        namespace: None,
        field_selector: None,
    };
    let mut out = vec![
        spec(Kind::Namespace, core_resource(Kind::Namespace)),
        spec(Kind::Service, core_resource(Kind::Service)),
        spec(Kind::Pod, core_resource(Kind::Pod)),
    ];
    match found.kinds.get(&Kind::EndpointSlice) {
        Some(r) => out.push(spec(Kind::EndpointSlice, r.clone())),
        None => out.push(spec(Kind::Endpoints, core_resource(Kind::Endpoints))),
    }
    out.push(WatchSpec {
        namespace: Some(root_namespace.to_string()),
        field_selector: Some(format!("metadata.name={MESH_CONFIGMAP}")),
        ..spec(Kind::ConfigMap, core_resource(Kind::ConfigMap))
    });
    for kind in ISTIO_KINDS {
        if let Some(r) = found.kinds.get(&kind) {
            out.push(spec(kind, r.clone()));
        }
    }
    out
}

/// Reports `Synced` once every origin it was made with has been listed once.
struct SyncTracker {
    pending: Mutex<BTreeSet<String>>,
    tx: mpsc::UnboundedSender<SourceEvent>,
}

impl SyncTracker {
    fn listed(&self, origin: &str) {
        let mut pending = self.pending.lock();
        if pending.remove(origin) && pending.is_empty() {
            tracing::info!("Kubernetes source: every kind listed");
            let _ = self.tx.send(SourceEvent::Synced {
                source: SOURCE.to_string(),
            });
        }
    }
}

/// A task aborted when its handle is dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the source: discovery (retried until the server answers), one watcher per kind, the
/// referenced-Secrets watchers, and periodic re-discovery.
pub fn spawn(client: kube::Client, root_namespace: String, tx: mpsc::UnboundedSender<SourceEvent>) {
    tokio::spawn(run(client, root_namespace, tx));
}

async fn run(client: kube::Client, root_namespace: String, tx: mpsc::UnboundedSender<SourceEvent>) {
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
    let specs = plan(&found, &root_namespace);
    tracing::info!(
        kinds = ?specs.iter().map(|s| format!("{}:{}", s.kind, s.resource.api_version)).collect::<Vec<_>>(),
        "Kubernetes source: watching"
    );
    let tracker = Arc::new(SyncTracker {
        pending: Mutex::new(specs.iter().map(|s| s.origin.clone()).collect()),
        tx: tx.clone(),
    });
    let (credentials_tx, credentials_rx) = watch::channel(BTreeSet::new());
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
        for kind in ISTIO_KINDS {
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
                let spec = WatchSpec {
                    kind,
                    origin: origin(kind),
                    resource,
                    namespace: None,
                    field_selector: None,
                };
                let task = spawn_watch(&client, &spec, &tx, None, &credentials_tx);
                running.insert(kind, (spec, task));
            }
        }
        found = now;
    }
}

fn spawn_watch(
    client: &kube::Client,
    spec: &WatchSpec,
    tx: &mpsc::UnboundedSender<SourceEvent>,
    tracker: Option<Arc<SyncTracker>>,
    credentials: &Arc<watch::Sender<BTreeSet<String>>>,
) -> Task {
    let credentials = (spec.kind == Kind::Gateway).then(|| credentials.clone());
    Task(tokio::spawn(run_watch(
        client.clone(),
        spec.clone(),
        tx.clone(),
        tracker,
        credentials,
    )))
}

/// Follows one watch, translating its events for the index.
async fn run_watch(
    client: kube::Client,
    spec: WatchSpec,
    tx: mpsc::UnboundedSender<SourceEvent>,
    tracker: Option<Arc<SyncTracker>>,
    credentials: Option<Arc<watch::Sender<BTreeSet<String>>>>,
) {
    let mut config = watcher::Config::default();
    if let Some(fields) = &spec.field_selector {
        config = config.fields(fields);
    }
    let mut stream = with_backoff(watch_stream(spec.api(client), config)).boxed();
    let mut state = WatchState::default();
    let mut buffer: Option<Vec<Converted>> = None;
    while let Some(event) = stream.next().await {
        let sent = match event {
            Ok(Event::Init) => {
                buffer = Some(Vec::new());
                true
            }
            Ok(Event::InitApply(obj)) => {
                buffer
                    .get_or_insert_with(Vec::new)
                    .push(convert(&spec, obj));
                true
            }
            Ok(Event::InitDone) => {
                let listed = buffer.take().unwrap_or_default();
                let event = state.relisted(&spec.origin, listed);
                let sent = tx.send(event).is_ok();
                if let Some(tracker) = &tracker {
                    tracker.listed(&spec.origin);
                }
                sent
            }
            Ok(Event::Apply(obj)) => {
                let event = state.applied(&spec.origin, convert(&spec, obj));
                tx.send(event).is_ok()
            }
            Ok(Event::Delete(obj)) => {
                let event = state.deleted(&spec.origin, convert(&spec, obj).key);
                tx.send(event).is_ok()
            }
            Err(e) if is_expired(&e) => {
                tracing::debug!(kind = %spec.kind, error = %e, "watch expired; listing again");
                true
            }
            Err(e) => {
                tracing::warn!(kind = %spec.kind, error = %e, "watch failed; retrying with backoff");
                true
            }
        };
        if !sent {
            return;
        }
        if let Some(credentials) = &credentials {
            let names = state.credential_names();
            credentials.send_if_modified(|current| {
                let changed = *current != names;
                *current = names;
                changed
            });
        }
    }
}

/// An expired resourceVersion (410 Gone): routine, the watcher lists again.
fn is_expired(e: &watcher::Error) -> bool {
    matches!(e, watcher::Error::WatchError(status) if status.code == 410)
}

/// Backoff between watch errors: from 500 ms, doubling up to 10 s, with jitter; back to the
/// start as soon as the watch delivers anything again, and none after a 410 (a re-list is all
/// that takes). kube-runtime's default keeps its delay for two minutes after the last error, so
/// after an outage even a routine 410 would stall a kind for many seconds.
#[derive(Debug)]
pub(super) struct WatchBackoff {
    next: Duration,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Self {
        WatchBackoff { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// How long to wait after `error` before watching again.
    pub(super) fn after(&mut self, error: &watcher::Error) -> Duration {
        if is_expired(error) {
            return Duration::ZERO;
        }
        use std::hash::{BuildHasher as _, Hasher as _};
        let base = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        // Between half and all of the delay, so replicas do not retry in lockstep.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        base / 2 + base.mul_f64((random % 1000) as f64 / 2000.0)
    }
}

/// A watcher stream that waits per [`WatchBackoff`] after each error it yields.
pub(super) fn with_backoff<K: Send + 'static>(
    stream: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send {
    let state = (stream.boxed(), WatchBackoff::new(), Duration::ZERO);
    futures::stream::unfold(state, |(mut stream, mut backoff, wait)| async move {
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let item = stream.next().await?;
        let wait = match &item {
            Ok(_) => {
                backoff.reset();
                Duration::ZERO
            }
            Err(e) => backoff.after(e),
        };
        Some((item, (stream, backoff, wait)))
    })
}

/// What one watch remembers between events: its invalid objects (to report them as a whole,
/// like a file's), and for Gateways the Secrets each one references.
#[derive(Default)]
struct WatchState {
    errors: BTreeMap<ObjectKey, DocumentError>,
    credentials: BTreeMap<ObjectKey, BTreeSet<String>>,
}

impl WatchState {
    fn error_list(&self) -> Vec<DocumentError> {
        self.errors.values().cloned().collect()
    }

    fn credential_names(&self) -> BTreeSet<String> {
        self.credentials.values().flatten().cloned().collect()
    }

    fn relisted(&mut self, origin: &str, listed: Vec<Converted>) -> SourceEvent {
        self.errors.clear();
        self.credentials.clear();
        let mut objects = Vec::with_capacity(listed.len());
        for c in listed {
            if !c.credentials.is_empty() {
                self.credentials.insert(c.key.clone(), c.credentials);
            }
            match c.result {
                Ok(o) => objects.push(o),
                Err(e) => {
                    self.errors.insert(c.key, e);
                }
            }
        }
        SourceEvent::Reset {
            origin: origin.to_string(),
            objects,
            errors: self.error_list(),
        }
    }

    fn applied(&mut self, origin: &str, c: Converted) -> SourceEvent {
        if c.credentials.is_empty() {
            self.credentials.remove(&c.key);
        } else {
            self.credentials.insert(c.key.clone(), c.credentials);
        }
        let had_error = self.errors.contains_key(&c.key);
        match c.result {
            Ok(object) => {
                self.errors.remove(&c.key);
                SourceEvent::Update {
                    origin: origin.to_string(),
                    apply: vec![object],
                    delete: Vec::new(),
                    errors: had_error.then(|| self.error_list()),
                }
            }
            // The object as it is now is unusable: the version before it goes too.
            Err(e) => {
                tracing::warn!(error = %e, "invalid object skipped");
                self.errors.insert(c.key.clone(), e);
                SourceEvent::Update {
                    origin: origin.to_string(),
                    apply: Vec::new(),
                    delete: vec![c.key],
                    errors: Some(self.error_list()),
                }
            }
        }
    }

    fn deleted(&mut self, origin: &str, key: ObjectKey) -> SourceEvent {
        self.credentials.remove(&key);
        let had_error = self.errors.remove(&key).is_some();
        SourceEvent::Update {
            origin: origin.to_string(),
            apply: Vec::new(),
            delete: vec![key],
            errors: had_error.then(|| self.error_list()),
        }
    }
}

/// One watched object, parsed.
struct Converted {
    key: ObjectKey,
    result: Result<Object, DocumentError>,
    /// Secrets a Gateway references (`credentialName` and its `-cacert`).
    credentials: BTreeSet<String>,
}

fn convert(spec: &WatchSpec, obj: DynamicObject) -> Converted {
    let namespace = if spec.kind.namespaced() {
        obj.metadata.namespace.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = ObjectKey::new(spec.kind, namespace, name);
    let error = |message: String| DocumentError {
        file: PathBuf::from(format!(
            "kube:{}",
            if key.namespace.is_empty() {
                format!("{}/{}", key.kind, key.name)
            } else {
                format!("{}/{}/{}", key.kind, key.namespace, key.name)
            }
        )),
        document: 1,
        message,
    };
    let result = match serde_json::to_value(&obj) {
        Ok(mut value) => {
            value["apiVersion"] = Value::String(spec.resource.api_version.clone());
            value["kind"] = Value::String(spec.resource.kind.clone());
            let value = shrink(spec.kind, value);
            match Object::parse(value) {
                Ok(Some(object)) => Ok(object),
                Ok(None) => Err(error(format!("kind {} is not read", spec.kind))),
                Err(e) => Err(error(e.to_string())),
            }
        }
        Err(e) => Err(error(format!("cannot encode: {e}"))),
    };
    let credentials = match &result {
        Ok(Object::Gateway(gw)) => gw
            .spec
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref()?.credential_name.clone())
            .filter(|n| is_object_name(n))
            .flat_map(|n| [format!("{n}-cacert"), n])
            .collect(),
        _ => BTreeSet::new(),
    };
    Converted {
        key,
        result,
        credentials,
    }
}

/// A DNS-1123 subdomain: safe inside a field selector.
fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// Drops what meshd never reads before it is parsed and kept: server-side bookkeeping on every
/// kind, and for Pods everything but identity, labels, ports and address.
fn shrink(kind: Kind, mut value: Value) -> Value {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
    if kind != Kind::Pod {
        return value;
    }
    let pick = |pointer: &str| value.pointer(pointer).cloned().unwrap_or(Value::Null);
    let containers: Vec<Value> = value
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    serde_json::json!({
                        "name": c.get("name").cloned().unwrap_or(Value::Null),
                        "ports": c.get("ports").cloned().unwrap_or(Value::Array(Vec::new())),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let mut metadata = serde_json::Map::new();
    for field in ["name", "namespace", "labels", "annotations"] {
        if let Some(v) = value.pointer(&format!("/metadata/{field}")) {
            metadata.insert(field.to_string(), v.clone());
        }
    }
    let mut spec = serde_json::Map::new();
    if let Some(sa) = value.pointer("/spec/serviceAccountName") {
        spec.insert("serviceAccountName".to_string(), sa.clone());
    }
    spec.insert("containers".to_string(), Value::Array(containers));
    let mut status = serde_json::Map::new();
    if let Some(ip) = value.pointer("/status/podIP") {
        status.insert("podIP".to_string(), ip.clone());
    }
    serde_json::json!({
        "apiVersion": pick("/apiVersion"),
        "kind": pick("/kind"),
        "metadata": metadata,
        "spec": spec,
        "status": status,
    })
}

/// Watches exactly the Secrets Gateways reference, by name, in every namespace (the gateway's
/// proxies may live in another namespace than the Gateway; the generator only ever hands a
/// gateway the Secrets of its own namespace).
async fn run_secrets(
    client: kube::Client,
    mut names: watch::Receiver<BTreeSet<String>>,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    let mut running: BTreeMap<String, Task> = BTreeMap::new();
    loop {
        let wanted = names.borrow_and_update().clone();
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
            let spec = WatchSpec {
                kind: Kind::Secret,
                origin: secret_origin(&name),
                resource: core_resource(Kind::Secret),
                namespace: None,
                field_selector: Some(format!("metadata.name={name}")),
            };
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
) -> anyhow::Result<(Vec<Object>, Vec<DocumentError>)> {
    let found = discover(client).await?;
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    let mut credentials = BTreeSet::new();
    for spec in plan(&found, root_namespace) {
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
        let spec = WatchSpec {
            kind: Kind::Secret,
            origin: secret_origin(&name),
            resource: core_resource(Kind::Secret),
            namespace: None,
            field_selector: Some(format!("metadata.name={name}")),
        };
        for c in list_all(client, &spec).await? {
            if let Ok(o) = c.result {
                objects.push(o);
            }
        }
    }
    Ok((objects, errors))
}

async fn list_all(client: &kube::Client, spec: &WatchSpec) -> anyhow::Result<Vec<Converted>> {
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
        out.extend(page.items.into_iter().map(|o| convert(spec, o)));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_spec(kind: Kind, resource: ApiResource) -> WatchSpec {
        WatchSpec {
            kind,
            origin: origin(kind),
            resource,
            namespace: None,
            field_selector: None,
        }
    }

    fn mk_dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn vs_resource() -> ApiResource {
        resource(
            "networking.istio.io",
            "v1",
            Kind::VirtualService,
            "virtualservices",
        )
    }

    #[test]
    fn pods_are_shrunk_to_what_the_mesh_reads() {
        let pod = mk_dynamic(json!({
            "metadata": {
                "name": "web-0", "namespace": "apps", "uid": "1234", "resourceVersion": "77",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{…}", "a": "b"},
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {
                "serviceAccountName": "web",
                "containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"name": "http", "containerPort": 8080}]}],
                "volumes": [{"name": "v"}],
            },
            "status": {"podIP": "10.0.0.5", "phase": "Running", "conditions": []},
        }));
        let spec = mk_spec(Kind::Pod, core_resource(Kind::Pod));
        let value = shrink(Kind::Pod, serde_json::to_value(&pod).unwrap());
        assert_eq!(value["metadata"]["annotations"], json!({"a": "b"}));
        assert!(value["metadata"].get("uid").is_none());
        assert!(value["spec"].get("volumes").is_none());
        assert_eq!(
            value["spec"]["containers"],
            json!([{"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}])
        );
        let c = convert(&spec, pod);
        assert_eq!(c.key, ObjectKey::new(Kind::Pod, "apps", "web-0"));
        let Ok(Object::Pod(pod)) = c.result else {
            panic!("not a pod: {:?}", c.result.err())
        };
        assert_eq!(pod.status.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(pod.spec.service_account_name.as_deref(), Some("web"));
    }

    #[test]
    fn list_items_without_type_fields_parse_at_the_watched_version() {
        // List responses carry apiVersion/kind on the list, not on each item.
        let vs = mk_dynamic(json!({
            "metadata": {"name": "reviews", "namespace": "bookinfo"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]},
        }));
        let c = convert(&mk_spec(Kind::VirtualService, vs_resource()), vs);
        assert!(matches!(c.result, Ok(Object::VirtualService(_))));
    }

    #[test]
    fn a_malformed_custom_resource_is_an_error_naming_it_not_a_failure() {
        let vs = mk_dynamic(json!({
            "metadata": {"name": "broken", "namespace": "bookinfo"},
            "spec": {"hosts": "reviews", "http": 7},
        }));
        let c = convert(&mk_spec(Kind::VirtualService, vs_resource()), vs);
        let err = c.result.unwrap_err();
        assert_eq!(
            err.file,
            PathBuf::from("kube:VirtualService/bookinfo/broken")
        );
        assert!(err.message.contains("broken"), "{}", err.message);
    }

    #[test]
    fn an_update_that_breaks_an_object_removes_it_and_reports_it() {
        let spec = mk_spec(Kind::VirtualService, vs_resource());
        let mut state = WatchState::default();
        let good = mk_dynamic(json!({
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"hosts": ["r"]},
        }));
        let bad =
            mk_dynamic(json!({"metadata": {"name": "r", "namespace": "ns"}, "spec": {"hosts": 1}}));
        let SourceEvent::Reset {
            objects, errors, ..
        } = state.relisted("o", vec![convert(&spec, good.clone())])
        else {
            panic!("a re-list resets")
        };
        assert_eq!((objects.len(), errors.len()), (1, 0));
        let SourceEvent::Update {
            apply,
            delete,
            errors,
            ..
        } = state.applied("o", convert(&spec, bad))
        else {
            panic!("an apply updates")
        };
        assert!(apply.is_empty());
        assert_eq!(
            delete,
            vec![ObjectKey::new(Kind::VirtualService, "ns", "r")]
        );
        assert_eq!(errors.map(|e| e.len()), Some(1));
        let SourceEvent::Update { apply, errors, .. } = state.applied("o", convert(&spec, good))
        else {
            panic!("an apply updates")
        };
        assert_eq!(apply.len(), 1);
        assert_eq!(errors.map(|e| e.len()), Some(0));
    }

    #[test]
    fn gateways_name_the_secrets_to_watch() {
        let spec = mk_spec(
            Kind::Gateway,
            resource("networking.istio.io", "v1", Kind::Gateway, "gateways"),
        );
        let gw = mk_dynamic(json!({
            "metadata": {"name": "gw", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"}, "servers": [
                {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["*"],
                 "tls": {"mode": "SIMPLE", "credentialName": "web-cert"}},
                {"port": {"number": 444, "name": "https2", "protocol": "HTTPS"}, "hosts": ["*"],
                 "tls": {"mode": "SIMPLE", "credentialName": "bad,name=x"}},
            ]},
        }));
        let mut state = WatchState::default();
        state.applied("o", convert(&spec, gw));
        assert_eq!(
            state.credential_names(),
            BTreeSet::from(["web-cert".to_string(), "web-cert-cacert".to_string()])
        );
    }

    #[test]
    fn watch_backoff_grows_resets_and_skips_expired_watches() {
        let failed = || watcher::Error::NoResourceVersion;
        let expired = watcher::Error::WatchError(Box::new(kube::core::Status {
            code: 410,
            ..Default::default()
        }));
        let mut backoff = WatchBackoff::new();
        let first = backoff.after(&failed());
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500));
        for _ in 0..10 {
            backoff.after(&failed());
        }
        assert!(backoff.after(&failed()) >= Duration::from_secs(5));
        assert_eq!(backoff.after(&expired), Duration::ZERO);
        backoff.reset();
        assert!(backoff.after(&failed()) <= Duration::from_millis(500));
    }

    #[test]
    fn endpoints_are_watched_only_without_v1_slices() {
        let found = Discovered::default();
        let kinds: Vec<Kind> = plan(&found, "istio-system")
            .iter()
            .map(|s| s.kind)
            .collect();
        assert!(kinds.contains(&Kind::Endpoints) && !kinds.contains(&Kind::EndpointSlice));
        let mut found = Discovered::default();
        found.kinds.insert(
            Kind::EndpointSlice,
            resource(
                "discovery.k8s.io",
                "v1",
                Kind::EndpointSlice,
                "endpointslices",
            ),
        );
        let specs = plan(&found, "istio-system");
        let kinds: Vec<Kind> = specs.iter().map(|s| s.kind).collect();
        assert!(!kinds.contains(&Kind::Endpoints) && kinds.contains(&Kind::EndpointSlice));
        let mesh = specs.iter().find(|s| s.kind == Kind::ConfigMap).unwrap();
        assert_eq!(mesh.namespace.as_deref(), Some("istio-system"));
        assert_eq!(mesh.field_selector.as_deref(), Some("metadata.name=istio"));
    }
}
