//! Mesh in a box proven on its own, without `meshd serve`: pods are wired, `meshd iptables`
//! captures an app's traffic into an Envoy running as uid 1337 (with a hand-written static
//! bootstrap shaped like Istio's `virtualOutbound`/`virtualInbound`), Envoy's own traffic is not
//! captured again, and meshes clean up after themselves.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use meshd_tests::{Mesh, Pod, PodSpec};

/// Istio's passthrough design in miniature: 15001 and 15006 restore the original destination
/// and forward it unchanged; inbound connections reach the app from 127.0.0.6.
const PASSTHROUGH_BOOTSTRAP: &str = r#"
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
static_resources:
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: PassthroughCluster
          cluster: PassthroughCluster
  - name: virtualInbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15006}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: InboundPassthroughCluster
          cluster: InboundPassthroughCluster
  clusters:
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
  - name: InboundPassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 5s
    upstream_bind_config: {source_address: {address: 127.0.0.6, port_value: 0}}
"#;

fn stat(pod: &Pod, name: &str) -> anyhow::Result<u64> {
    pod.envoy_stat(name)
        .with_context(|| format!("Envoy in {} has no stat {name}", pod.proxy_id()))
}

#[test]
fn an_apps_outbound_request_is_captured_into_envoy_and_envoys_own_is_not() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let server = mesh.add_pod(PodSpec::new("server", "default"))?;
    server.start_echo(&[8080], &[])?;
    let client = mesh.add_pod(PodSpec::new("client", "default"))?;
    client.install_iptables(&[])?;
    client.start_envoy_with(PASSTHROUGH_BOOTSTRAP)?;
    let before = stat(&client, "cluster.PassthroughCluster.upstream_cx_total")?;

    let response = client.curl(&format!("http://{}:8080/hello?x=1", server.ip()), &[]);

    // Had Envoy's upstream connection been captured too, it would loop into 15001 forever.
    assert_eq!(response.status, 200, "{response:?}\n{}", client.envoy_log());
    let body = response.json()?;
    assert_eq!(body["pod"], "server");
    assert_eq!(body["path"], "/hello");
    assert_eq!(body["query"], "x=1");
    let remote = body["remote"].as_str().unwrap_or_default();
    assert!(remote.starts_with(&format!("{}:", client.ip())), "{body}");
    let after = stat(&client, "cluster.PassthroughCluster.upstream_cx_total")?;
    assert_eq!(after, before + 1, "exactly one upstream connection");
    Ok(())
}

#[test]
fn inbound_requests_are_captured_into_envoy_and_reach_the_app_from_127_0_0_6() -> anyhow::Result<()>
{
    let mesh = Mesh::new()?;
    let server = mesh.add_pod(PodSpec::new("server", "default"))?;
    server.install_iptables(&[])?;
    server.start_envoy_with(PASSTHROUGH_BOOTSTRAP)?;
    server.start_echo(&[8080], &[])?;
    let client = mesh.add_pod(PodSpec::new("client", "default"))?;
    let url = format!("http://{}:8080/in", server.ip());

    let response = client.curl(&url, &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", server.envoy_log());
    let body = response.json()?;
    assert!(
        body["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.6:"),
        "the app sees Envoy's inbound passthrough source: {body}"
    );
    assert_eq!(
        stat(
            &server,
            "cluster.InboundPassthroughCluster.upstream_cx_total"
        )?,
        1
    );

    // An app calling its own pod IP stays on lo, untouched, as with istio-init.
    let body = server.curl(&url, &[]).json()?;
    assert!(
        body["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{}:", server.ip())),
        "{body}"
    );
    assert_eq!(
        stat(
            &server,
            "cluster.InboundPassthroughCluster.upstream_cx_total"
        )?,
        1
    );

    // Re-running with the app port excluded replaces the rules: the client now reaches the app
    // directly.
    server.install_iptables(&["--exclude-inbound-ports", "8080"])?;
    let body = client.curl(&url, &[]).json()?;
    assert!(
        body["remote"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("{}:", client.ip())),
        "{body}"
    );
    assert_eq!(
        stat(
            &server,
            "cluster.InboundPassthroughCluster.upstream_cx_total"
        )?,
        1
    );
    Ok(())
}

#[test]
fn running_meshd_iptables_twice_installs_exactly_the_dry_run_rules_once() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let pod = mesh.add_pod(PodSpec::new("app", "default"))?;
    let flags = [
        "--exclude-outbound-cidrs",
        "10.77.0.1/32,192.168.0.0/16",
        "--exclude-outbound-ports",
        "5432",
    ];
    pod.install_iptables(&flags)?;
    pod.install_iptables(&flags)?;

    let meshd = meshd_tests::deps::tools()?.meshd.display().to_string();
    let mut dry_run = vec![meshd.as_str(), "iptables", "--dry-run"];
    dry_run.extend(flags);
    let expected = String::from_utf8(pod.exec(&dry_run)?.stdout)?;
    let saved = pod.iptables_save()?;
    // iptables-save lists rules chain by chain; within a chain the order must be ours.
    for chain in [
        "PREROUTING",
        "OUTPUT",
        "ISTIO_INBOUND",
        "ISTIO_IN_REDIRECT",
        "ISTIO_OUTPUT",
        "ISTIO_REDIRECT",
    ] {
        let rules = |text: &str| -> Vec<String> {
            let prefix = format!("-A {chain} ");
            text.lines()
                .filter(|line| line.starts_with(&prefix))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(
            rules(&saved),
            rules(&expected),
            "chain {chain}; iptables-save:\n{saved}"
        );
    }
    Ok(())
}

#[test]
fn the_echo_app_honours_status_and_counts_requests_and_echoes_tcp_lines() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let server = mesh.add_pod(PodSpec::new("echo", "apps"))?;
    server.start_echo(&[8080, 8081], &[9000])?;
    let client = mesh.add_pod(PodSpec::new("client", "apps"))?;
    let base = format!("http://{}", server.ip());

    let teapot = client.curl(
        &format!("{base}:8080/brew?status=418"),
        &["-H", "x-test: yes"],
    );
    assert_eq!(teapot.status, 418, "{teapot:?}");
    assert_eq!(teapot.header("content-type"), Some("application/json"));
    let body = teapot.json()?;
    assert_eq!(body["headers"]["x-test"], "yes");
    assert_eq!(body["namespace"], "apps");
    assert_eq!(body["port"], 8080);
    assert_eq!(
        client
            .curl(&format!("{base}:8081/brew?delay_ms=50"), &[])
            .json()?["port"],
        8081
    );

    let counts = client
        .curl(&format!("{base}:8080/_count?reset=1"), &[])
        .json()?;
    assert_eq!(counts, serde_json::json!({"/brew": 2}));
    let counts = client.curl(&format!("{base}:8080/_count"), &[]).json()?;
    assert_eq!(counts, serde_json::json!({}));

    let script = format!(
        "exec 3<>/dev/tcp/{}/9000; printf 'one\\ntwo\\n' >&3; head -n 2 <&3",
        server.ip()
    );
    let output = client.exec(&["bash", "-c", &script])?;
    assert_eq!(String::from_utf8(output.stdout)?, "echo: one\necho: two\n");
    Ok(())
}

#[test]
fn two_meshes_share_addresses_without_meeting_and_vanish_when_dropped() -> anyhow::Result<()> {
    let mut names = Vec::new();
    {
        let meshes = [Mesh::new()?, Mesh::new()?];
        let mut clients = Vec::new();
        for (mesh, namespace) in meshes.iter().zip(["alpha", "beta"]) {
            let server =
                mesh.add_pod(PodSpec::new("server", namespace).ip("10.77.1.10".parse()?))?;
            server.start_echo(&[8080], &[])?;
            clients.push(mesh.add_pod(PodSpec::new("client", "default"))?);
        }
        for (client, namespace) in clients.iter().zip(["alpha", "beta"]) {
            let body = client.curl("http://10.77.1.10:8080/", &[]).json()?;
            assert_eq!(body["namespace"], namespace);
        }
        for mesh in &meshes {
            names.extend(mesh.netns_names());
        }
        assert_eq!(names.len(), 6);
        assert!(names.iter().all(|name| netns_exists(name)), "{names:?}");
    }
    let left: Vec<&String> = names.iter().filter(|name| netns_exists(name)).collect();
    assert!(left.is_empty(), "namespaces left after drop: {left:?}");
    Ok(())
}

#[test]
fn namespaces_left_by_a_dead_test_process_are_removed_by_the_next_mesh() -> anyhow::Result<()> {
    let mut gone = Command::new("true").spawn()?;
    let dead_pid = gone.id();
    gone.wait()?;
    let stale = format!("mx{dead_pid}-0-hub");
    let status = Command::new("ip").args(["netns", "add", &stale]).status()?;
    assert!(status.success());

    let _mesh = Mesh::new()?;

    assert!(!netns_exists(&stale), "{stale} survived");
    Ok(())
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}
