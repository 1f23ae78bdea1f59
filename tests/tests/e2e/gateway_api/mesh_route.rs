//! A mesh HTTPRoute (GAMMA): its parent is Service `echo`, so it routes what every sidecar sends
//! to that Service — a header match to `echo-v2`, the rest split 80/20 over `echo-v1` and
//! `echo-v2` — while the Service alone would balance over both pods evenly.

use meshd_tests::{HttpResult, yaml};

use crate::support::{
    ECHO_VIP, MeshSetup, assert_80_20_split, client_pod, echo_pod, echo_service,
    get_until_answered_by, tally,
};

const CLIENT_IP: &str = "10.77.6.20";
const V1_IP: &str = "10.77.6.10";
const V2_IP: &str = "10.77.6.11";

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-split, namespace: default}
spec:
  parentRefs: [{group: \"\", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-canary, value: \"yes\"}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - backendRefs:
    - {name: echo-v1, port: 8080, weight: 80}
    - {name: echo-v2, port: 8080, weight: 20}
";

fn version_service(version: &str, vip: &str) -> String {
    yaml::service(
        &format!("echo-{version}"),
        "default",
        vip,
        &[("http", 8080, 8080)],
        &[("app", "echo"), ("version", version)],
    )
}

#[test]
fn a_mesh_http_route_on_a_service_sends_a_header_match_to_v2_and_splits_the_rest_by_weight()
-> anyhow::Result<()> {
    let env = MeshSetup::new()
        .config([
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            version_service("v1", "10.96.6.21"),
            version_service("v2", "10.96.6.22"),
            ROUTE.to_string(),
        ])
        .app(
            echo_pod("echo-v1", V1_IP)?.label("version", "v1"),
            &[8080],
            &[],
        )
        .app(
            echo_pod("echo-v2", V2_IP)?.label("version", "v2"),
            &[8080],
            &[],
        )
        .caller(client_pod("sleep", CLIENT_IP)?)
        .start()?;
    let client = env.pod("sleep")?;
    let diagnostics = || {
        let pods = ["sleep", "echo-v1", "echo-v2"].map(|name| env.pod(name).unwrap());
        crate::support::diagnostics(&env.mesh, &env.meshd, &pods.each_ref())
    };
    let url = format!("http://{ECHO_VIP}:8080");
    let get = |path: &str, headers: &[&str]| -> HttpResult {
        let args: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
        client.curl(&format!("{url}{path}"), &args)
    };
    // Both versions answer once the route and their endpoints are in place.
    for pod in ["echo-v2", "echo-v1"] {
        let headers: &[&str] = if pod == "echo-v2" {
            &["x-canary: yes"]
        } else {
            &[]
        };
        let args: Vec<&str> = headers.iter().flat_map(|h| ["-H", *h]).collect();
        let first = get_until_answered_by(&client, &format!("{url}/warm"), &args, pod);
        assert_eq!(
            first.echo_pod().as_deref(),
            Some(pod),
            "{first:?}\n{}",
            diagnostics()
        );
    }

    // The header match: every request to v2.
    let canary = tally(20, |i| get(&format!("/canary/{i}"), &["x-canary: yes"]))?;
    assert_eq!(
        canary.get("echo-v2"),
        Some(&20),
        "{canary:?}\n{}",
        diagnostics()
    );
    let not_canary = tally(20, |i| get(&format!("/plain/{i}"), &["x-canary: no"]))?;
    assert!(
        not_canary.get("echo-v1") > Some(&5),
        "the split, not the match: {not_canary:?}"
    );

    // The rest: 80/20 within ten points over 200 requests.
    let seen = tally(200, |i| get(&format!("/split/{i}"), &[]))?;
    assert_80_20_split(&seen, ("echo-v1", "echo-v2"), &diagnostics());
    Ok(())
}
