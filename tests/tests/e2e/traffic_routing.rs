//! Routing by VirtualService, end to end: a client calling Service `echo` through its sidecar,
//! a DestinationRule with subsets `v1` and `v2` (one pod each, both with sidecars), and a
//! VirtualService deciding where each request goes — weights, header and path matches,
//! redirects, rewrites, mirroring, retries, timeouts, faults, CORS, header changes and TCP routes,
//! and an edit taking effect within two seconds. Requests are real (curl in the client pod,
//! captured by iptables); what the backends saw is read from meshd-echo's answers and `/_count`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshd_tests::{HttpResult, Mesh, Meshd, Pod, wait_for, wait_until};

use crate::support::{
    CONVERGE, ECHO_VIP, HOT_RELOAD, MeshSetup, Xds, assert_80_20_split, client_pod, echo_count,
    echo_pod, echo_service, get_until_answered_by, tally,
};

const CLIENT_IP: &str = "10.77.1.20";
const V1_IP: &str = "10.77.1.10";
const V2_IP: &str = "10.77.1.11";
const ECHO_TCP_VIP: &str = "10.96.0.11";
const TCP_PORT: u16 = 9000;
const ECHO_FQDN: &str = "echo.default.svc.cluster.local";

/// `sleep` (the client), `echo-v1` and `echo-v2` (Service `echo`, 10.96.0.10:8080; subsets by
/// `version`), all with sidecars, in namespace `default`.
struct RoutingMesh {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    v1: Pod,
    v2: Pod,
}

/// The DestinationRule naming the two subsets of `host`.
fn subsets(host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}, namespace: default}}
spec:
  host: {host}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"
    )
}

/// VirtualService `name` for `host` with the given `http:` (or `tcp:`) section, indented as a
/// field of `spec`.
fn virtual_service(name: &str, host: &str, routes: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
{routes}"
    )
}

fn routing_mesh(xds: Xds, virtual_service: String) -> anyhow::Result<RoutingMesh> {
    let echo = |name: &str, ip: &str, version: &str| -> anyhow::Result<_> {
        Ok(xds.speak(echo_pod(name, ip)?.label("version", version)))
    };
    let mesh = Mesh::new()?;
    // Its own file, so a test can edit it alone.
    mesh.write_config("routes.yaml", &[virtual_service])?;
    let env = MeshSetup::new()
        .config([
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            echo_service("echo-tcp", ECHO_TCP_VIP, &[("tcp", TCP_PORT)]),
            subsets("echo"),
            subsets("echo-tcp"),
        ])
        .app(echo("echo-v1", V1_IP, "v1")?, &[8080], &[TCP_PORT])
        .app(echo("echo-v2", V2_IP, "v2")?, &[8080], &[TCP_PORT])
        .caller(xds.speak(client_pod("sleep", CLIENT_IP)?))
        .start_in(mesh)?;
    let env = RoutingMesh {
        client: env.pod("sleep")?,
        v1: env.pod("echo-v1")?,
        v2: env.pod("echo-v2")?,
        mesh: env.mesh,
        meshd: env.meshd,
    };
    env.wait_subsets_ready()?;
    Ok(env)
}

impl RoutingMesh {
    /// Waits until the client's Envoy has a healthy endpoint in both subset clusters, so a
    /// request routed to either can be answered.
    fn wait_subsets_ready(&self) -> anyhow::Result<()> {
        for subset in ["v1", "v2"] {
            let stat = format!("cluster.outbound|8080|{subset}|{ECHO_FQDN}.membership_healthy");
            let ready = wait_until(CONVERGE, || self.client.envoy_stat(&stat) >= Some(1));
            anyhow::ensure!(ready, "{stat} never reached 1\n{}", self.diagnostics());
        }
        Ok(())
    }

    /// GET `path` on the Service from the client.
    fn get(&self, path: &str, headers: &[&str]) -> HttpResult {
        self.client.curl(&echo_url(path), &header_args(headers))
    }

    /// Polls `path` until it is answered by `pod`; the last answer either way.
    fn get_until_answered_by(&self, path: &str, headers: &[&str], pod: &str) -> HttpResult {
        get_until_answered_by(&self.client, &echo_url(path), &header_args(headers), pod)
    }

    /// How many requests for `path` the pod's app has seen (meshd-echo's `/_count`, asked from the
    /// hub, outside the client's sidecar).
    fn count(&self, pod: &Pod, path: &str) -> anyhow::Result<u64> {
        echo_count(&self.mesh, pod.ip(), 8080, path)
    }

    fn diagnostics(&self) -> String {
        crate::support::diagnostics(&self.mesh, &self.meshd, &[&self.client, &self.v1, &self.v2])
    }
}

fn echo_url(path: &str) -> String {
    format!("http://{ECHO_VIP}:8080{path}")
}

/// curl's `-H` for each header.
fn header_args<'a>(headers: &[&'a str]) -> Vec<&'a str> {
    headers.iter().flat_map(|header| ["-H", header]).collect()
}

/// The routes of the header-match tests: `end-user: jason` OR (`x-canary` matching
/// `^(yes|true)$` AND a path under `/canary`) goes to v2, everything else to v1.
fn header_routes() -> String {
    virtual_service(
        "echo",
        "echo",
        "  http:
  - match:
    - headers: {end-user: {exact: jason}}
    - headers: {x-canary: {regex: '^(yes|true)$'}}
      uri: {prefix: /canary}
    route: [{destination: {host: echo, subset: v2}}]
  - route: [{destination: {host: echo, subset: v1}}]
",
    )
}

fn assert_routed(env: &RoutingMesh, path: &str, headers: &[&str], expected: &str, why: &str) {
    let response = env.get(path, headers);
    assert_eq!(
        response.echo_pod().as_deref(),
        Some(expected),
        "{why}: {path} {headers:?} → {response:?}\n{}",
        env.diagnostics()
    );
}

fn an_80_20_split_sends_80_percent_to_v1_within_ten_points_over_200_requests(
    xds: Xds,
) -> anyhow::Result<()> {
    let env = routing_mesh(
        xds,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - route:
    - {destination: {host: echo, subset: v1}, weight: 80}
    - {destination: {host: echo, subset: v2}, weight: 20}
",
        ),
    )?;
    // Both answer once the split is in place (v2 only ever answers through it).
    env.get_until_answered_by("/warm", &[], "echo-v2");

    let seen =
        tally(200, |i| env.get(&format!("/split/{i}"), &[])).with_context(|| env.diagnostics())?;
    assert_80_20_split(&seen, ("echo-v1", "echo-v2"), "");
    Ok(())
}

#[test]
fn an_80_20_split_sends_80_percent_to_v1_within_ten_points_over_200_requests_over_delta_xds()
-> anyhow::Result<()> {
    an_80_20_split_sends_80_percent_to_v1_within_ten_points_over_200_requests(Xds::Delta)
}

#[test]
fn header_exact_and_regex_matches_select_a_subset() -> anyhow::Result<()> {
    let env = routing_mesh(Xds::SotW, header_routes())?;
    let first = env.get_until_answered_by("/", &["end-user: jason"], "echo-v2");
    assert_eq!(first.echo_pod().as_deref(), Some("echo-v2"), "{first:?}");

    assert_routed(&env, "/", &["end-user: jason"], "echo-v2", "exact match");
    assert_routed(
        &env,
        "/",
        &["end-user: jasonx"],
        "echo-v1",
        "exact means exact",
    );
    assert_routed(&env, "/", &[], "echo-v1", "no header");
    assert_routed(
        &env,
        "/canary/a",
        &["x-canary: true"],
        "echo-v2",
        "regex match",
    );
    assert_routed(
        &env,
        "/canary/a",
        &["x-canary: yes"],
        "echo-v2",
        "regex match",
    );
    assert_routed(
        &env,
        "/canary/a",
        &["x-canary: truex"],
        "echo-v1",
        "the regex is anchored",
    );
    Ok(())
}

#[test]
fn conditions_in_one_match_must_all_hold_while_any_one_match_routes() -> anyhow::Result<()> {
    let env = routing_mesh(Xds::SotW, header_routes())?;
    env.get_until_answered_by("/", &["end-user: jason"], "echo-v2");

    // AND within a match: the header alone or the path alone is not enough.
    assert_routed(
        &env,
        "/other",
        &["x-canary: yes"],
        "echo-v1",
        "header without path",
    );
    assert_routed(&env, "/canary/a", &[], "echo-v1", "path without header");
    assert_routed(&env, "/canary/a", &["x-canary: yes"], "echo-v2", "both");
    // OR across matches: the first match needs neither the path nor the canary header.
    assert_routed(
        &env,
        "/other",
        &["end-user: jason"],
        "echo-v2",
        "first match",
    );
    assert_routed(
        &env,
        "/canary/a",
        &["end-user: jason", "x-canary: no"],
        "echo-v2",
        "first match, second failing",
    );
    Ok(())
}

fn redirect_and_rewrite_routes() -> String {
    virtual_service(
        "echo",
        "echo",
        "  http:
  - match: [{uri: {exact: /old}}]
    redirect: {uri: /new}
  - match: [{uri: {prefix: /api/v1/}}]
    rewrite: {uri: /v2/}
    route: [{destination: {host: echo, subset: v1}}]
  - route: [{destination: {host: echo, subset: v1}}]
",
    )
}

#[test]
fn redirect_answers_301_with_the_rewritten_location() -> anyhow::Result<()> {
    let env = routing_mesh(Xds::SotW, redirect_and_rewrite_routes())?;
    let mut last = HttpResult::default();
    let redirected = wait_until(CONVERGE, || {
        last = env.get("/old", &[]);
        last.status == 301
    });
    assert!(redirected, "{last:?}\n{}", env.diagnostics());
    let location = last.header("location").unwrap_or_default();
    assert_eq!(location, format!("http://{ECHO_VIP}:8080/new"), "{last:?}");
    assert_eq!(
        env.count(&env.v1, "/old")?,
        0,
        "a redirect never reaches the app"
    );
    Ok(())
}

#[test]
fn rewrite_changes_the_path_the_backend_sees() -> anyhow::Result<()> {
    let env = routing_mesh(Xds::SotW, redirect_and_rewrite_routes())?;
    let mut last = HttpResult::default();
    let rewritten = wait_for(CONVERGE, || {
        last = env.get("/api/v1/items?x=1", &[]);
        let body = last.json().ok()?;
        (body["path"] == "/v2/items").then_some(body)
    });
    let body = rewritten.with_context(|| format!("{last:?}\n{}", env.diagnostics()))?;
    assert_eq!(body["pod"], "echo-v1");
    assert_eq!(
        body["query"], "x=1",
        "the query survives the rewrite: {body}"
    );
    // Paths the rewrite does not match arrive as sent.
    let plain = env.get("/api/v2/items", &[]).json()?;
    assert_eq!(plain["path"], "/api/v2/items");
    Ok(())
}

#[test]
fn mirroring_copies_requests_to_the_mirror_subset_while_clients_see_only_the_primary()
-> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - match: [{uri: {prefix: /mirrored}}]
    route: [{destination: {host: echo, subset: v1}}]
    mirror: {host: echo, subset: v2}
  - route: [{destination: {host: echo, subset: v1}}]
",
        ),
    )?;
    // The mirror policy is in place once a copy has arrived.
    wait_until(CONVERGE, || {
        env.get("/mirrored-warm", &[]);
        env.count(&env.v2, "/mirrored-warm").unwrap_or(0) >= 1
    });

    const REQUESTS: u64 = 50;
    for i in 0..REQUESTS {
        let response = env.get("/mirrored", &[]);
        assert_eq!(
            response.echo_pod().as_deref(),
            Some("echo-v1"),
            "request {i}: clients only see the primary: {response:?}\n{}",
            env.diagnostics()
        );
    }
    // Copies are sent asynchronously: allow them a moment to land.
    let mut copies = 0;
    wait_until(Duration::from_secs(10), || {
        copies = env.count(&env.v2, "/mirrored").unwrap_or(0);
        copies >= REQUESTS
    });
    eprintln!("{copies} of {REQUESTS} requests were mirrored to v2");
    assert!(
        copies * 10 >= REQUESTS * 9,
        "only {copies} of {REQUESTS} requests were mirrored\n{}",
        env.diagnostics()
    );
    assert_eq!(env.count(&env.v1, "/mirrored")?, REQUESTS);
    Ok(())
}

#[test]
fn a_backend_failing_twice_with_503_is_reached_three_times_and_the_client_gets_200()
-> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - match: [{uri: {prefix: /flaky}}]
    retries: {attempts: 2, retryOn: '5xx'}
    route: [{destination: {host: echo, subset: v1}}]
  - route: [{destination: {host: echo, subset: v2}}]
",
        ),
    )?;
    // The VirtualService is in place once /flaky reaches v1 (v2 answers everything else).
    env.get_until_answered_by("/flaky-warm", &[], "echo-v1");

    let response = env.get("/flaky?fail_first=2&status=503", &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", env.diagnostics());
    assert_eq!(response.echo_pod().as_deref(), Some("echo-v1"));
    assert_eq!(
        env.count(&env.v1, "/flaky")?,
        3,
        "two failed attempts and the one that succeeded"
    );
    let retries = env.client.envoy_stat(&format!(
        "cluster.outbound|8080|v1|{ECHO_FQDN}.upstream_rq_retry"
    ));
    assert_eq!(retries, Some(2), "the client's sidecar retried twice");
    Ok(())
}

#[test]
fn a_one_second_route_timeout_turns_a_three_second_backend_into_a_504_after_about_a_second()
-> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - match: [{uri: {prefix: /slow}}]
    timeout: 1s
    route: [{destination: {host: echo, subset: v1}}]
  - route: [{destination: {host: echo, subset: v2}}]
",
        ),
    )?;
    env.get_until_answered_by("/slow-warm", &[], "echo-v1");

    let started = Instant::now();
    let response = env.get("/slow?delay_ms=3000", &[]);
    let took = started.elapsed();
    eprintln!(
        "the slow request ended with {} after {took:?}",
        response.status
    );
    assert_eq!(response.status, 504, "{response:?}\n{}", env.diagnostics());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "timed out after {took:?}, not about 1s"
    );
    Ok(())
}

#[test]
fn fault_abort_answers_the_configured_code_without_reaching_the_backend() -> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - match: [{uri: {prefix: /aborted}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
  - route: [{destination: {host: echo, subset: v1}}]
",
        ),
    )?;
    let mut last = HttpResult::default();
    let aborted = wait_until(CONVERGE, || {
        last = env.get("/aborted", &[]);
        last.status == 418
    });
    assert!(aborted, "{last:?}\n{}", env.diagnostics());
    for _ in 0..5 {
        let response = env.get("/aborted", &[]);
        assert_eq!(response.status, 418, "{response:?}");
    }
    assert_eq!(
        env.count(&env.v1, "/aborted")?,
        0,
        "an aborted request never reaches the backend"
    );
    // The rest of the host is routed as usual.
    assert_routed(&env, "/fine", &[], "echo-v1", "no fault here");
    Ok(())
}

#[test]
fn fault_delay_adds_the_configured_delay() -> anyhow::Result<()> {
    const DELAY: Duration = Duration::from_secs(2);
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}
    route: [{destination: {host: echo, subset: v1}}]
  - route: [{destination: {host: echo, subset: v2}}]
",
        ),
    )?;
    env.get_until_answered_by("/delayed", &[], "echo-v1");

    let timed = |path: &str| -> anyhow::Result<Duration> {
        let started = Instant::now();
        let response = env.get(path, &[]);
        anyhow::ensure!(response.status == 200, "{path}: {response:?}");
        Ok(started.elapsed())
    };
    let undelayed = timed("/prompt")?;
    let delayed = timed("/delayed")?;
    eprintln!("undelayed {undelayed:?}, delayed {delayed:?}");
    assert!(
        delayed >= undelayed + DELAY - Duration::from_millis(100),
        "the delay added only {:?}",
        delayed.saturating_sub(undelayed)
    );
    assert!(
        delayed < DELAY + Duration::from_secs(1),
        "the delay took {delayed:?}, more than {DELAY:?} and change"
    );
    Ok(())
}

#[test]
fn an_edited_virtual_service_changes_routing_within_two_seconds() -> anyhow::Result<()> {
    let to = |subset: &str| {
        virtual_service(
            "echo",
            "echo",
            &format!(
                "  http:
  - route: [{{destination: {{host: echo, subset: {subset}}}}}]
"
            ),
        )
    };
    let env = routing_mesh(Xds::SotW, to("v1"))?;
    let first = env.get_until_answered_by("/", &[], "echo-v1");
    assert_eq!(first.echo_pod().as_deref(), Some("echo-v1"), "{first:?}");
    for _ in 0..5 {
        assert_routed(&env, "/", &[], "echo-v1", "before the edit");
    }

    env.mesh.write_config("routes.yaml", &[to("v2")])?;
    let written = Instant::now();
    let mut last = HttpResult::default();
    wait_for(CONVERGE, || {
        last = env.get("/", &[]);
        (last.echo_pod().as_deref() == Some("echo-v2")).then_some(())
    })
    .with_context(|| format!("never routed to v2: {last:?}\n{}", env.diagnostics()))?;
    let took = written.elapsed();
    eprintln!("the edited VirtualService routed to v2 after {took:?}");
    assert!(
        took <= HOT_RELOAD,
        "routing changed only after {took:?}\n{}",
        env.diagnostics()
    );
    for _ in 0..5 {
        assert_routed(&env, "/", &[], "echo-v2", "after the edit");
    }
    Ok(())
}

#[test]
fn a_tcp_route_sends_every_connection_to_the_subset_it_names() -> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo-tcp",
            "echo-tcp",
            &format!(
                "  tcp:
  - match: [{{port: {TCP_PORT}}}]
    route: [{{destination: {{host: echo-tcp, subset: v2}}}}]
"
            ),
        ),
    )?;
    let mut last = String::new();
    let routed = wait_until(CONVERGE, || {
        last = env
            .client
            .tcp_exchange(ECHO_TCP_VIP, TCP_PORT, "hello")
            .unwrap_or_default();
        last == "echo-v2: hello"
    });
    assert!(routed, "last answer {last:?}\n{}", env.diagnostics());
    for i in 0..10 {
        let answer = env
            .client
            .tcp_exchange(ECHO_TCP_VIP, TCP_PORT, &format!("line {i}"))?;
        assert_eq!(answer, format!("echo-v2: line {i}"));
    }
    Ok(())
}

#[test]
fn a_cors_preflight_is_answered_for_allowed_origins_even_on_a_route_with_a_fault()
-> anyhow::Result<()> {
    // Fault and CORS on one route: the CORS policy rides on the cluster entry (see http_route.rs).
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - route: [{destination: {host: echo, subset: v1}}]
    fault: {delay: {fixedDelay: 10ms, percentage: {value: 100}}}
    corsPolicy:
      allowOrigins: [{exact: 'https://shop.example.com'}, {regex: 'https://.*[.]partner[.]example'}]
      allowMethods: [GET, POST]
      allowHeaders: [x-user]
      maxAge: 1h
",
        ),
    )?;
    let preflight = |origin: &str| {
        env.client.curl(
            &format!("http://{ECHO_VIP}:8080/cart"),
            &[
                "-X",
                "OPTIONS",
                "-H",
                &format!("Origin: {origin}"),
                "-H",
                "Access-Control-Request-Method: POST",
            ],
        )
    };
    let mut last = HttpResult::default();
    let answered = wait_until(CONVERGE, || {
        last = preflight("https://shop.example.com");
        last.header("access-control-allow-origin") == Some("https://shop.example.com")
    });
    assert!(answered, "{last:?}\n{}", env.diagnostics());
    assert_eq!(
        last.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(last.header("access-control-max-age"), Some("3600"));
    // The sidecar answers matching preflights itself; one no origin matches goes on to the app.
    let forwarded_before = env.count(&env.v1, "/cart")?;
    let regex = preflight("https://eu.partner.example");
    assert_eq!(
        regex.header("access-control-allow-origin"),
        Some("https://eu.partner.example"),
        "{regex:?}"
    );
    assert_eq!(env.count(&env.v1, "/cart")?, forwarded_before);
    let stranger = preflight("https://evil.example");
    assert_eq!(
        stranger.header("access-control-allow-origin"),
        None,
        "{stranger:?}"
    );
    assert_eq!(env.count(&env.v1, "/cart")?, forwarded_before + 1);
    Ok(())
}

#[test]
fn header_changes_reach_the_backend_and_the_client_per_route_and_per_destination()
-> anyhow::Result<()> {
    let env = routing_mesh(
        Xds::SotW,
        virtual_service(
            "echo",
            "echo",
            "  http:
  - headers:
      request:
        set: {x-route: echo}
        add: {x-hop: client}
        remove: [x-secret]
      response:
        set: {x-served: mesh}
        remove: [content-type]
    route:
    - destination: {host: echo, subset: v1}
      weight: 50
      headers: {request: {set: {x-subset: v1}}}
    - destination: {host: echo, subset: v2}
      weight: 50
      headers: {request: {set: {x-subset: v2}}, response: {set: {x-canary: 'yes'}}}
",
        ),
    )?;
    let mut seen = BTreeMap::new();
    let both = wait_until(CONVERGE, || {
        let response = env.get("/h", &["x-secret: s3cr3t", "x-hop: app", "x-route: app"]);
        if let (Some(pod), Ok(body)) = (response.echo_pod(), response.json()) {
            seen.insert(pod, (body, response));
        }
        seen.len() == 2
    });
    assert!(
        both,
        "both subsets answer: {:?}\n{}",
        seen.keys(),
        env.diagnostics()
    );
    for (pod, (body, response)) in &seen {
        let headers = &body["headers"];
        let subset = pod.trim_start_matches("echo-");
        assert_eq!(headers["x-route"], "echo", "set overwrites: {body}");
        assert_eq!(headers["x-hop"], "app, client", "add appends: {body}");
        assert!(headers["x-secret"].is_null(), "remove removes: {body}");
        assert_eq!(headers["x-subset"], subset, "per destination: {body}");
        assert_eq!(response.header("x-served"), Some("mesh"), "{response:?}");
        assert_eq!(response.header("content-type"), None, "{response:?}");
        let canary = response.header("x-canary");
        assert_eq!(canary, (subset == "v2").then_some("yes"), "{response:?}");
    }
    Ok(())
}
