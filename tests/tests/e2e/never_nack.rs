//! Config Envoy would reject never reaches it, and what istiod accepts works: for each class of
//! input that used to break whole resource types (numbers out of range, regexes of realistic size,
//! Go-style durations, overlapping hosts), the good config keeps serving, a proxy that starts
//! while the bad object is present gets full working config, no Envoy rejects an update, and
//! `meshd analyze` names what is wrong. A proxy that rejects config anyway costs only the object
//! the config came from: it is quarantined and reported, and everything else keeps flowing.

use std::collections::BTreeMap;

use anyhow::Context as _;
use meshd_tests::yaml::virtual_service;
use meshd_tests::{HttpResult, Pod, wait_for, wait_until};

use crate::support::cli::{analyze_dir, debug_json, describe, in_hub, metric, stdout};
use crate::support::{
    CONVERGE, ECHO_VIP, HOT_RELOAD, MeshEnv, MeshSetup, client_pod, echo_pod, echo_service,
    get_until_ok,
};

const ECHO_IP: &str = "10.77.1.10";
const CLIENT_IP: &str = "10.77.1.20";
const LATE_CLIENT_IP: &str = "10.77.1.21";
/// A second Service on the echo pods, for routes of their own.
const OTHER_VIP: &str = "10.96.0.11";

/// The echo pod behind Services `echo` (8080) and `other` (8081), a client, and `extra`.
fn mesh(extra: Vec<String>, meshd_args: &[&str]) -> anyhow::Result<MeshEnv> {
    MeshSetup::new()
        .config([
            echo_service("echo", ECHO_VIP, &[("http", 8080)]),
            echo_service("other", OTHER_VIP, &[("http", 8081)]),
        ])
        .config(extra)
        .meshd_args(meshd_args)
        .app(echo_pod("echo-0", ECHO_IP)?, &[8080, 8081], &[])
        .caller(client_pod("client", CLIENT_IP)?)
        .start()
}

/// Every `*update_rejected` counter of the pod's Envoy that is not 0.
fn rejected_updates(pod: &Pod) -> anyhow::Result<BTreeMap<String, u64>> {
    Ok(pod
        .envoy_stats()?
        .into_iter()
        .filter(|(name, value)| name.ends_with("update_rejected") && *value > 0)
        .collect())
}

/// The good config serves, a proxy started now gets full config, and no Envoy rejected anything.
fn assert_rest_keeps_flowing(env: &MeshEnv) -> anyhow::Result<()> {
    let client = env.pod("client")?;
    let answer = get_until_ok(
        &client,
        "http://echo:8080/",
        &["--resolve", &format!("echo:8080:{ECHO_VIP}")],
    );
    anyhow::ensure!(answer.status == 200, "echo is not served: {answer:?}");
    let late = env
        .mesh
        .add_pod(client_pod("late-client", LATE_CLIENT_IP)?)?;
    let answer = get_until_ok(
        &late,
        "http://echo:8080/",
        &["--resolve", &format!("echo:8080:{ECHO_VIP}")],
    );
    anyhow::ensure!(
        answer.status == 200,
        "a proxy started now gets no working config: {answer:?}\n{}",
        env.meshd.log()
    );
    for pod in [client, late, env.pod("echo-0")?] {
        let rejected = rejected_updates(&pod)?;
        anyhow::ensure!(
            rejected.is_empty(),
            "{} rejected updates: {rejected:?}\n{}",
            pod.proxy_id(),
            pod.envoy_log()
        );
    }
    Ok(())
}

/// `meshd analyze` over the mesh's config: its output, and whether it found errors.
fn analyze(env: &MeshEnv) -> anyhow::Result<(String, bool)> {
    let output = analyze_dir(&env.mesh.config_dir())?;
    Ok((stdout(&output), output.status.code() == Some(1)))
}

#[test]
fn a_port_out_of_range_is_refused_and_everything_else_keeps_flowing() -> anyhow::Result<()> {
    let bad = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: bad-port, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 70000, name: http, protocol: HTTP}]
  resolution: DNS
"
    .to_owned();
    let env = mesh(vec![bad], &[])?;
    assert_rest_keeps_flowing(&env)?;
    let (text, errors) = analyze(&env)?;
    assert!(errors, "{text}");
    assert!(
        text.contains("ServiceEntry default/bad-port") && text.contains("spec.ports[0]"),
        "analyze names the object and field: {text}"
    );
    Ok(())
}

#[test]
fn a_realistic_regex_istiod_accepts_routes_requests() -> anyhow::Result<()> {
    let routes = virtual_service(
        "tenants",
        "echo",
        r"  - match: [{headers: {x-tenant: {regex: '[a-z0-9-]{1,63}\.example\.com'}}}]
    headers: {response: {set: {x-route: tenant}}}
    route: [{destination: {host: echo}}]
  - route: [{destination: {host: echo}}]
",
    );
    let env = mesh(vec![routes], &[])?;
    assert_rest_keeps_flowing(&env)?;
    let client = env.pod("client")?;
    let resolve = format!("echo:8080:{ECHO_VIP}");
    let mut last = HttpResult::default();
    let routed = wait_for(CONVERGE, || {
        last = client.curl(
            "http://echo:8080/",
            &["--resolve", &resolve, "-H", "x-tenant: shop-7.example.com"],
        );
        (last.header("x-route") == Some("tenant")).then_some(())
    });
    assert!(routed.is_some(), "the regex route never matched: {last:?}");
    let other = client.curl(
        "http://echo:8080/",
        &["--resolve", &resolve, "-H", "x-tenant: SHOP!"],
    );
    assert_eq!(other.status, 200);
    assert_eq!(other.header("x-route"), None, "{other:?}");
    let (text, errors) = analyze(&env)?;
    assert!(!errors, "{text}");
    Ok(())
}

#[test]
fn go_style_durations_take_effect() -> anyhow::Result<()> {
    let routes = virtual_service(
        "slow-ok",
        "echo",
        "  - timeout: 1m30s
    retries: {attempts: 2, perTryTimeout: 500ms}
    route: [{destination: {host: echo}}]
",
    );
    let env = mesh(vec![routes], &[])?;
    assert_rest_keeps_flowing(&env)?;
    let client = env.pod("client")?;
    let applied = wait_until(CONVERGE, || {
        client
            .envoy_admin("/config_dump?resource=dynamic_route_configs")
            .is_ok_and(|dump| dump.contains("\"90s\"") && dump.contains("\"0.500s\""))
    });
    assert!(applied, "the durations never reached the client's routes");
    let (text, errors) = analyze(&env)?;
    assert!(!errors, "{text}");
    Ok(())
}

#[test]
fn overlapping_hosts_never_duplicate_a_domain() -> anyhow::Result<()> {
    // One host declared twice, in two namespaces, and a Service whose short name collides.
    let entry = |namespace: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shared, namespace: {namespace}}}
spec:
  hosts: [shared.example.com, echo]
  addresses: [{ECHO_VIP}]
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {ECHO_IP}}}]
"
        )
    };
    let other_namespace = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n".to_owned();
    let env = mesh(vec![other_namespace, entry("default"), entry("other")], &[])?;
    assert_rest_keeps_flowing(&env)?;
    let client = env.pod("client")?;
    let answer = get_until_ok(
        &client,
        "http://shared.example.com:8080/",
        &["--resolve", &format!("shared.example.com:8080:{ECHO_VIP}")],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    Ok(())
}

#[test]
fn a_rejected_route_quarantines_its_object_and_everything_else_keeps_flowing() -> anyhow::Result<()>
{
    // The fault breaks the routes VirtualService `faulty` produces after meshd checked them, as
    // a checker miss would; the proxies reject them.
    let faulty = virtual_service(
        "faulty",
        "other",
        "  - match: [{uri: {prefix: /f}}]\n    route: [{destination: {host: other}}]\n",
    );
    let echo_routes = |value: &str| {
        virtual_service(
            "echo-routes",
            "echo",
            &format!(
                "  - headers: {{response: {{set: {{x-version: {value}}}}}}}\n    route: [{{destination: {{host: echo}}}}]\n"
            ),
        )
    };
    let env = mesh(
        vec![faulty, echo_routes("one")],
        &["--fault-invalid-routes-of", "VirtualService/default/faulty"],
    )?;
    let client = env.pod("client")?;

    // Quarantined, reported as a finding, a metric and a log line naming Envoy's message.
    let quarantined = wait_until(CONVERGE, || {
        metric(&env.mesh, "meshd_quarantined_objects") == 1
    });
    assert!(quarantined, "nothing quarantined\n{}", env.meshd.log());
    assert!(metric(&env.mesh, "pilot_total_xds_rejects") >= 1);
    let configz = debug_json(&env.mesh, "/debug/configz")?;
    let findings = configz["findings"].as_array().cloned().unwrap_or_default();
    let finding = findings
        .iter()
        .find(|f| f["code"] == "MESHD0001")
        .with_context(|| format!("no quarantine finding: {findings:#?}"))?;
    assert_eq!(finding["object"]["name"], "faulty", "{finding}");
    assert!(
        finding["message"]
            .as_str()
            .unwrap_or_default()
            .contains("fault"),
        "the finding carries Envoy's message: {finding}"
    );
    let log = env.meshd.log();
    assert!(
        log.contains("quarantining") && log.contains("faulty"),
        "meshd's log names the object"
    );
    let status = in_hub(&env.mesh, &["proxy-status"])?;
    let printed = stdout(&status);
    assert!(
        printed.contains("QUARANTINED") && printed.contains("VirtualService default/faulty"),
        "proxy-status shows it: {}",
        describe(&status)
    );

    // Everything else: routes for `other` without the faulty object, edits elsewhere arrive.
    let resolve_other = format!("other:8081:{OTHER_VIP}");
    let answer = get_until_ok(
        &client,
        "http://other:8081/f",
        &["--resolve", &resolve_other],
    );
    assert_eq!(answer.status, 200, "{answer:?}");
    // A file after `mesh.yaml`: the later file's copy of an object wins.
    env.mesh
        .write_config("routes.yaml", &[echo_routes("two")])?;
    let resolve = format!("echo:8080:{ECHO_VIP}");
    let mut last = HttpResult::default();
    let arrived = wait_for(HOT_RELOAD * 5, || {
        last = client.curl("http://echo:8080/", &["--resolve", &resolve]);
        (last.header("x-version") == Some("two")).then_some(())
    });
    assert!(
        arrived.is_some(),
        "an edit elsewhere did not arrive: {last:?}"
    );
    // The proxies hold what they were sent: routes synced again.
    let synced = wait_until(CONVERGE, || {
        client
            .envoy_admin("/config_dump?resource=dynamic_route_configs")
            .is_ok_and(|dump| !dump.contains("(?=fault)"))
            && metric(&env.mesh, "meshd_quarantined_objects") == 1
    });
    assert!(synced, "the broken routes are still held");
    Ok(())
}
