//! State-of-the-World: every response carries the whole set of a type the proxy is subscribed to.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use meshd_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshd_proto::type_url;

use super::{Outcome, Reply, TypeState, same_versions, select};
use crate::version::{map_version, next_nonce};
use crate::{Nack, Resource, TypeStatus};

/// One type URL on one SotW stream.
#[derive(Debug)]
pub(crate) struct SotwType {
    type_url: String,
    status: TypeStatus,
    /// Answer the next ACK even if nothing changed: set on EDS when CDS was sent, because Envoy
    /// keeps re-created clusters warming until it sees an EDS response.
    always_respond: bool,
    /// The set the proxy last accepted (shared resources; only pointers are kept).
    acked: Vec<Arc<Resource>>,
}

impl SotwType {
    /// The next ACK gets a response even if it changes nothing.
    pub(crate) fn respond_to_next_ack(&mut self) {
        self.always_respond = true;
    }

    /// Builds a response from freshly generated resources, or `None` when `force` is off and the
    /// proxy already holds these names at these versions (which also keeps a NACKed set from being
    /// re-sent until something in it changes).
    pub(crate) fn respond(
        &mut self,
        generated: Vec<Arc<Resource>>,
        force: bool,
    ) -> Option<DiscoveryResponse> {
        let set = select(generated, self.names());
        if !force
            && !self.status.sent_nonce.is_empty()
            && same_versions(&set, &self.status.resources)
        {
            return None;
        }
        let version = map_version(&set);
        let nonce = next_nonce();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: set.values().map(|r| r.body.clone()).collect(),
            type_url: self.type_url.clone(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        self.status.sent_version = version;
        self.status.sent_nonce = nonce;
        self.status.resources = set;
        self.status.last_sent = Some(SystemTime::now());
        self.always_respond = false;
        Some(response)
    }
}

impl TypeState for SotwType {
    type Request = DiscoveryRequest;

    fn new(type_url: &str) -> Self {
        Self {
            type_url: type_url.to_owned(),
            status: TypeStatus::default(),
            always_respond: false,
            acked: Vec::new(),
        }
    }

    /// The names to generate for; `None` is a wildcard subscription.
    fn names(&self) -> Option<&BTreeSet<String>> {
        self.status.subscribed.as_ref()
    }

    fn on_request(&mut self, request: &DiscoveryRequest) -> Outcome {
        let subscribed = subscription(&self.type_url, &request.resource_names);

        // A first request, or one re-sent after a reconnect (the nonce is from another stream):
        // the proxy is owed the full set.
        if request.response_nonce.is_empty() || self.status.sent_nonce.is_empty() {
            self.status.subscribed = subscribed;
            return Outcome {
                reply: Reply::None,
                respond: true,
                initial: true,
            };
        }
        if request.response_nonce != self.status.sent_nonce {
            return Outcome {
                reply: Reply::Stale,
                respond: false,
                initial: false,
            };
        }
        if let Some(error) = &request.error_detail {
            // Subscriptions are left as they were: the ACK that follows a fix then still shows the
            // change and gets its response.
            let nack = Nack {
                version: self.status.sent_version.clone(),
                nonce: request.response_nonce.clone(),
                message: error.message.clone(),
            };
            self.status.nack = Some(nack.clone());
            return Outcome {
                reply: Reply::Nack(nack),
                respond: false,
                initial: false,
            };
        }

        self.status.acked_version = request.version_info.clone();
        self.status.acked_nonce = request.response_nonce.clone();
        self.acked = self.status.resources.values().cloned().collect();
        let names_changed = subscribed != self.status.subscribed;
        self.status.subscribed = subscribed;
        let respond = names_changed || std::mem::take(&mut self.always_respond);
        Outcome {
            reply: Reply::Ack,
            respond,
            initial: false,
        }
    }

    fn snapshot(&self) -> TypeStatus {
        self.status.clone()
    }

    fn nack_suspects(&self) -> Vec<Arc<Resource>> {
        let accepted: std::collections::HashSet<(&str, &str)> = self
            .acked
            .iter()
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        self.status
            .resources
            .values()
            .filter(|r| !accepted.contains(&(r.name.as_str(), r.version.as_str())))
            .cloned()
            .collect()
    }
}

/// CDS and LDS requests with no names (or `*`) are wildcard; other types are named.
fn subscription(type_url: &str, names: &[String]) -> Option<BTreeSet<String>> {
    if type_url::is_wildcard(type_url) && (names.is_empty() || names.iter().any(|n| n == "*")) {
        None
    } else {
        Some(names.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use meshd_proto::pb::google::rpc::Status;
    use meshd_proto::type_url::{CLUSTER, ENDPOINT};

    use std::collections::BTreeMap;

    use super::*;
    use crate::{Any, SyncState};

    fn versions(resources: &BTreeMap<String, Arc<Resource>>) -> Vec<(String, String)> {
        resources
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
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

    fn mk_request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn mk_ack(type_url: &str, names: &[&str], sent: &DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: sent.version_info.clone(),
            ..mk_request(type_url, names, &sent.nonce)
        }
    }

    fn mk_nack(type_url: &str, names: &[&str], sent: &DiscoveryResponse) -> DiscoveryRequest {
        DiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: "bad cluster".to_owned(),
                details: vec![],
            }),
            ..mk_request(type_url, names, &sent.nonce)
        }
    }

    fn respond_now(state: &mut SotwType, generated: &[Arc<Resource>]) -> DiscoveryResponse {
        let outcome = state.respond(generated.to_vec(), true);
        outcome.unwrap_or_else(|| panic!("forced response must be built"))
    }

    #[test]
    fn first_request_is_answered_and_status_is_not_sent_until_then() {
        let mut state = SotwType::new(CLUSTER);
        assert_eq!(state.snapshot().state(), SyncState::NotSent);
        let outcome = state.on_request(&mk_request(CLUSTER, &[], ""));
        assert_eq!(
            outcome,
            Outcome {
                reply: Reply::None,
                respond: true,
                initial: true,
            }
        );
        assert_eq!(state.names(), None);
        let response = respond_now(&mut state, &[mk_resource("c1", "1")]);
        assert_eq!(response.type_url, CLUSTER);
        assert_eq!(response.resources.len(), 1);
        assert_eq!(state.snapshot().state(), SyncState::Stale);
    }

    #[test]
    fn ack_with_same_names_is_not_answered_and_marks_synced() {
        let mut state = SotwType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], ""));
        let sent = respond_now(&mut state, &[mk_resource("c1", "1")]);
        let outcome = state.on_request(&mk_ack(CLUSTER, &[], &sent));
        assert_eq!(outcome.reply, Reply::Ack);
        assert!(!outcome.respond);
        let status = state.snapshot();
        assert_eq!(status.state(), SyncState::Synced);
        assert_eq!(status.acked_version, sent.version_info);
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let mut state = SotwType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], ""));
        let first = respond_now(&mut state, &[mk_resource("c1", "1")]);
        let _second = respond_now(&mut state, &[mk_resource("c1", "2")]);
        let outcome = state.on_request(&mk_ack(CLUSTER, &[], &first));
        assert_eq!(outcome.reply, Reply::Stale);
        assert!(!outcome.respond);
        assert_eq!(state.snapshot().state(), SyncState::Stale);
    }

    #[test]
    fn nack_is_recorded_and_the_same_set_is_not_resent() {
        let mut state = SotwType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], ""));
        let sent = respond_now(&mut state, &[mk_resource("c1", "bad")]);
        let outcome = state.on_request(&mk_nack(CLUSTER, &[], &sent));
        let expected = Nack {
            version: sent.version_info.clone(),
            nonce: sent.nonce.clone(),
            message: "bad cluster".to_owned(),
        };
        assert_eq!(outcome.reply, Reply::Nack(expected.clone()));
        assert!(!outcome.respond);
        assert_eq!(state.snapshot().state(), SyncState::Nacked);
        assert_eq!(state.snapshot().nack, Some(expected));

        assert!(
            state
                .respond(vec![mk_resource("c1", "bad")], false)
                .is_none()
        );
        let fixed = state.respond(vec![mk_resource("c1", "good")], false);
        assert!(fixed.is_some());
        assert_eq!(state.snapshot().state(), SyncState::Stale);
    }

    #[test]
    fn named_subscription_change_is_answered_with_only_the_subscribed_names() {
        let mut state = SotwType::new(ENDPOINT);
        let all = [mk_resource("c1", "1"), mk_resource("c2", "1")];
        state.on_request(&mk_request(ENDPOINT, &["c1"], ""));
        let sent = respond_now(&mut state, &all);
        assert_eq!(sent.resources.len(), 1);

        let outcome = state.on_request(&mk_ack(ENDPOINT, &["c1", "c2"], &sent));
        assert!(outcome.respond);
        let sent = respond_now(&mut state, &all);
        assert_eq!(sent.resources.len(), 2);
        assert_eq!(
            versions(&state.snapshot().resources),
            vec![
                ("c1".to_owned(), "1".to_owned()),
                ("c2".to_owned(), "1".to_owned())
            ]
        );
    }

    #[test]
    fn ack_after_cds_is_answered_once() {
        let mut state = SotwType::new(ENDPOINT);
        state.on_request(&mk_request(ENDPOINT, &["c1"], ""));
        let sent = respond_now(&mut state, &[mk_resource("c1", "1")]);
        state.respond_to_next_ack();
        assert!(state.on_request(&mk_ack(ENDPOINT, &["c1"], &sent)).respond);
        let sent = respond_now(&mut state, &[mk_resource("c1", "1")]);
        assert!(!state.on_request(&mk_ack(ENDPOINT, &["c1"], &sent)).respond);
    }

    #[test]
    fn unchanged_set_is_not_resent_without_force() {
        let mut state = SotwType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], ""));
        let sent = respond_now(&mut state, &[mk_resource("c1", "1")]);
        assert!(state.respond(vec![mk_resource("c1", "1")], false).is_none());
        let again = respond_now(&mut state, &[mk_resource("c1", "1")]);
        assert_eq!(again.version_info, sent.version_info);
        assert_ne!(again.nonce, sent.nonce);
    }

    #[test]
    fn an_empty_first_set_is_still_sent() {
        let mut state = SotwType::new(CLUSTER);
        state.on_request(&mk_request(CLUSTER, &[], ""));
        let sent = state.respond(vec![], false);
        assert!(sent.is_some_and(|r| r.resources.is_empty()));
    }

    #[test]
    fn wildcard_types_treat_star_as_wildcard_and_named_types_do_not() {
        assert_eq!(subscription(CLUSTER, &["*".to_owned()]), None);
        assert_eq!(subscription(CLUSTER, &[]), None);
        assert_eq!(subscription(ENDPOINT, &[]), Some(BTreeSet::new()));
    }
}
