//! Scale-out as istiod does it: two `meshd serve` replicas on the same config and the same CA,
//! and sidecars (mutual TLS, certificates over SDS) whose bootstraps name both replicas
//! (`meshd bootstrap --xds-addr A,B`). When the replica a proxy streams from dies (SIGKILL), the
//! proxy keeps serving with the config it holds — not one request is lost — reconnects to the
//! survivor, which syncs it (CDS, LDS, EDS, RDS and SDS ACKed) within seconds, and a later config
//! change reaches it from the survivor.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshd_tests::mesh::GATEWAY;
use meshd_tests::{HttpResult, Mesh, Meshd, Pod, wait_for, yaml};

use crate::support::{
    CONVERGE, ECHO_VIP, client_pod, diagnostics_of, echo_pod, echo_service, get_until_ok,
};

/// The second replica's address in the hub (the first listens on [`GATEWAY`]).
const REPLICA_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// How soon a proxy whose replica died must be synced by the survivor.
const FAILOVER: Duration = Duration::from_secs(10);
/// The pace of the client's requests while a replica dies.
const REQUEST_EVERY: Duration = Duration::from_millis(50);
/// How long after the kill the client's requests go on at least.
const KEEP_SENDING: Duration = Duration::from_secs(5);
/// Every type a sidecar on the TLS port holds; all must be ACKed by the survivor.
const SYNCED_TYPES: [&str; 5] = ["CDS", "LDS", "EDS", "RDS", "SDS"];

/// VirtualService `echo` that marks every answer with response header `x-config: <mark>`.
fn marking_routes(mark: &str) -> String {
    yaml::virtual_service(
        "echo",
        "echo",
        &format!(
            "  - headers: {{response: {{set: {{x-config: {mark}}}}}}}\n    route: [{{destination: {{host: echo}}}}]\n"
        ),
    )
}

/// Per type (`CDS`, …) the state one replica's `/debug/syncz` reports for proxy `POD.NS`; `None`
/// when the proxy is not connected to it (or the replica does not answer).
fn sync_state(replica: &Meshd, proxy: &str) -> Option<BTreeMap<String, String>> {
    let syncz: serde_json::Value =
        serde_json::from_str(&replica.debug("/debug/syncz").ok()?).ok()?;
    let entry = syncz
        .as_array()?
        .iter()
        .find(|entry| entry["proxy"] == proxy)?;
    Some(
        entry["types"]
            .as_object()?
            .iter()
            .map(|(kind, status)| {
                let state = status["state"].as_str().unwrap_or_default();
                (kind.clone(), state.to_owned())
            })
            .collect(),
    )
}

fn synced(states: &BTreeMap<String, String>) -> bool {
    SYNCED_TYPES
        .iter()
        .all(|kind| states.get(*kind).is_some_and(|state| state == "SYNCED"))
}

/// One request of the loop: when it was sent (since the loop started) and how it ended.
struct Sent {
    at: Duration,
    result: HttpResult,
}

/// Requests `url` from `pod` every [`REQUEST_EVERY`] until `stop` is set; `Sent::at` counts from
/// `started`.
fn request_loop(
    pod: Pod,
    url: String,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sent>> {
    std::thread::spawn(move || {
        let mut sent = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let at = started.elapsed();
            let result = pod.curl(&url, &["--max-time", "5"]);
            sent.push(Sent { at, result });
            std::thread::sleep(REQUEST_EVERY);
        }
        sent
    })
}

#[test]
fn a_proxy_whose_replica_dies_loses_no_request_and_resyncs_from_the_survivor() -> anyhow::Result<()>
{
    let mesh = Mesh::new()?;
    let both = [GATEWAY, REPLICA_B];
    // Istio's default protocol for one, state-of-the-world for the other: both must fail over.
    let echo_spec = echo_pod("echo", "10.77.1.10")?.tls().control_planes(&both);
    let client_spec = client_pod("sleep", "10.77.1.20")?
        .tls()
        .delta()
        .control_planes(&both);
    mesh.write_config(
        "mesh.yaml",
        &[
            yaml::namespace("default", &[("istio-injection", "enabled")]),
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            // Only mutual TLS gets through: traffic needs the certificates SDS delivers.
            yaml::peer_authentication("default", "default", "STRICT"),
            echo_spec.yaml()?,
            client_spec.yaml()?,
        ],
    )?;
    // The first replica creates the CA the second then reads: one root signs for both.
    let replica_a = mesh.start_meshd(mesh.config_dir(), &[])?;
    let replica_b = mesh.start_meshd_replica(REPLICA_B, mesh.config_dir(), &[])?;
    let mut replicas = [replica_a, replica_b];

    let echo = mesh.add_pod(echo_spec)?;
    echo.start_echo(&[8080], &[])?;
    let client = mesh.add_pod(client_spec)?;
    let url = format!("http://{ECHO_VIP}:8080/");
    let first = get_until_ok(&client, &url, &[]);
    let diagnose = |replicas: &[Meshd]| {
        diagnostics_of(
            &mesh,
            &replicas.iter().collect::<Vec<_>>(),
            &[&client, &echo],
        )
    };
    assert_eq!(first.status, 200, "{first:?}\n{}", diagnose(&replicas));
    assert!(
        first
            .body
            .contains("spiffe://cluster.local/ns/default/sa/sleep"),
        "not mutual TLS: {first:?}"
    );

    // Which replica the client streams from; that one dies.
    let connected = wait_for(CONVERGE, || {
        replicas
            .iter()
            .position(|r| sync_state(r, "sleep.default").is_some_and(|s| synced(&s)))
    })
    .with_context(|| {
        format!(
            "the client is synced by no replica\n{}",
            diagnose(&replicas)
        )
    })?;
    let survivor = 1 - connected;
    eprintln!(
        "client streams from replica {}; echo from {:?}",
        replicas[connected].ip(),
        replicas
            .iter()
            .position(|r| sync_state(r, "echo.default").is_some())
            .map(|i| replicas[i].ip())
    );
    let stats_before = client.envoy_stats()?;

    let stop = Arc::new(AtomicBool::new(false));
    let loop_started = Instant::now();
    let requests = request_loop(client.clone(), url.clone(), loop_started, stop.clone());
    std::thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    replicas[connected].stop();
    let kill = killed_at - loop_started;

    // The survivor takes the client over: connected and every type ACKed.
    let mut last = None;
    let took_over = wait_for(FAILOVER, || {
        last = sync_state(&replicas[survivor], "sleep.default");
        last.as_ref()
            .is_some_and(synced)
            .then(|| killed_at.elapsed())
    });
    let resynced_in = match took_over {
        Some(elapsed) => elapsed,
        None => {
            stop.store(true, Ordering::Relaxed);
            let _ = requests.join();
            anyhow::bail!(
                "the client is not synced by the survivor {FAILOVER:?} after the kill: {last:?}\n{}",
                diagnose(&replicas)
            );
        }
    };
    eprintln!("the survivor had the client synced {resynced_in:?} after the kill");
    // The echo's proxy ends up there too, whichever replica it streamed from.
    let echo_synced = wait_for(FAILOVER, || {
        sync_state(&replicas[survivor], "echo.default")
            .filter(synced)
            .map(|_| ())
    });

    // A change made now reaches the client from the survivor.
    mesh.write_config("routes.yaml", &[marking_routes("after-failover")])?;
    let edited_at = Instant::now();
    let marked = wait_for(CONVERGE, || {
        let response = client.curl(&url, &[]);
        (response.header("x-config") == Some("after-failover")).then(|| edited_at.elapsed())
    });
    eprintln!("the edited VirtualService took effect after {marked:?}");
    // Traffic keeps flowing a while on the survivor's config.
    std::thread::sleep(
        KEEP_SENDING
            .saturating_sub(killed_at.elapsed())
            .max(Duration::from_secs(1)),
    );
    stop.store(true, Ordering::Relaxed);
    let sent = requests.join().expect("the request loop");

    let killed_after = sent.iter().filter(|s| s.at >= kill).count();
    let while_away = sent
        .iter()
        .filter(|s| s.at >= kill && s.at < kill + resynced_in)
        .count();
    let failed: Vec<String> = sent
        .iter()
        .filter(|s| s.result.status != 200)
        .map(|s| format!("at {:?}: {:?}", s.at, s.result))
        .collect();
    eprintln!(
        "{} requests, {killed_after} after the kill ({while_away} before the survivor had the \
         client synced), {} failed",
        sent.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed:\n{}\n{}",
        failed.len(),
        sent.len(),
        failed.join("\n"),
        diagnose(&replicas)
    );
    assert!(
        killed_after >= 20,
        "too few requests after the kill to prove anything: {}",
        sent.len()
    );
    assert!(
        echo_synced.is_some(),
        "the echo's proxy is not synced by the survivor: {:?}\n{}",
        sync_state(&replicas[survivor], "echo.default"),
        diagnose(&replicas)
    );
    assert!(
        marked.is_some(),
        "the VirtualService change never reached the client from the survivor\n{}",
        diagnose(&replicas)
    );
    let after = sync_state(&replicas[survivor], "sleep.default");
    assert!(
        after.as_ref().is_some_and(synced),
        "the client after the change: {after:?}"
    );

    // Envoy's own account: it lost its stream once and is connected again.
    let stats_after = client.envoy_stats()?;
    let stat = |stats: &BTreeMap<String, u64>, name: &str| stats.get(name).copied().unwrap_or(0);
    let grown = |name: &str| stat(&stats_after, name) - stat(&stats_before, name);
    eprintln!(
        "the client's Envoy since the kill: {} new connections to a replica, {} refused",
        grown("cluster.xds-grpc.upstream_cx_total"),
        grown("cluster.xds-grpc.upstream_cx_connect_fail"),
    );
    assert_eq!(stat(&stats_after, "control_plane.connected_state"), 1);
    assert!(
        stat(&stats_after, "cluster.xds-grpc.upstream_cx_total")
            > stat(&stats_before, "cluster.xds-grpc.upstream_cx_total"),
        "the client's Envoy opened no new connection to a control plane"
    );
    Ok(())
}

#[test]
fn a_proxy_finds_the_live_replica_among_ones_that_never_answer() -> anyhow::Result<()> {
    // Nobody holds these addresses: connecting times out (no refusal comes back), the worst case
    // for a pick. Envoy's round robin starts at a random endpoint, so most runs pick one first.
    let gone = [Ipv4Addr::new(10, 77, 0, 3), Ipv4Addr::new(10, 77, 0, 4)];
    let mesh = Mesh::new()?;
    let spec = client_pod("sleep", "10.77.1.20")?
        .tls()
        .control_planes(&[gone[0], GATEWAY, gone[1]]);
    mesh.write_config(
        "mesh.yaml",
        &[
            yaml::namespace("default", &[("istio-injection", "enabled")]),
            // A Service, so that the proxy has routes to take too.
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            spec.yaml()?,
        ],
    )?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let started = Instant::now();
    let client = mesh.add_pod(spec)?;
    let mut last = None;
    let took = wait_for(FAILOVER, || {
        last = sync_state(&meshd, "sleep.default");
        last.as_ref().is_some_and(synced).then(|| started.elapsed())
    });
    let logs = || diagnostics_of(&mesh, &[&meshd], &[&client]);
    let took =
        took.with_context(|| format!("not synced within {FAILOVER:?}: {last:?}\n{}", logs()))?;
    eprintln!(
        "synced {took:?} after Envoy started; connections to a replica: {:?} opened, {:?} timed out",
        client.envoy_stat("cluster.xds-grpc.upstream_cx_total"),
        client.envoy_stat("cluster.xds-grpc.upstream_cx_connect_timeout"),
    );
    Ok(())
}
