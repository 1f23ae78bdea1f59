//! istioctl's debug requests over ADS: `istio.io/debug/syncz` and `istio.io/debug/config_dump`,
//! sent the way istioctl's client sends them (a node of its own, a first request whose nonce is
//! a timestamp, the answer ACKed).

use meshd_proto::pb::envoy::admin::v3::{ClustersConfigDump, ListenersConfigDump};
use meshd_proto::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use meshd_proto::pb::envoy::service::status::v3::{ClientConfig, ConfigStatus};
use meshd_proto::pb::google::protobuf::value::Kind;
use meshd_proto::type_url::{CLUSTER, LISTENER};
use meshd_xds::DebugScope;
use meshd_xds::debug::{CONFIG_DUMP, SYNCZ};
use tonic::Code;

use crate::harness::{CONTROL_PLANE, Harness, SotwClient, wait_for};

const SHOP_PROXY: &str = "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local";
const OTHER_PROXY: &str = "sidecar~10.0.0.2~db-1.other~other.svc.cluster.local";
/// The node istioctl's xDS client makes up for itself.
const ISTIOCTL: &str = "sidecar~10.0.9.9~test-1.istio-system~istio-system.svc.cluster.local";

/// A debug request as istioctl sends its first one: the nonce is the time it was sent.
fn istioctl_request(type_url: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_owned(),
        resource_names: names.iter().map(|n| (*n).to_owned()).collect(),
        response_nonce: "2026-12-05 08:00:00.000000001 +0000 UTC m=+0.051".to_owned(),
        ..Default::default()
    }
}

/// Two proxies: `web-1.shop` holding an ACKed CDS and an unACKed LDS, `db-1.other` with CDS
/// sent and not ACKed.
async fn two_proxies(harness: &Harness) -> (SotwClient, SotwClient) {
    harness.set(CLUSTER, "outbound|80||web.shop.svc.cluster.local", "1");
    harness.set(LISTENER, "virtualOutbound", "1");
    let mut shop = harness.sotw(SHOP_PROXY).await;
    shop.request(CLUSTER, &[]).await;
    let cds = shop.recv_type(CLUSTER).await;
    shop.ack(&cds, &[]).await;
    shop.request(LISTENER, &[]).await;
    let _ = shop.recv_type(LISTENER).await;
    let mut other = harness.sotw(OTHER_PROXY).await;
    other.request(CLUSTER, &[]).await;
    let _ = other.recv_type(CLUSTER).await;
    let server = harness.server.clone();
    wait_for(|| {
        server.statuses().into_iter().find(|s| {
            s.node.id == SHOP_PROXY
                && s.types
                    .get(CLUSTER)
                    .is_some_and(|t| t.acked_nonce == t.sent_nonce)
        })
    })
    .await;
    (shop, other)
}

fn client_configs(response: &DiscoveryResponse) -> Vec<ClientConfig> {
    response
        .resources
        .iter()
        .map(|any| meshd_proto::unpack::<ClientConfig>(any).expect("a ClientConfig"))
        .collect()
}

fn statuses(config: &ClientConfig) -> Vec<(String, ConfigStatus)> {
    config
        .generic_xds_configs
        .iter()
        .map(|c| (c.type_url.clone(), c.config_status()))
        .collect()
}

fn metadata(config: &ClientConfig, key: &str) -> Option<String> {
    let node = config.node.as_ref()?;
    match node.metadata.as_ref()?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn syncz_lists_every_proxys_sync_state_and_the_debug_client_is_no_proxy() {
    let harness = Harness::start().await;
    let (_shop, _other) = two_proxies(&harness).await;
    *harness.generator.debug.lock() = Some(DebugScope::All);

    let mut istioctl = harness.sotw(ISTIOCTL).await;
    istioctl.send(istioctl_request(SYNCZ, &[])).await;
    let response = istioctl.recv_type(SYNCZ).await;

    let identifier = response
        .control_plane
        .as_ref()
        .map(|c| c.identifier.as_str());
    assert_eq!(identifier, Some(CONTROL_PLANE));
    let configs = client_configs(&response);
    let ids: Vec<&str> = configs
        .iter()
        .filter_map(|c| c.node.as_ref().map(|n| n.id.as_str()))
        .collect();
    assert_eq!(
        ids,
        [SHOP_PROXY, OTHER_PROXY],
        "sorted by node id, istioctl not among them"
    );
    assert_eq!(
        statuses(&configs[0]),
        [
            (CLUSTER.to_owned(), ConfigStatus::Synced),
            (LISTENER.to_owned(), ConfigStatus::Stale),
        ]
    );
    assert_eq!(
        statuses(&configs[1]),
        [(CLUSTER.to_owned(), ConfigStatus::Stale)]
    );
    assert_eq!(metadata(&configs[0], "NAMESPACE").as_deref(), Some("shop"));
    assert_eq!(
        metadata(&configs[0], "CLUSTER_ID").as_deref(),
        Some("Kubernetes")
    );
    assert!(configs[0].generic_xds_configs[0].last_updated.is_some());

    // istioctl's client ACKs what it got: that is no new question.
    istioctl.ack(&response, &[]).await;
    istioctl.expect_silence().await;
    assert_eq!(harness.server.connected(), 2);
    assert_eq!(
        harness
            .generator
            .connects
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn a_debug_client_reads_only_its_namespace_and_nothing_without_leave() {
    let harness = Harness::start().await;
    let (_shop, _other) = two_proxies(&harness).await;

    // The generator's default: refused, as istiod refuses an unauthenticated debug request.
    let mut refused = harness.sotw(ISTIOCTL).await;
    refused.send(istioctl_request(SYNCZ, &[])).await;
    match refused.next().await {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{status}"),
        Ok(response) => panic!("answered an unauthenticated debug client: {response:?}"),
    }

    *harness.generator.debug.lock() = Some(DebugScope::Namespace("shop".into()));
    let mut istioctl = harness.sotw(ISTIOCTL).await;
    istioctl.send(istioctl_request(SYNCZ, &[])).await;
    let configs = client_configs(&istioctl.recv_type(SYNCZ).await);
    assert_eq!(configs.len(), 1);
    assert_eq!(
        configs[0].node.as_ref().map(|n| n.id.as_str()),
        Some(SHOP_PROXY)
    );

    // Another namespace's proxy is as unknown as a proxy that is not connected.
    let mut dump = harness.sotw(ISTIOCTL).await;
    dump.send(istioctl_request(CONFIG_DUMP, &["db-1.other"]))
        .await;
    assert!(dump.recv_type(CONFIG_DUMP).await.resources.is_empty());
}

#[tokio::test]
async fn config_dump_answers_with_the_sections_of_envoys_own_dump_for_one_proxy() {
    let harness = Harness::start().await;
    let (_shop, _other) = two_proxies(&harness).await;
    *harness.generator.debug.lock() = Some(DebugScope::All);

    let mut istioctl = harness.sotw(ISTIOCTL).await;
    istioctl
        .send(istioctl_request(CONFIG_DUMP, &["web-1.shop"]))
        .await;
    let response = istioctl.recv_type(CONFIG_DUMP).await;
    assert!(
        response.control_plane.is_none(),
        "only syncz names the control plane"
    );
    let sections: Vec<&str> = response
        .resources
        .iter()
        .map(|any| any.type_url.rsplit('.').next().unwrap_or_default())
        .collect();
    assert_eq!(
        sections,
        [
            "BootstrapConfigDump",
            "ClustersConfigDump",
            "ListenersConfigDump",
            "ScopedRoutesConfigDump",
            "RoutesConfigDump",
            "SecretsConfigDump",
            "EcdsConfigDump",
        ]
    );
    let clusters: ClustersConfigDump =
        meshd_proto::unpack(&response.resources[1]).expect("clusters");
    let bodies: Vec<String> = clusters
        .dynamic_active_clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
        .map(|any| String::from_utf8_lossy(&any.value).into_owned())
        .collect();
    assert_eq!(bodies, ["outbound|80||web.shop.svc.cluster.local@1"]);
    let listeners: ListenersConfigDump =
        meshd_proto::unpack(&response.resources[2]).expect("listeners");
    assert_eq!(listeners.dynamic_listeners[0].name, "virtualOutbound");

    // The full node id names the proxy too; a proxy not connected gets an empty answer (another
    // replica may hold it), and so does a request naming no proxy or two.
    for names in [
        &[SHOP_PROXY][..],
        &["gone-1.shop"][..],
        &[][..],
        &["web-1.shop", "db-1.other"][..],
    ] {
        let mut istioctl = harness.sotw(ISTIOCTL).await;
        istioctl.send(istioctl_request(CONFIG_DUMP, names)).await;
        let answered = istioctl.recv_type(CONFIG_DUMP).await.resources.len();
        assert_eq!(
            answered,
            if names == [SHOP_PROXY] { 7 } else { 0 },
            "{names:?}"
        );
    }
}
