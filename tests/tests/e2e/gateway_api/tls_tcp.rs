//! TLS and TCP listeners of a Gateway: HTTPS terminated with the certificate of a Secret in the
//! Gateway's namespace (served to the router over SDS), TLS passed through by SNI to a backend
//! that terminates it itself (TLSRoute), and a TCPRoute forwarding connections.

use meshd_tests::{Mesh, wait_until};

use super::{Backend, GatewayMesh, HTTP_PORT, ROUTER_IP, gateway, service};
use crate::support::{CONVERGE, certificate_for, get_until_ok, serve_tls_with_openssl, tls_secret};

const SECURE_IP: &str = "10.77.6.10";
const PASSTHROUGH_IP: &str = "10.77.6.11";
const TCP_ECHO_IP: &str = "10.77.6.12";
const TCP_PORT: u16 = 9000;

const LISTENERS: &str = "  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {mode: Terminate, certificateRefs: [{name: secure-cert}]}
    allowedRoutes: {namespaces: {from: All}}
  - name: passthrough
    port: 8443
    protocol: TLS
    hostname: \"*.tls.example.com\"
    tls: {mode: Passthrough}
    allowedRoutes: {namespaces: {from: All}}
  - name: tcp
    port: 9000
    protocol: TCP
    allowedRoutes: {namespaces: {from: All}}
";

const ROUTES: [&str; 3] = [
    "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: apps}
spec:
  parentRefs: [{name: web, namespace: infra, sectionName: https}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: secure, port: 8080}]}]
",
    "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: vault, namespace: apps}
spec:
  parentRefs: [{name: web, namespace: infra, sectionName: passthrough}]
  hostnames: [vault.tls.example.com]
  rules: [{backendRefs: [{name: vault, port: 8443}]}]
",
    "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-echo, namespace: apps}
spec:
  parentRefs: [{name: web, namespace: infra, sectionName: tcp}]
  rules: [{backendRefs: [{name: tcp-echo, port: 9000}]}]
",
];

#[test]
fn tls_listeners_terminate_with_the_secret_or_pass_through_by_sni_and_tcp_routes_forward()
-> anyhow::Result<()> {
    // Certificates from CAs of their own: the gateway's (in a Secret), the backend's (its own).
    let mesh = Mesh::new()?;
    let (gateway_cert, gateway_root) = certificate_for(&mesh, "secure", "secure.example.com")?;
    let (vault_cert, vault_root) = certificate_for(&mesh, "vault", "vault.tls.example.com")?;
    let mut config = vec![
        service(
            "secure",
            "10.96.6.10",
            &[("http", HTTP_PORT)],
            &[("app", "secure")],
        ),
        service("vault", "10.96.6.11", &[("tls", 8443)], &[("app", "vault")]),
        service(
            "tcp-echo",
            "10.96.6.12",
            &[("tcp", TCP_PORT)],
            &[("app", "tcp-echo")],
        ),
        tls_secret(
            "secure-cert",
            "infra",
            &gateway_cert.chain_pem,
            gateway_cert.key_pem.expose(),
        ),
        gateway(LISTENERS),
    ];
    config.extend(ROUTES.iter().map(|route| route.to_string()));
    let gw = GatewayMesh::start_in(
        mesh,
        config,
        vec![
            Backend::http("secure", SECURE_IP, "secure", None)?,
            Backend::bare("vault", PASSTHROUGH_IP, "vault")?,
            Backend::bare("tcp-echo", TCP_ECHO_IP, "tcp-echo")?.serving("--tcp", TCP_PORT),
        ],
    )?;
    // The passthrough backend terminates TLS with its own certificate.
    serve_tls_with_openssl(gw.backend("vault"), &vault_cert, 8443)?;

    // HTTPS: the client verifies the Secret's certificate for the hostname.
    let resolve = format!("secure.example.com:443:{ROUTER_IP}");
    let gateway_root = gateway_root.to_str().unwrap();
    let https = get_until_ok(
        &gw.client,
        "https://secure.example.com/pay",
        &["--resolve", &resolve, "--cacert", gateway_root],
    );
    assert_eq!(https.status, 200, "{https:?}\n{}", gw.diagnostics());
    assert_eq!(https.echo_pod().as_deref(), Some("secure"), "{https:?}");
    assert_eq!(https.json()?["path"], "/pay");
    // The backend gets plain HTTP: the router terminated TLS.
    assert_eq!(https.json()?["headers"]["x-forwarded-proto"], "https");
    let untrusted = gw.client.curl(
        "https://secure.example.com/pay",
        &[
            "--resolve",
            &resolve,
            "--cacert",
            vault_root.to_str().unwrap(),
        ],
    );
    assert_eq!(
        untrusted.status, 0,
        "a root that did not sign it: {untrusted:?}"
    );

    // Passthrough: the backend's own certificate, verified end to end through the router.
    let resolve = format!("vault.tls.example.com:8443:{ROUTER_IP}");
    let passthrough = get_until_ok(
        &gw.client,
        "https://vault.tls.example.com:8443/",
        &[
            "--resolve",
            &resolve,
            "--cacert",
            vault_root.to_str().unwrap(),
        ],
    );
    assert_eq!(
        passthrough.status,
        200,
        "{passthrough:?}\n{}",
        gw.diagnostics()
    );
    // openssl's status page: the backend, not the router, terminated TLS.
    assert!(
        passthrough.body.contains("s_server"),
        "{}",
        passthrough.body
    );
    // Another name under the listener's hostname has no TLSRoute: the router closes it.
    let other = gw.client.curl(
        "https://other.tls.example.com:8443/",
        &[
            "--resolve",
            &format!("other.tls.example.com:8443:{ROUTER_IP}"),
            "--cacert",
            vault_root.to_str().unwrap(),
            "--max-time",
            "5",
        ],
    );
    assert_eq!(other.status, 0, "{other:?}");

    // TCPRoute: each line comes back from the backend.
    let mut last = Ok(String::new());
    let answered = wait_until(CONVERGE, || {
        last = gw.client.tcp_exchange(ROUTER_IP, TCP_PORT, "hello gateway");
        last.as_deref()
            .is_ok_and(|line| line == "tcp-echo: hello gateway")
    });
    assert!(answered, "{last:?}\n{}", gw.diagnostics());
    for i in 0..3 {
        let line = gw
            .client
            .tcp_exchange(ROUTER_IP, TCP_PORT, &format!("line {i}"))?;
        assert_eq!(line, format!("tcp-echo: line {i}"));
    }
    Ok(())
}
