use std::collections::{BTreeMap, HashMap};

use meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use meshd_proto::pb::google::rpc::Status;
use meshd_proto::type_url::{CLUSTER, ENDPOINT};

use super::*;
use crate::{Any, SyncState};

fn held(state: &DeltaType) -> BTreeMap<String, String> {
    state
        .snapshot()
        .resources
        .iter()
        .map(|(name, r)| (name.clone(), r.version_info()))
        .collect()
}

fn mk_resource(name: &str, version: &str) -> Arc<Resource> {
    Arc::new(Resource::new(
        name,
        &Any {
            type_url: "test".to_owned(),
            value: format!("{name}@{version}").into_bytes(),
        },
    ))
}

fn mk_set(items: &[(&str, &str)]) -> Vec<Arc<ResourceSet>> {
    vec![Arc::new(
        items.iter().map(|(n, v)| mk_resource(n, v)).collect(),
    )]
}

fn version_of(name: &str, version: &str) -> String {
    mk_resource(name, version).version_info()
}

fn mk_request(type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
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

/// A built reply, and its response as Envoy decodes it.
struct Sent {
    response: DeltaDiscoveryResponse,
    updated: Vec<Arc<str>>,
}

fn respond(state: &mut DeltaType, items: &[(&str, &str)], always: bool) -> Option<Sent> {
    let reply = state.respond(mk_set(items), always)?;
    let response = match reply.response.encode().decode() {
        Ok(decoded) => decoded,
        Err(error) => panic!("response does not decode: {error}"),
    };
    Some(Sent {
        response,
        updated: reply.updated,
    })
}

fn respond_now(state: &mut DeltaType, items: &[(&str, &str)]) -> Sent {
    respond(state, items, true)
        .unwrap_or_else(|| panic!("a response with always set must be built"))
}

/// `name@body` of every resource sent.
fn names_of(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

fn bodies(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|r| {
            let body = r.resource.clone().unwrap_or_default();
            String::from_utf8_lossy(&body.value).into_owned()
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), version_of(n, v)))
        .collect()
}

#[test]
fn first_cds_request_without_names_is_wildcard_and_gets_everything() {
    let mut state = DeltaType::new(CLUSTER);
    let outcome = state.on_request(&mk_request(CLUSTER, &[], &[]));
    assert!(outcome.respond && outcome.initial);
    assert!(state.names().is_none());
    let sent = respond_now(&mut state, &[("c1", "1"), ("c2", "1")]);
    assert_eq!(names_of(&sent.response), vec!["c1", "c2"]);
    assert_eq!(sent.response.resources[0].version, version_of("c1", "1"));
    assert!(sent.response.removed_resources.is_empty());
    assert_eq!(state.snapshot().state(), SyncState::Stale);
    assert_eq!(state.snapshot().subscribed, None);
}

#[test]
fn first_eds_request_without_names_subscribes_to_nothing() {
    let mut state = DeltaType::new(ENDPOINT);
    state.on_request(&mk_request(ENDPOINT, &[], &[]));
    assert!(state.names().is_some_and(|n| n.is_empty()));
    let sent = respond_now(&mut state, &[("c1", "1")]);
    assert!(sent.response.resources.is_empty());
}

#[test]
fn ack_records_the_sent_version_and_asks_for_nothing() {
    let mut state = DeltaType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], &[]));
    let sent = respond_now(&mut state, &[("c1", "1")]);
    let outcome = state.on_request(&mk_ack(CLUSTER, &sent.response));
    assert_eq!(outcome.reply, Reply::Ack);
    assert!(!outcome.respond);
    let status = state.snapshot();
    assert_eq!(status.state(), SyncState::Synced);
    assert_eq!(status.acked_version, sent.response.system_version_info);
}

#[test]
fn nack_is_recorded_and_unchanged_resources_are_not_resent() {
    let mut state = DeltaType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], &[]));
    let sent = respond_now(&mut state, &[("c1", "bad")]);
    let nack = DeltaDiscoveryRequest {
        error_detail: Some(Status {
            code: 3,
            message: "rejected".to_owned(),
            details: vec![],
        }),
        ..mk_ack(CLUSTER, &sent.response)
    };
    let outcome = state.on_request(&nack);
    assert!(matches!(outcome.reply, Reply::Nack(ref n) if n.message == "rejected"));
    assert_eq!(state.snapshot().state(), SyncState::Nacked);
    let suspects: Vec<String> = state
        .nack_suspects()
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    assert_eq!(suspects, ["c1"]);
    assert!(respond(&mut state, &[("c1", "bad")], false).is_none());
    let fixed = respond(&mut state, &[("c1", "good")], false);
    assert!(fixed.is_some_and(|r| r.updated == vec![Arc::from("c1")]));
}

#[test]
fn only_changed_resources_and_removals_are_sent() {
    let mut state = DeltaType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], &[]));
    respond_now(&mut state, &[("c1", "1"), ("c2", "1")]);
    let sent = respond(&mut state, &[("c1", "2"), ("c3", "1")], false)
        .unwrap_or_else(|| panic!("changes must be sent"));
    assert_eq!(bodies(&sent.response), vec!["c1@2", "c3@1"]);
    assert_eq!(sent.response.removed_resources, vec!["c2"]);
    assert_eq!(sent.updated, vec![Arc::from("c1")]);
    assert_eq!(held(&state), pairs(&[("c1", "2"), ("c3", "1")]));
    assert!(respond(&mut state, &[("c1", "2"), ("c3", "1")], false).is_none());
}

#[test]
fn subscribe_sends_new_names_even_if_unchanged_and_unsubscribe_forgets_them() {
    let mut state = DeltaType::new(ENDPOINT);
    let all = [("c1", "1"), ("c2", "1")];
    state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
    let sent = respond_now(&mut state, &all);
    assert_eq!(names_of(&sent.response), vec!["c1"]);

    let outcome = state.on_request(&mk_request(ENDPOINT, &["c2"], &[]));
    assert_eq!(outcome.reply, Reply::None);
    assert!(outcome.respond);
    let sent =
        respond(&mut state, &all, false).unwrap_or_else(|| panic!("new subscription must be sent"));
    assert_eq!(names_of(&sent.response), vec!["c2"]);

    let outcome = state.on_request(&mk_request(ENDPOINT, &[], &["c1"]));
    assert!(!outcome.respond);
    assert_eq!(held(&state), pairs(&[("c2", "1")]));
    assert!(respond(&mut state, &all, false).is_none());

    // Subscribing again to what the client forgot sends it again.
    state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
    let sent = respond(&mut state, &all, false);
    assert!(sent.is_some_and(
        |r| names_of(&r.response) == vec!["c1"] && r.response.removed_resources.is_empty()
    ));
}

#[test]
fn a_forgotten_name_is_not_removed_again() {
    let mut state = DeltaType::new(ENDPOINT);
    state.on_request(&mk_request(ENDPOINT, &["c1", "c2"], &[]));
    respond_now(&mut state, &[("c1", "1"), ("c2", "1")]);
    state.on_request(&mk_request(ENDPOINT, &[], &["c1"]));
    // c1 is gone from the generator too: the client already forgot it.
    let sent = respond(&mut state, &[("c2", "2")], false);
    assert!(sent.is_some_and(
        |r| names_of(&r.response) == vec!["c2"] && r.response.removed_resources.is_empty()
    ));
}

#[test]
fn initial_resource_versions_are_honoured() {
    let mut state = DeltaType::new(CLUSTER);
    let request = DeltaDiscoveryRequest {
        initial_resource_versions: HashMap::from([
            ("c1".to_owned(), version_of("c1", "1")),
            ("c2".to_owned(), "old".to_owned()),
            ("gone".to_owned(), "1".to_owned()),
        ]),
        ..mk_request(CLUSTER, &[], &[])
    };
    state.on_request(&request);
    assert_eq!(held(&state).get("c1"), Some(&version_of("c1", "1")));
    let sent = respond_now(&mut state, &[("c1", "1"), ("c2", "1"), ("c3", "1")]);
    assert_eq!(names_of(&sent.response), vec!["c2", "c3"]);
    assert_eq!(sent.response.removed_resources, vec!["gone"]);
    assert_eq!(sent.updated, vec![Arc::from("c2")]);
}

#[test]
fn initial_response_is_sent_even_when_the_client_has_everything() {
    let mut state = DeltaType::new(CLUSTER);
    let request = DeltaDiscoveryRequest {
        initial_resource_versions: HashMap::from([("c1".to_owned(), version_of("c1", "1"))]),
        ..mk_request(CLUSTER, &[], &[])
    };
    let outcome = state.on_request(&request);
    assert!(outcome.initial);
    let sent = respond(&mut state, &[("c1", "1")], outcome.initial);
    assert!(sent.is_some_and(|r| r.response.resources.is_empty()));
}

#[test]
fn stale_nonce_does_not_ack_but_subscriptions_still_apply() {
    let mut state = DeltaType::new(ENDPOINT);
    state.on_request(&mk_request(ENDPOINT, &["c1"], &[]));
    let first = respond_now(&mut state, &[("c1", "1")]);
    let _second = respond_now(&mut state, &[("c1", "2")]);
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
    respond_now(&mut state, &[("c1", "1"), ("c2", "1")]);
    state.force(&[Arc::from("c1"), Arc::from("c2")]);
    assert!(state.has_forced());
    let sent = respond(&mut state, &[("c1", "1"), ("c2", "1")], false);
    assert!(sent.is_some_and(|r| names_of(&r.response) == vec!["c1"]));
    assert!(!state.has_forced());
}

#[test]
fn what_a_client_holds_is_the_shared_set_not_a_copy() {
    let mut state = DeltaType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], &[]));
    let generated = mk_set(&[("c1", "1"), ("c2", "1")]);
    assert!(state.respond(generated.clone(), true).is_some());
    assert_eq!(Arc::strong_count(&generated[0]), 3, "held and last sent");
    // A newer snapshot with the same content replaces the old set, which can then go.
    let newer = mk_set(&[("c1", "1"), ("c2", "1")]);
    assert!(state.respond(newer.clone(), false).is_none());
    assert_eq!(Arc::strong_count(&newer[0]), 2);
}

#[test]
fn a_push_waits_for_the_answer_to_the_last_response_and_comes_with_it() {
    let mut state = DeltaType::new(ENDPOINT);
    state.on_request(&mk_request(ENDPOINT, &["a", "b"], &[]));
    let first = respond_now(&mut state, &[("a", "1"), ("b", "1")]);
    // Two pushes before the client answered: neither goes out on its own.
    assert!(state.defer_while_in_flight());
    assert!(state.defer_while_in_flight());
    let outcome = state.on_request(&mk_ack(ENDPOINT, &first.response));
    assert_eq!(outcome.reply, Reply::Ack);
    assert!(outcome.respond, "the deferred push is owed with the ACK");
    // What it brings is everything that changed meanwhile, once.
    let second = respond(&mut state, &[("a", "3"), ("b", "1")], false)
        .unwrap_or_else(|| panic!("the change must be sent"));
    assert_eq!(names_of(&second.response), ["a"]);
    assert!(state.defer_while_in_flight());
    let outcome = state.on_request(&mk_ack(ENDPOINT, &second.response));
    assert!(outcome.respond);
    assert!(respond(&mut state, &[("a", "3"), ("b", "1")], false).is_none());
    // Answered and nothing deferred: a push goes out at once.
    assert!(!state.defer_while_in_flight());
    let outcome = state.on_request(&mk_ack(ENDPOINT, &second.response));
    assert!(!outcome.respond);
}
