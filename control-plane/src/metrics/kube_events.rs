//! `pilot_k8s_reg_events` and `pilot_k8s_cfg_events`: the Kubernetes events meshd's watches
//! delivered, by kind and `add`/`update`/`delete`, as istiod's informers count them. Counted on
//! the way from the Kubernetes source to the index, so neither knows about metrics.

use std::collections::{BTreeMap, BTreeSet};

use meshd_model::{Kind, ObjectKey, SourceEvent};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    r#type: String,
    event: &'static str,
}

#[derive(Clone)]
pub struct KubeEvents {
    registry_events: Family<EventLabels, Counter>,
    config_events: Family<EventLabels, Counter>,
}

/// istiod's `type` of a service-registry kind (`pilot_k8s_reg_events`); config kinds, Istio's and
/// the Gateway API's, go by their kind name (`pilot_k8s_cfg_events`) as istiod's informers name
/// them — so both Gateways count as `Gateway` there too — and others are not counted.
fn registry_type(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Service => Some("Services"),
        Kind::Pod => Some("Pods"),
        Kind::Namespace => Some("Namespaces"),
        Kind::Node => Some("Nodes"),
        Kind::EndpointSlice => Some("EndpointSlice"),
        Kind::Endpoints => Some("Endpoints"),
        _ => None,
    }
}

impl KubeEvents {
    pub fn register(registry: &mut Registry) -> Self {
        let events = KubeEvents {
            registry_events: Family::default(),
            config_events: Family::default(),
        };
        registry.register(
            "pilot_k8s_reg_events",
            "Events from k8s registry",
            events.registry_events.clone(),
        );
        registry.register(
            "pilot_k8s_cfg_events",
            "Events from k8s config",
            events.config_events.clone(),
        );
        events
    }

    fn count(&self, kind: Kind, event: &'static str) {
        let (family, name) = match registry_type(kind) {
            Some(name) => (&self.registry_events, name),
            None if kind.group().ends_with("istio.io") || kind.is_gateway_api() => {
                (&self.config_events, kind.name())
            }
            None => return,
        };
        family
            .get_or_create(&EventLabels {
                r#type: name.to_string(),
                event,
            })
            .inc();
    }

    /// Counts `event`; `known` is what each origin holds so far, to tell an add from an update.
    fn observe(&self, known: &mut BTreeMap<String, BTreeSet<ObjectKey>>, event: &SourceEvent) {
        match event {
            SourceEvent::Reset {
                origin, objects, ..
            } => {
                let before = known.remove(origin).unwrap_or_default();
                let after: BTreeSet<ObjectKey> = objects.iter().map(|o| o.key()).collect();
                for key in &after {
                    let event = if before.contains(key) {
                        "update"
                    } else {
                        "add"
                    };
                    self.count(key.kind, event);
                }
                for key in before.difference(&after) {
                    self.count(key.kind, "delete");
                }
                known.insert(origin.clone(), after);
            }
            SourceEvent::Update {
                origin,
                apply,
                delete,
                ..
            } => {
                let keys = known.entry(origin.clone()).or_default();
                for object in apply {
                    let key = object.key();
                    let event = if keys.contains(&key) { "update" } else { "add" };
                    self.count(key.kind, event);
                    keys.insert(key);
                }
                for key in delete {
                    if keys.remove(key) {
                        self.count(key.kind, "delete");
                    }
                }
            }
            _ => {}
        }
    }

    /// Passes the Kubernetes source's events on to `to`, counting them; ends with the source.
    pub fn forward(
        self,
        mut from: mpsc::UnboundedReceiver<SourceEvent>,
        to: mpsc::UnboundedSender<SourceEvent>,
    ) {
        tokio::spawn(async move {
            let mut known = BTreeMap::new();
            while let Some(event) = from.recv().await {
                self.observe(&mut known, &event);
                if to.send(event).is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshd_model::Object;

    fn object(kind: &str, api: &str, name: &str) -> Object {
        Object::parse(serde_json::json!({
            "apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "shop"},
        }))
        .unwrap()
        .unwrap()
    }

    #[test]
    fn watch_events_are_counted_by_kind_and_event_as_istiod_names_them() {
        let mut registry = Registry::default();
        let events = KubeEvents::register(&mut registry);
        let mut known = BTreeMap::new();
        let svc = object("Service", "v1", "web");
        let vs = object("VirtualService", "networking.istio.io/v1", "web");
        events.observe(
            &mut known,
            &SourceEvent::Reset {
                origin: "kube:Service".into(),
                objects: vec![svc.clone()],
                errors: vec![],
            },
        );
        events.observe(
            &mut known,
            &SourceEvent::Update {
                origin: "kube:VirtualService".into(),
                apply: vec![vs.clone()],
                delete: vec![],
                errors: None,
            },
        );
        events.observe(
            &mut known,
            &SourceEvent::Update {
                origin: "kube:VirtualService".into(),
                apply: vec![vs.clone()],
                delete: vec![],
                errors: None,
            },
        );
        events.observe(
            &mut known,
            &SourceEvent::Update {
                origin: "kube:Service".into(),
                apply: vec![],
                delete: vec![svc.key()],
                errors: None,
            },
        );
        let route = object("HTTPRoute", "gateway.networking.k8s.io/v1", "web");
        events.observe(
            &mut known,
            &SourceEvent::Update {
                origin: "kube:HTTPRoute".into(),
                apply: vec![route],
                delete: vec![],
                errors: None,
            },
        );
        let text = super::super::render(&registry).unwrap();
        for line in [
            "pilot_k8s_reg_events{type=\"Services\",event=\"add\"} 1",
            "pilot_k8s_reg_events{type=\"Services\",event=\"delete\"} 1",
            "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"add\"} 1",
            "pilot_k8s_cfg_events{type=\"VirtualService\",event=\"update\"} 1",
            "pilot_k8s_cfg_events{type=\"HTTPRoute\",event=\"add\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
    }
}
