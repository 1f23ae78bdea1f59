//! Connections: status, disconnect, the shared registry, many clients, shutdown.

use std::sync::atomic::Ordering;

use meshd_proto::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use meshd_xds::SyncState;

use crate::harness::{DeltaClient, Harness, SotwClient, bodies, delta_bodies, wait_for};

#[tokio::test]
async fn statuses_report_synced_stale_nacked_and_not_sent() {
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(ENDPOINT, "c1", "1");
    harness.set(LISTENER, "l1", "1");
    let mut client = harness.sotw("sidecar").await;

    client.request(CLUSTER, &[]).await;
    let cds = client.recv_type(CLUSTER).await;
    client.ack(&cds, &[]).await;
    client.request(ENDPOINT, &["c1"]).await;
    let eds = client.recv_type(ENDPOINT).await;
    client.nack(&eds, &["c1"], "bad endpoints").await;
    client.request(LISTENER, &[]).await;
    let _lds = client.recv_type(LISTENER).await;

    let server = harness.server.clone();
    let status = wait_for(|| {
        server.statuses().into_iter().find(|s| {
            s.types.get(ENDPOINT).map(|t| t.state()) == Some(SyncState::Nacked)
                && s.types.get(CLUSTER).map(|t| t.state()) == Some(SyncState::Synced)
        })
    })
    .await;
    assert_eq!(status.node.id, "sidecar");
    assert!(!status.delta);
    assert!(status.remote_addr.is_some_and(|a| a.ip().is_loopback()));
    assert_eq!(status.types[LISTENER].state(), SyncState::Stale);
    assert_eq!(status.types[CLUSTER].sent_version, cds.version_info);
    assert_eq!(status.types[CLUSTER].sent_nonce, cds.nonce);
    assert!(status.types[CLUSTER].last_sent.is_some());
    assert_eq!(
        status.types[ENDPOINT]
            .nack
            .as_ref()
            .map(|n| n.message.as_str()),
        Some("bad endpoints")
    );
    let held: Vec<_> = status.types[ENDPOINT].resources.keys().cloned().collect();
    assert_eq!(held, ["c1"]);
    // A type never asked for has no entry, which `proxy-status` shows as NOT SENT.
    assert!(!status.types.contains_key(ROUTE));
    assert_eq!(meshd_xds::TypeStatus::default().state(), SyncState::NotSent);
}

#[tokio::test]
async fn resources_are_generated_outside_the_connection_lock() {
    let harness = Harness::start().await;
    let _ = harness
        .generator
        .read_statuses_while_generating
        .set(harness.server.connections());
    harness.set(CLUSTER, "c1", "1");
    harness.set(ENDPOINT, "c1", "1");
    let mut sotw = harness.sotw("sotw").await;
    sotw.request(CLUSTER, &[]).await;
    assert_eq!(bodies(&sotw.recv_type(CLUSTER).await), ["c1@1"]);
    let mut delta = harness.delta("delta").await;
    delta.request(CLUSTER, &[], &[]).await;
    let first = delta.recv_type(CLUSTER).await;
    assert_eq!(delta_bodies(&first), ["c1@1"]);
    // A Delta push waits for the answer to the response before it.
    delta.ack(&first).await;
    harness.set(CLUSTER, "c1", "2");
    harness.push(&[CLUSTER]);
    assert_eq!(bodies(&sotw.recv_type(CLUSTER).await), ["c1@2"]);
    assert_eq!(delta_bodies(&delta.recv_type(CLUSTER).await), ["c1@2"]);
    assert!(harness.generator.generates.load(Ordering::SeqCst) >= 4);
    assert_eq!(
        harness
            .generator
            .status_reads_blocked
            .load(Ordering::SeqCst),
        0,
        "status reads waited for generation"
    );
}

#[tokio::test]
async fn a_client_disconnect_calls_disconnect_and_removes_it_from_statuses() {
    let harness = Harness::start().await;
    let mut client = harness.sotw("leaving").await;
    client.request(CLUSTER, &[]).await;
    client.recv_type(CLUSTER).await;
    let mut delta = harness.delta("leaving-delta").await;
    delta.request(CLUSTER, &[], &[]).await;
    delta.recv_type(CLUSTER).await;
    assert_eq!(harness.server.connected(), 2);
    assert!(harness.metrics().contains("pilot_xds 2"));

    drop(client);
    drop(delta);
    let server = harness.server.clone();
    wait_for(|| (server.connected() == 0).then_some(())).await;
    let generator = harness.generator.clone();
    wait_for(|| (generator.disconnects.load(Ordering::SeqCst) == 2).then_some(())).await;
    assert!(harness.server.statuses().is_empty());
    assert!(harness.metrics().contains("pilot_xds 0"));
}

#[tokio::test]
async fn the_tls_listener_shares_the_registry_and_tells_the_generator() {
    let harness = Harness::start().await;
    let mut plain = harness.sotw("plain").await;
    plain.request(CLUSTER, &[]).await;
    plain.recv_type(CLUSTER).await;
    let mut secure = match SotwClient::connect(harness.secure_addr, "secure").await {
        Ok(client) => client,
        Err(status) => panic!("refused: {status}"),
    };
    secure.request(CLUSTER, &[]).await;
    secure.recv_type(CLUSTER).await;

    let mut ids: Vec<String> = harness
        .server
        .statuses()
        .into_iter()
        .map(|s| s.node.id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["plain", "secure"]);
    assert_eq!(harness.server.connections().connected(), 2);
    let admitted = harness.generator.admitted.lock().clone();
    assert!(admitted.contains(&("plain".to_owned(), false)));
    assert!(admitted.contains(&("secure".to_owned(), true)));
}

#[tokio::test]
async fn shutdown_ends_every_stream_and_refuses_new_ones() {
    let harness = Harness::start().await;
    let mut client = harness.sotw("sidecar").await;
    client.request(CLUSTER, &[]).await;
    client.recv_type(CLUSTER).await;
    harness.server.shutdown();
    assert!(client.next().await.is_err());
    let server = harness.server.clone();
    wait_for(|| (server.connected() == 0).then_some(())).await;
    assert!(SotwClient::connect(harness.addr, "late").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_all_converge() {
    const CLIENTS: usize = 200;
    let harness = Harness::start().await;
    harness.set(CLUSTER, "c1", "1");
    harness.set(ENDPOINT, "c1", "1");

    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(CLIENTS);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let addr = harness.addr;
        let ready = ready_tx.clone();
        let id = format!("proxy-{i}");
        // Half SotW, half Delta; each task ends once its proxy holds the new endpoints.
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                let mut client = match SotwClient::connect(addr, &id).await {
                    Ok(client) => client,
                    Err(status) => panic!("refused: {status}"),
                };
                client.request(CLUSTER, &[]).await;
                let cds = client.recv_type(CLUSTER).await;
                client.ack(&cds, &[]).await;
                client.request(ENDPOINT, &["c1"]).await;
                let mut eds = client.recv_type(ENDPOINT).await;
                client.ack(&eds, &["c1"]).await;
                let _ = ready.send(()).await;
                while bodies(&eds) != ["c1@2"] {
                    eds = client.recv_type(ENDPOINT).await;
                    client.ack(&eds, &["c1"]).await;
                }
            } else {
                let mut client = match DeltaClient::connect(addr, &id).await {
                    Ok(client) => client,
                    Err(status) => panic!("refused: {status}"),
                };
                client.request(CLUSTER, &[], &[]).await;
                let cds = client.recv_type(CLUSTER).await;
                client.ack(&cds).await;
                client.request(ENDPOINT, &["c1"], &[]).await;
                let mut eds = client.recv_type(ENDPOINT).await;
                client.ack(&eds).await;
                let _ = ready.send(()).await;
                while delta_bodies(&eds) != ["c1@2"] {
                    eds = client.recv_type(ENDPOINT).await;
                    client.ack(&eds).await;
                }
            }
        }));
    }
    drop(ready_tx);
    for _ in 0..CLIENTS {
        assert!(
            ready_rx.recv().await.is_some(),
            "a client failed before it was ready"
        );
    }
    assert_eq!(harness.server.connected(), CLIENTS);

    harness.set(ENDPOINT, "c1", "2");
    harness.push(&[ENDPOINT]);
    for task in tasks {
        if let Err(error) = task.await {
            panic!("a client did not converge: {error}");
        }
    }
    let server = harness.server.clone();
    wait_for(|| (server.connected() == 0).then_some(())).await;
    assert_eq!(
        harness.generator.disconnects.load(Ordering::SeqCst),
        CLIENTS
    );
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented() {
    let harness = Harness::start().await;
    let channel = match tonic::transport::Channel::from_shared(format!("http://{}", harness.addr)) {
        Ok(endpoint) => match endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => panic!("connect: {error}"),
        },
        Err(error) => panic!("endpoint: {error}"),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(error) = grpc.ready().await {
        panic!("not ready: {error}");
    }
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.discovery.v3.AggregatedDiscoveryService/FetchAggregatedResources",
    );
    let codec = tonic_prost::ProstCodec::<
        meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest,
        meshd_proto::pb::envoy::service::discovery::v3::DiscoveryResponse,
    >::default();
    let status = grpc
        .unary(tonic::Request::new(Default::default()), path, codec)
        .await
        .err()
        .map(|s| s.code());
    assert_eq!(status, Some(tonic::Code::Unimplemented));
}
