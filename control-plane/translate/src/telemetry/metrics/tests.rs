use super::*;

fn config_of(log: &AccessLog) -> StatsConfig {
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        panic!("no config");
    };
    meshd_proto::unpack(any).expect("stats config")
}

fn tags_of(log: &AccessLog) -> Vec<String> {
    config_of(log).counters[0]
        .stat
        .as_ref()
        .expect("stat")
        .tags
        .iter()
        .map(|t| t.name.clone())
        .collect()
}

#[test]
fn both_sides_report_istios_request_labels() {
    for reporter in [Reporter::Source, Reporter::Destination] {
        let tags =
            tags_of(&http_logger(reporter, &OWN.map(str::to_string), &SideMetrics::all()).unwrap());
        for label in [
            "reporter",
            "source_workload",
            "source_workload_namespace",
            "source_canonical_service",
            "source_canonical_revision",
            "source_cluster",
            "source_principal",
            "destination_workload",
            "destination_workload_namespace",
            "destination_canonical_service",
            "destination_canonical_revision",
            "destination_cluster",
            "destination_principal",
            "destination_service",
            "destination_service_name",
            "destination_service_namespace",
            "request_protocol",
            "response_code",
            "grpc_response_status",
            "response_flags",
            "connection_security_policy",
        ] {
            assert!(
                tags.iter().any(|t| t == label),
                "{reporter:?} lacks {label}"
            );
        }
    }
}

#[test]
fn peer_header_carries_the_fields_the_server_reads() {
    let header = peer_header().header.expect("header");
    assert_eq!(header.value.split(';').count(), PEER_FIELDS.len());
}

/// Every HTTP connection manager and TCP proxy carries these: their size is per listener
/// (measured: 15.9 kB on the client side's connection managers, 12.9 kB on the server's).
#[test]
fn the_loggers_of_a_listener_stay_under_their_budget() {
    use prost::Message as _;
    for reporter in [Reporter::Source, Reporter::Destination] {
        let m = Metrics::new(reporter, &SideMetrics::all()).unwrap();
        assert!(m.http().unwrap().encoded_len() < 17_000, "{reporter:?}");
        let tcp: usize = m.tcp().map(|l| l.encoded_len()).sum();
        assert!(tcp < 15_000, "{reporter:?}");
    }
}

#[test]
fn equal_endpoint_metadata_encodes_alike() {
    let labels = BTreeMap::from([("app".to_string(), "prices".to_string())]);
    let a = endpoint_metadata(Some("prices-1"), "default", &labels);
    let b = endpoint_metadata(Some("prices-1"), "default", &labels);
    assert_eq!(
        prost::Message::encode_to_vec(&a),
        prost::Message::encode_to_vec(&b)
    );
}

fn without(metrics: &[IstioMetric]) -> SideMetrics {
    let mut side = SideMetrics::all();
    for m in metrics {
        side.metrics.remove(m);
    }
    side
}

#[test]
fn a_side_without_metrics_gets_no_loggers_and_one_without_some_gets_only_the_others() {
    assert!(Metrics::new(Reporter::Source, &SideMetrics::default()).is_none());
    let tcp_off = without(&[
        IstioMetric::TcpOpenedConnections,
        IstioMetric::TcpClosedConnections,
        IstioMetric::TcpSentBytes,
        IstioMetric::TcpReceivedBytes,
        IstioMetric::RequestSize,
    ]);
    let m = Metrics::new(Reporter::Destination, &tcp_off).unwrap();
    assert_eq!(m.tcp().count(), 0);
    assert!(!m.counts_on_connect());
    assert!(!m.needs_own_filter(false, true));
    let http = config_of(m.http().unwrap());
    let names: Vec<&str> = http
        .histograms
        .iter()
        .map(|h| h.stat.as_ref().unwrap().name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "istio_request_duration_milliseconds",
            "istio_response_bytes"
        ]
    );
    assert_eq!(http.counters.len(), 1);
    // Only the closed-connection counters: nothing is counted on connect.
    let closed_only = without(&[IstioMetric::TcpOpenedConnections]);
    let m = Metrics::new(Reporter::Source, &closed_only).unwrap();
    assert_eq!(m.tcp().count(), 1);
    assert!(!m.counts_on_connect());
    let http_off = without(&[
        IstioMetric::RequestCount,
        IstioMetric::RequestDuration,
        IstioMetric::RequestSize,
        IstioMetric::ResponseSize,
    ]);
    let m = Metrics::new(Reporter::Destination, &http_off).unwrap();
    assert!(m.http().is_none());
    assert!(
        m.http_filter().is_none(),
        "no peer filter without HTTP metrics"
    );
}

#[test]
fn a_removed_label_leaves_only_its_metric() {
    let mut side = SideMetrics::all();
    side.metrics
        .get_mut(&IstioMetric::RequestCount)
        .unwrap()
        .removed
        .insert("response_flags".to_string());
    let log = http_logger(Reporter::Source, &OWN.map(str::to_string), &side).unwrap();
    assert!(!tags_of(&log).iter().any(|t| t == "response_flags"));
    let config = config_of(&log);
    let duration = &config.histograms[0].stat.as_ref().unwrap().tags;
    assert!(duration.iter().any(|t| t.name == "response_flags"));
}
