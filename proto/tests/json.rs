use meshd_proto::pb::envoy::config::cluster::v3::{Cluster, cluster};
use meshd_proto::pb::google::protobuf::Duration;
use meshd_proto::{json, pack};

#[test]
fn cluster_prints_as_envoy_json_and_reads_back() {
    let c = Cluster {
        name: "outbound|9080||reviews.default.svc.cluster.local".into(),
        connect_timeout: Some(Duration {
            seconds: 10,
            nanos: 0,
        }),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        ..Default::default()
    };
    let value = json::any_to_json(&pack(&c)).unwrap();
    assert_eq!(
        value["@type"],
        "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    );
    assert_eq!(value["connect_timeout"], "10s");
    assert_eq!(value["type"], "EDS");
    let back: Cluster = json::from_json(&value).unwrap();
    assert_eq!(back, c);
}
