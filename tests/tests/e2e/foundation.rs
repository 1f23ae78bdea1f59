//! The core promise, end to end: `meshd serve` in the hub, stock Envoy sidecars in pod
//! namespaces bootstrapped by `meshd bootstrap` and captured by `meshd iptables`, apps calling
//! each other through Services and ServiceEntries, outbound traffic policy, hot reload of edited
//! files, traffic surviving meshd's absence, invalid objects contained, and the `meshd` CLI
//! reading what was sent. Every test runs once over state-of-the-world xDS and once over Delta:
//! both must behave the same.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_for, wait_until, yaml};
use serde_json::Value;

use crate::support::cli::{self, analyze, analyze_dir, describe, parse_table, stdout};
use crate::support::{
    CONVERGE, ECHO_VIP, HOT_RELOAD, MeshSetup, Xds, client_pod, echo_pod, get_until_answered_by,
    get_until_ok, tail,
};

const CLIENT_IP: &str = "10.77.1.20";
const ECHO_A_IP: &str = "10.77.1.10";
const ECHO_B_IP: &str = "10.77.1.11";
/// Pods without a sidecar, standing in for machines outside the mesh.
const VM_1_IP: &str = "10.77.2.10";
const VM_2_IP: &str = "10.77.2.11";
const STRANGER_IP: &str = "10.77.2.20";

const ECHO_FQDN: &str = "echo.default.svc.cluster.local";
const ECHO_CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";
/// A port no Service or ServiceEntry declares.
const STRANGER_PORT: u16 = 9090;

const REGISTRY_ONLY: &str = "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n";

/// `sleep` (the client) and `echo-a`, `echo-b` (the two pods of Service `echo`, ClusterIP
/// 10.96.0.10:8080, endpoints from the Pods its selector picks), all with sidecars, in
/// namespace `default`.
struct EchoMesh {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    echo_a: Pod,
    echo_b: Pod,
}

#[derive(Default)]
struct Options {
    /// MeshConfig YAML for `--mesh-config`.
    mesh_config: Option<&'static str>,
    /// More documents for the initial config file.
    extra: Vec<String>,
}

fn echo_mesh(xds: Xds, options: Options) -> anyhow::Result<EchoMesh> {
    let mut setup = MeshSetup::new()
        .config([echo_service("echo", ECHO_VIP)])
        .config(options.extra)
        .app(xds.speak(echo_pod("echo-a", ECHO_A_IP)?), &[8080], &[])
        .app(xds.speak(echo_pod("echo-b", ECHO_B_IP)?), &[8080], &[])
        .caller(xds.speak(client_pod("sleep", CLIENT_IP)?));
    if let Some(config) = options.mesh_config {
        setup = setup.mesh_config(config);
    }
    let env = setup.start()?;
    Ok(EchoMesh {
        client: env.pod("sleep")?,
        echo_a: env.pod("echo-a")?,
        echo_b: env.pod("echo-b")?,
        mesh: env.mesh,
        meshd: env.meshd,
    })
}

/// Service `name` on port 8080 (`http`) in front of the `app=echo` pods.
fn echo_service(name: &str, vip: &str) -> String {
    crate::support::echo_service(name, vip, &[("http", 8080)])
}

/// An HTTP ServiceEntry with STATIC endpoints on port 8080.
fn http_service_entry(name: &str, host: &str, vip: &str, endpoints: &[&str]) -> String {
    yaml::service_entry(&yaml::ServiceEntry {
        name,
        namespace: "default",
        hosts: &[host],
        addresses: &[vip],
        ports: &[("http", 8080, "HTTP")],
        resolution: "STATIC",
        endpoints,
        ..yaml::ServiceEntry::default()
    })
}

impl EchoMesh {
    fn sidecars(&self) -> [&Pod; 3] {
        [&self.client, &self.echo_a, &self.echo_b]
    }

    /// A pod without a sidecar running meshd-echo: a machine outside the mesh.
    fn plain_pod(
        &self,
        name: &str,
        ip: &str,
        http_ports: &[u16],
        tcp_ports: &[u16],
    ) -> anyhow::Result<Pod> {
        let pod = self
            .mesh
            .add_pod(PodSpec::new(name, "default").ip(ip.parse()?))?;
        pod.start_echo(http_ports, tcp_ports)?;
        Ok(pod)
    }

    /// Per proxy (`POD.NS`), per type (`CDS`, …) the state `/debug/syncz` reports.
    fn sync_states(&self) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
        let syncz = cli::debug_json(&self.mesh, "/debug/syncz")?;
        let mut out = BTreeMap::new();
        for proxy in syncz.as_array().context("syncz is not a list")? {
            let name = proxy["proxy"].as_str().unwrap_or_default().to_owned();
            let types = proxy["types"]
                .as_object()
                .map(|types| {
                    types
                        .iter()
                        .map(|(kind, status)| {
                            let state = status["state"].as_str().unwrap_or_default();
                            (kind.clone(), state.to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.insert(name, types);
        }
        Ok(out)
    }

    /// Waits until meshd reports every sidecar SYNCED for CDS, LDS, EDS and RDS.
    fn wait_synced(&self) -> anyhow::Result<()> {
        let mut last = Ok(BTreeMap::new());
        let synced = wait_until(CONVERGE, || {
            last = self.sync_states();
            last.as_ref().is_ok_and(|states| {
                self.sidecars().iter().all(|pod| {
                    states.get(&pod.proxy_id()).is_some_and(|types| {
                        ["CDS", "LDS", "EDS", "RDS"]
                            .iter()
                            .all(|kind| types.get(*kind).is_some_and(|s| s == "SYNCED"))
                    })
                })
            })
        });
        anyhow::ensure!(
            synced,
            "sidecars not SYNCED within {CONVERGE:?}: {last:?}\n{}",
            self.diagnostics()
        );
        Ok(())
    }

    /// `meshd ARGS` against this mesh's meshd.
    fn meshd_cli(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        cli::in_hub(&self.mesh, args)
    }

    /// The tail of every log that tells why a request failed.
    fn diagnostics(&self) -> String {
        crate::support::diagnostics(&self.mesh, &self.meshd, &self.sidecars())
    }
}

/// Polls from the moment of the call until `pod` gets an answer from `expected_pod`; how long
/// that took, or an error naming the last answer.
fn time_until_answered_by(
    pod: &Pod,
    url: &str,
    args: &[&str],
    expected_pod: &str,
    since: Instant,
) -> anyhow::Result<Duration> {
    let last = get_until_answered_by(pod, url, args, expected_pod);
    anyhow::ensure!(
        last.echo_pod().as_deref() == Some(expected_pod),
        "{url} never answered by {expected_pod}: {last:?}"
    );
    Ok(since.elapsed())
}

/// Every Envoy stat counting rejected xDS updates (`cluster_manager.cds.update_rejected`,
/// `listener_manager.lds.update_rejected`, per-cluster EDS and per-route RDS ones).
fn rejected_updates(pod: &Pod) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(pod
        .envoy_stats()?
        .into_iter()
        .filter(|(name, _)| name.ends_with("update_rejected"))
        .collect())
}

// --- Services by short name, FQDN and ClusterIP, balanced over their pods ------------------------

fn a_client_reaches_a_service_by_short_name_fqdn_and_cluster_ip_across_its_pods(
    xds: Xds,
) -> anyhow::Result<()> {
    let env = echo_mesh(xds, Options::default())?;
    // What cluster DNS would answer for the names.
    let resolve_short = format!("echo:8080:{ECHO_VIP}");
    let resolve_fqdn = format!("{ECHO_FQDN}:8080:{ECHO_VIP}");
    let ways: [(&str, String, Vec<&str>); 3] = [
        (
            "short name",
            "http://echo:8080/short".to_owned(),
            vec!["--resolve", resolve_short.as_str()],
        ),
        (
            "FQDN",
            format!("http://{ECHO_FQDN}:8080/fqdn"),
            vec!["--resolve", resolve_fqdn.as_str()],
        ),
        (
            "ClusterIP",
            format!("http://{ECHO_VIP}:8080/vip"),
            Vec::new(),
        ),
    ];
    let first = get_until_ok(&env.client, &ways[2].1, &[]);
    assert_eq!(first.status, 200, "{first:?}\n{}", env.diagnostics());

    let before = env
        .client
        .envoy_stat(&format!("cluster.{ECHO_CLUSTER}.upstream_rq_total"))
        .unwrap_or_default();
    const REQUESTS: u64 = 20;
    for (way, url, args) in &ways {
        let mut seen = BTreeMap::<String, u32>::new();
        for _ in 0..REQUESTS {
            let response = env.client.curl(url, args);
            assert_eq!(
                response.status,
                200,
                "by {way}: {response:?}\n{}",
                env.diagnostics()
            );
            let body = response.json()?;
            assert!(
                body["headers"]["x-request-id"].is_string(),
                "by {way}: not routed by the client's sidecar: {body}"
            );
            *seen
                .entry(body["pod"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
        let pods: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            pods,
            ["echo-a", "echo-b"],
            "by {way}, {REQUESTS} requests are spread over both pods: {seen:?}"
        );
    }
    let after = env
        .client
        .envoy_stat(&format!("cluster.{ECHO_CLUSTER}.upstream_rq_total"))
        .unwrap_or_default();
    assert!(
        after - before >= 3 * REQUESTS,
        "every request went through {ECHO_CLUSTER}: {before} -> {after}"
    );
    Ok(())
}

#[test]
fn a_client_reaches_a_service_by_short_name_fqdn_and_cluster_ip_across_its_pods_over_sotw_xds()
-> anyhow::Result<()> {
    a_client_reaches_a_service_by_short_name_fqdn_and_cluster_ip_across_its_pods(Xds::SotW)
}

#[test]
fn a_client_reaches_a_service_by_short_name_fqdn_and_cluster_ip_across_its_pods_over_delta_xds()
-> anyhow::Result<()> {
    a_client_reaches_a_service_by_short_name_fqdn_and_cluster_ip_across_its_pods(Xds::Delta)
}

// --- TCP to a ServiceEntry with STATIC endpoints -------------------------------------------------

fn tcp_to_a_service_entry_with_static_endpoints_reaches_them(xds: Xds) -> anyhow::Result<()> {
    const VIP: &str = "10.96.1.20";
    const HOST: &str = "tcp-echo.example.com";
    let entry = yaml::service_entry(&yaml::ServiceEntry {
        name: "tcp-echo",
        namespace: "default",
        hosts: &[HOST],
        addresses: &[VIP],
        ports: &[("tcp", 9000, "TCP")],
        resolution: "STATIC",
        endpoints: &[VM_1_IP],
        ..yaml::ServiceEntry::default()
    });
    let env = echo_mesh(
        xds,
        Options {
            extra: vec![entry],
            ..Options::default()
        },
    )?;
    env.plain_pod("vm-1", VM_1_IP, &[], &[9000])?;
    let cluster = format!("outbound|9000||{HOST}");

    let mut last = Ok(String::new());
    let answered = wait_until(CONVERGE, || {
        last = env.client.tcp_exchange(VIP, 9000, "hello mesh");
        last.as_deref().is_ok_and(|line| line == "vm-1: hello mesh")
    });
    assert!(
        answered,
        "TCP to {VIP}:9000 echoed: {last:?}\n{}",
        env.diagnostics()
    );
    let connections = env
        .client
        .envoy_stat(&format!("cluster.{cluster}.upstream_cx_total"));
    assert!(
        connections >= Some(1),
        "the connection went through {cluster}: {connections:?}"
    );
    Ok(())
}

#[test]
fn tcp_to_a_service_entry_with_static_endpoints_reaches_them_over_sotw_xds() -> anyhow::Result<()> {
    tcp_to_a_service_entry_with_static_endpoints_reaches_them(Xds::SotW)
}

#[test]
fn tcp_to_a_service_entry_with_static_endpoints_reaches_them_over_delta_xds() -> anyhow::Result<()>
{
    tcp_to_a_service_entry_with_static_endpoints_reaches_them(Xds::Delta)
}

// --- Outbound traffic policy ---------------------------------------------------------------------

const KNOWN_VIP: &str = "10.96.1.30";
const KNOWN_HOST: &str = "known.example.com";

/// The echo mesh plus `known.example.com` (a ServiceEntry onto `vm-1`) and `stranger`, a pod
/// no Service or ServiceEntry mentions, serving HTTP on [`STRANGER_PORT`].
fn outbound_policy_mesh(
    xds: Xds,
    mesh_config: Option<&'static str>,
) -> anyhow::Result<(EchoMesh, Pod)> {
    let env = echo_mesh(
        xds,
        Options {
            mesh_config,
            extra: vec![http_service_entry(
                "known",
                KNOWN_HOST,
                KNOWN_VIP,
                &[VM_1_IP],
            )],
        },
    )?;
    env.plain_pod("vm-1", VM_1_IP, &[8080], &[])?;
    let stranger = env.plain_pod("stranger", STRANGER_IP, &[STRANGER_PORT], &[])?;
    // The network itself lets the stranger be reached: only the sidecar can refuse it.
    let direct = env
        .mesh
        .hub_curl(&format!("http://{STRANGER_IP}:{STRANGER_PORT}/"), &[]);
    assert_eq!(direct.status, 200, "stranger from the hub: {direct:?}");
    Ok((env, stranger))
}

fn stranger_url() -> String {
    format!("http://{STRANGER_IP}:{STRANGER_PORT}/unknown")
}

/// Requests the stranger saw at `/unknown` since the last call (read from the hub, outside
/// the mesh).
fn stranger_hits(env: &EchoMesh) -> anyhow::Result<u64> {
    let counts = env.mesh.hub_curl(
        &format!("http://{STRANGER_IP}:{STRANGER_PORT}/_count?reset=1"),
        &[],
    );
    anyhow::ensure!(counts.status == 200, "stranger's /_count: {counts:?}");
    Ok(counts.json()?["/unknown"].as_u64().unwrap_or(0))
}

/// A refusal: the sidecar closes or resets the connection, or answers with an error status —
/// promptly, not by letting the request time out, and without the stranger's answer.
fn refused(response: &HttpResult) -> bool {
    let timed_out = response
        .error
        .as_deref()
        .is_some_and(|error| error.contains("timed out"));
    response.status != 200 && !timed_out && !response.body.contains("\"pod\"")
}

fn known_service_entry_works(env: &EchoMesh) {
    let resolve = format!("{KNOWN_HOST}:8080:{KNOWN_VIP}");
    let response = get_until_ok(
        &env.client,
        &format!("http://{KNOWN_HOST}:8080/known"),
        &["--resolve", &resolve],
    );
    assert_eq!(
        response.echo_pod().as_deref(),
        Some("vm-1"),
        "{response:?}\n{}",
        env.diagnostics()
    );
}

fn registry_only_refuses_an_unknown_destination_and_admits_a_service_entry(
    xds: Xds,
) -> anyhow::Result<()> {
    let (env, _stranger) = outbound_policy_mesh(xds, Some(REGISTRY_ONLY))?;

    // The ServiceEntry'd destination works, so the sidecar has its config.
    known_service_entry_works(&env);
    env.wait_synced()?;
    stranger_hits(&env)?;
    for attempt in 0..3 {
        let response = env.client.curl(&stranger_url(), &[]);
        assert!(
            refused(&response),
            "attempt {attempt}: REGISTRY_ONLY let {} through: {response:?}",
            stranger_url()
        );
    }
    assert_eq!(
        stranger_hits(&env)?,
        0,
        "no request reached the stranger under REGISTRY_ONLY"
    );
    let response = env
        .client
        .curl(&format!("http://{ECHO_VIP}:8080/"), &["--max-time", "5"]);
    assert_eq!(response.status, 200, "Services still work: {response:?}");
    Ok(())
}

#[test]
fn registry_only_refuses_an_unknown_destination_and_admits_a_service_entry_over_sotw_xds()
-> anyhow::Result<()> {
    registry_only_refuses_an_unknown_destination_and_admits_a_service_entry(Xds::SotW)
}

#[test]
fn registry_only_refuses_an_unknown_destination_and_admits_a_service_entry_over_delta_xds()
-> anyhow::Result<()> {
    registry_only_refuses_an_unknown_destination_and_admits_a_service_entry(Xds::Delta)
}

fn allow_any_passes_an_unknown_destination_through_until_the_istio_config_map_says_registry_only(
    xds: Xds,
) -> anyhow::Result<()> {
    let (env, _stranger) = outbound_policy_mesh(xds, None)?;
    known_service_entry_works(&env);

    let response = get_until_ok(&env.client, &stranger_url(), &[]);
    assert_eq!(
        response.echo_pod().as_deref(),
        Some("stranger"),
        "ALLOW_ANY passes the unknown destination through: {response:?}\n{}",
        env.diagnostics()
    );
    let passthrough = env
        .client
        .envoy_stat("cluster.PassthroughCluster.upstream_cx_total");
    assert!(
        passthrough >= Some(1),
        "through PassthroughCluster: {passthrough:?}"
    );

    // Istio's way of changing mesh config at run time: ConfigMap `istio` in the root namespace.
    env.wait_synced()?;
    env.mesh.write_config(
        "istio-configmap.yaml",
        &["apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
"
        .to_owned()],
    )?;
    let written = Instant::now();
    let mut last = HttpResult::default();
    let refused_in = wait_for(CONVERGE, || {
        last = env.client.curl(&stranger_url(), &["--max-time", "5"]);
        refused(&last).then(|| written.elapsed())
    });
    assert!(
        refused_in.is_some(),
        "still passed through {CONVERGE:?} after REGISTRY_ONLY: {last:?}\n{}",
        env.diagnostics()
    );
    eprintln!("REGISTRY_ONLY took effect after {refused_in:?}");
    stranger_hits(&env)?;
    for attempt in 0..3 {
        let response = env.client.curl(&stranger_url(), &[]);
        assert!(refused(&response), "attempt {attempt}: {response:?}");
    }
    assert_eq!(stranger_hits(&env)?, 0, "nothing reached the stranger");
    known_service_entry_works(&env);
    Ok(())
}

#[test]
fn allow_any_passes_an_unknown_destination_through_until_the_istio_config_map_says_registry_only_over_sotw_xds()
-> anyhow::Result<()> {
    allow_any_passes_an_unknown_destination_through_until_the_istio_config_map_says_registry_only(
        Xds::SotW,
    )
}

#[test]
fn allow_any_passes_an_unknown_destination_through_until_the_istio_config_map_says_registry_only_over_delta_xds()
-> anyhow::Result<()> {
    allow_any_passes_an_unknown_destination_through_until_the_istio_config_map_says_registry_only(
        Xds::Delta,
    )
}

// --- Hot reload within 2 s -----------------------------------------------------------------------

fn an_edited_service_entry_endpoint_takes_effect_within_two_seconds(
    xds: Xds,
) -> anyhow::Result<()> {
    const VIP: &str = "10.96.1.40";
    const HOST: &str = "moving.example.com";
    let entry = |endpoint: &str| http_service_entry("moving", HOST, VIP, &[endpoint]);
    let env = echo_mesh(xds, Options::default())?;
    env.mesh.write_config("moving.yaml", &[entry(VM_1_IP)])?;
    env.plain_pod("vm-1", VM_1_IP, &[8080], &[])?;
    env.plain_pod("vm-2", VM_2_IP, &[8080], &[])?;
    let url = format!("http://{VIP}:8080/moving");
    let response = get_until_ok(&env.client, &url, &[]);
    assert_eq!(
        response.echo_pod().as_deref(),
        Some("vm-1"),
        "{response:?}\n{}",
        env.diagnostics()
    );
    env.wait_synced()?;

    // Same file: its objects are replaced.
    env.mesh.write_config("moving.yaml", &[entry(VM_2_IP)])?;
    let written = Instant::now();
    let took = time_until_answered_by(&env.client, &url, &[], "vm-2", written)?;
    eprintln!("the moved endpoint answered after {took:?}");
    assert!(
        took <= HOT_RELOAD,
        "the moved endpoint answered only after {took:?}\n{}",
        env.diagnostics()
    );
    assert!(env.meshd.is_running(), "meshd was not restarted");
    for _ in 0..5 {
        let response = env.client.curl(&url, &[]);
        assert_eq!(response.echo_pod().as_deref(), Some("vm-2"), "{response:?}");
    }
    Ok(())
}

#[test]
fn an_edited_service_entry_endpoint_takes_effect_within_two_seconds_over_sotw_xds()
-> anyhow::Result<()> {
    an_edited_service_entry_endpoint_takes_effect_within_two_seconds(Xds::SotW)
}

#[test]
fn an_edited_service_entry_endpoint_takes_effect_within_two_seconds_over_delta_xds()
-> anyhow::Result<()> {
    an_edited_service_entry_endpoint_takes_effect_within_two_seconds(Xds::Delta)
}

fn a_new_service_file_takes_effect_within_two_seconds(xds: Xds) -> anyhow::Result<()> {
    const VIP: &str = "10.96.0.11";
    let env = echo_mesh(xds, Options::default())?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    env.wait_synced()?;
    let url = format!("http://{VIP}:8080/new");
    let before = env.client.curl(&url, &["--max-time", "1"]);
    assert_ne!(
        before.status, 200,
        "{VIP} answers before it exists: {before:?}"
    );

    env.mesh
        .write_config("echo2.yaml", &[echo_service("echo2", VIP)])?;
    let written = Instant::now();
    // Until the Service exists its VIP leads nowhere; a short timeout keeps a poll sent just
    // before the push from hiding the moment it arrives.
    let mut last = HttpResult::default();
    let took = wait_for(CONVERGE, || {
        last = env.client.curl(&url, &["--max-time", "0.5"]);
        (last.status == 200).then(|| written.elapsed())
    });
    let took = took.with_context(|| format!("{url}: {last:?}\n{}", env.diagnostics()))?;
    eprintln!("the new Service answered after {took:?}");
    assert!(
        took <= HOT_RELOAD,
        "the new Service answered only after {took:?}\n{}",
        env.diagnostics()
    );
    assert!(env.meshd.is_running(), "meshd was not restarted");
    Ok(())
}

#[test]
fn a_new_service_file_takes_effect_within_two_seconds_over_sotw_xds() -> anyhow::Result<()> {
    a_new_service_file_takes_effect_within_two_seconds(Xds::SotW)
}

#[test]
fn a_new_service_file_takes_effect_within_two_seconds_over_delta_xds() -> anyhow::Result<()> {
    a_new_service_file_takes_effect_within_two_seconds(Xds::Delta)
}

// --- meshd down and back -------------------------------------------------------------------------

/// Rows of `meshd proxy-status`, by proxy name.
fn proxy_status(env: &EchoMesh) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let output = env.meshd_cli(&["proxy-status"])?;
    anyhow::ensure!(
        output.status.success(),
        "meshd proxy-status: {}",
        describe(&output)
    );
    Ok(parse_table(&stdout(&output))
        .into_iter()
        .map(|row| (row.get("NAME").cloned().unwrap_or_default(), row))
        .collect())
}

/// Waits until `meshd proxy-status` shows each of `pods` SYNCED for CDS, LDS, EDS and RDS.
fn wait_proxy_status_synced(env: &EchoMesh, pods: &[&Pod]) -> anyhow::Result<()> {
    let mut last = Ok(BTreeMap::new());
    let synced = wait_until(CONVERGE, || {
        last = proxy_status(env);
        last.as_ref().is_ok_and(|rows| {
            pods.iter().all(|pod| {
                rows.get(&pod.proxy_id()).is_some_and(|row| {
                    ["CDS", "LDS", "EDS", "RDS"]
                        .iter()
                        .all(|kind| row.get(*kind).is_some_and(|s| s == "SYNCED"))
                })
            })
        })
    });
    anyhow::ensure!(
        synced,
        "proxy-status not SYNCED within {CONVERGE:?}: {last:#?}\n{}",
        env.diagnostics()
    );
    Ok(())
}

fn traffic_flows_while_meshd_is_down_and_proxies_resync_after_its_restart(
    xds: Xds,
) -> anyhow::Result<()> {
    let mut env = echo_mesh(xds, Options::default())?;
    let url = format!("http://{ECHO_VIP}:8080/steady");
    let response = get_until_ok(&env.client, &url, &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    env.wait_synced()?;

    env.meshd.stop();
    let disconnected = wait_until(CONVERGE, || {
        env.sidecars()
            .iter()
            .all(|pod| pod.envoy_stat("control_plane.connected_state") == Some(0))
    });
    assert!(disconnected, "the sidecars noticed meshd is gone");
    let down_since = Instant::now();
    let mut requests = 0;
    let mut seen = BTreeMap::<String, u32>::new();
    while down_since.elapsed() < Duration::from_secs(3) {
        let response = env.client.curl(&url, &[]);
        requests += 1;
        assert_eq!(
            response.status,
            200,
            "request {requests} with meshd down: {response:?}\n{}",
            env.diagnostics()
        );
        *seen
            .entry(response.echo_pod().unwrap_or_default())
            .or_default() += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(requests >= 10, "only {requests} requests while down");
    assert_eq!(seen.len(), 2, "both pods kept serving: {seen:?}");

    // A change made while meshd is down is picked up when it starts.
    env.mesh
        .write_config("while-down.yaml", &[echo_service("echo2", "10.96.0.11")])?;
    env.meshd.start()?;
    wait_proxy_status_synced(&env, &env.sidecars())?;
    for pod in env.sidecars() {
        assert_eq!(
            pod.envoy_stat("control_plane.connected_state"),
            Some(1),
            "{} reconnected",
            pod.proxy_id()
        );
    }
    let response = get_until_ok(&env.client, "http://10.96.0.11:8080/", &["--max-time", "2"]);
    assert_eq!(
        response.status,
        200,
        "the change made while meshd was down: {response:?}\n{}",
        env.diagnostics()
    );

    // And one made after the restart.
    env.mesh
        .write_config("after-restart.yaml", &[echo_service("echo3", "10.96.0.12")])?;
    let response = get_until_ok(&env.client, "http://10.96.0.12:8080/", &["--max-time", "2"]);
    assert_eq!(
        response.status,
        200,
        "the change made after the restart: {response:?}\n{}",
        env.diagnostics()
    );
    let response = env.client.curl(&url, &[]);
    assert_eq!(
        response.status, 200,
        "the first Service still works: {response:?}"
    );
    Ok(())
}

#[test]
fn traffic_flows_while_meshd_is_down_and_proxies_resync_after_its_restart_over_sotw_xds()
-> anyhow::Result<()> {
    traffic_flows_while_meshd_is_down_and_proxies_resync_after_its_restart(Xds::SotW)
}

#[test]
fn traffic_flows_while_meshd_is_down_and_proxies_resync_after_its_restart_over_delta_xds()
-> anyhow::Result<()> {
    traffic_flows_while_meshd_is_down_and_proxies_resync_after_its_restart(Xds::Delta)
}

// --- Invalid objects -----------------------------------------------------------------------------

fn an_invalid_object_is_reported_kept_from_envoy_and_costs_only_itself(
    xds: Xds,
) -> anyhow::Result<()> {
    const GOOD_VIP: &str = "10.96.1.60";
    const GOOD_HOST: &str = "good.example.com";
    let env = echo_mesh(xds, Options::default())?;
    env.plain_pod("vm-1", VM_1_IP, &[8080], &[])?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    env.wait_synced()?;
    let clean = analyze_dir(&env.mesh.config_dir())?;
    assert!(
        clean.status.success(),
        "the valid config passes analyze: {}",
        describe(&clean)
    );

    // One file: a ServiceEntry Envoy would NACK (STATIC with a hostname endpoint), a Service
    // that does not even decode, and a valid ServiceEntry that must not suffer for them.
    let broken_entry = yaml::service_entry(&yaml::ServiceEntry {
        name: "broken",
        namespace: "default",
        hosts: &["broken.example.com"],
        addresses: &["10.96.1.50"],
        ports: &[("tcp", 9000, "TCP")],
        resolution: "STATIC",
        endpoints: &["not-an-ip"],
        ..yaml::ServiceEntry::default()
    });
    let bad_port = "apiVersion: v1
kind: Service
metadata:
  name: bad-port
  namespace: default
spec:
  clusterIP: 10.96.1.70
  selector: {app: echo}
  ports:
  - name: http
    port: eighty
"
    .to_owned();
    let good_entry = http_service_entry("good", GOOD_HOST, GOOD_VIP, &[VM_1_IP]);
    let file = env
        .mesh
        .write_config("mixed.yaml", &[broken_entry, bad_port, good_entry])?;

    // Served: the valid ServiceEntry from the same file works.
    let response = get_until_ok(&env.client, &format!("http://{GOOD_VIP}:8080/good"), &[]);
    assert_eq!(
        response.echo_pod().as_deref(),
        Some("vm-1"),
        "the valid ServiceEntry next to the invalid ones: {response:?}\n{}",
        env.diagnostics()
    );
    env.wait_synced()?;

    // Reported by analyze, by directory and by file, naming object and field.
    for output in [
        analyze_dir(&env.mesh.config_dir())?,
        analyze(&["-f".as_ref(), file.as_os_str()])?,
    ] {
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
        for expected in [
            "ServiceEntry default/broken",
            "spec.endpoints[0].address",
            "Service default/bad-port",
            "spec.ports[0].port",
            "mixed.yaml",
        ] {
            assert!(
                text.contains(expected),
                "analyze names {expected:?}: {}",
                describe(&output)
            );
        }
        assert!(
            !text.contains("default/good"),
            "the valid object is not reported: {text}"
        );
    }

    // Reported at serve time.
    let configz = cli::debug_json(&env.mesh, "/debug/configz")?;
    let findings = configz["findings"].as_array().cloned().unwrap_or_default();
    assert!(
        findings.iter().any(|finding| {
            finding["field"] == "spec.endpoints[0].address"
                && finding["severity"] == "Error"
                && finding["object"].to_string().contains("broken")
        }),
        "configz findings name the ServiceEntry and field: {findings:#?}"
    );
    let errors = configz["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.iter().any(|error| {
            let message = error["message"].as_str().unwrap_or_default();
            error["file"]
                .as_str()
                .unwrap_or_default()
                .ends_with("mixed.yaml")
                && message.contains("Service default/bad-port")
                && message.contains("spec.ports[0].port")
        }),
        "configz errors name the file, the Service and the field: {errors:#?}"
    );
    let log = env.meshd.log();
    for expected in [
        "mixed.yaml",
        "bad-port",
        "broken",
        "spec.endpoints[0].address",
    ] {
        assert!(
            log.contains(expected),
            "meshd's log mentions {expected:?}:\n{}",
            tail(&log, 40)
        );
    }

    // Never reached Envoy: nothing rejected, nothing NACKed, nothing named `broken` sent.
    for pod in env.sidecars() {
        let rejected = rejected_updates(pod)?;
        for stat in [
            "cluster_manager.cds.update_rejected",
            "listener_manager.lds.update_rejected",
        ] {
            assert!(
                rejected.contains_key(stat),
                "{} has {stat}: {rejected:?}",
                pod.proxy_id()
            );
        }
        assert!(
            rejected.keys().any(|stat| stat.contains(".rds.")),
            "{} has RDS reject stats: {rejected:?}",
            pod.proxy_id()
        );
        assert!(
            rejected.values().all(|count| *count == 0),
            "{} rejected updates: {rejected:?}\n{}",
            pod.proxy_id(),
            env.diagnostics()
        );
        let dump = pod.envoy_admin("/config_dump?include_eds")?;
        assert!(
            !dump.contains("broken.example.com") && !dump.contains("not-an-ip"),
            "{} was sent the invalid ServiceEntry",
            pod.proxy_id()
        );
        assert!(
            dump.contains(GOOD_HOST),
            "{} has the valid one",
            pod.proxy_id()
        );
    }
    let states = env.sync_states()?;
    assert!(
        states
            .values()
            .all(|types| types.values().all(|state| state != "NACKED")),
        "no proxy NACKed: {states:?}"
    );
    let metrics = env.mesh.meshd_debug("/metrics")?;
    let rejects: Vec<&str> = metrics
        .lines()
        .filter(|line| line.starts_with("pilot_total_xds_rejects"))
        .collect();
    assert!(
        !rejects.is_empty() && rejects.iter().all(|line| line.ends_with(" 0")),
        "pilot_total_xds_rejects: {rejects:?}"
    );

    // Everything else keeps working.
    let response = env.client.curl(&format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(
        response.status, 200,
        "the Service still works: {response:?}"
    );
    Ok(())
}

#[test]
fn an_invalid_object_is_reported_kept_from_envoy_and_costs_only_itself_over_sotw_xds()
-> anyhow::Result<()> {
    an_invalid_object_is_reported_kept_from_envoy_and_costs_only_itself(Xds::SotW)
}

#[test]
fn an_invalid_object_is_reported_kept_from_envoy_and_costs_only_itself_over_delta_xds()
-> anyhow::Result<()> {
    an_invalid_object_is_reported_kept_from_envoy_and_costs_only_itself(Xds::Delta)
}

// --- proxy-status and proxy-config ---------------------------------------------------------------

fn proxy_status_and_proxy_config_show_every_connected_proxy(xds: Xds) -> anyhow::Result<()> {
    let env = echo_mesh(xds, Options::default())?;
    let gateway = env.mesh.add_pod(match xds {
        Xds::SotW => PodSpec::new("ingress", "istio-system").router(),
        Xds::Delta => PodSpec::new("ingress", "istio-system").router().delta(),
    })?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());

    wait_proxy_status_synced(&env, &env.sidecars())?;
    let rows = proxy_status(&env)?;
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        [
            "echo-a.default",
            "echo-b.default",
            "ingress.istio-system",
            "sleep.default"
        ],
        "one row per connected proxy: {rows:#?}"
    );
    let gateway_row = &rows[&gateway.proxy_id()];
    for kind in ["CDS", "LDS"] {
        assert_eq!(
            gateway_row.get(kind).map(String::as_str),
            Some("SYNCED"),
            "the gateway's {kind}: {gateway_row:?}"
        );
    }
    for row in rows.values() {
        for column in ["CDS", "LDS", "EDS", "RDS", "SDS", "ISTIOD"] {
            assert!(row.contains_key(column), "{column} in {row:?}");
        }
        assert!(
            ["SYNCED", "NOT SENT"].contains(&row["SDS"].as_str()),
            "no certificates over plaintext: {row:?}"
        );
    }

    let json = env.meshd_cli(&["proxy-status", "-o", "json"])?;
    assert!(json.status.success(), "{}", describe(&json));
    let json: Value = serde_json::from_str(&stdout(&json)).context("proxy-status -o json")?;
    let entries = json.as_array().context("proxy-status -o json is a list")?;
    assert_eq!(entries.len(), 4, "{json:#}");
    for entry in entries {
        assert_eq!(
            entry["delta"],
            xds == Xds::Delta,
            "the proxy speaks {xds:?}: {entry}"
        );
    }

    // Clusters as istioctl shows them: the name `outbound|PORT|SUBSET|FQDN` split in columns.
    let output = env.meshd_cli(&["proxy-config", "clusters", &env.client.proxy_id()])?;
    assert!(output.status.success(), "{}", describe(&output));
    let clusters = parse_table(&stdout(&output));
    assert!(
        clusters.iter().any(|row| {
            row.get("SERVICE FQDN").map(String::as_str) == Some(ECHO_FQDN)
                && row.get("PORT").map(String::as_str) == Some("8080")
                && row.get("SUBSET").map(String::as_str) == Some("")
                && row.get("DIRECTION").map(String::as_str) == Some("outbound")
                && row.get("TYPE").map(String::as_str) == Some("EDS")
        }),
        "{ECHO_CLUSTER} in the table:\n{}",
        stdout(&output)
    );
    for name in ["BlackHoleCluster", "PassthroughCluster"] {
        assert!(
            clusters
                .iter()
                .any(|row| row.get("SERVICE FQDN").map(String::as_str) == Some(name)),
            "{name} in the table:\n{}",
            stdout(&output)
        );
    }

    // `-o json` parses, by short id and by full node id alike, and holds the Envoy names.
    let mut names_by_id = Vec::new();
    for id in [env.client.proxy_id(), env.client.node_id()] {
        let output = env.meshd_cli(&["proxy-config", "clusters", &id, "-o", "json"])?;
        assert!(output.status.success(), "{id}: {}", describe(&output));
        let clusters: Value = serde_json::from_str(&stdout(&output))
            .with_context(|| format!("proxy-config clusters {id} -o json"))?;
        let mut names: Vec<String> = clusters
            .as_array()
            .context("a list of clusters")?
            .iter()
            .filter_map(|cluster| cluster["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        assert!(
            names.iter().any(|name| name == ECHO_CLUSTER),
            "{ECHO_CLUSTER} among {names:?}"
        );
        names_by_id.push(names);
    }
    assert_eq!(names_by_id[0], names_by_id[1], "same proxy either way");

    // What meshd says it sent is what Envoy has.
    let envoy_clusters = env.client.envoy_admin("/clusters")?;
    assert!(envoy_clusters.contains(ECHO_CLUSTER));
    let all = env.meshd_cli(&["proxy-config", "all", &env.client.proxy_id(), "-o", "json"])?;
    assert!(all.status.success(), "{}", describe(&all));
    let all: Value = serde_json::from_str(&stdout(&all)).context("proxy-config all -o json")?;
    for kind in ["clusters", "listeners", "routes", "endpoints"] {
        assert!(
            all[kind].as_array().is_some_and(|list| !list.is_empty()),
            "proxy-config all has {kind}: {all:#}"
        );
    }
    Ok(())
}

#[test]
fn proxy_status_and_proxy_config_show_every_connected_proxy_over_sotw_xds() -> anyhow::Result<()> {
    proxy_status_and_proxy_config_show_every_connected_proxy(Xds::SotW)
}

#[test]
fn proxy_status_and_proxy_config_show_every_connected_proxy_over_delta_xds() -> anyhow::Result<()> {
    proxy_status_and_proxy_config_show_every_connected_proxy(Xds::Delta)
}

/// `meshd ARGS` in `pod`'s network namespace, where its Envoy's admin port (127.0.0.1:15000) is.
fn meshd_in_pod(env: &EchoMesh, pod: &Pod, args: &[&str]) -> anyhow::Result<String> {
    let output = pod
        .command(&meshd_tests::deps::meshd_binary().display().to_string())
        .args(args)
        .args(["--debug-addr", &env.mesh.debug_addr().to_string()])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "meshd {args:?}: {}",
        describe(&output)
    );
    Ok(stdout(&output))
}

fn names(json: &str) -> anyhow::Result<Vec<String>> {
    let list: Value = serde_json::from_str(json).context("a JSON list")?;
    let mut names: Vec<String> = list
        .as_array()
        .context("a JSON list")?
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn proxy_config_from_envoy_shows_what_the_proxy_applied_and_version_its_envoy_build()
-> anyhow::Result<()> {
    let env = echo_mesh(Xds::SotW, Options::default())?;
    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    wait_proxy_status_synced(&env, &env.sidecars())?;
    let id = env.client.proxy_id();

    // What meshd sent and what Envoy applied: every cluster sent is applied; Envoy adds only its
    // bootstrap's own.
    let sent = names(&meshd_in_pod(
        &env,
        &env.client,
        &["proxy-config", "clusters", &id, "-o", "json"],
    )?)?;
    let applied = meshd_in_pod(
        &env,
        &env.client,
        &[
            "proxy-config",
            "clusters",
            &id,
            "--from",
            "envoy",
            "-o",
            "json",
        ],
    )?;
    let applied = names(&applied)?;
    assert!(sent.iter().any(|name| name == ECHO_CLUSTER), "{sent:?}");
    for name in &sent {
        assert!(
            applied.contains(name),
            "{name} sent, not applied: {applied:?}"
        );
    }
    let extra: Vec<&String> = applied.iter().filter(|n| !sent.contains(n)).collect();
    assert!(
        extra.iter().all(|n| !n.contains('|')),
        "only bootstrap clusters added: {extra:?}"
    );
    // The same tables as for what meshd sent, endpoints included.
    let table = meshd_in_pod(
        &env,
        &env.client,
        &["proxy-config", "all", &id, "--from", "envoy"],
    )?;
    assert!(table.contains(ECHO_FQDN), "{table}");
    let endpoints = parse_table(&meshd_in_pod(
        &env,
        &env.client,
        &["proxy-config", "endpoints", &id, "--from", "envoy"],
    )?);
    assert!(
        endpoints
            .iter()
            .any(|row| row.get("CLUSTER").map(String::as_str) == Some(ECHO_CLUSTER)),
        "{endpoints:?}"
    );

    // The bootstrap Envoy runs, and its log levels, changed as `istioctl proxy-config log` does.
    let bootstrap: Value = serde_json::from_str(&meshd_in_pod(
        &env,
        &env.client,
        &["proxy-config", "bootstrap", &id],
    )?)?;
    assert_eq!(
        bootstrap["node"]["id"],
        env.client.node_id(),
        "{bootstrap:#}"
    );
    let levels = meshd_in_pod(
        &env,
        &env.client,
        &["proxy-config", "log", &id, "--level", "debug"],
    )?;
    assert!(levels.contains("active loggers"), "{levels}");
    let levels = meshd_in_pod(&env, &env.client, &["proxy-config", "log", &id])?;
    assert!(levels.contains("upstream: debug"), "{levels}");

    // `meshd version`: this binary, the control plane, and the Envoy build of every proxy.
    let version = env.meshd_cli(&["version"])?;
    assert!(version.status.success(), "{}", describe(&version));
    let lines: Vec<String> = stdout(&version).lines().map(str::to_owned).collect();
    let ours = env!("CARGO_PKG_VERSION");
    assert_eq!(lines[0], format!("meshd {ours} (Envoy API v3)"));
    assert_eq!(lines[1], format!("control plane version: {ours}"));
    let sidecars = env.sidecars().len();
    assert_eq!(
        lines[2],
        format!("data plane version: Envoy 1.40.0 ({sidecars} proxies)"),
        "{lines:?}"
    );
    let local = env.meshd_cli(&["version", "--remote=false"])?;
    assert_eq!(stdout(&local).lines().count(), 1, "{}", describe(&local));
    Ok(())
}
