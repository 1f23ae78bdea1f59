//! Delta (incremental) xDS: responses carry only the resources that changed and the names removed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use meshd_proto::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as WireResource,
};
use meshd_proto::type_url;

use super::{Outcome, Reply, TypeState, held_elsewhere, select};
use crate::version::{map_version, next_nonce};
use crate::{Nack, Resource, TypeStatus};

const WILDCARD: &str = "*";

/// A built response, and the names it replaced at a new version.
#[derive(Clone, Debug)]
pub(crate) struct DeltaReply {
    pub response: DeltaDiscoveryResponse,
    /// Names the client held at another version (for CDS: clusters Envoy will re-warm).
    pub updated: Vec<String>,
}

/// One type URL on one Delta stream.
#[derive(Debug)]
pub(crate) struct DeltaType {
    type_url: String,
    /// `status.resources` is what the client holds; `status.subscribed` is derived on snapshot.
    status: TypeStatus,
    requested: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// Sent in the next response even if the client holds them at the current version.
    forced: BTreeSet<String>,
    /// What the last response brought (shared resources; only pointers are kept).
    last_sent: Vec<Arc<Resource>>,
}

impl DeltaType {
    /// Whether the next response must carry some names regardless of versions.
    pub(crate) fn has_forced(&self) -> bool {
        !self.forced.is_empty()
    }

    /// Resends these names (those subscribed) in the next response, even if unchanged.
    pub(crate) fn force<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            if self.wildcard || self.names.contains(name) {
                self.forced.insert(name.clone());
            }
        }
    }

    fn first_request(&mut self, request: &DeltaDiscoveryRequest) {
        let subscribe = &request.resource_names_subscribe;
        self.wildcard = type_url::is_wildcard(&self.type_url)
            && (subscribe.is_empty() || subscribe.iter().any(|n| n == WILDCARD));
        self.names = subscribe
            .iter()
            .filter(|n| *n != WILDCARD)
            .cloned()
            .collect();
        for name in &request.resource_names_unsubscribe {
            self.names.remove(name);
        }
        // What the client kept from an earlier stream: sent again only if it differs.
        self.status.resources = request
            .initial_resource_versions
            .iter()
            .map(|(name, version)| (name.clone(), held_elsewhere(name, version)))
            .collect();
    }

    fn reply(&mut self, request: &DeltaDiscoveryRequest) -> Reply {
        if request.response_nonce.is_empty() {
            return Reply::None;
        }
        if request.response_nonce != self.status.sent_nonce {
            return Reply::Stale;
        }
        if let Some(error) = &request.error_detail {
            let nack = Nack {
                version: self.status.sent_version.clone(),
                nonce: request.response_nonce.clone(),
                message: error.message.clone(),
            };
            self.status.nack = Some(nack.clone());
            return Reply::Nack(nack);
        }
        self.status.acked_version = self.status.sent_version.clone();
        self.status.acked_nonce = request.response_nonce.clone();
        Reply::Ack
    }

    /// Builds a response with what the client lacks or holds at another version, and the names it
    /// holds that no longer exist. `None` when there is nothing to say and `always` is off.
    pub(crate) fn respond(
        &mut self,
        generated: Vec<Arc<Resource>>,
        always: bool,
    ) -> Option<DeltaReply> {
        let desired = select(generated, self.names());
        let held = &self.status.resources;
        let mut send = Vec::new();
        let mut updated = Vec::new();
        for (name, resource) in &desired {
            match held.get(name) {
                Some(h) if h.version == resource.version && !self.forced.contains(name) => {}
                Some(h) => {
                    if h.version != resource.version {
                        updated.push(name.clone());
                    }
                    send.push(Arc::clone(resource));
                }
                None => send.push(Arc::clone(resource)),
            }
        }
        let removed: Vec<String> = held
            .keys()
            .filter(|name| !desired.contains_key(*name))
            .cloned()
            .collect();
        self.forced.clear();
        if send.is_empty() && removed.is_empty() && !always {
            return None;
        }

        for name in &removed {
            self.status.resources.remove(name);
        }
        for resource in &send {
            self.status
                .resources
                .insert(resource.name.clone(), Arc::clone(resource));
        }
        let version = map_version(&self.status.resources);
        let nonce = next_nonce();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources: send.iter().map(|r| to_wire(r)).collect(),
            type_url: self.type_url.clone(),
            removed_resources: removed,
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.status.sent_version = version;
        self.status.sent_nonce = nonce;
        self.status.last_sent = Some(SystemTime::now());
        self.last_sent = send;
        Some(DeltaReply { response, updated })
    }
}

impl TypeState for DeltaType {
    type Request = DeltaDiscoveryRequest;

    fn new(type_url: &str) -> Self {
        Self {
            type_url: type_url.to_owned(),
            status: TypeStatus::default(),
            requested: false,
            wildcard: false,
            names: BTreeSet::new(),
            forced: BTreeSet::new(),
            last_sent: Vec::new(),
        }
    }

    /// The names to generate for; `None` is a wildcard subscription.
    fn names(&self) -> Option<&BTreeSet<String>> {
        (!self.wildcard).then_some(&self.names)
    }

    fn on_request(&mut self, request: &DeltaDiscoveryRequest) -> Outcome {
        if !self.requested {
            self.requested = true;
            self.first_request(request);
            return Outcome {
                reply: Reply::None,
                respond: true,
                initial: true,
            };
        }

        let reply = self.reply(request);
        // Subscription changes ride on ACKs, NACKs and spontaneous requests alike, and are sent only
        // once: apply them whatever the nonce says.
        let mut respond = false;
        for name in &request.resource_names_subscribe {
            if name == WILDCARD {
                if type_url::is_wildcard(&self.type_url) && !self.wildcard {
                    self.wildcard = true;
                    respond = true;
                }
            } else {
                self.names.insert(name.clone());
                self.forced.insert(name.clone());
                respond = true;
            }
        }
        for name in &request.resource_names_unsubscribe {
            if name == WILDCARD {
                self.wildcard = false;
            } else {
                self.names.remove(name);
                self.forced.remove(name);
            }
        }
        if !self.wildcard {
            // The client forgets what it unsubscribed from; a later subscribe must resend it.
            let names = &self.names;
            self.status.resources.retain(|name, _| names.contains(name));
        }
        Outcome {
            reply,
            respond,
            initial: false,
        }
    }

    fn snapshot(&self) -> TypeStatus {
        TypeStatus {
            subscribed: self.names().cloned(),
            ..self.status.clone()
        }
    }

    /// In Delta a response carries only what changed, so all of it is suspect.
    fn nack_suspects(&self) -> Vec<Arc<Resource>> {
        self.last_sent.clone()
    }
}

fn to_wire(resource: &Resource) -> WireResource {
    WireResource {
        name: resource.name.clone(),
        version: resource.version.clone(),
        resource: Some(resource.body.clone()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use meshd_proto::pb::google::rpc::Status;
    use meshd_proto::type_url::{CLUSTER, ENDPOINT};

    use super::*;
    use crate::{Any, SyncState};

    fn held(state: &DeltaType) -> BTreeMap<String, String> {
        state
            .status
            .resources
            .iter()
            .map(|(name, r)| (name.clone(), r.version.clone()))
            .collect()
    }

    fn mk_resource(name: &str, version: &str) -> Arc<Resource> {
        Arc::new(Resource {
            name: name.to_owned(),
            version: version.to_owned(),
            body: Any {
                type_url: "test".to_owned(),
                value: format!("{name}@{version}").into_bytes(),
            },
        })
    }

    fn mk_request(
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
    ) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: subscribe.iter().map(|n| (*n).to_owned()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|n| (*n).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn mk_ack(type_url: &str, sent: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            response_nonce: sent.nonce.clone(),
            ..mk_request(type_url, &[], &[])
        }
    }

    fn names_of(response: &DeltaDiscoveryResponse) -> Vec<String> {
        response.resources.iter().map(|r| r.name.clone()).collect()
    }

    fn respond_now(state: &mut DeltaType, generated: &[Arc<Resource>]) -> DeltaReply {
        state
            .respond(generated.to_vec(), true)
            .unwrap_or_else(|| panic!("a response with always set must be built"))
    }

    fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
        items
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn first_cds_request_without_names_is_wildcard_and_gets_everything() {
        let mut state = DeltaType::new(CLUSTER);
        let outcome = state.on_request(&mk_request(CLUSTER, &[], &[]));
        assert!(outcome.respond && outcome.initial);
        assert_eq!(state.names(), None);
        let reply = respond_now(
            &mut state,
            &[mk_resource("c1", "1"), mk_resource("c2", "1")],
        );
        assert_eq!(names_of(&reply.response), vec!["c1", "c2"]);
        assert!(reply.response.removed_resources.is_empty());
        assert_eq!(state.snapshot().state(), SyncState::Stale);
        assert_eq!(state.snapshot().subscribed, None);
    }

    #[test]
    fn first_eds_request_without_names_subscribes_to_nothing() {
        let mut state = DeltaType::new(ENDPOINT);
        state.on_request(&mk_request(ENDPOINT, &[], &[]));
        assert_eq!(state.names(), Some(&BTreeSet::new()));
        let reply = respond_now(&mut state, &[mk_resource("c1", "1")]);
        assert!(reply.response.resources.is_empty());
    }

    #[test]
    fn ack_records_the_sent_version_and_asks_for_nothing() {
        let mut state = DeltaType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], &[]));
        let reply = respond_now(&mut state, &[mk_resource("c1", "1")]);
        let outcome = state.on_request(&mk_ack(CLUSTER, &reply.response));
        assert_eq!(outcome.reply, Reply::Ack);
        assert!(!outcome.respond);
        let status = state.snapshot();
        assert_eq!(status.state(), SyncState::Synced);
        assert_eq!(status.acked_version, reply.response.system_version_info);
    }

    #[test]
    fn nack_is_recorded_and_unchanged_resources_are_not_resent() {
        let mut state = DeltaType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], &[]));
        let reply = respond_now(&mut state, &[mk_resource("c1", "bad")]);
        let nack = DeltaDiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "rejected".to_owned(),
                details: vec![],
            }),
            ..mk_ack(CLUSTER, &reply.response)
        };
        let outcome = state.on_request(&nack);
        assert!(matches!(outcome.reply, Reply::Nack(ref n) if n.message == "rejected"));
        assert_eq!(state.snapshot().state(), SyncState::Nacked);
        assert!(
            state
                .respond(vec![mk_resource("c1", "bad")], false)
                .is_none()
        );
        let fixed = state.respond(vec![mk_resource("c1", "good")], false);
        assert!(fixed.is_some_and(|r| r.updated == vec!["c1".to_owned()]));
    }

    #[test]
    fn only_changed_resources_and_removals_are_sent() {
        let mut state = DeltaType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], &[]));
        respond_now(
            &mut state,
            &[mk_resource("c1", "1"), mk_resource("c2", "1")],
        );
        let reply = state
            .respond(vec![mk_resource("c1", "2"), mk_resource("c3", "1")], false)
            .unwrap_or_else(|| panic!("changes must be sent"));
        assert_eq!(names_of(&reply.response), vec!["c1", "c3"]);
        assert_eq!(reply.response.removed_resources, vec!["c2"]);
        assert_eq!(reply.updated, vec!["c1"]);
        assert_eq!(held(&state), pairs(&[("c1", "2"), ("c3", "1")]));
        assert!(
            state
                .respond(vec![mk_resource("c1", "2"), mk_resource("c3", "1")], false)
                .is_none()
        );
    }

    #[test]
    fn subscribe_sends_new_names_even_if_unchanged_and_unsubscribe_forgets_them() {
        let mut state = DeltaType::new(ENDPOINT);
        let all = [mk_resource("c1", "1"), mk_resource("c2", "1")];
        state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
        let reply = respond_now(&mut state, &all);
        assert_eq!(names_of(&reply.response), vec!["c1"]);

        let outcome = state.on_request(&mk_request(ENDPOINT, &["c2"], &[]));
        assert_eq!(outcome.reply, Reply::None);
        assert!(outcome.respond);
        let reply = state
            .respond(all.to_vec(), false)
            .unwrap_or_else(|| panic!("new subscription must be sent"));
        assert_eq!(names_of(&reply.response), vec!["c2"]);

        let outcome = state.on_request(&mk_request(ENDPOINT, &[], &["c1"]));
        assert!(!outcome.respond);
        assert_eq!(held(&state), pairs(&[("c2", "1")]));
        assert!(state.respond(all.to_vec(), false).is_none());

        // Subscribing again to what the client forgot sends it again.
        state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
        let reply = state.respond(all.to_vec(), false);
        assert!(reply.is_some_and(|r| names_of(&r.response) == vec!["c1"]));
    }

    #[test]
    fn initial_resource_versions_are_honoured() {
        let mut state = DeltaType::new(CLUSTER);
        let request = DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([
                ("c1".to_owned(), "1".to_owned()),
                ("c2".to_owned(), "old".to_owned()),
                ("gone".to_owned(), "1".to_owned()),
            ]),
            ..mk_request(CLUSTER, &[], &[])
        };
        state.on_request(&request);
        let reply = respond_now(
            &mut state,
            &[
                mk_resource("c1", "1"),
                mk_resource("c2", "1"),
                mk_resource("c3", "1"),
            ],
        );
        assert_eq!(names_of(&reply.response), vec!["c2", "c3"]);
        assert_eq!(reply.response.removed_resources, vec!["gone"]);
        assert_eq!(reply.updated, vec!["c2"]);
    }

    #[test]
    fn initial_response_is_sent_even_when_the_client_has_everything() {
        let mut state = DeltaType::new(CLUSTER);
        let request = DeltaDiscoveryRequest {
            initial_resource_versions: HashMap::from([("c1".to_owned(), "1".to_owned())]),
            ..mk_request(CLUSTER, &[], &[])
        };
        let outcome = state.on_request(&request);
        assert!(outcome.initial);
        let reply = state.respond(vec![mk_resource("c1", "1")], outcome.initial);
        assert!(reply.is_some_and(|r| r.response.resources.is_empty()));
    }

    #[test]
    fn stale_nonce_does_not_ack_but_subscriptions_still_apply() {
        let mut state = DeltaType::new(ENDPOINT);
        state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
        let first = respond_now(&mut state, &[mk_resource("c1", "1")]);
        let _second = respond_now(&mut state, &[mk_resource("c1", "2")]);
        let request = DeltaDiscoveryRequest {
            resource_names_subscribe: vec!["c2".to_owned()],
            ..mk_ack(ENDPOINT, &first.response)
        };
        let outcome = state.on_request(&request);
        assert_eq!(outcome.reply, Reply::Stale);
        assert!(outcome.respond);
        assert_eq!(state.snapshot().state(), SyncState::Stale);
        assert!(state.names().is_some_and(|n| n.contains("c2")));
    }

    #[test]
    fn forced_names_are_resent_only_if_subscribed() {
        let mut state = DeltaType::new(ENDPOINT);
        state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
        respond_now(
            &mut state,
            &[mk_resource("c1", "1"), mk_resource("c2", "1")],
        );
        state.force(&["c1".to_owned(), "c2".to_owned()]);
        assert!(state.has_forced());
        let reply = state.respond(vec![mk_resource("c1", "1"), mk_resource("c2", "1")], false);
        assert!(reply.is_some_and(|r| names_of(&r.response) == vec!["c1"]));
        assert!(!state.has_forced());
    }
}
