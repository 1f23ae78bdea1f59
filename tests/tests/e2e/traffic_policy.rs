//! DestinationRule traffic policies, end to end through stock Envoy sidecars: outlier detection
//! ejects a failing pod, consistent hashing keeps a user on one pod, connection-pool limits
//! overflow into 503s, `tls: DISABLE` keeps a call plaintext, and with outlier detection callers
//! prefer endpoints in their own zone, as their Nodes place them.

use std::collections::{BTreeMap, BTreeSet};

use meshd_tests::{HttpResult, Mesh, Meshd, Pod, wait_until};

use crate::support::{
    CONVERGE, ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, get_until_ok,
};

const CLIENT_IP: &str = "10.77.1.20";
const ECHO_CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";

struct Env {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    echoes: Vec<Pod>,
}

/// An echo pod: its name, and the status it always answers with (a broken pod) if any.
struct Echo {
    name: &'static str,
    always_status: Option<u16>,
}

fn healthy(name: &'static str) -> Echo {
    Echo {
        name,
        always_status: None,
    }
}

/// `sleep` calls Service `echo` (10.96.0.10:8080) in front of the given pods, all with sidecars
/// (over meshd's TLS port with `tls`, so they hold mesh certificates); `extra` documents (the
/// DestinationRule under test) are in the config from the start.
fn echo_mesh(echoes: &[Echo], extra: &[String], tls: bool) -> anyhow::Result<Env> {
    let with_tls = |spec: meshd_tests::PodSpec| if tls { spec.tls() } else { spec };
    let mut setup = MeshSetup::new()
        .config([echo_service("echo", ECHO_VIP, &[("http", 8080)])])
        .config(extra.iter().cloned());
    for (i, echo) in echoes.iter().enumerate() {
        let spec = with_tls(echo_pod(echo.name, &format!("10.77.1.{}", 10 + i))?);
        setup = match echo.always_status {
            None => setup.app(spec, &[8080], &[]),
            Some(status) => setup.app_with(
                spec,
                &[8080],
                &[],
                &["--always-status", &status.to_string()],
            ),
        };
    }
    let env = setup
        .caller(with_tls(client_pod("sleep", CLIENT_IP)?))
        .start()?;
    Ok(Env {
        client: env.pod("sleep")?,
        echoes: echoes
            .iter()
            .map(|echo| env.pod(echo.name))
            .collect::<anyhow::Result<_>>()?,
        mesh: env.mesh,
        meshd: env.meshd,
    })
}

fn destination_rule(name: &str, traffic_policy: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
  namespace: default
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy:
{traffic_policy}"
    )
}

impl Env {
    fn diagnostics(&self) -> String {
        let mut pods = vec![&self.client];
        pods.extend(&self.echoes);
        crate::support::diagnostics(&self.mesh, &self.meshd, &pods)
    }

    /// Waits until the client's Envoy holds the echo cluster with `needle` in its config, and
    /// sees all echo endpoints healthy.
    fn wait_for_cluster(&self, needle: &str) -> anyhow::Result<()> {
        let mut dump = String::new();
        let configured = wait_until(CONVERGE, || {
            dump = self
                .client
                .envoy_admin("/config_dump?resource=dynamic_active_clusters")
                .unwrap_or_default();
            dump.contains(needle)
        });
        anyhow::ensure!(
            configured,
            "client Envoy never got {needle:?} on {ECHO_CLUSTER}:\n{dump}\n{}",
            self.diagnostics()
        );
        let want = self.echoes.len() as u64;
        let stat = format!("cluster.{ECHO_CLUSTER}.membership_healthy");
        let members = wait_until(CONVERGE, || self.client.envoy_stat(&stat) == Some(want));
        anyhow::ensure!(
            members,
            "{stat} never reached {want} (now {:?})\n{}",
            self.client.envoy_stat(&stat),
            self.diagnostics()
        );
        Ok(())
    }

    fn call(&self, path: &str, extra_args: &[&str]) -> HttpResult {
        self.client
            .curl(&format!("http://{ECHO_VIP}:8080{path}"), extra_args)
    }
}

#[test]
fn outlier_detection_ejects_a_failing_pod_and_the_following_requests_all_succeed()
-> anyhow::Result<()> {
    let rule = destination_rule(
        "echo-outliers",
        "    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
",
    );
    let env = echo_mesh(
        &[
            healthy("echo-good"),
            Echo {
                name: "echo-bad",
                always_status: Some(500),
            },
        ],
        &[rule],
        false,
    )?;
    env.wait_for_cluster("\"consecutive_5xx\": 1")?;

    // Until the broken pod has answered once, some requests reach it and fail with its 500; that
    // one failure ejects it.
    let ejections = format!("cluster.{ECHO_CLUSTER}.outlier_detection.ejections_active");
    let mut seen = Vec::new();
    let ejected = wait_until(CONVERGE, || {
        let response = env.call("/", &[]);
        seen.push(response.status);
        env.client.envoy_stat(&ejections) == Some(1)
    });
    assert!(
        ejected,
        "{ejections} never became 1; statuses seen {seen:?}\n{}",
        env.diagnostics()
    );
    assert!(
        seen.contains(&500),
        "the broken pod answered nothing before its ejection: {seen:?}"
    );

    eprintln!("statuses until the ejection: {seen:?}");
    // Ejected for 30 s: every following request goes to the healthy pod. (Envoy ejects no host
    // that would take the ejected share over maxEjectionPercent, 10% by default: hence 100 above,
    // as in Istio's own circuit-breaking example.)
    for i in 0..30 {
        let response = env.call("/", &[]);
        assert_eq!(
            response.status,
            200,
            "request {i} after the ejection: {response:?}\n{}",
            env.diagnostics()
        );
        assert_eq!(response.echo_pod().as_deref(), Some("echo-good"));
    }
    Ok(())
}

#[test]
fn consistent_hash_on_a_header_keeps_each_user_on_one_pod_and_spreads_users() -> anyhow::Result<()>
{
    let rule = destination_rule(
        "echo-sticky",
        "    loadBalancer:
      consistentHash:
        httpHeaderName: x-user
",
    );
    let env = echo_mesh(
        &[healthy("echo-a"), healthy("echo-b"), healthy("echo-c")],
        &[rule],
        false,
    )?;
    env.wait_for_cluster("\"lb_policy\": \"RING_HASH\"")?;
    let routes_hash = wait_until(CONVERGE, || {
        env.client
            .envoy_admin("/config_dump?resource=dynamic_route_configs")
            .is_ok_and(|dump| dump.contains("\"header_name\": \"x-user\""))
    });
    assert!(routes_hash, "no hash policy on the client's routes");

    let mut pod_of_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..5 {
        for user in 0..10 {
            let user = format!("user-{user}");
            let response = env.call("/", &["-H", &format!("x-user: {user}")]);
            assert_eq!(response.status, 200, "round {round}, {user}: {response:?}");
            let pod = response.echo_pod().unwrap_or_default();
            pod_of_user.entry(user).or_default().insert(pod);
        }
    }
    for (user, pods) in &pod_of_user {
        assert_eq!(pods.len(), 1, "{user} was answered by {pods:?}");
    }
    let distinct: BTreeSet<&String> = pod_of_user.values().flatten().collect();
    eprintln!("users → pods: {pod_of_user:?}");
    assert!(
        distinct.len() >= 2,
        "ten users all landed on {distinct:?}: {pod_of_user:?}"
    );
    Ok(())
}

#[test]
fn connection_pool_limits_overflow_into_503s_under_concurrent_load() -> anyhow::Result<()> {
    let rule = destination_rule(
        "echo-pool",
        "    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
",
    );
    let env = echo_mesh(&[healthy("echo-a")], &[rule], false)?;
    env.wait_for_cluster("\"max_pending_requests\": 1")?;
    // The pool works for one caller at a time.
    let single = env.call("/", &[]);
    assert_eq!(single.status, 200, "{single:?}\n{}", env.diagnostics());

    // Twenty callers at once against a backend taking a second each: one connection, one waiting
    // request, the rest overflow.
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..20)
            .map(|_| scope.spawn(|| env.call("/?delay_ms=1000", &[]).status))
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().unwrap_or(0))
            .collect()
    });
    let overflowed = statuses.iter().filter(|s| **s == 503).count();
    let succeeded = statuses.iter().filter(|s| **s == 200).count();
    assert!(overflowed > 0, "no 503 among {statuses:?}");
    assert!(succeeded > 0, "nothing got through: {statuses:?}");
    let stat = format!("cluster.{ECHO_CLUSTER}.upstream_rq_pending_overflow");
    let overflow = env.client.envoy_stat(&stat).unwrap_or(0);
    eprintln!("{succeeded} × 200, {overflowed} × 503 of 20; {stat} = {overflow}");
    assert!(
        overflow > 0,
        "{stat} = {overflow} with statuses {statuses:?}"
    );
    Ok(())
}

#[test]
fn tls_disable_makes_a_mesh_call_plaintext_even_when_both_sides_could_do_mtls() -> anyhow::Result<()>
{
    let rule = destination_rule(
        "echo-plaintext",
        "    tls:
      mode: DISABLE
",
    );
    let env = echo_mesh(&[healthy("echo-a")], &[rule], true)?;
    // Both proxies hold certificates (auto-mTLS would apply); the rule turns it off.
    let certified = wait_until(CONVERGE, || {
        [&env.client, &env.echoes[0]].iter().all(|pod| {
            pod.envoy_admin("/certs")
                .is_ok_and(|certs| certs.contains("spiffe://cluster.local/ns/default/sa/"))
        })
    });
    assert!(
        certified,
        "proxies never got certificates\n{}",
        env.diagnostics()
    );
    env.wait_for_cluster("\"name\": \"outbound|8080||echo.default.svc.cluster.local\"")?;
    let dump = env
        .client
        .envoy_admin("/config_dump?resource=dynamic_active_clusters")?;
    let cluster = dump
        .split("\"cluster\": {")
        .find(|c| c.contains(&format!("\"name\": \"{ECHO_CLUSTER}\"")))
        .unwrap_or_default();
    assert!(
        !cluster.contains("transport_socket"),
        "the echo cluster still has TLS:\n{cluster}"
    );

    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/"), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    let body = response.json()?;
    assert!(
        body["headers"]["x-forwarded-client-cert"].is_null(),
        "the server saw a client certificate: {body}"
    );
    let handshakes = env.echoes[0]
        .envoy_stat("listener.0.0.0.0_15006.ssl.handshake")
        .unwrap_or(0);
    assert_eq!(handshakes, 0, "the server's sidecar terminated TLS");
    Ok(())
}

/// A Node in `zone` of region `eu-west`, with Kubernetes' topology labels.
fn node(name: &str, zone: &str) -> String {
    format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
    topology.kubernetes.io/region: eu-west
    topology.kubernetes.io/zone: {zone}
"
    )
}

#[test]
fn endpoints_carry_their_nodes_zone_and_callers_stay_in_their_own_zone() -> anyhow::Result<()> {
    let outlier =
        "    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}\n";
    let env = MeshSetup::new()
        .config([echo_service("echo", ECHO_VIP, &[("http", 8080)])])
        .config([
            node("node-a", "eu-west-1a"),
            node("node-b", "eu-west-1b"),
            destination_rule("echo", outlier),
        ])
        .app(
            echo_pod("echo-a", "10.77.1.10")?.node("node-a"),
            &[8080],
            &[],
        )
        .app(
            echo_pod("echo-b", "10.77.1.11")?.node("node-b"),
            &[8080],
            &[],
        )
        .caller(client_pod("sleep-a", CLIENT_IP)?.node("node-a"))
        .caller(client_pod("sleep-b", "10.77.1.21")?.node("node-b"))
        .start()?;
    let (sleep_a, sleep_b) = (env.pod("sleep-a")?, env.pod("sleep-b")?);

    // Envoy holds each endpoint in its Node's zone (`/clusters` prints host localities).
    let mut clusters = String::new();
    let placed = wait_until(CONVERGE, || {
        clusters = sleep_a.envoy_admin("/clusters").unwrap_or_default();
        [
            "10.77.1.10:8080::zone::eu-west-1a",
            "10.77.1.11:8080::zone::eu-west-1b",
        ]
        .iter()
        .all(|host| clusters.contains(&format!("{ECHO_CLUSTER}::{host}")))
    });
    let zones: Vec<&str> = clusters
        .lines()
        .filter(|l| l.contains("::zone::"))
        .collect();
    assert!(placed, "zones in sleep-a's Envoy: {zones:#?}");

    // Each caller's requests stay in its own zone while that zone's endpoint is healthy.
    for (caller, own) in [(&sleep_a, "echo-a"), (&sleep_b, "echo-b")] {
        let url = format!("http://{ECHO_VIP}:8080/");
        let first = crate::support::get_until_answered_by(caller, &url, &[], own);
        assert_eq!(first.echo_pod().as_deref(), Some(own), "{first:?}");
        let answered: BTreeSet<String> = (0..20)
            .map(|_| caller.curl(&url, &[]).echo_pod().unwrap_or_default())
            .collect();
        assert_eq!(
            answered,
            BTreeSet::from([own.to_owned()]),
            "{} must stay in its zone",
            caller.name()
        );
    }
    Ok(())
}
