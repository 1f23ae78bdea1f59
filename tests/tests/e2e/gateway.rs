//! Ingress gateway end to end: a stock Envoy selected by a Gateway routes by host and path to
//! in-mesh services over HTTP, and over HTTPS with a certificate from a Kubernetes Secret served
//! over SDS; unknown hosts get 404; TLS passes through by SNI to a backend that terminates it;
//! a TCP server routes connections by the VirtualServices' `tcp` routes.

use meshd_tests::{HttpResult, Mesh, PodSpec, yaml};

use crate::support::{certificate_for, get_until_ok, serve_tls_with_openssl, tls_secret};

const GATEWAY_IP: &str = "10.77.1.5";
const SHOP_IP: &str = "10.77.1.10";
const BLOG_IP: &str = "10.77.1.11";
const CLIENT_IP: &str = "10.77.1.30";

const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: [shop.example.com, blog.example.com]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert}
";

const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [shop.example.com, blog.example.com]
  gateways: [istio-system/web-gateway]
  http:
  - match: [{uri: {prefix: /blog}}]
    route: [{destination: {host: blog, port: {number: 8080}}}]
  - match: [{authority: {exact: blog.example.com}}, {authority: {prefix: \"blog.example.com:\"}}]
    route: [{destination: {host: blog, port: {number: 8080}}}]
  - route: [{destination: {host: shop, port: {number: 8080}}}]
";

/// The ingress gateway pod: a router labelled `istio: ingressgateway`, over TLS to meshd.
fn ingress_gateway() -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new("ingressgateway", "istio-system")
        .ip(GATEWAY_IP.parse()?)
        .label("istio", "ingressgateway")
        .service_account("ingressgateway")
        .router()
        .tls())
}

/// A workload `name` in `default` (label `app: name`) with a sidecar holding a mesh certificate.
fn app_with_sidecar(name: &str, ip: &str) -> anyhow::Result<PodSpec> {
    Ok(PodSpec::new(name, "default")
        .ip(ip.parse()?)
        .label("app", name)
        .sidecar()
        .tls())
}

fn pod_of(response: &HttpResult) -> String {
    response.echo_pod().unwrap_or_default()
}

#[test]
fn an_ingress_gateway_routes_by_host_and_path_over_http_and_https_and_404s_unknown_hosts()
-> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    // The gateway's certificate, from a CA the client trusts.
    let (cert, root) = certificate_for(&mesh, "web", "shop.example.com")?;

    let gateway_spec = ingress_gateway()?;
    let shop_spec = app_with_sidecar("shop", SHOP_IP)?;
    let blog_spec = app_with_sidecar("blog", BLOG_IP)?;
    mesh.write_config(
        "mesh.yaml",
        &[
            yaml::service(
                "shop",
                "default",
                "10.96.0.10",
                &[("http", 8080, 8080)],
                &[("app", "shop")],
            ),
            yaml::service(
                "blog",
                "default",
                "10.96.0.11",
                &[("http", 8080, 8080)],
                &[("app", "blog")],
            ),
            gateway_spec.yaml()?,
            shop_spec.yaml()?,
            blog_spec.yaml()?,
            tls_secret(
                "shop-cert",
                "istio-system",
                &cert.chain_pem,
                cert.key_pem.expose(),
            ),
            GATEWAY.to_string(),
            ROUTES.to_string(),
        ],
    )?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let mut backends = Vec::new();
    for spec in [shop_spec, blog_spec] {
        let pod = mesh.add_pod(spec)?;
        pod.start_echo(&[8080], &[])?;
        backends.push(pod);
    }
    let gateway = mesh.add_pod(gateway_spec)?;
    let client = mesh.add_pod(PodSpec::new("client", "default").ip(CLIENT_IP.parse()?))?;
    let get = |url: &str, args: &[&str]| get_until_ok(&client, url, args);
    let diagnostics = || {
        format!(
            "--- gateway ---\n{}\n--- meshd ---\n{}",
            gateway.envoy_log(),
            meshd.log()
        )
    };

    let shop = get(
        &format!("http://{GATEWAY_IP}:8080/cart"),
        &["-H", "Host: shop.example.com"],
    );
    assert_eq!(pod_of(&shop), "shop", "{shop:?}\n{}", diagnostics());
    let by_path = get(
        &format!("http://{GATEWAY_IP}:8080/blog/post-1"),
        &["-H", "Host: shop.example.com"],
    );
    assert_eq!(pod_of(&by_path), "blog", "{by_path:?}");
    let by_host = get(
        &format!("http://{GATEWAY_IP}:8080/"),
        &["-H", "Host: blog.example.com"],
    );
    assert_eq!(pod_of(&by_host), "blog", "{by_host:?}");

    let resolve = format!("shop.example.com:8443:{GATEWAY_IP}");
    let https = get(
        "https://shop.example.com:8443/secure",
        &["--resolve", &resolve, "--cacert", root.to_str().unwrap()],
    );
    assert_eq!(https.status, 200, "{https:?}\n{}", diagnostics());
    assert_eq!(pod_of(&https), "shop");

    let unknown = client.curl(
        &format!("http://{GATEWAY_IP}:8080/"),
        &["-H", "Host: nope.example.com"],
    );
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(
        gateway.envoy_stat("listener_manager.lds.update_rejected"),
        Some(0)
    );
    Ok(())
}

#[test]
fn a_gateway_passes_tls_through_by_sni_to_a_backend_that_terminates_it() -> anyhow::Result<()> {
    let mesh = Mesh::new()?;
    let (cert, root) = certificate_for(&mesh, "bank", "api.bank.example.com")?;
    let gateway_spec = PodSpec::new("edge", "istio-system")
        .ip(GATEWAY_IP.parse()?)
        .label("istio", "ingressgateway")
        .service_account("edge")
        .router()
        .tls();
    // The backend terminates TLS itself; the gateway must not.
    let api_spec = PodSpec::new("api", "bank")
        .ip(SHOP_IP.parse()?)
        .label("app", "api");
    mesh.write_config(
        "mesh.yaml",
        &[
            yaml::service(
                "api",
                "bank",
                "10.96.0.20",
                &[("tls", 443, 8443)],
                &[("app", "api")],
            ),
            gateway_spec.yaml()?,
            api_spec.yaml()?,
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: tls-bank, protocol: TLS}
    hosts: [\"*.bank.example.com\"]
    tls: {mode: PASSTHROUGH}
"
            .to_string(),
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: bank}
spec:
  hosts: [api.bank.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{sniHosts: [api.bank.example.com]}]
    route: [{destination: {host: api, port: {number: 443}}}]
"
            .to_string(),
        ],
    )?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let api = mesh.add_pod(api_spec)?;
    serve_tls_with_openssl(&api, &cert, 8443)?;
    let gateway = mesh.add_pod(gateway_spec)?;
    let client = mesh.add_pod(PodSpec::new("client", "default").ip(CLIENT_IP.parse()?))?;

    let resolve = format!("api.bank.example.com:443:{GATEWAY_IP}");
    let last = get_until_ok(
        &client,
        "https://api.bank.example.com/",
        &["--resolve", &resolve, "--cacert", root.to_str().unwrap()],
    );
    assert_eq!(
        last.status,
        200,
        "{last:?}\n--- gateway ---\n{}\n--- meshd ---\n{}",
        gateway.envoy_log(),
        meshd.log()
    );
    // openssl's status page: the backend, not the gateway, terminated TLS with its own certificate.
    assert!(last.body.contains("s_server"), "{}", last.body);
    // Another name under the server's hosts has no route: the gateway closes it.
    let other = client.curl(
        "https://web.bank.example.com/",
        &[
            "--resolve",
            &format!("web.bank.example.com:443:{GATEWAY_IP}"),
            "--cacert",
            root.to_str().unwrap(),
            "--max-time",
            "5",
        ],
    );
    assert_ne!(other.status, 200, "{other:?}");
    Ok(())
}

#[test]
fn a_tcp_gateway_server_routes_connections_by_the_virtual_service_tcp_routes() -> anyhow::Result<()>
{
    let mesh = Mesh::new()?;
    let gateway_spec = ingress_gateway()?;
    let echo_spec = app_with_sidecar("tcp-echo", SHOP_IP)?;
    mesh.write_config(
        "mesh.yaml",
        &[
            yaml::service(
                "tcp-echo",
                "default",
                "10.96.0.30",
                &[("tcp", 9000, 9000)],
                &[("app", "tcp-echo")],
            ),
            gateway_spec.yaml()?,
            echo_spec.yaml()?,
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: [\"*\"]
"
            .to_string(),
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo, namespace: default}
spec:
  hosts: [\"*\"]
  gateways: [istio-system/tcp-gateway]
  tcp:
  - match: [{port: 31400}]
    route: [{destination: {host: tcp-echo, port: {number: 9000}}}]
"
            .to_string(),
        ],
    )?;
    let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
    let echo = mesh.add_pod(echo_spec)?;
    echo.start_echo(&[], &[9000])?;
    let gateway = mesh.add_pod(gateway_spec)?;
    let client = mesh.add_pod(PodSpec::new("client", "default").ip(CLIENT_IP.parse()?))?;

    let mut last = Ok(String::new());
    let answered = meshd_tests::wait_until(crate::support::CONVERGE, || {
        last = client.tcp_exchange(GATEWAY_IP, 31400, "hello gateway");
        last.as_deref()
            .is_ok_and(|line| line == "tcp-echo: hello gateway")
    });
    assert!(
        answered,
        "{last:?}\n--- gateway ---\n{}\n--- meshd ---\n{}",
        gateway.envoy_log(),
        meshd.log()
    );
    // The gateway reached the service over mesh mTLS (auto-mTLS to its sidecar).
    let cluster = "cluster.outbound|9000||tcp-echo.default.svc.cluster.local";
    assert!(gateway.envoy_stat(&format!("{cluster}.upstream_cx_total")) >= Some(1));
    assert!(gateway.envoy_stat(&format!("{cluster}.ssl.handshake")) >= Some(1));
    Ok(())
}
