//! Istio's standard metrics from stock Envoy, end to end: Debian's Prometheus scrapes every
//! sidecar's `:15090/stats/prometheus` (static targets, `honor_labels`, no relabelling) while
//! `web` calls `prices` (v1 and v2 split by a VirtualService, some answers 500) under STRICT mTLS,
//! and Kiali's own graph queries find the edges web → prices v1 and v2 from both reporters, with
//! the counts that were sent, the response-code split, a p99 duration and the mTLS lock; TCP
//! connections to `prices` show in `istio_tcp_*`.

use std::collections::BTreeMap;
use std::time::Duration;

use meshd_tests::prometheus::{Prometheus, Sample};
use meshd_tests::{Mesh, PodSpec, yaml};

use crate::support::{MeshSetup, client_pod};

const WEB_IP: &str = "10.77.3.20";
const V1_IP: &str = "10.77.3.11";
const V2_IP: &str = "10.77.3.12";
const PROMETHEUS_IP: &str = "10.77.3.40";
const PRICES_VIP: &str = "10.96.3.10";
/// A Service with no endpoints: a request to it has no upstream host to name.
const GHOST_VIP: &str = "10.96.3.11";
const HTTP_PORT: u16 = 8080;
const TCP_PORT: u16 = 9000;
const PRICES: &str = "prices.default.svc.cluster.local";
/// Requests web sends, and how many of them ask for a 500 (not retried by Istio's policy).
const REQUESTS: usize = 24;
const ERRORS: usize = 6;
const TCP_CONNECTIONS: usize = 3;
/// Requests sent after the counts are checked, so Kiali's rates have something to rate.
const MORE_REQUESTS: usize = 10;
/// Envoy flushes histograms to its admin page every 5 s; Prometheus scrapes every second.
const SETTLE: Duration = Duration::from_secs(30);

/// Kiali's grouping of request edges (graph/telemetry/istio/istio.go), G + the request labels.
const GRAPH_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,\
source_canonical_service,source_canonical_revision,destination_cluster,\
destination_service_namespace,destination_service,destination_service_name,\
destination_workload_namespace,destination_workload,destination_canonical_service,\
destination_canonical_revision,request_protocol,response_code,grpc_response_status,response_flags";
/// Kiali's grouping of TCP edges.
const TCP_GROUP: &str = "source_cluster,source_workload_namespace,source_workload,\
source_canonical_service,source_canonical_revision,destination_cluster,\
destination_service_namespace,destination_service,destination_service_name,\
destination_workload_namespace,destination_workload,destination_canonical_service,\
destination_canonical_revision,app,response_flags";

fn prices_pod(name: &str, ip: &str, version: &str) -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new(name, "default")
        .ip(ip.parse()?)
        .label("app", "prices")
        .label("version", version)
        .service_account("prices")
        .sidecar()
        .tls())
}

fn routing() -> [String; 2] {
    [
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: prices, namespace: default}}\n\
             spec:\n  host: {PRICES}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n  \
             - name: v2\n    labels: {{version: v2}}\n"
        ),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
         metadata: {name: prices, namespace: default}\n\
         spec:\n  hosts: [prices]\n  http:\n  - route:\n    \
         - destination: {host: prices, subset: v1}\n      weight: 50\n    \
         - destination: {host: prices, subset: v2}\n      weight: 50\n"
            .to_owned(),
    ]
}

fn label<'a>(sample: &'a Sample, name: &str) -> &'a str {
    sample.labels.get(name).map_or("", String::as_str)
}

/// The sum of the samples' values whose labels include every one of `wanted`.
fn total(samples: &[Sample], wanted: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| wanted.iter().all(|(k, v)| label(s, k) == *v))
        .map(|s| s.value)
        .sum()
}

#[test]
fn prometheus_scrapes_istios_request_and_tcp_metrics_from_both_sidecars_for_kialis_graph()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let env = MeshSetup::new()
        .config([
            yaml::namespace("istio-system", &[]),
            yaml::service(
                "prices",
                "default",
                PRICES_VIP,
                &[
                    ("http", HTTP_PORT, HTTP_PORT),
                    ("tcp-echo", TCP_PORT, TCP_PORT),
                ],
                &[("app", "prices")],
            ),
            yaml::service(
                "ghost",
                "default",
                GHOST_VIP,
                &[("http", HTTP_PORT, HTTP_PORT)],
                &[("app", "ghost")],
            ),
            yaml::peer_authentication("default", "default", "STRICT"),
        ])
        .config(routing())
        .app(
            prices_pod("prices-v1", V1_IP, "v1")?,
            &[HTTP_PORT],
            &[TCP_PORT],
        )
        .app(
            prices_pod("prices-v2", V2_IP, "v2")?,
            &[HTTP_PORT],
            &[TCP_PORT],
        )
        .caller(client_pod("web", WEB_IP)?.tls())
        // No sidecar: it scrapes the sidecars' 15090 directly, as Istio's addon does.
        .caller(
            PodSpec::new("prometheus", "istio-system")
                .ip(PROMETHEUS_IP.parse()?)
                .label("app", "prometheus"),
        )
        .start_in(mesh)?;
    let web = env.pod("web")?;
    let prices = [env.pod("prices-v1")?, env.pod("prices-v2")?];
    let diagnostics =
        || crate::support::diagnostics(&env.mesh, &env.meshd, &[&web, &prices[0], &prices[1]]);
    let prometheus = Prometheus::start(
        &env.pod("prometheus")?,
        &[web.ip(), prices[0].ip(), prices[1].ip()],
    )?;

    // Until the routes are there, then every request counted by the pod that answered it.
    crate::support::get_until_ok(&web, &format!("http://{PRICES_VIP}:{HTTP_PORT}/warm"), &[]);
    let mut sent: BTreeMap<(String, u16), usize> = BTreeMap::new();
    for i in 0..REQUESTS {
        let query = if i < ERRORS { "?status=500" } else { "" };
        let answer = web.curl(
            &format!("http://{PRICES_VIP}:{HTTP_PORT}/quote{query}"),
            &[],
        );
        let pod = answer.json()?["pod"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            answer.status == 200 || answer.status == 500,
            "{answer:?}\n{}",
            diagnostics()
        );
        *sent.entry((pod, answer.status)).or_default() += 1;
    }
    for _ in 0..TCP_CONNECTIONS {
        let echoed = web.tcp_exchange(PRICES_VIP, TCP_PORT, "hello")?;
        assert!(echoed.contains("hello"), "{echoed:?}\n{}", diagnostics());
    }

    // Exact counts: the counters Kiali rates, by the same labels. The warm-up request that
    // answered 200 (and any refused before the routes arrived) come on top.
    let by_pod = |reporter: &str| -> Vec<Sample> {
        prometheus
            .query_until(
                &format!(
                    "sum(istio_requests_total{{reporter=\"{reporter}\",destination_service=\"{PRICES}\",response_code=~\"200|500\"}}) by ({GRAPH_GROUP})"
                ),
                SETTLE,
                |s| total(s, &[]) as usize > REQUESTS,
            )
    };
    let source = by_pod("source");
    let destination = by_pod("destination");
    assert!(
        total(&source, &[]) as usize >= REQUESTS,
        "{source:#?}\n{}\n{}",
        prometheus.targets(),
        diagnostics()
    );
    let warm_ups = total(&source, &[]) as usize - REQUESTS;
    for samples in [&source, &destination] {
        for ((pod, status), count) in &sent {
            let revision = if pod == "prices-v1" { "v1" } else { "v2" };
            let code = status.to_string();
            // The warm-up requests answered 200 from some version; they are the only extra ones.
            let counted = total(
                samples,
                &[
                    ("destination_workload", pod),
                    ("destination_canonical_revision", revision),
                    ("response_code", &code),
                ],
            ) as usize;
            assert!(
                counted == *count
                    || (*status == 200 && counted > *count && counted <= count + warm_ups),
                "{pod} {status}: counted {counted}, sent {count}: {samples:#?}"
            );
        }
        assert_eq!(
            total(samples, &[("response_code", "500")]) as usize,
            ERRORS,
            "{samples:#?}"
        );
        for s in samples.iter() {
            assert_eq!(label(s, "source_workload"), "web", "{s:?}");
            assert_eq!(label(s, "source_workload_namespace"), "default", "{s:?}");
            assert_eq!(label(s, "source_canonical_service"), "web", "{s:?}");
            assert_eq!(label(s, "source_canonical_revision"), "latest", "{s:?}");
            assert_eq!(label(s, "source_cluster"), "Kubernetes", "{s:?}");
            assert_eq!(label(s, "destination_service_name"), "prices", "{s:?}");
            assert_eq!(
                label(s, "destination_service_namespace"),
                "default",
                "{s:?}"
            );
            assert_eq!(
                label(s, "destination_workload_namespace"),
                "default",
                "{s:?}"
            );
            assert_eq!(label(s, "destination_canonical_service"), "prices", "{s:?}");
            assert_eq!(label(s, "destination_cluster"), "Kubernetes", "{s:?}");
            assert_eq!(label(s, "request_protocol"), "http", "{s:?}");
            assert_eq!(label(s, "response_flags"), "-", "{s:?}");
        }
    }

    // TCP: the source reports name both ends; the destination's know the client by its
    // certificate only (TCP carries no header).
    let tcp = prometheus.query_until(
        &format!(
            "sum(istio_tcp_connections_closed_total{{reporter=\"source\",destination_service=\"{PRICES}\"}}) by ({TCP_GROUP})"
        ),
        SETTLE,
        |s| total(s, &[]) as usize == TCP_CONNECTIONS,
    );
    assert_eq!(total(&tcp, &[]) as usize, TCP_CONNECTIONS, "{tcp:#?}");
    for s in &tcp {
        assert_eq!(label(s, "source_workload"), "web", "{s:?}");
        assert_eq!(label(s, "destination_canonical_service"), "prices", "{s:?}");
    }
    for (metric, reporter) in [
        ("istio_tcp_connections_opened_total", "source"),
        ("istio_tcp_connections_opened_total", "destination"),
        ("istio_tcp_connections_closed_total", "destination"),
    ] {
        let n = prometheus.query_until(
            &format!("sum({metric}{{reporter=\"{reporter}\"}})"),
            SETTLE,
            |s| total(s, &[]) as usize == TCP_CONNECTIONS,
        );
        assert_eq!(
            total(&n, &[]) as usize,
            TCP_CONNECTIONS,
            "{metric} {reporter}: {n:#?}"
        );
    }
    // The byte counters are scraped before the next batch: a series Prometheus first sees
    // after both batches is flat, and its rate is 0.
    let sent = prometheus.query_until(
        "sum(istio_tcp_sent_bytes_total{reporter=\"source\"})",
        SETTLE,
        |s| total(s, &[]) > 0.0,
    );
    assert!(total(&sent, &[]) > 0.0, "no TCP bytes sent: {sent:#?}");
    // Kiali rates the counters: traffic goes on while Prometheus watches.
    for _ in 0..MORE_REQUESTS {
        let answer = web.curl(&format!("http://{PRICES_VIP}:{HTTP_PORT}/more"), &[]);
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    for _ in 0..TCP_CONNECTIONS {
        web.tcp_exchange(PRICES_VIP, TCP_PORT, "again")?;
    }

    // Kiali's graph queries, verbatim in shape: outbound edges of `default` (source reports) and
    // inbound ones (destination reports) both draw web → prices v1 and web → prices v2.
    for selector in [
        "reporter=\"source\",source_workload_namespace=\"default\"",
        "reporter=\"destination\",destination_workload_namespace=\"default\"",
    ] {
        let has_edge = |edges: &[Sample], revision: &str| {
            edges.iter().any(|e| {
                label(e, "source_canonical_service") == "web"
                    && label(e, "destination_canonical_service") == "prices"
                    && label(e, "destination_canonical_revision") == revision
                    && label(e, "destination_service") == PRICES
            })
        };
        let edges = prometheus.query_until(
            &format!("sum(rate(istio_requests_total{{{selector}}}[1m])) by ({GRAPH_GROUP}) > 0"),
            SETTLE,
            |edges| has_edge(edges, "v1") && has_edge(edges, "v2"),
        );
        for revision in ["v1", "v2"] {
            assert!(
                edges
                    .iter()
                    .any(|e| label(e, "source_canonical_service") == "web"
                        && label(e, "destination_canonical_service") == "prices"
                        && label(e, "destination_canonical_revision") == revision
                        && label(e, "destination_service") == PRICES),
                "no edge web → prices {revision} for {selector}: {edges:#?}"
            );
        }
    }

    // The mTLS lock: destination reports grouped with the security labels.
    let lock = prometheus.query_until(
        &format!(
            "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"default\"}}[1m])) \
             by ({GRAPH_GROUP},source_principal,destination_principal,connection_security_policy) > 0"
        ),
        SETTLE,
        |s| !s.is_empty(),
    );
    assert!(!lock.is_empty(), "no destination reports");
    for s in &lock {
        assert_eq!(
            label(s, "connection_security_policy"),
            "mutual_tls",
            "{s:?}"
        );
        assert_eq!(
            label(s, "source_principal"),
            "spiffe://cluster.local/ns/default/sa/web",
            "{s:?}"
        );
        assert_eq!(
            label(s, "destination_principal"),
            "spiffe://cluster.local/ns/default/sa/prices",
            "{s:?}"
        );
    }

    // A p99 duration per edge, from the histogram (Istio's buckets), and the byte histograms.
    let p99 = prometheus.query_until(
        "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])) by (le,destination_canonical_revision))",
        SETTLE,
        |s| s.len() == 2 && s.iter().all(|s| s.value.is_finite()),
    );
    assert_eq!(p99.len(), 2, "{p99:#?}");
    for s in &p99 {
        assert!(s.value.is_finite() && s.value >= 0.0, "{s:?}");
    }
    let buckets = prometheus
        .query("count(istio_request_duration_milliseconds_bucket{reporter=\"source\"}) by (le)")?;
    let bounds: Vec<&str> = buckets.iter().map(|s| label(s, "le")).collect();
    for le in [
        "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000",
    ] {
        assert!(bounds.contains(&le), "bucket {le} missing: {bounds:?}");
    }
    for metric in ["istio_request_bytes_sum", "istio_response_bytes_sum"] {
        let bytes = prometheus.query(&format!("sum({metric}) by (reporter)"))?;
        assert_eq!(bytes.len(), 2, "{metric}: {bytes:#?}");
        assert!(bytes.iter().all(|s| s.value > 0.0), "{metric}: {bytes:#?}");
    }

    let bytes = prometheus.query_until(
        &format!(
            "sum(rate(istio_tcp_sent_bytes_total{{reporter=\"source\",source_workload_namespace=\"default\"}}[1m])) by ({TCP_GROUP}) > 0"
        ),
        SETTLE,
        |s| !s.is_empty(),
    );
    assert!(!bytes.is_empty(), "Kiali's TCP graph query found nothing");
    let received = prometheus.query("sum(istio_tcp_received_bytes_total) by (reporter)")?;
    assert!(
        received.len() == 2
            && received
                .iter()
                .all(|s| s.value >= 6.0 * TCP_CONNECTIONS as f64),
        "{received:#?}"
    );

    // No upstream host: the labels it would name are Istio's `unknown` (written on the scrape
    // page; an empty label would vanish in Prometheus), gRPC's status stays empty.
    let ghost = web.curl(&format!("http://{GHOST_VIP}:{HTTP_PORT}/"), &[]);
    assert_eq!(ghost.status, 503, "{ghost:?}");
    let unknown = prometheus.query_until(
        "istio_requests_total{reporter=\"source\",destination_service_name=\"ghost\"}",
        SETTLE,
        |s| !s.is_empty(),
    );
    assert_eq!(unknown.len(), 1, "{unknown:#?}");
    for name in [
        "destination_workload",
        "destination_workload_namespace",
        "destination_canonical_revision",
    ] {
        assert_eq!(label(&unknown[0], name), "unknown", "{name}: {unknown:#?}");
    }
    assert_eq!(label(&unknown[0], "response_code"), "503", "{unknown:#?}");
    assert_eq!(
        label(&unknown[0], "grpc_response_status"),
        "",
        "{unknown:#?}"
    );
    Ok(())
}
