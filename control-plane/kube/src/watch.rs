//! One watch: a kube-runtime watcher stream of one kind, turned into index events. A re-list
//! (`Init…InitDone`) becomes one `Reset` of the kind's origin; `Apply`/`Delete` update single
//! objects; an object that stops parsing is removed and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt as _;
use kube::runtime::watcher as watch_stream;
use kube::runtime::watcher::{self, Event};
use meshd_model::{InvalidObject, Kind, ObjectKey, SourceEvent};
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::SOURCE;
use crate::backoff::{is_expired, with_backoff};
use crate::convert::{Converted, convert};
use crate::discover::WatchSpec;

/// Reports `Synced` once every origin it was made with has been listed once.
pub(crate) struct SyncTracker {
    pub(crate) pending: Mutex<BTreeSet<String>>,
    pub(crate) tx: mpsc::UnboundedSender<SourceEvent>,
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

/// The Secrets referenced, by the kind of Gateway that references them (each Gateway watch
/// replaces its own entry; the Secrets watcher follows their union).
pub(crate) type Credentials = BTreeMap<Kind, BTreeSet<String>>;

/// Follows one watch, translating its events for the index.
pub(crate) async fn run_watch(
    client: kube::Client,
    spec: WatchSpec,
    tx: mpsc::UnboundedSender<SourceEvent>,
    tracker: Option<Arc<SyncTracker>>,
    credentials: Option<Arc<watch::Sender<Credentials>>>,
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
                let converted = convert(&spec, obj);
                if !converted.foreign {
                    buffer.get_or_insert_with(Vec::new).push(converted);
                }
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
                let converted = convert(&spec, obj);
                // Relabelled to another revision: gone, as far as this control plane goes.
                let event = if converted.foreign {
                    state.deleted(&spec.origin, converted.key)
                } else {
                    state.applied(&spec.origin, converted)
                };
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
                let entry = current.entry(spec.kind).or_default();
                let changed = *entry != names;
                *entry = names;
                changed
            });
        }
    }
}

/// What one watch remembers between events: its invalid objects (to report them as a whole,
/// like a file's), and for Gateways the Secrets each one references.
#[derive(Default)]
pub(crate) struct WatchState {
    errors: BTreeMap<ObjectKey, InvalidObject>,
    credentials: BTreeMap<ObjectKey, BTreeSet<String>>,
}

impl WatchState {
    fn error_list(&self) -> Vec<InvalidObject> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::resource;
    use crate::test_support::{mk_dynamic, mk_spec, vs_resource};
    use serde_json::json;

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
    fn gateway_api_gateways_name_their_own_namespaces_certificate_secrets() {
        let spec = mk_spec(
            Kind::KubeGateway,
            resource(
                "gateway.networking.k8s.io",
                "v1",
                Kind::KubeGateway,
                "gateways",
            ),
        );
        let gw = mk_dynamic(json!({
            "metadata": {"name": "web", "namespace": "infra"},
            "spec": {"gatewayClassName": "istio", "listeners": [
                {"name": "a", "port": 443, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "web-cert"}, {"kind": "Secret", "group": "", "name": "web-cert-2"}]}},
                {"name": "b", "port": 444, "protocol": "HTTPS",
                 "tls": {"certificateRefs": [{"name": "elsewhere", "namespace": "other"},
                                             {"name": "cm", "kind": "ConfigMap"},
                                             {"name": "bad,name=x"}]}},
                {"name": "c", "port": 80, "protocol": "HTTP"},
            ]},
        }));
        let mut state = WatchState::default();
        state.applied("o", convert(&spec, gw));
        assert_eq!(
            state.credential_names(),
            BTreeSet::from(["web-cert".to_string(), "web-cert-2".to_string()])
        );
    }
}
