//! meshd's own life on the host: told to stop (SIGTERM, as Kubernetes tells a pod), it stops
//! promptly even while proxies hold ADS streams open — graceful shutdown waits for open streams,
//! and only meshd itself can end those.

use std::time::{Duration, Instant};

use meshd_proto::pb::envoy::config::core::v3::Node;
use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshd_proto::type_url;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::support::host_meshd::HostMeshd;

/// A proxy on its own thread: one plaintext ADS stream, subscribed to clusters, read (and its
/// connection kept answering, as Envoy's does) until meshd ends it. Says on `first` when the first
/// response arrived.
fn connected_proxy(xds: &str, first: std::sync::mpsc::Sender<String>) {
    let url = format!("http://{xds}");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut client = AggregatedDiscoveryServiceClient::connect(url)
                .await
                .unwrap();
            let (requests, rx) = tokio::sync::mpsc::unbounded_channel();
            requests
                .send(DiscoveryRequest {
                    node: Some(Node {
                        id: "sidecar~10.9.0.1~sleep.default~default.svc.cluster.local".to_string(),
                        ..Default::default()
                    }),
                    type_url: type_url::CLUSTER.to_string(),
                    ..Default::default()
                })
                .unwrap();
            let mut responses = client
                .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            if let Ok(Some(response)) = responses.message().await {
                let _ = first.send(response.type_url);
            }
            while let Ok(Some(_)) = responses.message().await {}
            drop(requests);
        });
    });
}

#[test]
fn meshd_with_a_connected_proxy_exits_promptly_on_sigterm() {
    let mut meshd = HostMeshd::with_config_dir();
    let (first, answered) = std::sync::mpsc::channel();
    connected_proxy(meshd.xds_addr(), first);
    let response = answered.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        response.as_deref(),
        Ok(type_url::CLUSTER),
        "no CDS response\n{}",
        meshd.log()
    );
    let asked = Instant::now();
    meshd.signal("TERM");
    let status = meshd.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "meshd still runs 10 s after SIGTERM with a proxy connected\n{}",
        meshd.log()
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "meshd exited with {status:?}\n{}",
        meshd.log()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "meshd took {:?} to stop",
        asked.elapsed()
    );
}
