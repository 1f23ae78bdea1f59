//! Delta (incremental) xDS over real gRPC.

use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER};
use meshd_xds::SyncState;

use crate::harness::{Harness, delta_bodies, mk_resource, wait_for};

#[tokio::test]
async fn delta_first_requests_get_every_wildcard_resource_and_the_named_ones_subscribed() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    let mut client = harness.delta("sidecar").await;

    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["c1@1", "c2@1"]);
    assert!(cds.removed_resources.is_empty());
    assert!(!cds.system_version_info.is_empty());

    client.request(ENDPOINT, &["c2"], &[]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c2@1"]);

    // An empty set is still answered, so Envoy's initial fetch completes.
    client.request(LISTENER, &["*"], &[]).await;
    let lds = client.recv_type(LISTENER).await;
    assert!(lds.resources.is_empty());

    let status = harness.status_of("sidecar").await;
    assert!(status.delta);
    assert_eq!(status.types[CLUSTER].subscribed, None);
    assert_eq!(
        status.types[ENDPOINT].subscribed,
        Some(["c2".to_owned()].into())
    );
}

#[tokio::test]
async fn a_delta_ack_gets_no_response_and_marks_the_type_synced() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds).await;
    client.expect_silence().await;
    let status = harness.status_of("sidecar").await;
    assert_eq!(status.types[CLUSTER].state(), SyncState::Synced);
    assert_eq!(status.types[CLUSTER].acked_version, cds.system_version_info);
}

#[tokio::test]
async fn a_delta_push_sends_only_changed_resources_and_removals() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    harness.set(CLUSTER, "c3", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds).await;

    harness.set(CLUSTER, "c2", "2");
    harness.generator.remove(CLUSTER, "c3");
    harness.set(CLUSTER, "c4", "1");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["c2@2", "c4@1"]);
    assert_eq!(cds.removed_resources, ["c3"]);
    client.ack(&cds).await;

    // Announced but unchanged: nothing.
    harness.push(&[CLUSTER]);
    client.expect_silence().await;
    let status = harness.status_of("sidecar").await;
    let held: Vec<_> = status.types[CLUSTER].resources.keys().cloned().collect();
    assert_eq!(held, ["c1", "c2", "c4"]);
}

#[tokio::test]
async fn delta_subscribe_sends_new_names_and_unsubscribe_stops_updates() {
    let harness = Harness::start().await;
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(ENDPOINT, &["c1"], &[]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c1@1"]);
    client.ack(&eds).await;

    client.subscribe(ENDPOINT, &["c2"], &[]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c2@1"]);
    client.ack(&eds).await;

    client.subscribe(ENDPOINT, &[], &["c1"]).await;
    client.expect_silence().await;
    harness.set(ENDPOINT, "c1", "2");
    harness.push(&[ENDPOINT]);
    client.expect_silence().await;

    // Subscribing again sends it, though the client once held it.
    client.subscribe(ENDPOINT, &["c1"], &[]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c1@2"]);
}

#[tokio::test]
async fn a_delta_reconnect_with_initial_versions_sends_only_what_differs() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "same", "1");
    harness.set(CLUSTER, "changed", "2");
    harness.set(CLUSTER, "new", "1");
    // Versions as the server gives them: hashes of the bytes.
    let v = |name: &str, version: &str| mk_resource(CLUSTER, name, version).version_info();
    let (same, changed_old, changed, new) = (
        v("same", "1"),
        v("changed", "1"),
        v("changed", "2"),
        v("new", "1"),
    );
    let mut client = harness.delta("sidecar").await;
    client
        .request(
            CLUSTER,
            &[],
            &[("same", &same), ("changed", &changed_old), ("deleted", "1")],
        )
        .await;
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["changed@2", "new@1"]);
    assert_eq!(cds.removed_resources, ["deleted"]);

    // Nothing differs: the response is empty, but it is sent.
    let mut again = harness.delta("sidecar").await;
    again
        .request(
            CLUSTER,
            &[],
            &[("same", &same), ("changed", &changed), ("new", &new)],
        )
        .await;
    let cds = again.recv_type(CLUSTER).await;
    assert!(cds.resources.is_empty() && cds.removed_resources.is_empty());
}

#[tokio::test]
async fn a_delta_nack_is_recorded_and_the_same_version_is_not_resent() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "bad");
    let mut client = harness.delta("sidecar").await;
    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.nack(&cds, "c1 is broken").await;
    let server = harness.server.clone();
    let status = wait_for(|| {
        server
            .statuses()
            .into_iter()
            .find(|s| s.types[CLUSTER].state() == SyncState::Nacked)
    })
    .await;
    assert_eq!(
        status.types[CLUSTER]
            .nack
            .as_ref()
            .map(|n| n.message.as_str()),
        Some("c1 is broken")
    );

    harness.push(&[CLUSTER]);
    client.expect_silence().await;
    harness.set(CLUSTER, "c1", "good");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["c1@good"]);
}

#[tokio::test]
async fn a_delta_cds_push_resends_endpoints_of_the_changed_clusters() {
    let harness = Harness::start().await;
    for name in ["c1", "c2"] {
        harness.set(CLUSTER, name, "1");
        harness.set(ENDPOINT, name, "1");
    }
    let mut client = harness.delta("sidecar").await;
    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds).await;
    client.request(ENDPOINT, &["c1", "c2"], &[]).await;
    let eds = client.recv_type(ENDPOINT).await;
    client.ack(&eds).await;
    client.expect_silence().await;

    harness.set(CLUSTER, "c2", "2");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["c2@2"]);
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c2@1"]);
    client.ack(&cds).await;
    client.ack(&eds).await;
    client.expect_silence().await;
}

#[tokio::test]
async fn a_delta_subscription_change_on_a_stale_nonce_is_still_honoured() {
    let harness = Harness::start().await;
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(ENDPOINT, &["c1"], &[]).await;
    let first = client.recv_type(ENDPOINT).await;
    client.ack(&first).await;
    harness.set(ENDPOINT, "c1", "2");
    harness.push(&[ENDPOINT]);
    let _second = client.recv_type(ENDPOINT).await;

    client
        .send(
            meshd_proto::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest {
                type_url: ENDPOINT.to_owned(),
                response_nonce: first.nonce.clone(),
                resource_names_subscribe: vec!["c2".to_owned()],
                ..Default::default()
            },
        )
        .await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(delta_bodies(&eds), ["c2@1"]);
    let metrics = harness.metrics();
    assert!(
        metrics.contains("pilot_xds_expired_nonce_total{type=\"eds\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_delta_nack_names_what_that_response_brought() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(CLUSTER, &[], &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds).await;
    harness.set(CLUSTER, "c2", "1");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&cds), ["c2@1"]);
    client.nack(&cds, "c2: bad").await;
    let generator = harness.generator.clone();
    let nacks = wait_for(|| {
        let nacks = generator.nacks.lock().clone();
        (!nacks.is_empty()).then_some(nacks)
    })
    .await;
    assert_eq!(nacks[0].2, ["c2@1"]);
}

#[tokio::test]
async fn a_delta_push_waits_for_the_answer_to_the_last_response_and_carries_every_change() {
    let harness = Harness::start().await;
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    let mut client = harness.delta("sidecar").await;
    client.request(ENDPOINT, &["c1", "c2"], &[]).await;
    let first = client.recv_type(ENDPOINT).await;
    // Two pushes while the client has not answered: nothing is sent yet.
    harness.set(ENDPOINT, "c1", "2");
    harness.push(&[ENDPOINT]);
    harness.set(ENDPOINT, "c2", "2");
    harness.push(&[ENDPOINT]);
    client.expect_silence().await;
    // The answer brings both changes in one response.
    client.ack(&first).await;
    let eds = client.recv_type(ENDPOINT).await;
    let mut bodies = delta_bodies(&eds);
    bodies.sort();
    assert_eq!(bodies, ["c1@2", "c2@2"]);
}
