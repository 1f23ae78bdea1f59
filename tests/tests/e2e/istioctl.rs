//! istioctl against meshd: `istioctl proxy-status` and `proxy-config`/`proxy-status POD` ask the
//! control plane over its xDS port for `istio.io/debug/syncz` and `istio.io/debug/config_dump`,
//! with a service-account token the API server vouches for. Asked here exactly as istioctl asks
//! (`support::istioctl`), of meshd reading a real kube-apiserver.

use meshd_proto::pb::envoy::admin::v3::ClustersConfigDump;
use meshd_proto::pb::envoy::config::cluster::v3::Cluster;
use meshd_proto::pb::envoy::config::core::v3::Node;
use meshd_proto::pb::envoy::service::discovery::v3::DiscoveryRequest;
use meshd_proto::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use meshd_proto::pb::envoy::service::status::v3::{ClientConfig, ConfigStatus};
use meshd_proto::pb::google::protobuf::{Struct, Value, value::Kind};
use meshd_proto::{type_url, unpack};
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::host_meshd::HostMeshd;
use crate::support::istioctl::{Transport, ask};
use crate::support::kube::{cluster, kubectl};

const SYNCZ: &str = "istio.io/debug/syncz";
const CONFIG_DUMP: &str = "istio.io/debug/config_dump";
const UNAUTHENTICATED: i32 = 16;

/// A proxy on meshd's plaintext port that asked for CDS and ACKed it; connected while it lives.
struct Proxy {
    _requests: mpsc::Sender<DiscoveryRequest>,
    _responses: tonic::Streaming<meshd_proto::pb::envoy::service::discovery::v3::DiscoveryResponse>,
}

fn connect_proxy(runtime: &tokio::runtime::Runtime, xds: &str, pod: &str, ns: &str) -> Proxy {
    let node = Node {
        id: format!("sidecar~10.1.0.5~{pod}.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [("NAMESPACE", ns), ("ISTIO_VERSION", "1.28.0")]
                .into_iter()
                .map(|(k, v)| {
                    let value = Value {
                        kind: Some(Kind::StringValue(v.to_owned())),
                    };
                    (k.to_owned(), value)
                })
                .collect(),
        }),
        ..Default::default()
    };
    runtime.block_on(async {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(DiscoveryRequest {
            node: Some(node),
            type_url: type_url::CLUSTER.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut responses = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let cds = responses.message().await.unwrap().expect("a CDS response");
        tx.send(DiscoveryRequest {
            type_url: cds.type_url.clone(),
            version_info: cds.version_info.clone(),
            response_nonce: cds.nonce.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        Proxy {
            _requests: tx,
            _responses: responses,
        }
    })
}

fn client_configs(
    answer: &meshd_proto::pb::envoy::service::discovery::v3::DiscoveryResponse,
) -> Vec<ClientConfig> {
    answer
        .resources
        .iter()
        .map(|any| unpack::<ClientConfig>(any).expect("a ClientConfig"))
        .collect()
}

fn node_ids(configs: &[ClientConfig]) -> Vec<String> {
    configs
        .iter()
        .filter_map(|c| c.node.as_ref().map(|n| n.id.clone()))
        .collect()
}

#[test]
fn istioctl_reads_proxy_status_and_config_dumps_over_xds_with_a_reviewed_token() {
    let cluster = cluster();
    for ns in ["istio-system", "shop", "other"] {
        kubectl(&cluster, &["create", "namespace", ns]);
        // No controller manager runs: the namespaces' `default` accounts are made by hand.
        kubectl(&cluster, &["create", "serviceaccount", "default", "-n", ns]);
    }
    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd-istioctl-0");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _web = connect_proxy(&runtime, meshd.xds_addr(), "web-1", "shop");
    let _db = connect_proxy(&runtime, meshd.xds_addr(), "db-1", "other");
    let token = |ns: &str| {
        cluster
            .service_account_token(ns, "default", &["istio-ca"])
            .unwrap_or_else(|err| panic!("{err:#}"))
    };
    let system = token("istio-system");

    // `istioctl proxy-status`: every proxy, SYNCED once it ACKed, and which replica answered.
    let synced = meshd_tests::wait_for(std::time::Duration::from_secs(10), || {
        let answer = ask(
            meshd.secure_addr(),
            Transport::Tls { token: &system },
            SYNCZ,
            &[],
        )
        .ok()?;
        let configs = client_configs(&answer);
        let all_synced = configs.len() == 2
            && configs.iter().all(|c| {
                c.generic_xds_configs
                    .iter()
                    .all(|x| x.config_status() == ConfigStatus::Synced)
            });
        all_synced.then_some((answer, configs))
    });
    let (answer, configs) = synced.unwrap_or_else(|| panic!("no SYNCED syncz\n{}", meshd.log()));
    assert_eq!(
        node_ids(&configs),
        [
            "sidecar~10.1.0.5~db-1.other~other.svc.cluster.local",
            "sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local",
        ]
    );
    let identifier: Json = serde_json::from_str(
        &answer
            .control_plane
            .as_ref()
            .expect("a control plane")
            .identifier,
    )
    .unwrap();
    assert_eq!(identifier["ID"], "meshd-istioctl-0", "{identifier}");
    assert_eq!(identifier["Info"]["version"], env!("CARGO_PKG_VERSION"));
    let cds = &configs[1].generic_xds_configs;
    assert_eq!(cds.len(), 1);
    assert_eq!(cds[0].type_url, type_url::CLUSTER);

    // A caller from another namespace sees that namespace's proxies only.
    let shop = token("shop");
    let answer = ask(
        meshd.secure_addr(),
        Transport::Tls { token: &shop },
        SYNCZ,
        &[],
    )
    .unwrap();
    assert_eq!(
        node_ids(&client_configs(&answer)),
        ["sidecar~10.1.0.5~web-1.shop~shop.svc.cluster.local"]
    );
    // No proof, no answer: a made-up token, or the plaintext port (`--plaintext`).
    let refused = ask(
        meshd.secure_addr(),
        Transport::Tls {
            token: "not-a-token",
        },
        SYNCZ,
        &[],
    );
    assert_eq!(refused.map(|_| ()).unwrap_err().0, UNAUTHENTICATED);
    let refused = ask(meshd.xds_addr(), Transport::Plaintext, SYNCZ, &[]);
    assert_eq!(refused.map(|_| ()).unwrap_err().0, UNAUTHENTICATED);

    // `istioctl proxy-config`/`proxy-status POD`: the proxy's dump, the same clusters meshd's
    // own debug API (`meshd proxy-config`) says it sent.
    let dump = ask(
        meshd.secure_addr(),
        Transport::Tls { token: &system },
        CONFIG_DUMP,
        &["web-1.shop"],
    )
    .unwrap();
    let clusters: ClustersConfigDump = unpack(&dump.resources[1]).expect("the clusters section");
    let mut dumped: Vec<String> = clusters
        .dynamic_active_clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref().and_then(unpack::<Cluster>))
        .map(|c| c.name)
        .collect();
    dumped.sort();
    let sent: Json =
        serde_json::from_str(&meshd.get("/debug/config_dump?proxyID=web-1.shop").unwrap()).unwrap();
    let mut expected: Vec<String> = sent["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    expected.sort();
    assert!(!dumped.is_empty());
    assert_eq!(dumped, expected);
    // Only its own namespace's proxies for the shop caller.
    let other = ask(
        meshd.secure_addr(),
        Transport::Tls { token: &shop },
        CONFIG_DUMP,
        &["db-1.other"],
    )
    .unwrap();
    assert!(other.resources.is_empty());
}
