//! The basic path, end to end: `meshd serve` in the hub, sidecars bootstrapped by
//! `meshd bootstrap` and captured by `meshd iptables`, an app calling a Service's ClusterIP
//! through both sidecars (endpoints from an EndpointSlice), meshd's debug API listing the
//! connected proxies, and a new Service pushed and kept across a meshd restart.

use meshd_tests::{Mesh, Meshd, Pod, yaml};

use crate::support::{ECHO_VIP, MeshSetup, Xds, client_pod, echo_pod, echo_service, get_until_ok};

const SERVER_IP: &str = "10.77.1.10";
const CLIENT_IP: &str = "10.77.1.20";
const ECHO_CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";

struct EchoMesh {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    server: Pod,
}

/// `sleep` calls `echo` (Service `echo`, ClusterIP 10.96.0.10:8080, endpoints from EndpointSlice
/// `echo-1`) in namespace `default`, both with sidecars.
fn echo_mesh(xds: Xds) -> anyhow::Result<EchoMesh> {
    let env = MeshSetup::new()
        .config(echo_services("echo", ECHO_VIP))
        .app(xds.speak(echo_pod("echo", SERVER_IP)?), &[8080], &[])
        .caller(xds.speak(client_pod("sleep", CLIENT_IP)?))
        .start()?;
    Ok(EchoMesh {
        client: env.pod("sleep")?,
        server: env.pod("echo")?,
        mesh: env.mesh,
        meshd: env.meshd,
    })
}

/// Service `name` on port 8080 with its endpoint, the `echo` pod, in EndpointSlice `NAME-1`.
fn echo_services(name: &str, vip: &str) -> Vec<String> {
    vec![
        echo_service(name, vip, &[("http", 8080)]),
        yaml::endpoint_slice(
            &format!("{name}-1"),
            "default",
            name,
            &[(SERVER_IP, "echo")],
            &[("http", 8080)],
        ),
    ]
}

fn diagnostics(env: &EchoMesh) -> String {
    crate::support::diagnostics(&env.mesh, &env.meshd, &[&env.client, &env.server])
}

fn a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars(
    xds: Xds,
) -> anyhow::Result<()> {
    let env = echo_mesh(xds)?;

    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/hi"), &[]);

    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));
    let body = response.json()?;
    assert_eq!(body["pod"], "echo");
    assert_eq!(body["path"], "/hi");
    assert!(
        body["headers"]["x-request-id"].is_string(),
        "the client sidecar's HTTP connection manager handled it: {body}"
    );
    assert!(
        body["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.6:"),
        "the server sidecar delivered it: {body}"
    );
    let sent = env
        .client
        .envoy_stat(&format!("cluster.{ECHO_CLUSTER}.upstream_rq_total"));
    assert!(
        sent >= Some(1),
        "{ECHO_CLUSTER} upstream_rq_total: {sent:?}"
    );
    let received = env
        .server
        .envoy_stat("cluster.inbound|8080||.upstream_cx_total");
    assert!(
        received >= Some(1),
        "inbound|8080|| upstream_cx_total: {received:?}"
    );
    Ok(())
}

#[test]
fn a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars_over_sotw_xds()
-> anyhow::Result<()> {
    a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars(Xds::SotW)
}

#[test]
fn a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars_over_delta_xds()
-> anyhow::Result<()> {
    a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars(Xds::Delta)
}

#[test]
fn meshd_lists_connected_sidecars_and_their_config() -> anyhow::Result<()> {
    let env = echo_mesh(Xds::Delta)?;

    let syncz = env.mesh.meshd_debug("/debug/syncz")?;
    assert!(syncz.contains("sleep.default"), "{syncz}");
    assert!(syncz.contains("echo.default"), "{syncz}");
    let dump = env.mesh.meshd_debug(&format!(
        "/debug/config_dump?proxyID={}",
        env.client.proxy_id()
    ))?;
    assert!(dump.contains("virtualOutbound"), "{dump}");
    assert!(dump.contains(ECHO_CLUSTER), "{dump}");

    let envoy_dump = env.client.envoy_admin("/config_dump")?;
    assert!(envoy_dump.contains("virtualOutbound"));
    assert!(envoy_dump.contains("virtualInbound"));
    assert!(envoy_dump.contains(ECHO_CLUSTER));
    Ok(())
}

#[test]
fn a_new_service_in_the_config_dir_is_pushed_and_survives_a_meshd_restart() -> anyhow::Result<()> {
    let mut env = echo_mesh(Xds::SotW)?;
    env.mesh
        .write_config("echo2.yaml", &echo_services("echo2", "10.96.0.11"))?;
    let response = get_until_ok(&env.client, "http://10.96.0.11:8080/", &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));

    env.meshd.restart()?;
    env.mesh
        .write_config("echo3.yaml", &echo_services("echo3", "10.96.0.12"))?;
    let response = get_until_ok(&env.client, "http://10.96.0.12:8080/", &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));
    let response = env.client.curl("http://10.96.0.11:8080/", &[]);
    assert_eq!(response.status, 200, "kept after the restart: {response:?}");
    Ok(())
}
