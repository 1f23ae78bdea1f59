//! The Kubernetes Gateway API end to end: a `gateway.networking.k8s.io/v1` Gateway of class
//! `istio` served by a stock Envoy router labelled with its name, HTTPRoutes routing real requests
//! by hostname, path, header, query parameter and method, splitting by weight and applying their
//! filters (redirect, rewrite, header changes, mirror, request timeout); HTTPS terminated with a
//! Secret's certificate, TLS passed through by SNI (TLSRoute), TCPRoute and GRPCRoute to an h2c
//! gRPC backend; and a mesh HTTPRoute whose parent is a Service, routing sidecar traffic.
//!
//! Backends are plain pods running `meshd-echo` (which reports what it received); requests come
//! from a client pod without a sidecar, as traffic from outside the mesh does.

mod filters;
mod grpc;
mod mesh_route;
mod tls_tcp;

use anyhow::Context as _;
use meshd_tests::{HttpResult, Mesh, Meshd, Pod, PodSpec, wait_for, yaml};

use crate::support::{CONVERGE, assert_80_20_split, echo_count, get_until_answered_by, tally};

const ROUTER_IP: &str = "10.77.6.5";
const CLIENT_IP: &str = "10.77.6.30";
/// Where the backends' `meshd-echo` serves HTTP (and their Services too).
const HTTP_PORT: u16 = 8080;

/// Gateway `web` in namespace `infra`, class `istio`, with `listeners` (YAML list items, indented
/// as items of `spec.listeners`).
fn gateway(listeners: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: infra}}
spec:
  gatewayClassName: istio
  listeners:
{listeners}"
    )
}

/// An HTTP listener on port 80 taking routes from every namespace.
const HTTP_LISTENER: &str = "  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
";

/// HTTPRoute `name` in `apps` attached to Gateway `web`, for `hostnames`, with `rules` (YAML list
/// items, indented as items of `spec.rules`).
fn http_route(name: &str, hostnames: &[&str], rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: apps}}
spec:
  parentRefs: [{{name: web, namespace: infra}}]
  hostnames: [{}]
  rules:
{rules}",
        hostnames.join(", ")
    )
}

/// A backend pod in `apps` and what it runs.
struct Backend {
    spec: PodSpec,
    /// `meshd-echo`'s flags; empty: no app (the test starts one).
    echo_args: Vec<String>,
    /// Ports the app listens on once started.
    ports: Vec<u16>,
}

impl Backend {
    /// `meshd-echo` serving HTTP on [`HTTP_PORT`], labelled `app: APP` (and `version` if given).
    fn http(name: &str, ip: &str, app: &str, version: Option<&str>) -> anyhow::Result<Backend> {
        let mut spec = PodSpec::new(name, "apps").ip(ip.parse()?).label("app", app);
        if let Some(version) = version {
            spec = spec.label("version", version);
        }
        Ok(Backend {
            spec,
            echo_args: vec!["--http".to_owned(), HTTP_PORT.to_string()],
            ports: vec![HTTP_PORT],
        })
    }

    /// A pod labelled `app: APP` whose app the test starts itself.
    fn bare(name: &str, ip: &str, app: &str) -> anyhow::Result<Backend> {
        Ok(Backend {
            spec: PodSpec::new(name, "apps").ip(ip.parse()?).label("app", app),
            echo_args: Vec::new(),
            ports: Vec::new(),
        })
    }

    /// More `meshd-echo` flags, listening on `port` (`--grpc 9090`, `--tcp 9000`).
    fn serving(mut self, flag: &str, port: u16) -> Backend {
        self.echo_args.extend([flag.to_owned(), port.to_string()]);
        self.ports.push(port);
        self
    }
}

/// Service `name` in `apps` at `vip` selecting `selector`; `ports` are `(name, port)`, each the
/// same port on the pods.
fn service(name: &str, vip: &str, ports: &[(&str, u16)], selector: &[(&str, &str)]) -> String {
    let ports: Vec<(&str, u16, u16)> = ports.iter().map(|(n, p)| (*n, *p, *p)).collect();
    yaml::service(name, "apps", vip, &ports, selector)
}

/// A started Gateway API mesh: meshd, the router serving Gateway `web`, the backends and a client
/// without a sidecar.
struct GatewayMesh {
    // Field order is drop order: the mesh goes first and takes every process with it.
    mesh: Mesh,
    meshd: Meshd,
    router: Pod,
    client: Pod,
    backends: Vec<Pod>,
}

impl GatewayMesh {
    /// Writes `config` (the Gateway, routes, Services, Secrets) and the pods, starts meshd, the
    /// backends' apps, the router (a proxy labelled `gateway.networking.k8s.io/gateway-name: web`
    /// in `infra`, as istiod's deployment for the Gateway is) and the client.
    fn start(config: Vec<String>, backends: Vec<Backend>) -> anyhow::Result<GatewayMesh> {
        GatewayMesh::start_in(Mesh::new()?, config, backends)
    }

    /// [`GatewayMesh::start`] in a mesh the test prepared (certificates in its directory, say).
    fn start_in(
        mesh: Mesh,
        config: Vec<String>,
        backends: Vec<Backend>,
    ) -> anyhow::Result<GatewayMesh> {
        let router_spec = PodSpec::new("web-istio", "infra")
            .ip(ROUTER_IP.parse()?)
            .label("gateway.networking.k8s.io/gateway-name", "web")
            .service_account("web-istio")
            .router()
            .tls();
        let mut docs = config;
        docs.push(router_spec.yaml()?);
        for backend in &backends {
            docs.push(backend.spec.yaml()?);
        }
        mesh.write_config("mesh.yaml", &docs)?;
        let meshd = mesh.start_meshd(mesh.config_dir(), &[])?;
        let mut pods = Vec::new();
        for backend in backends {
            let pod = mesh.add_pod(backend.spec)?;
            if !backend.echo_args.is_empty() {
                let args: Vec<&str> = backend.echo_args.iter().map(String::as_str).collect();
                let app = pod.start_echo_with(&[], &[], &args)?;
                for port in backend.ports {
                    pod.wait_listening(port, std::time::Duration::from_secs(10))
                        .with_context(|| meshd_tests::process::log_tail(&app.log, 20))?;
                }
            }
            pods.push(pod);
        }
        let router = mesh.add_pod(router_spec)?;
        let client = mesh.add_pod(PodSpec::new("client", "default").ip(CLIENT_IP.parse()?))?;
        Ok(GatewayMesh {
            mesh,
            meshd,
            router,
            client,
            backends: pods,
        })
    }

    fn backend(&self, name: &str) -> &Pod {
        self.backends
            .iter()
            .find(|pod| pod.name() == name)
            .unwrap_or_else(|| panic!("no backend {name}"))
    }

    /// The client's curl for `path` on the router's port 80, with `Host: host` and more `args`.
    fn get(&self, host: &str, path: &str, args: &[&str]) -> HttpResult {
        let url = format!("http://{ROUTER_IP}{path}");
        let host = format!("Host: {host}");
        let mut all = vec!["-H", host.as_str()];
        all.extend(args);
        self.client.curl(&url, &all)
    }

    /// Polls [`GatewayMesh::get`] until the echo of pod `expected` answers; the last answer.
    fn get_until_answered_by(
        &self,
        host: &str,
        path: &str,
        args: &[&str],
        expected: &str,
    ) -> HttpResult {
        let url = format!("http://{ROUTER_IP}{path}");
        let host = format!("Host: {host}");
        let mut all = vec!["-H", host.as_str()];
        all.extend(args);
        get_until_answered_by(&self.client, &url, &all, expected)
    }

    /// Asserts that `path` on `host` (with curl `args`) is answered by pod `expected`.
    fn assert_routed(&self, host: &str, path: &str, args: &[&str], expected: &str, why: &str) {
        let response = self.get(host, path, args);
        assert_eq!(
            response.echo_pod().as_deref(),
            Some(expected),
            "{why}: {host}{path} {args:?} → {response:?}\n{}",
            self.diagnostics()
        );
    }

    /// How many requests for `path` backend `pod` has seen (meshd-echo's `/_count`, from the hub).
    fn count(&self, pod: &str, path: &str) -> anyhow::Result<u64> {
        echo_count(&self.mesh, self.backend(pod).ip(), HTTP_PORT, path)
    }

    fn diagnostics(&self) -> String {
        crate::support::diagnostics(&self.mesh, &self.meshd, &[&self.router])
    }
}

const SHOP_V1_IP: &str = "10.77.6.10";
const SHOP_V2_IP: &str = "10.77.6.11";
const BLOG_IP: &str = "10.77.6.12";
const API_IP: &str = "10.77.6.13";

/// `shop.example.com`: `/api` (whole segments) to `api`; header `x-version: v2` or query
/// `version=v2` to `shop-v2`; `POST /checkout` exactly to `shop-v2`; `/split` 80/20 over
/// `shop-v1`/`shop-v2`; everything else to `shop-v1`. `blog.example.com`: everything to `blog`.
const SHOP_RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: api, port: 8080}]
  - matches:
    - headers: [{name: x-version, value: v2}]
    - queryParams: [{name: version, value: v2}]
    backendRefs: [{name: shop-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /checkout}, method: POST}]
    backendRefs: [{name: shop-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs:
    - {name: shop-v1, port: 8080, weight: 80}
    - {name: shop-v2, port: 8080, weight: 20}
  - backendRefs: [{name: shop-v1, port: 8080}]
";

#[test]
fn http_routes_select_backends_by_hostname_path_header_query_and_method_and_split_by_weight()
-> anyhow::Result<()> {
    let http = [("http", HTTP_PORT)];
    let gw = GatewayMesh::start(
        vec![
            service(
                "shop-v1",
                "10.96.6.10",
                &http,
                &[("app", "shop"), ("version", "v1")],
            ),
            service(
                "shop-v2",
                "10.96.6.11",
                &http,
                &[("app", "shop"), ("version", "v2")],
            ),
            service("blog", "10.96.6.12", &http, &[("app", "blog")]),
            service("api", "10.96.6.13", &http, &[("app", "api")]),
            gateway(HTTP_LISTENER),
            http_route("shop", &["shop.example.com"], SHOP_RULES),
            http_route(
                "blog",
                &["blog.example.com"],
                "  - backendRefs: [{name: blog, port: 8080}]\n",
            ),
        ],
        vec![
            Backend::http("shop-v1", SHOP_V1_IP, "shop", Some("v1"))?,
            Backend::http("shop-v2", SHOP_V2_IP, "shop", Some("v2"))?,
            Backend::http("blog", BLOG_IP, "blog", None)?,
            Backend::http("api", API_IP, "api", None)?,
        ],
    )?;
    let shop = "shop.example.com";
    // Each backend answers once its cluster's endpoints arrived.
    for (host, path, pod) in [
        (shop, "/", "shop-v1"),
        ("blog.example.com", "/", "blog"),
        (shop, "/api/items", "api"),
        (shop, "/split/warm", "shop-v2"),
    ] {
        let first = gw.get_until_answered_by(host, path, &[], pod);
        assert_eq!(
            first.echo_pod().as_deref(),
            Some(pod),
            "{host}{path}: {first:?}\n{}",
            gw.diagnostics()
        );
    }

    // Hostnames.
    gw.assert_routed(shop, "/cart", &[], "shop-v1", "shop's default rule");
    gw.assert_routed("blog.example.com", "/cart", &[], "blog", "by hostname");
    gw.assert_routed(
        "blog.example.com:80",
        "/",
        &[],
        "blog",
        "a Host with the port",
    );
    let unknown = gw.get("nope.example.com", "/", &[]);
    assert_eq!(unknown.status, 404, "no route names the host: {unknown:?}");

    // PathPrefix matches whole segments.
    gw.assert_routed(shop, "/api", &[], "api", "the prefix itself");
    gw.assert_routed(shop, "/api/", &[], "api", "the prefix and a slash");
    gw.assert_routed(shop, "/api/v1/items", &[], "api", "below the prefix");
    gw.assert_routed(shop, "/apix", &[], "shop-v1", "not a segment of /api");
    gw.assert_routed(shop, "/apix/y", &[], "shop-v1", "not a segment of /api");

    // Header and query parameter matches (either match of the rule).
    gw.assert_routed(shop, "/", &["-H", "x-version: v2"], "shop-v2", "header");
    gw.assert_routed(
        shop,
        "/",
        &["-H", "X-Version: v2"],
        "shop-v2",
        "header names ignore case",
    );
    gw.assert_routed(
        shop,
        "/",
        &["-H", "x-version: v3"],
        "shop-v1",
        "header value exact",
    );
    gw.assert_routed(shop, "/?version=v2", &[], "shop-v2", "query parameter");
    gw.assert_routed(
        shop,
        "/?a=1&version=v2",
        &[],
        "shop-v2",
        "query parameter among others",
    );
    gw.assert_routed(shop, "/?version=v20", &[], "shop-v1", "query value exact");
    // A longer path prefix takes precedence over more header matches.
    gw.assert_routed(
        shop,
        "/api/x",
        &["-H", "x-version: v2"],
        "api",
        "precedence",
    );

    // Method (with an exact path).
    gw.assert_routed(shop, "/checkout", &["-X", "POST"], "shop-v2", "POST");
    gw.assert_routed(shop, "/checkout", &[], "shop-v1", "GET is not POST");
    gw.assert_routed(
        shop,
        "/checkout/x",
        &["-X", "POST"],
        "shop-v1",
        "Exact is exact",
    );

    // An 80/20 split within ten points over 200 requests (as traffic_routing's).
    let seen = tally(200, |i| gw.get(shop, &format!("/split/{i}"), &[]))?;
    assert_80_20_split(&seen, ("shop-v1", "shop-v2"), &gw.diagnostics());
    assert_eq!(
        gw.router.envoy_stat("listener_manager.lds.update_rejected"),
        Some(0)
    );
    Ok(())
}

/// Polls until `probe` returns something; the error names what the last attempt saw.
fn converge<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> anyhow::Result<T> {
    let mut last = String::new();
    wait_for(CONVERGE, || match probe() {
        Ok(value) => Some(value),
        Err(seen) => {
            last = seen;
            None
        }
    })
    .with_context(|| format!("{what}: never converged; last {last}"))
}
