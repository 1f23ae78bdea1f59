//! Security end to end: meshd's CA, SDS over the TLS port only, mutual TLS between stock Envoy
//! sidecars per PeerAuthentication, identity proof, and certificate and root rotation.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_until, yaml};

use crate::support::cli::metric;
use crate::support::{
    CONVERGE, ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, get_until_ok,
};

const SERVER_IP: &str = "10.77.1.10";
const CLIENT_IP: &str = "10.77.1.20";
const OUTSIDER_IP: &str = "10.77.1.30";

struct Env {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    client: Pod,
    server: Pod,
}

/// `sleep` (sa `sleep`, Delta xDS) calls `echo` (sa `echo`, ports 8080 and 9090), both with
/// sidecars that reach meshd over TLS; `extra` documents go into the same file.
fn tls_mesh(extra: &[String], meshd_args: &[&str]) -> anyhow::Result<Env> {
    let env = MeshSetup::new()
        .config([echo_service(
            "echo",
            ECHO_VIP,
            &[("http", 8080), ("http-metrics", 9090)],
        )])
        .config(extra.iter().cloned())
        .meshd_args(meshd_args)
        .app(echo_pod("echo", SERVER_IP)?.tls(), &[8080, 9090], &[])
        .caller(client_pod("sleep", CLIENT_IP)?.tls().delta())
        .start()?;
    Ok(Env {
        client: env.pod("sleep")?,
        server: env.pod("echo")?,
        mesh: env.mesh,
        meshd: env.meshd,
    })
}

fn outsider(env: &Env) -> anyhow::Result<Pod> {
    env.mesh
        .add_pod(PodSpec::new("outsider", "default").ip(OUTSIDER_IP.parse()?))
}

fn echo_url(port: u16) -> String {
    format!("http://{ECHO_VIP}:{port}/")
}

fn diagnostics(env: &Env) -> String {
    crate::support::diagnostics(&env.mesh, &env.meshd, &[&env.client, &env.server])
}

fn xfcc(response: &HttpResult) -> String {
    response
        .json()
        .ok()
        .and_then(|b| {
            b["headers"]["x-forwarded-client-cert"]
                .as_str()
                .map(String::from)
        })
        .unwrap_or_default()
}

/// Serial numbers of the certificates an Envoy holds (admin `/certs`).
fn cert_serials(pod: &Pod) -> BTreeSet<String> {
    let body = pod.envoy_admin("/certs").unwrap_or_default();
    let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    value["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["cert_chain"].as_array().cloned().unwrap_or_default())
        .filter(|c| {
            c["subject_alt_names"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .filter_map(|c| c["serial_number"].as_str().map(String::from))
        .collect()
}

fn strict_namespace() -> String {
    yaml::peer_authentication("default", "default", "STRICT")
}

#[test]
fn sidecars_talk_mutual_tls_and_the_app_sees_the_callers_spiffe_id() -> anyhow::Result<()> {
    let env = tls_mesh(&[], &[])?;
    let response = get_until_ok(&env.client, &echo_url(8080), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));
    let xfcc = xfcc(&response);
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/sleep"),
        "x-forwarded-client-cert: {xfcc:?}"
    );
    assert!(
        env.server
            .envoy_stat("listener.0.0.0.0_15006.ssl.handshake")
            .unwrap_or(0)
            >= 1
    );
    // Certificates came from meshd's CA, for each proxy's own identity.
    assert!(!cert_serials(&env.client).is_empty() && !cert_serials(&env.server).is_empty());
    Ok(())
}

#[test]
fn permissive_by_default_serves_a_pod_without_a_sidecar_in_plaintext() -> anyhow::Result<()> {
    let env = tls_mesh(&[], &[])?;
    get_until_ok(&env.client, &echo_url(8080), &[]);
    let plain = outsider(&env)?.curl(&format!("http://{SERVER_IP}:8080/"), &[]);
    assert_eq!(plain.status, 200, "{plain:?}");
    assert_eq!(
        xfcc(&plain),
        "",
        "a plaintext caller has no identity to forward"
    );
    Ok(())
}

#[test]
fn strict_refuses_a_pod_without_a_sidecar_and_serves_the_mesh() -> anyhow::Result<()> {
    let env = tls_mesh(&[strict_namespace()], &[])?;
    let response = get_until_ok(&env.client, &echo_url(8080), &[]);
    assert_eq!(response.status, 200, "{response:?}\n{}", diagnostics(&env));
    assert!(xfcc(&response).contains("URI=spiffe://cluster.local/ns/default/sa/sleep"));
    let plain = outsider(&env)?.curl(&format!("http://{SERVER_IP}:8080/"), &["--max-time", "5"]);
    assert_ne!(plain.status, 200, "STRICT served plaintext: {plain:?}");
    Ok(())
}

#[test]
fn disable_on_one_port_lets_plaintext_through_there_only() -> anyhow::Result<()> {
    let metrics_port = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: echo-metrics, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  portLevelMtls:
    \"9090\": {mode: DISABLE}
"
    .to_string();
    let env = tls_mesh(&[strict_namespace(), metrics_port], &[])?;
    let meshed = get_until_ok(&env.client, &echo_url(8080), &[]);
    assert!(xfcc(&meshed).contains("sa/sleep"), "{meshed:?}");
    // The mesh client follows the port's mode too: plaintext to 9090, so no identity there.
    let metrics = get_until_ok(&env.client, &echo_url(9090), &[]);
    assert_eq!(metrics.status, 200, "{metrics:?}\n{}", diagnostics(&env));
    assert_eq!(xfcc(&metrics), "");
    let outsider = outsider(&env)?;
    let open = outsider.curl(&format!("http://{SERVER_IP}:9090/"), &["--max-time", "5"]);
    assert_eq!(open.status, 200, "{open:?}");
    let closed = outsider.curl(&format!("http://{SERVER_IP}:8080/"), &["--max-time", "5"]);
    assert_ne!(closed.status, 200, "{closed:?}");
    Ok(())
}

#[test]
fn a_proxy_claiming_another_pods_identity_gets_no_certificate() -> anyhow::Result<()> {
    let env = tls_mesh(&[], &[])?;
    get_until_ok(&env.client, &echo_url(8080), &[]);
    // A pod at another address bootstraps as `echo` and asks for echo's certificate.
    let imposter = env
        .mesh
        .add_pod(PodSpec::new("imposter", "default").ip(OUTSIDER_IP.parse()?))?;
    let root = imposter.dir().join("root-cert.pem");
    std::fs::copy(env.mesh.ca_dir().join("root-cert.pem"), &root)?;
    let bootstrap = imposter.dir().join("claims-echo.json");
    let tools = meshd_tests::deps::tools()?;
    let out = imposter.exec(&[
        tools.meshd.to_str().unwrap(),
        "bootstrap",
        "--pod",
        "echo",
        "--namespace",
        "default",
        "--ip",
        OUTSIDER_IP,
        "--service-account",
        "echo",
        "--labels",
        "app=echo",
        "--xds-addr",
        &env.mesh.secure_addr().to_string(),
        "--root-cert",
        root.to_str().unwrap(),
        "-o",
        bootstrap.to_str().unwrap(),
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    imposter.spawn(&[
        tools.envoy.to_str().unwrap(),
        "-c",
        bootstrap.to_str().unwrap(),
        "--disable-hot-restart",
        "--base-id",
        "9",
    ])?;
    let refused = wait_until(CONVERGE, || {
        metric(&env.mesh, "meshd_xds_identity_rejections_total") > 0
    });
    assert!(
        refused,
        "meshd never refused the imposter\n{}",
        env.meshd.log()
    );
    assert!(
        env.meshd.log().contains("identity not proven"),
        "{}",
        env.meshd.log()
    );
    assert!(
        cert_serials(&imposter).is_empty(),
        "the imposter holds a certificate"
    );
    // The real echo keeps its own stream and certificate.
    let syncz = env.mesh.meshd_debug("/debug/syncz")?;
    let proxies: serde_json::Value = serde_json::from_str(&syncz)?;
    let echoes: Vec<_> = proxies
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["proxy"] == "echo.default")
        .collect();
    assert_eq!(echoes.len(), 1, "{syncz}");
    assert_eq!(
        echoes[0]["remote_addr"].as_str().unwrap().split(':').next(),
        Some(SERVER_IP)
    );
    Ok(())
}

#[test]
fn secrets_are_never_served_on_the_plaintext_port() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let spec = PodSpec::new("plain", "default")
        .ip(CLIENT_IP.parse()?)
        .service_account("plain")
        .sidecar();
    mesh.write_config("mesh.yaml", &[spec.yaml()?, strict_namespace()])?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let pod = mesh.add_pod(spec)?;
    let synced = wait_until(CONVERGE, || {
        pod.envoy_stat("listener_manager.lds.update_success")
            .unwrap_or(0)
            >= 1
    });
    assert!(synced, "{}", meshd.log());
    assert!(
        cert_serials(&pod).is_empty(),
        "a plaintext-port proxy got a certificate"
    );
    let dump = mesh.meshd_debug("/debug/config_dump?proxyID=plain.default")?;
    let dump: serde_json::Value = serde_json::from_str(&dump)?;
    assert_eq!(dump["secrets"], serde_json::json!([]), "{dump}");
    Ok(())
}

#[test]
fn certificates_rotate_before_expiry_without_dropping_traffic() -> anyhow::Result<()> {
    // 150 s certificates, backdated 2 minutes like Istio's, are due for renewal every ~15 s.
    let env = tls_mesh(&[strict_namespace()], &["--workload-cert-ttl", "150s"])?;
    get_until_ok(&env.client, &echo_url(8080), &[]);
    let mut seen = cert_serials(&env.client);
    let started = Instant::now();
    let mut failures = Vec::new();
    while started.elapsed() < Duration::from_secs(40) && seen.len() < 3 {
        let r = env.client.curl(&echo_url(8080), &["--max-time", "5"]);
        if r.status != 200 {
            failures.push(r);
        }
        seen.extend(cert_serials(&env.client));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.len() >= 3,
        "client certificate did not rotate twice in 40 s: {seen:?}\n{}",
        env.meshd.log()
    );
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    let dump: serde_json::Value = serde_json::from_str(
        &env.mesh
            .meshd_debug("/debug/config_dump?proxyID=sleep.default")?,
    )?;
    let text = dump["secrets"].to_string();
    assert!(!text.contains("PRIVATE KEY"), "config_dump leaks a key");
    Ok(())
}

#[test]
fn a_ca_root_change_rolls_without_errors() -> anyhow::Result<()> {
    let env = tls_mesh(&[strict_namespace()], &[])?;
    get_until_ok(&env.client, &echo_url(8080), &[]);
    let before = cert_serials(&env.client);
    // An operator drops a new plug-in CA into the CA directory.
    let fresh = env.mesh.dir().join("fresh-ca");
    meshd_ca::CertificateAuthority::load_or_generate(meshd_ca::CaOptions {
        dir: fresh.clone(),
        trust_domain: "cluster.local".into(),
        workload_ttl: Duration::from_secs(24 * 3600),
        max_ttl: Duration::from_secs(90 * 24 * 3600),
    })?;
    for file in [
        "ca-key.pem",
        "ca-cert.pem",
        "cert-chain.pem",
        "root-cert.pem",
    ] {
        let tmp = env.mesh.ca_dir().join(format!(".{file}.new"));
        std::fs::copy(fresh.join(file), &tmp)?;
        std::fs::rename(&tmp, env.mesh.ca_dir().join(file))?;
    }
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut rolled = false;
    while started.elapsed() < Duration::from_secs(30) && !rolled {
        let r = env.client.curl(&echo_url(8080), &["--max-time", "5"]);
        if r.status != 200 {
            failures.push(r);
        }
        let now = cert_serials(&env.client);
        rolled =
            !now.is_empty() && now.is_disjoint(&before) && !cert_serials(&env.server).is_empty();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        rolled,
        "the client never got a certificate from the new CA\n{}",
        env.meshd.log()
    );
    // Keep calling for a while after the roll: both sides now hold new-CA certificates.
    for _ in 0..10 {
        let r = env.client.curl(&echo_url(8080), &["--max-time", "5"]);
        if r.status != 200 {
            failures.push(r);
        }
    }
    assert!(
        failures.is_empty(),
        "requests failed across the root change: {failures:?}\n{}",
        diagnostics(&env)
    );
    Ok(())
}
