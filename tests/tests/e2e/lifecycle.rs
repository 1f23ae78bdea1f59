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

#[test]
fn meshd_with_a_connected_proxy_exits_promptly_on_sigterm() {
    let mut meshd = HostMeshd::with_config_dir();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("http://{}", meshd.xds_addr());
    // The stream stays open (its request sender and response stream alive) until the end.
    let _stream = runtime.block_on(async {
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
        let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .expect("a response, not the end of the stream");
        assert_eq!(first.type_url, type_url::CLUSTER);
        (requests, responses)
    });
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
