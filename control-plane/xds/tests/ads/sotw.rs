//! State-of-the-World over real gRPC.

use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meshd_xds::SyncState;
use tonic::Code;

use crate::harness::{Harness, SotwClient, bodies, wait_for};

#[tokio::test]
async fn streams_are_refused_until_sources_are_synced() {
    let harness = Harness::start_unsynced().await;
    let refused = SotwClient::connect(harness.addr, "early").await;
    match refused {
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable);
            assert!(status.message().contains("not synced"));
        }
        Ok(_) => panic!("stream admitted before sources synced"),
    }

    harness.push(&[]);
    let mut client = harness.sotw("late").await;
    client.request(CLUSTER, &[]).await;
    client.recv_type(CLUSTER).await;
}

#[tokio::test]
async fn a_first_request_without_a_node_ends_the_stream() {
    let harness = Harness::start().await;
    let mut client = harness.sotw("anonymous").await;
    client
        .send_without_node(DiscoveryRequest {
            type_url: CLUSTER.to_owned(),
            ..Default::default()
        })
        .await;
    match client.next().await {
        Err(status) => assert_eq!(status.code(), Code::InvalidArgument),
        Ok(response) => panic!("answered a request without a node: {response:?}"),
    }
    assert_eq!(harness.server.connected(), 0);
}

#[tokio::test]
async fn a_refusing_generator_ends_the_stream_with_its_status() {
    let harness = Harness::start().await;
    harness
        .generator
        .refuse_with(tonic::Status::permission_denied("not in the mesh"));
    let mut client = harness.sotw("stranger").await;
    client.request(CLUSTER, &[]).await;
    match client.next().await {
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied);
            assert_eq!(status.message(), "not in the mesh");
        }
        Ok(response) => panic!("refused proxy was answered: {response:?}"),
    }
    assert_eq!(harness.server.connected(), 0);
}

#[tokio::test]
async fn each_type_is_answered_with_its_full_set_on_the_first_request() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    harness.set(LISTENER, "l1", "1");
    harness.set(ROUTE, "80", "1");
    harness.set(ROUTE, "8080", "1");
    harness.set(SECRET, "default", "1");
    let mut client = harness.sotw("sidecar").await;

    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["c1@1", "c2@1"]);
    assert!(!cds.version_info.is_empty());
    assert!(!cds.nonce.is_empty());

    client.request(ENDPOINT, &["c2"]).await;
    assert_eq!(bodies(&client.recv_type(ENDPOINT).await), ["c2@1"]);

    client.request(LISTENER, &["*"]).await;
    assert_eq!(bodies(&client.recv_type(LISTENER).await), ["l1@1"]);

    client.request(ROUTE, &["80", "missing"]).await;
    assert_eq!(bodies(&client.recv_type(ROUTE).await), ["80@1"]);

    client.request(SECRET, &["default"]).await;
    assert_eq!(bodies(&client.recv_type(SECRET).await), ["default@1"]);
}

#[tokio::test]
async fn an_ack_gets_no_response() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    client.expect_silence().await;
    let status = harness.status_of("sidecar").await;
    assert_eq!(status.types[CLUSTER].state(), SyncState::Synced);
    assert_eq!(status.types[CLUSTER].acked_version, cds.version_info);
}

#[tokio::test]
async fn a_nack_is_recorded_and_the_same_version_is_not_resent() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "bad");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.nack(&cds, &[], "c1: invalid lb_policy").await;

    let server = harness.server.clone();
    let status = wait_for(|| {
        server
            .statuses()
            .into_iter()
            .find(|s| s.types[CLUSTER].state() == SyncState::Nacked)
    })
    .await;
    let nack = status.types[CLUSTER].nack.clone();
    assert!(
        nack.as_ref()
            .is_some_and(|n| n.message == "c1: invalid lb_policy")
    );
    assert!(nack.is_some_and(|n| n.version == cds.version_info && n.nonce == cds.nonce));
    let metrics = harness.metrics();
    assert!(
        metrics.contains("pilot_total_xds_rejects_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pilot_xds_cds_reject_total 1"),
        "{metrics}"
    );

    // Something else changes: the rejected set is not sent again.
    harness.push(&[CLUSTER]);
    client.expect_silence().await;

    harness.set(CLUSTER, "c1", "good");
    harness.push(&[CLUSTER]);
    let fixed = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&fixed), ["c1@good"]);
    client.ack(&fixed, &[]).await;
    let server = harness.server.clone();
    wait_for(|| {
        server
            .statuses()
            .into_iter()
            .find(|s| s.types[CLUSTER].state() == SyncState::Synced)
    })
    .await;
}

#[tokio::test]
async fn a_stale_nonce_is_ignored() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &["c1"]).await;
    let first = client.recv_type(CLUSTER).await;
    harness.set(CLUSTER, "c1", "2");
    harness.push(&[CLUSTER]);
    let second = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&second), ["c1@2"]);

    // A request that answers the superseded response, even one asking for more, is ignored.
    client.ack(&first, &["c1", "c2"]).await;
    client.expect_silence().await;
    let metrics = harness.metrics();
    assert!(
        metrics.contains("pilot_xds_expired_nonce_total{type=\"cds\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_eds_push_waits_for_the_answer_to_the_response_before_it() {
    let harness = Harness::start().await;
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(ENDPOINT, &["c1", "c2"]).await;
    let first = client.recv_type(ENDPOINT).await;
    harness.set(ENDPOINT, "c2", "2");
    harness.push(&[ENDPOINT]);
    client.expect_silence().await;
    client.ack(&first, &["c1", "c2"]).await;
    let second = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&second), ["c2@2"]);
}

#[tokio::test]
async fn an_eds_subscription_change_is_answered_with_the_new_names() {
    let harness = Harness::start().await;
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "c2", "1");
    harness.set(ENDPOINT, "c3", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(ENDPOINT, &["c1"]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&eds), ["c1@1"]);

    client.ack(&eds, &["c1", "c3"]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&eds), ["c1@1", "c3@1"]);

    client.ack(&eds, &["c1", "c3"]).await;
    client.expect_silence().await;
}

#[tokio::test]
async fn eds_is_answered_after_a_cds_push_even_if_nothing_changed() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(ENDPOINT, "c1", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    client.request(ENDPOINT, &["c1"]).await;
    let eds = client.recv_type(ENDPOINT).await;
    client.ack(&eds, &["c1"]).await;
    client.expect_silence().await;

    harness.set(CLUSTER, "c1", "2");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["c1@2"]);
    client.ack(&cds, &[]).await;
    // Envoy re-warms c1 and asks for EDS with what looks like an ACK of the old response.
    client.ack(&eds, &["c1"]).await;
    let again = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&again), ["c1@1"]);
    assert_eq!(again.version_info, eds.version_info);
    assert_ne!(again.nonce, eds.nonce);

    // Only once.
    client.ack(&again, &["c1"]).await;
    client.expect_silence().await;
}

#[tokio::test]
async fn a_push_sends_only_the_types_that_changed_for_the_proxy() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(ENDPOINT, "c1", "1");
    harness.set(ENDPOINT, "other", "1");
    harness.set(LISTENER, "l1", "1");
    let mut client = harness.sotw("sidecar").await;
    for (type_url, names) in [
        (CLUSTER, &[][..]),
        (ENDPOINT, &["c1"][..]),
        (LISTENER, &[][..]),
    ] {
        client.request(type_url, names).await;
        let response = client.recv_type(type_url).await;
        client.ack(&response, names).await;
    }
    client.expect_silence().await;

    harness.set(ENDPOINT, "c1", "2");
    harness.push(&[ENDPOINT]);
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&eds), ["c1@2"]);
    client.ack(&eds, &["c1"]).await;
    client.expect_silence().await;

    // A change to endpoints this proxy does not watch sends nothing.
    harness.set(ENDPOINT, "other", "2");
    harness.push(&[ENDPOINT]);
    client.expect_silence().await;

    // Several types in one push go out in CDS, EDS, LDS order.
    harness.set(LISTENER, "l1", "2");
    harness.set(ENDPOINT, "c1", "3");
    harness.set(CLUSTER, "c1", "2");
    harness.push(&[LISTENER, ENDPOINT, CLUSTER]);
    client.recv_type(CLUSTER).await;
    client.recv_type(ENDPOINT).await;
    client.recv_type(LISTENER).await;
    let metrics = harness.metrics();
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"eds\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count 4"),
        "{metrics}"
    );
}

#[tokio::test]
async fn quick_pushes_coalesce_and_the_proxy_ends_at_the_latest() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    client.expect_silence().await;

    // No await between pushes: on this single-threaded runtime the stream task sees only the last.
    for version in ["2", "3", "4", "5"] {
        harness.set(CLUSTER, "c1", version);
        harness.push(&[CLUSTER]);
    }
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["c1@5"]);
    client.expect_silence().await;
}

#[tokio::test]
async fn a_reconnect_gets_the_full_set_again() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let first = client.recv_type(CLUSTER).await;
    drop(client);

    let mut client = harness.sotw("sidecar").await;
    // Envoy may carry the old version and nonce into the new stream.
    client.ack(&first, &[]).await;
    let again = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&again), ["c1@1"]);
    assert_eq!(again.version_info, first.version_info);
}

#[tokio::test]
async fn a_nack_names_only_what_changed_since_the_last_ack() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    let server = harness.server.clone();
    wait_for(|| {
        server
            .statuses()
            .into_iter()
            .find(|s| s.types.get(CLUSTER).map(|t| t.state()) == Some(SyncState::Synced))
    })
    .await;
    harness.set(CLUSTER, "c2", "2");
    harness.set(CLUSTER, "c3", "1");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["c1@1", "c2@2", "c3@1"]);
    client.nack(&cds, &[], "c3: bad").await;
    let generator = harness.generator.clone();
    let nacks = wait_for(|| {
        let nacks = generator.nacks.lock().clone();
        (!nacks.is_empty()).then_some(nacks)
    })
    .await;
    assert_eq!(
        nacks,
        [(
            CLUSTER.to_owned(),
            "c3: bad".to_owned(),
            vec!["c2@2".to_owned(), "c3@1".to_owned()]
        )]
    );
}

#[tokio::test]
async fn an_eds_push_carries_only_the_changed_assignments_and_a_new_subscription_everything() {
    let harness = Harness::start().await;
    for name in ["c1", "c2", "c3"] {
        harness.set(ENDPOINT, name, "1");
    }
    let mut client = harness.sotw("sidecar").await;
    client.request(ENDPOINT, &["c1", "c2"]).await;
    let eds = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&eds), ["c1@1", "c2@1"]);
    client.ack(&eds, &["c1", "c2"]).await;
    client.expect_silence().await;

    harness.set(ENDPOINT, "c2", "2");
    harness.push(&[ENDPOINT]);
    let pushed = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&pushed), ["c2@2"]);
    client.ack(&pushed, &["c1", "c2"]).await;
    client.expect_silence().await;
    let status = harness.status_of("sidecar").await;
    let held: Vec<_> = status.types[ENDPOINT].resources.keys().cloned().collect();
    assert_eq!(held, ["c1", "c2"]);
    assert_eq!(status.types[ENDPOINT].state(), SyncState::Synced);

    // Newly requested names: everything requested, as the protocol asks.
    client.ack(&pushed, &["c1", "c2", "c3"]).await;
    let resubscribed = client.recv_type(ENDPOINT).await;
    assert_eq!(bodies(&resubscribed), ["c1@1", "c2@2", "c3@1"]);
}

#[tokio::test]
async fn an_rds_push_carries_only_the_changed_route_tables_and_cds_the_whole_set() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(CLUSTER, "c2", "1");
    harness.set(ROUTE, "80", "1");
    harness.set(ROUTE, "8080", "1");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    client.request(ROUTE, &["80", "8080"]).await;
    let rds = client.recv_type(ROUTE).await;
    client.ack(&rds, &["80", "8080"]).await;
    client.expect_silence().await;

    harness.set(ROUTE, "8080", "2");
    harness.set(CLUSTER, "c2", "2");
    harness.push(&[ROUTE, CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["c1@1", "c2@2"]);
    let rds = client.recv_type(ROUTE).await;
    assert_eq!(bodies(&rds), ["8080@2"]);
}

#[tokio::test]
async fn a_proxys_own_set_follows_the_shared_one_and_cannot_shadow_it() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "outbound", "1");
    harness.set(CLUSTER, "both", "shared");
    harness.generator.set_own(CLUSTER, "inbound", "1");
    harness.generator.set_own(CLUSTER, "both", "own");
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["both@shared", "outbound@1", "inbound@1"]);
    client.ack(&cds, &[]).await;

    harness.generator.set_own(CLUSTER, "inbound", "2");
    harness.push(&[CLUSTER]);
    let cds = client.recv_type(CLUSTER).await;
    assert_eq!(bodies(&cds), ["both@shared", "outbound@1", "inbound@2"]);
}
