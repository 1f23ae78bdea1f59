//! Access logs, tracing and the control plane's metrics, end to end: every request through
//! stock Envoy sidecars leaves a line in Istio's default format (or Istio's JSON) in the file the
//! mesh config names, a Telemetry object turns that off for one workload, spans of one request
//! reach a Zipkin collector from both sidecars as parent and child (and, with an app forwarding
//! the trace headers, across two hops), sampling 0% sends none and a Telemetry raising it to 100%
//! sends every one; and `/metrics` has every series Istio's control-plane dashboard queries,
//! under istiod's names and labels, the Kubernetes events among them.

mod addon_prometheus;
mod istio_metrics;
mod metrics_telemetry;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshd_tests::{Mesh, Meshd, Pod, PodSpec, wait_for, yaml};
use serde_json::Value;

use crate::support::host_meshd::HostMeshd;
use crate::support::kube::{apply, cluster_with_crds};
use crate::support::{
    CONVERGE, ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, get_until_ok,
};

const SERVER_IP: &str = "10.77.1.10";
const CLIENT_IP: &str = "10.77.1.20";
const COLLECTOR_IP: &str = "10.77.1.40";
const ECHO_CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";
/// How long a line or span may take to appear: Envoy flushes access-log files every 10 s and
/// reports Zipkin spans every 5 s.
const FLUSH: Duration = Duration::from_secs(30);

struct Env {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    server: Pod,
}

impl Env {
    fn diagnostics(&self) -> String {
        crate::support::diagnostics(&self.mesh, &self.meshd, &[&self.client, &self.server])
    }
}

/// A directory only Envoy (the proxy uid) and root may write, for the proxies' access logs.
fn log_dir(mesh: &Mesh) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::Builder::new()
        .prefix("access-logs-")
        .tempdir_in(mesh.dir())?
        .keep();
    std::os::unix::fs::chown(
        &dir,
        Some(meshd_tests::mesh::PROXY_UID),
        Some(meshd_tests::mesh::PROXY_UID),
    )?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// `sleep` calls Service `echo` (the `echo` pod: HTTP on 8080, line echo on 9000), both with
/// sidecars; `mesh_config` and `extra` documents from the start.
fn echo_mesh(mesh: Mesh, mesh_config: &str, extra: Vec<String>) -> anyhow::Result<Env> {
    let env = MeshSetup::new()
        .config([echo_service(
            "echo",
            ECHO_VIP,
            &[("http", 8080), ("tcp-echo", 9000)],
        )])
        .config(extra)
        .mesh_config(mesh_config)
        .app(echo_pod("echo", SERVER_IP)?, &[8080], &[9000])
        .caller(client_pod("sleep", CLIENT_IP)?)
        .start_in(mesh)?;
    Ok(Env {
        client: env.pod("sleep")?,
        server: env.pod("echo")?,
        mesh: env.mesh,
        meshd: env.meshd,
    })
}

/// The lines of `path` that satisfy `wanted`, once there are any (Envoy flushes logs lazily).
fn lines_until(path: &Path, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    wait_for(FLUSH, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<String> = text
            .lines()
            .filter(|l| wanted(l))
            .map(str::to_owned)
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .unwrap_or_default()
}

/// Istio's default TEXT line, field by field: `[start] "METHOD PATH PROTOCOL" code flags details
/// termination "failure" received sent duration upstream-time "xff" "agent" "request-id"
/// "authority" "upstream-host" cluster upstream-local downstream-local downstream-remote sni
/// route`.
fn parse_text_line(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        rest = rest.trim_start();
        let (field, tail) = if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            (&r[..end], &r[end + 1..])
        } else if let Some(r) = rest.strip_prefix('"') {
            let end = r.find('"')?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        fields.push(field.to_owned());
        rest = tail;
    }
    Some(fields)
}

#[test]
fn every_request_and_connection_leaves_a_line_in_istios_text_format_on_both_sidecars()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let log = log_dir(&mesh)?.join("access.log");
    let env = echo_mesh(
        mesh,
        &format!("accessLogFile: {}\n", log.display()),
        Vec::new(),
    )?;

    let response = get_until_ok(
        &env.client,
        &format!("http://{ECHO_VIP}:8080/logged?x=1"),
        &["-H", "user-agent: telemetry-test"],
    );
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    let request_id = response.json()?["headers"]["x-request-id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let lines = lines_until(&log, |l| {
        l.contains(&request_id) && l.contains("inbound|8080||")
    });
    assert!(
        !lines.is_empty(),
        "no server line in {}:\n{}",
        log.display(),
        env.diagnostics()
    );
    let lines = lines_until(&log, |l| l.contains(&request_id));
    let parsed: Vec<Vec<String>> = lines.iter().filter_map(|l| parse_text_line(l)).collect();
    assert_eq!(parsed.len(), 2, "one line per sidecar: {lines:#?}");
    for fields in &parsed {
        assert_eq!(fields.len(), 22, "Istio's 22 fields: {fields:?}");
        assert_eq!(fields[1], "GET /logged?x=1 HTTP/1.1", "{fields:?}");
        assert_eq!(fields[2], "200", "{fields:?}");
        assert_eq!(fields[4], "via_upstream", "{fields:?}");
        assert_eq!(fields[12], "telemetry-test", "{fields:?}");
        assert_eq!(fields[13], request_id, "{fields:?}");
        assert_eq!(fields[14], format!("{ECHO_VIP}:8080"), "{fields:?}");
    }
    let clusters: Vec<&str> = parsed.iter().map(|f| f[16].as_str()).collect();
    assert!(
        clusters.contains(&ECHO_CLUSTER),
        "the client's line: {lines:#?}"
    );
    assert!(
        clusters.contains(&"inbound|8080||"),
        "the server's line: {lines:#?}"
    );
    let client_line = parsed.iter().find(|f| f[16] == ECHO_CLUSTER).unwrap();
    assert_eq!(
        client_line[15],
        format!("{SERVER_IP}:8080"),
        "upstream host"
    );
    assert!(
        client_line[19].starts_with(&format!("{CLIENT_IP}:")),
        "downstream remote: {client_line:?}"
    );
    Ok(())
}

#[test]
fn json_encoding_writes_istios_json_keys() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let log = log_dir(&mesh)?.join("access.json");
    let env = echo_mesh(
        mesh,
        &format!(
            "accessLogFile: {}\naccessLogEncoding: JSON\n",
            log.display()
        ),
        Vec::new(),
    )?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/json"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());

    let lines = lines_until(&log, |l| l.contains("/json") && l.contains(ECHO_CLUSTER));
    let entry: Value = serde_json::from_str(lines.first().map_or("", String::as_str))
        .map_err(|e| anyhow::anyhow!("{e}: {lines:?}\n{}", env.diagnostics()))?;
    assert_eq!(entry["method"], "GET", "{entry}");
    assert_eq!(entry["path"], "/json", "{entry}");
    assert_eq!(entry["response_code"], 200, "{entry}");
    assert_eq!(entry["upstream_cluster"], ECHO_CLUSTER, "{entry}");
    assert_eq!(entry["authority"], format!("{ECHO_VIP}:8080"), "{entry}");
    for key in meshd_translate::telemetry::ISTIO_JSON_FIELDS.map(|(k, _)| k) {
        assert!(entry.get(key).is_some(), "{key} missing from {entry}");
    }
    Ok(())
}

#[test]
fn a_telemetry_object_turns_access_logs_off_for_one_workload() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let log = log_dir(&mesh)?.join("access.log");
    // As Istio's docs disable a workload's log: the `envoy` provider, disabled, for `app: sleep`.
    let quiet_client = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
        metadata: {name: quiet-sleep, namespace: default}\n\
        spec:\n  selector:\n    matchLabels: {app: sleep}\n  accessLogging:\n  \
        - providers: [{name: envoy}]\n    disabled: true\n"
        .to_owned();
    let env = echo_mesh(
        mesh,
        &format!("accessLogFile: {}\n", log.display()),
        vec![quiet_client],
    )?;

    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/quiet"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    let server = lines_until(&log, |l| {
        l.contains("/quiet") && l.contains("inbound|8080||")
    });
    assert!(
        !server.is_empty(),
        "the server still logs\n{}",
        env.diagnostics()
    );
    // The server's line is flushed: the client's would have been too.
    std::thread::sleep(Duration::from_secs(11));
    let text = std::fs::read_to_string(&log)?;
    assert!(
        !text
            .lines()
            .any(|l| l.contains("/quiet") && l.contains(ECHO_CLUSTER)),
        "the client's sidecar logged anyway:\n{text}"
    );
    Ok(())
}

/// A pod without a sidecar running `meshd-echo` as a Zipkin collector on 9411.
fn collector() -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new("zipkin", "istio-system")
        .ip(COLLECTOR_IP.parse()?)
        .label("app", "zipkin"))
}

/// Every span the collector has, once `wanted` holds of them.
fn spans_until(env: &Env, collector: &Pod, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut last = Vec::new();
    wait_for(FLUSH, || {
        let answer = collector.curl(&format!("http://{COLLECTOR_IP}:9411/_spans"), &[]);
        last = answer
            .json()
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        wanted(&last).then_some(())
    });
    let _ = env;
    last
}

fn trace_of<'a>(spans: &'a [Value], trace: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["traceId"] == trace).collect()
}

#[test]
fn spans_of_one_request_reach_zipkin_from_both_sidecars_as_parent_and_child() -> anyhow::Result<()>
{
    // The mesh config many Istio installs have: a Zipkin address, every request sampled.
    let env = MeshSetup::new()
        .config([
            yaml::namespace("istio-system", &[]),
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            yaml::service(
                "front",
                "default",
                "10.96.0.11",
                &[("http", 8080, 8080)],
                &[("app", "front")],
            ),
        ])
        .mesh_config(&format!(
            "defaultConfig:\n  tracing:\n    sampling: 100\n    zipkin:\n      address: {COLLECTOR_IP}:9411\n"
        ))
        .app(collector()?, &[9411], &[])
        .app(echo_pod("echo", SERVER_IP)?, &[8080], &[])
        .app(
            client_pod("front", "10.77.1.11")?.label("version", "v1"),
            &[8080],
            &[],
        )
        .caller(client_pod("sleep", CLIENT_IP)?)
        .start()?;
    let collector = env.pod("zipkin")?;
    let env = Env {
        client: env.pod("sleep")?,
        server: env.pod("echo")?,
        mesh: env.mesh,
        meshd: env.meshd,
    };

    // One hop: sleep → echo.
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/traced"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    let body = response.json()?;
    let trace = body["headers"]["x-b3-traceid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        trace.len(),
        32,
        "a 128-bit trace id reached the app: {body}"
    );
    let spans = spans_until(&env, &collector, |s| trace_of(s, &trace).len() >= 2);
    let spans = trace_of(&spans, &trace);
    assert_eq!(spans.len(), 2, "{spans:#?}\n{}", env.diagnostics());
    let client = spans
        .iter()
        .find(|s| s["kind"] == "CLIENT")
        .expect("client span");
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("server span");
    assert_eq!(server["parentId"], client["id"], "{spans:#?}");
    assert_eq!(
        client["localEndpoint"]["serviceName"], "sleep.default",
        "{client}"
    );
    assert_eq!(
        server["localEndpoint"]["serviceName"], "echo.default",
        "{server}"
    );
    assert_eq!(
        client["tags"]["istio.canonical_service"], "sleep",
        "{client}"
    );
    assert_eq!(
        server["tags"]["upstream_cluster"], "inbound|8080||",
        "{server}"
    );

    // Two hops: sleep → front, whose app forwards the trace headers on to echo.
    let url = format!("http://10.96.0.11:8080/hop?forward=http://{ECHO_VIP}:8080/second");
    let response = get_until_ok(&env.client, &url, &[]);
    let body = response.json()?;
    assert_eq!(
        body["forwarded"]["status"],
        200,
        "{body}\n{}",
        env.diagnostics()
    );
    let trace = body["headers"]["x-b3-traceid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        body["forwarded"]["body"]["headers"]["x-b3-traceid"], trace,
        "the second hop continues the trace: {body}"
    );
    let spans = spans_until(&env, &collector, |s| trace_of(s, &trace).len() >= 4);
    let mut chain = trace_of(&spans, &trace);
    assert_eq!(chain.len(), 4, "{chain:#?}");
    // Root first, then each child of the one before.
    chain.sort_by_key(|s| s["timestamp"].as_u64());
    assert!(chain[0].get("parentId").is_none(), "{chain:#?}");
    for pair in chain.windows(2) {
        assert_eq!(pair[1]["parentId"], pair[0]["id"], "{chain:#?}");
    }
    let services: Vec<&str> = chain
        .iter()
        .map(|s| {
            s["localEndpoint"]["serviceName"]
                .as_str()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        services,
        [
            "sleep.default",
            "front.default",
            "front.default",
            "echo.default"
        ]
    );
    Ok(())
}

#[test]
fn sampling_0_percent_sends_no_spans_and_a_telemetry_raising_it_to_100_sends_all()
-> anyhow::Result<()> {
    // The provider path: a Zipkin extension provider on a Service of the registry, sampling set
    // mesh-wide by a Telemetry in the root namespace.
    let telemetry = |percent: u32| {
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
             metadata: {{name: mesh-default, namespace: istio-system}}\n\
             spec:\n  tracing:\n  - providers: [{{name: zipkin}}]\n    \
             randomSamplingPercentage: {percent}\n"
        )
    };
    let zipkin_service = yaml::service(
        "zipkin",
        "istio-system",
        "10.96.9.11",
        &[("http-zipkin", 9411, 9411)],
        &[("app", "zipkin")],
    );
    let mesh = Mesh::new()?;
    let env = MeshSetup::new()
        .config([
            yaml::namespace("istio-system", &[]),
            zipkin_service,
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
        ])
        .mesh_config(
            "extensionProviders:\n- name: zipkin\n  zipkin:\n    \
             service: zipkin.istio-system.svc.cluster.local\n    port: 9411\n",
        )
        .app(collector()?, &[9411], &[])
        .app(echo_pod("echo", SERVER_IP)?, &[8080], &[])
        .caller(client_pod("sleep", CLIENT_IP)?)
        .start_in(mesh)?;
    let collector = env.pod("zipkin")?;
    let env = Env {
        client: env.pod("sleep")?,
        server: env.pod("echo")?,
        mesh: env.mesh,
        meshd: env.meshd,
    };
    env.mesh.write_config("telemetry.yaml", &[telemetry(0)])?;
    // The tracer is in place once the client's listeners carry it.
    let configured = wait_for(CONVERGE, || {
        let dump = env.client.envoy_admin("/config_dump").ok()?;
        dump.contains("envoy.tracers.zipkin").then_some(())
    });
    assert!(configured.is_some(), "no tracer\n{}", env.diagnostics());

    for i in 0..5 {
        let response = get_until_ok(
            &env.client,
            &format!("http://{ECHO_VIP}:8080/zero/{i}"),
            &[],
        );
        assert_eq!(response.status, 200, "{response:?}");
        let headers = &response.json()?["headers"];
        // Envoy starts no span for a request it does not sample, so passes no B3 context on.
        assert_ne!(headers["x-b3-sampled"], "1", "not sampled: {headers}");
    }
    // Envoy reports every 5 s: two rounds and nothing came.
    std::thread::sleep(Duration::from_secs(11));
    let spans = collector.curl(&format!("http://{COLLECTOR_IP}:9411/_spans"), &[]);
    assert_eq!(spans.json()?, Value::Array(vec![]), "no span at 0%");

    env.mesh.write_config("telemetry.yaml", &[telemetry(100)])?;
    let sampled = wait_for(CONVERGE, || {
        let response = env
            .client
            .curl(&format!("http://{ECHO_VIP}:8080/probe"), &[]);
        let json = response.json().ok()?;
        (json["headers"]["x-b3-sampled"] == "1").then_some(())
    });
    assert!(
        sampled.is_some(),
        "100% never applied\n{}",
        env.diagnostics()
    );
    let mut traces = Vec::new();
    for i in 0..5 {
        let response = env
            .client
            .curl(&format!("http://{ECHO_VIP}:8080/all/{i}"), &[]);
        let json = response.json()?;
        traces.push(
            json["headers"]["x-b3-traceid"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let spans = spans_until(&env, &collector, |s| {
        traces.iter().all(|t| trace_of(s, t).len() >= 2)
    });
    for trace in &traces {
        assert_eq!(
            trace_of(&spans, trace).len(),
            2,
            "client and server span of {trace}"
        );
    }
    Ok(())
}

/// What Istio's control-plane dashboard (`pilot.libsonnet`, `lib/queries.libsonnet`) queries of
/// istiod, with the labels it groups by; each has series once a proxy has connected and fetched
/// its config.
const DASHBOARD_SERIES: [(&str, &[&str]); 12] = [
    ("istio_build", &["component", "tag"]),
    ("pilot_xds_pushes", &["type"]),
    ("pilot_xds", &[]),
    ("pilot_total_xds_rejects", &[]),
    ("pilot_total_xds_internal_errors", &[]),
    ("pilot_xds_push_time_bucket", &["le"]),
    ("pilot_xds_config_size_bytes_bucket", &["type", "le"]),
    ("pilot_proxy_convergence_time_bucket", &["le"]),
    ("pilot_push_triggers", &[]),
    ("pilot_services", &[]),
    ("sidecar_injection_success_total", &[]),
    ("sidecar_injection_failure_total", &[]),
];

// The dashboard's other queries, `pilot_k8s_reg_events`/`pilot_k8s_cfg_events` and
// `galley_validation_passed`/`failed`, have series (and, as with istiod, appear at all) only once
// a Kubernetes event or a validation happened: `kubernetes_events_are_counted_as_istiod_counts_them`
// below and the admission webhook's unit tests cover them.

#[test]
fn metrics_carry_every_series_istios_control_plane_dashboard_queries() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let env = echo_mesh(mesh, "", Vec::new())?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}");
    let text = env.mesh.meshd_debug("/metrics")?;

    for (name, labels) in DASHBOARD_SERIES {
        let series: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .collect();
        assert!(!series.is_empty(), "no {name} in\n{text}");
        for label in labels {
            assert!(
                series.iter().any(|s| s.contains(&format!("{label}=\""))),
                "{name} without label {label}: {series:?}"
            );
        }
    }
    for line in [
        "istio_build{component=\"pilot\"",
        "pilot_xds_pushes{type=\"lds\"}",
        "pilot_xds_config_size_bytes_count{type=\"cds\"}",
        "# TYPE pilot_xds_pushes counter",
        "# TYPE meshd_rejected_resources_total counter",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    // Counters of istiod's families are named as istiod names them, without `_total`.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        let istiod = ["pilot_", "citadel_", "galley_"]
            .iter()
            .any(|p| name.starts_with(p));
        assert!(!(istiod && name.ends_with("_total")), "{line}");
    }
    Ok(())
}

#[test]
fn kubernetes_events_are_counted_as_istiod_counts_them() -> anyhow::Result<()> {
    let cluster = cluster_with_crds();
    let meshd = HostMeshd::with_kubeconfig(&cluster, "meshd-telemetry-events");
    apply(
        &cluster,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  ports: [{name: http, port: 80}]\n---\n\
         apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {name: mesh-default, namespace: default}\n\
         spec:\n  accessLogging: [{providers: [{name: envoy}]}]\n",
    );
    let wanted = [
        "pilot_k8s_reg_events{type=\"Services\",event=\"add\"}",
        "pilot_k8s_cfg_events{type=\"Telemetry\",event=\"add\"}",
    ];
    let mut last = String::new();
    let counted = wait_for(CONVERGE, || {
        last = meshd.get("/metrics").unwrap_or_default();
        wanted.iter().all(|w| last.contains(w)).then_some(())
    });
    assert!(
        counted.is_some(),
        "{wanted:?} not in\n{last}\n{}",
        meshd.log()
    );
    Ok(())
}
