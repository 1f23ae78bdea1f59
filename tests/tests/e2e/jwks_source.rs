//! JWKS documents are a config source like any other: meshd fetches `jwksUri`s on its own time,
//! so an issuer that never answers delays no other change, and fetches go through the proxy the
//! environment names (`HTTP_PROXY`), as users behind an egress proxy need.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use meshd_tests::{Mesh, Pod, PodSpec, wait_until, yaml};

use crate::support::jwt::Issuer;
use crate::support::{
    CONVERGE, ECHO_VIP, MeshSetup, client_pod, echo_pod, echo_service, write_readable,
};

const CLIENT_IP: &str = "10.77.1.20";
const ECHO_IP: &str = "10.77.1.10";
/// Pods without sidecars: an issuer that accepts connections and never answers, and a proxy.
const SILENT_IP: &str = "10.77.2.30";
const PROXY_IP: &str = "10.77.2.31";
const SILENT_PORT: u16 = 8081;
const PROXY_PORT: u16 = 3128;
/// How fast an unrelated edit must reach a proxy while a `jwksUri` hangs.
const UNDELAYED: Duration = Duration::from_secs(1);

fn echo_routes(timeout: &str) -> String {
    yaml::virtual_service(
        "echo",
        "echo",
        &format!("  - timeout: {timeout}\n    route: [{{destination: {{host: echo}}}}]\n"),
    )
}

fn request_authentication(jwks_uri: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: echo-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: echo}}}}
  jwtRules:
  - issuer: https://issuer.test
    jwksUri: {jwks_uri}
"
    )
}

/// A pod without sidecar running a Python program from `script`.
fn python_pod(mesh: &Mesh, name: &str, ip: &str, port: u16, script: &str) -> anyhow::Result<Pod> {
    let dir = mesh.dir().join(name);
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("server.py");
    write_readable(&file, script)?;
    let pod = mesh.add_pod(PodSpec::new(name, "default").ip(ip.parse()?))?;
    pod.spawn(&["python3", file.to_str().context("a UTF-8 path")?])?;
    pod.wait_listening(port, Duration::from_secs(10))?;
    Ok(pod)
}

/// Accepts connections and holds them, never answering.
fn silent_server(port: u16) -> String {
    format!(
        "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', {port}))
s.listen(64)
held = []
while True:
    held.append(s.accept())
"
    )
}

/// An HTTP proxy that answers every GET itself with `document` and logs each request line to
/// `log`: absolute-form requests (`GET http://host/path`) prove the client went through it.
fn jwks_proxy(port: u16, document: &str, log: &str) -> String {
    format!(
        "import http.server
DOC = {document:?}.encode()
class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open({log:?}, 'a') as f:
            f.write(self.requestline + '\\n')
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(DOC)))
        self.end_headers()
        self.wfile.write(DOC)
http.server.ThreadingHTTPServer(('0.0.0.0', {port}), Proxy).serve_forever()
"
    )
}

/// The echo mesh: a client calling Service `echo` through its sidecar.
fn echo_mesh(setup: MeshSetup) -> MeshSetup {
    setup
        .config([echo_service("echo", ECHO_VIP, &[("http", 8080)])])
        .app(echo_pod("echo-0", ECHO_IP).unwrap(), &[8080], &[])
        .caller(client_pod("client", CLIENT_IP).unwrap())
}

/// The routes the client's Envoy holds.
fn client_routes(client: &Pod) -> String {
    client
        .envoy_admin("/config_dump?resource=dynamic_route_configs")
        .unwrap_or_default()
}

#[test]
fn a_jwks_uri_that_never_answers_delays_no_other_change() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    python_pod(
        &mesh,
        "silent",
        SILENT_IP,
        SILENT_PORT,
        &silent_server(SILENT_PORT),
    )?;
    let env = echo_mesh(MeshSetup::new().config([echo_routes("5s")])).start_in(mesh)?;
    let client = env.pod("client")?;
    assert!(
        wait_until(CONVERGE, || client_routes(&client).contains("\"5s\"")),
        "the first routes never arrived\n{}",
        client_routes(&client)
    );

    // A policy whose keys hang, and right after it an unrelated edit.
    let hanging = format!("http://{SILENT_IP}:{SILENT_PORT}/jwks.json");
    env.mesh
        .write_config("jwt.yaml", &[request_authentication(&hanging)])?;
    env.mesh.write_config("routes.yaml", &[echo_routes("7s")])?;
    let written = Instant::now();
    let mut took = None;
    while written.elapsed() < CONVERGE {
        if client_routes(&client).contains("\"7s\"") {
            took = Some(written.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = took.with_context(|| format!("the edit never arrived\n{}", env.meshd.log()))?;
    eprintln!("the edit reached the client's Envoy after {took:?} while a jwksUri hung");
    assert!(
        took < UNDELAYED,
        "the edit took {took:?} while a jwksUri hung\n{}",
        env.meshd.log()
    );
    // The hanging URI is reported once its fetch gives up.
    assert!(
        wait_until(CONVERGE, || {
            env.mesh
                .meshd_debug("/debug/configz")
                .is_ok_and(|c| c.contains("could not be fetched") && c.contains("jwksUri"))
        }),
        "no finding for the hanging jwksUri"
    );
    Ok(())
}

#[test]
fn jwks_documents_are_fetched_through_the_proxy_the_environment_names() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let log = mesh.dir().join("proxy").join("requests.log");
    let issuer = Issuer::new("proxied-key");
    let document = issuer.jwks();
    let log_path = log.to_str().context("a UTF-8 path")?;
    python_pod(
        &mesh,
        "proxy",
        PROXY_IP,
        PROXY_PORT,
        &jwks_proxy(PROXY_PORT, &document, log_path),
    )?;
    // `.invalid` never resolves: only the proxy can answer for it.
    let uri = "http://keys.mesh-test.invalid/jwks.json";
    let proxy = format!("http://{PROXY_IP}:{PROXY_PORT}");
    let env = echo_mesh(
        MeshSetup::new()
            .config([request_authentication(uri)])
            .meshd_env("HTTP_PROXY", &proxy)
            .meshd_env("http_proxy", &proxy)
            .meshd_env("NO_PROXY", "")
            .meshd_env("no_proxy", ""),
    )
    .start_in(mesh)?;
    let echo = env.pod("echo-0")?;
    let inlined = wait_until(CONVERGE, || {
        echo.envoy_admin("/config_dump?resource=dynamic_listeners")
            .is_ok_and(|dump| dump.contains("proxied-key"))
    });
    assert!(
        inlined,
        "the keys never reached the echo sidecar\n{}",
        env.meshd.log()
    );
    let requests = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        requests.contains("GET http://keys.mesh-test.invalid/jwks.json"),
        "meshd did not ask the proxy: {requests:?}"
    );
    Ok(())
}
