use meshd_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshd_proto::pb::google::rpc::Status;
use meshd_proto::type_url::{CLUSTER, ENDPOINT, ROUTE};

use super::*;
use crate::{Any, SyncState};

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

fn mk_request(type_url: &str, names: &[&str], nonce: &str) -> SotwRequest {
    SotwRequest::from(&DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        response_nonce: nonce.to_owned(),
        ..Default::default()
    })
}

fn mk_ack(type_url: &str, names: &[&str], sent: &DiscoveryResponse) -> SotwRequest {
    SotwRequest {
        version_info: sent.version_info.clone(),
        ..mk_request(type_url, names, &sent.nonce)
    }
}

fn mk_nack(type_url: &str, names: &[&str], sent: &DiscoveryResponse) -> SotwRequest {
    SotwRequest {
        error_detail: Some(Status {
            code: 3,
            message: "bad cluster".to_owned(),
            details: vec![],
        }),
        ..mk_request(type_url, names, &sent.nonce)
    }
}

/// The response as Envoy decodes it.
fn decoded(response: &SotwResponse) -> DiscoveryResponse {
    match response.encode().decode() {
        Ok(decoded) => decoded,
        Err(error) => panic!("response does not decode: {error}"),
    }
}

/// `name@version` of every resource of a response.
fn bodies(response: &DiscoveryResponse) -> Vec<String> {
    response
        .resources
        .iter()
        .map(|any| String::from_utf8_lossy(&any.value).into_owned())
        .collect()
}

fn respond(state: &mut SotwType, items: &[(&str, &str)], force: bool) -> Option<DiscoveryResponse> {
    state.respond(mk_set(items), force).map(|r| decoded(&r))
}

fn respond_now(state: &mut SotwType, items: &[(&str, &str)]) -> DiscoveryResponse {
    respond(state, items, true).unwrap_or_else(|| panic!("forced response must be built"))
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
            full: true,
        }
    );
    assert!(state.names().is_none());
    let response = respond_now(&mut state, &[("c1", "1")]);
    assert_eq!(response.type_url, CLUSTER);
    assert_eq!(response.resources.len(), 1);
    assert_eq!(state.snapshot().state(), SyncState::Stale);
}

#[test]
fn ack_with_same_names_is_not_answered_and_marks_synced() {
    let mut state = SotwType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], ""));
    let sent = respond_now(&mut state, &[("c1", "1")]);
    let outcome = state.on_request(&mk_ack(CLUSTER, &[], &sent));
    assert_eq!(outcome.reply, Reply::Ack);
    assert!(!outcome.respond);
    let status = state.snapshot();
    assert_eq!(status.state(), SyncState::Synced);
    assert_eq!(status.acked_version, sent.version_info);
    assert_eq!(status.sent_version, sent.version_info);
}

#[test]
fn stale_nonce_is_ignored() {
    let mut state = SotwType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], ""));
    let first = respond_now(&mut state, &[("c1", "1")]);
    let _second = respond_now(&mut state, &[("c1", "2")]);
    let outcome = state.on_request(&mk_ack(CLUSTER, &[], &first));
    assert_eq!(outcome.reply, Reply::Stale);
    assert!(!outcome.respond);
    assert_eq!(state.snapshot().state(), SyncState::Stale);
}

#[test]
fn nack_is_recorded_and_the_same_set_is_not_resent() {
    let mut state = SotwType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], ""));
    let sent = respond_now(&mut state, &[("c1", "bad")]);
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

    assert!(respond(&mut state, &[("c1", "bad")], false).is_none());
    assert!(respond(&mut state, &[("c1", "good")], false).is_some());
    assert_eq!(state.snapshot().state(), SyncState::Stale);
}

#[test]
fn named_subscription_change_is_answered_with_everything_subscribed() {
    let mut state = SotwType::new(ENDPOINT);
    let all = [("c1", "1"), ("c2", "1")];
    state.on_request(&mk_request(ENDPOINT, &["c1"], ""));
    let sent = respond_now(&mut state, &all);
    assert_eq!(bodies(&sent), ["c1@1"]);

    let outcome = state.on_request(&mk_ack(ENDPOINT, &["c1", "c2"], &sent));
    assert!(outcome.respond);
    let sent = respond_now(&mut state, &all);
    assert_eq!(bodies(&sent), ["c1@1", "c2@1"]);
    let held: Vec<String> = state.snapshot().resources.into_keys().collect();
    assert_eq!(held, ["c1", "c2"]);
}

#[test]
fn ack_after_cds_is_answered_once() {
    let mut state = SotwType::new(ENDPOINT);
    state.on_request(&mk_request(ENDPOINT, &["c1"], ""));
    let sent = respond_now(&mut state, &[("c1", "1")]);
    state.respond_to_next_ack();
    assert!(state.on_request(&mk_ack(ENDPOINT, &["c1"], &sent)).respond);
    let sent = respond_now(&mut state, &[("c1", "1")]);
    assert!(!state.on_request(&mk_ack(ENDPOINT, &["c1"], &sent)).respond);
}

#[test]
fn unchanged_set_is_not_resent_without_force() {
    let mut state = SotwType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], ""));
    let sent = respond_now(&mut state, &[("c1", "1")]);
    assert!(respond(&mut state, &[("c1", "1")], false).is_none());
    let again = respond_now(&mut state, &[("c1", "1")]);
    assert_eq!(again.version_info, sent.version_info);
    assert_ne!(again.nonce, sent.nonce);
}

#[test]
fn an_empty_first_set_is_still_sent() {
    let mut state = SotwType::new(CLUSTER);
    state.on_request(&mk_request(CLUSTER, &[], ""));
    let sent = respond(&mut state, &[], false);
    assert!(sent.is_some_and(|r| r.resources.is_empty()));
}

#[test]
fn wildcard_types_treat_star_as_wildcard_and_named_types_do_not() {
    assert!(subscription(CLUSTER, &[Bytes::from_static(b"*")]).is_none());
    assert!(subscription(CLUSTER, &[]).is_none());
    assert!(subscription(ENDPOINT, &[]).is_some_and(|n| n.is_empty()));
}

/// A client that asked for `names` of `type_url` and ACKed the first response.
fn synced(type_url: &'static str, names: &[&str], items: &[(&str, &str)]) -> SotwType {
    let mut state = SotwType::new(type_url);
    state.on_request(&mk_request(type_url, names, ""));
    let sent = respond_now(&mut state, items);
    assert_eq!(sent.resources.len(), items.len());
    state.on_request(&mk_ack(type_url, names, &sent));
    state
}

#[test]
fn an_eds_push_carries_only_the_assignments_that_changed_since_the_ack() {
    let names = ["c1", "c2", "c3"];
    let mut state = synced(ENDPOINT, &names, &[("c1", "1"), ("c2", "1"), ("c3", "1")]);
    let pushed = respond(&mut state, &[("c1", "1"), ("c2", "2"), ("c3", "1")], false);
    let pushed = pushed.unwrap_or_else(|| panic!("a change must be pushed"));
    assert_eq!(bodies(&pushed), ["c2@2"]);
    // The version is the whole set's, as a full response would carry.
    let mut full = synced(ENDPOINT, &names, &[("c1", "1"), ("c2", "2"), ("c3", "1")]);
    let full = respond_now(&mut full, &[("c1", "1"), ("c2", "2"), ("c3", "1")]);
    assert_eq!(pushed.version_info, full.version_info);
    // What the proxy holds is the whole set.
    let held: Vec<String> = state.snapshot().resources.into_keys().collect();
    assert_eq!(held, names);
}

#[test]
fn an_rds_push_carries_only_the_route_tables_that_changed() {
    let mut state = synced(ROUTE, &["80", "8080"], &[("80", "1"), ("8080", "1")]);
    let pushed = respond(&mut state, &[("80", "1"), ("8080", "2")], false);
    assert_eq!(pushed.map(|p| bodies(&p)), Some(vec!["8080@2".to_owned()]));
}

#[test]
fn cds_and_lds_pushes_carry_the_whole_set() {
    for type_url in [CLUSTER, meshd_proto::type_url::LISTENER] {
        let mut state = synced(type_url, &[], &[("a", "1"), ("b", "1")]);
        let pushed = respond(&mut state, &[("a", "1"), ("b", "2")], false);
        assert_eq!(
            pushed.map(|p| bodies(&p)),
            Some(vec!["a@1".to_owned(), "b@2".to_owned()]),
            "{type_url}"
        );
    }
}

#[test]
fn a_push_while_a_response_is_unanswered_waits_for_the_answer() {
    let names = ["c1", "c2", "c3"];
    let mut state = synced(ENDPOINT, &names, &[("c1", "1"), ("c2", "1"), ("c3", "1")]);
    let first = respond(&mut state, &[("c1", "2"), ("c2", "1"), ("c3", "1")], false);
    let first = first.unwrap_or_else(|| panic!("a change must be pushed"));
    assert_eq!(bodies(&first), ["c1@2"]);
    // c1 goes back before the proxy answered: had the server sent nothing (c1 is as accepted),
    // the proxy would end up holding c1@2. The push waits instead.
    let items = [("c1", "1"), ("c2", "1"), ("c3", "2")];
    assert!(respond(&mut state, &items, false).is_none());
    let outcome = state.on_request(&mk_ack(ENDPOINT, &names, &first));
    assert!(outcome.respond && !outcome.full);
    let waited = respond(&mut state, &items, outcome.full);
    assert_eq!(
        waited.map(|p| bodies(&p)),
        Some(vec!["c1@1".to_owned(), "c3@2".to_owned()])
    );
}

#[test]
fn a_push_waiting_on_a_nack_carries_everything() {
    let names = ["c1", "c2"];
    let mut state = synced(ENDPOINT, &names, &[("c1", "1"), ("c2", "1")]);
    let rejected = respond(&mut state, &[("c1", "bad"), ("c2", "1")], false);
    let rejected = rejected.unwrap_or_else(|| panic!("a change must be pushed"));
    let items = [("c1", "good"), ("c2", "1")];
    assert!(respond(&mut state, &items, false).is_none());
    let outcome = state.on_request(&mk_nack(ENDPOINT, &names, &rejected));
    assert!(outcome.respond);
    let fixed = respond(&mut state, &items, outcome.full);
    assert_eq!(
        fixed.map(|p| bodies(&p)),
        Some(vec!["c1@good".to_owned(), "c2@1".to_owned()])
    );
}

#[test]
fn after_a_nack_the_fix_comes_with_everything_the_rejected_response_brought() {
    let names = ["c1", "c2"];
    let mut state = synced(ENDPOINT, &names, &[("c1", "1"), ("c2", "1")]);
    let rejected = respond(&mut state, &[("c1", "bad"), ("c2", "2")], false);
    let rejected = rejected.unwrap_or_else(|| panic!("a change must be pushed"));
    assert_eq!(bodies(&rejected), ["c1@bad", "c2@2"]);
    state.on_request(&mk_nack(ENDPOINT, &names, &rejected));
    let suspects: Vec<String> = state
        .nack_suspects()
        .iter()
        .map(|r| r.name().to_owned())
        .collect();
    assert_eq!(suspects, ["c1", "c2"]);
    assert!(respond(&mut state, &[("c1", "bad"), ("c2", "2")], false).is_none());
    // Envoy rejected c2@2 along with c1: it is sent again with the fix.
    let fixed = respond(&mut state, &[("c1", "good"), ("c2", "2")], false);
    assert_eq!(
        fixed.map(|p| bodies(&p)),
        Some(vec!["c1@good".to_owned(), "c2@2".to_owned()])
    );
}

#[test]
fn a_partial_push_that_carries_nothing_still_moves_the_version() {
    // c2 is no longer generated: Envoy keeps its copy until CDS drops the cluster.
    let mut state = synced(ENDPOINT, &["c1", "c2"], &[("c1", "1"), ("c2", "1")]);
    let pushed = respond(&mut state, &[("c1", "1")], false);
    let pushed = pushed.unwrap_or_else(|| panic!("the set changed"));
    assert!(pushed.resources.is_empty());
    state.on_request(&mk_ack(ENDPOINT, &["c1", "c2"], &pushed));
    assert_eq!(state.snapshot().state(), SyncState::Synced);
}

#[test]
fn proxies_with_the_same_subscription_share_it_and_the_sets_they_are_sent() {
    let names = ["c2", "c1"];
    let mut a = SotwType::new(ENDPOINT);
    let mut b = SotwType::new(ENDPOINT);
    a.on_request(&mk_request(ENDPOINT, &names, ""));
    b.on_request(&mk_request(ENDPOINT, &["c1", "c2"], ""));
    let (Some(na), Some(nb)) = (a.names(), b.names()) else {
        panic!("named subscriptions");
    };
    assert!(Arc::ptr_eq(na, nb));
    let generated = mk_set(&[("c1", "1"), ("c2", "1"), ("c3", "1")]);
    let ra = a.respond(generated.clone(), true);
    let rb = b.respond(generated.clone(), true);
    assert!(ra.is_some() && rb.is_some());
    // Both hold the generated set itself (and one shared selection of it), not copies.
    assert!(Arc::strong_count(&generated[0]) >= 3);
}
