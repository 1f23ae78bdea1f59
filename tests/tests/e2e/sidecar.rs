//! The basic path, end to end: `meshd serve` in the hub, sidecars bootstrapped by
//! `meshd bootstrap` and captured by `meshd iptables`, an app calling a Service's ClusterIP
//! through both sidecars (endpoints from an EndpointSlice), meshd's debug API listing the
//! connected proxies, and a new Service pushed and kept across a meshd restart.

use std::time::Duration;

use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_for, yaml};

const SERVER_IP: &str = "10.77.1.10";
const CLIENT_IP: &str = "10.77.1.20";
const ECHO_VIP: &str = "10.96.0.10";
const ECHO_CLUSTER: &str = "outbound|8080||echo.default.svc.cluster.local";
/// How long config may take to reach Envoy (debounce, push, warming).
const CONVERGE: Duration = Duration::from_secs(30);

struct EchoMesh {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    server: Pod,
}

#[derive(Clone, Copy)]
enum Xds {
    SotW,
    Delta,
}

/// `sleep` calls `echo` (Service `echo`, ClusterIP 10.96.0.10:8080) in namespace `default`,
/// both with sidecars; extra config documents are added to the initial file.
fn echo_mesh(xds: Xds, tls: bool, extra: &[String]) -> anyhow::Result<EchoMesh> {
    let mesh = Mesh::new()?;
    let sidecar = |spec: PodSpec| {
        let spec = spec.sidecar();
        let spec = if tls { spec.tls() } else { spec };
        match xds {
            Xds::SotW => spec,
            Xds::Delta => spec.delta(),
        }
    };
    let server_spec = sidecar(
        PodSpec::new("echo", "default")
            .ip(SERVER_IP.parse()?)
            .label("app", "echo")
            .service_account("echo"),
    );
    let client_spec = sidecar(
        PodSpec::new("sleep", "default")
            .ip(CLIENT_IP.parse()?)
            .label("app", "sleep")
            .service_account("sleep"),
    );
    let mut docs = vec![
        yaml::namespace("default", &[("istio-injection", "enabled")]),
        yaml::service(
            "echo",
            "default",
            ECHO_VIP,
            &[("http", 8080, 8080)],
            &[("app", "echo")],
        ),
        yaml::endpoint_slice(
            "echo-1",
            "default",
            "echo",
            &[(SERVER_IP, "echo")],
            &[("http", 8080)],
        ),
        server_spec.yaml()?,
        client_spec.yaml()?,
    ];
    docs.extend(extra.iter().cloned());
    mesh.write_config("mesh.yaml", &docs)?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let server = mesh.add_pod(server_spec)?;
    server.start_echo(&[8080], &[])?;
    let client = mesh.add_pod(client_spec)?;
    Ok(EchoMesh {
        mesh,
        meshd,
        client,
        server,
    })
}

/// Polls until `url` answers 200 from the client pod; the last answer either way.
fn get_until_ok(pod: &Pod, url: &str) -> HttpResult {
    let mut last = HttpResult::default();
    wait_for(CONVERGE, || {
        last = pod.curl(url, &[]);
        (last.status == 200).then_some(())
    });
    last
}

fn diagnostics(env: &EchoMesh) -> String {
    format!(
        "--- client envoy ---\n{}\n--- server envoy ---\n{}\n--- meshd ---\n{}",
        env.client.envoy_log(),
        env.server.envoy_log(),
        env.meshd.log()
    )
}

fn a_request_to_the_cluster_ip_reaches_the_pod_through_both_sidecars(
    xds: Xds,
) -> anyhow::Result<()> {
    let env = echo_mesh(xds, false, &[])?;

    let response = get_until_ok(&env.client, &format!("http://{ECHO_VIP}:8080/hi"));

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
    let env = echo_mesh(Xds::Delta, false, &[])?;

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
    let mut env = echo_mesh(Xds::SotW, false, &[])?;
    let second = |name: &str, vip: &str| {
        vec![
            yaml::service(
                name,
                "default",
                vip,
                &[("http", 8080, 8080)],
                &[("app", "echo")],
            ),
            yaml::endpoint_slice(
                &format!("{name}-1"),
                "default",
                name,
                &[(SERVER_IP, "echo")],
                &[("http", 8080)],
            ),
        ]
    };

    env.mesh
        .write_config("echo2.yaml", &second("echo2", "10.96.0.11"))?;
    let response = get_until_ok(&env.client, "http://10.96.0.11:8080/");
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));

    env.meshd.restart()?;
    env.mesh
        .write_config("echo3.yaml", &second("echo3", "10.96.0.12"))?;
    let response = get_until_ok(&env.client, "http://10.96.0.12:8080/");
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));
    let response = env.client.curl("http://10.96.0.11:8080/", &[]);
    assert_eq!(response.status, 200, "kept after the restart: {response:?}");
    Ok(())
}
