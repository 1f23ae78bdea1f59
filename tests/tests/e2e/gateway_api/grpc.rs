//! GRPCRoute through the router: calls over h2c from the client to the Gateway's HTTP listener,
//! routed by method (service and method exactly, or the whole service) to h2c gRPC backends
//! (`meshd-echo --grpc`) whose Service port is named `grpc` (so the router's cluster speaks
//! HTTP/2); a call no rule matches gets no route.

use super::{Backend, GatewayMesh, HTTP_LISTENER, ROUTER_IP, gateway, service};
use crate::support::CONVERGE;
use meshd_tests::{HttpResult, wait_for};

const HELLO_IP: &str = "10.77.6.10";
const GREETER_IP: &str = "10.77.6.11";
const GRPC_PORT: u16 = 9090;
const HOST: &str = "grpc.example.com";

const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: apps}
spec:
  parentRefs: [{name: web, namespace: infra}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: pkg.Greeter, method: Hello}}]
    backendRefs: [{name: hello, port: 9090}]
  - matches: [{method: {service: pkg.Greeter}}]
    backendRefs: [{name: greeter, port: 9090}]
";

/// A gRPC call's answer: the HTTP exchange and, for a message, what the backend reported.
struct GrpcAnswer {
    http: HttpResult,
    /// The JSON of the one message, if one came back.
    message: Option<serde_json::Value>,
}

impl GrpcAnswer {
    fn grpc_status(&self) -> Option<&str> {
        self.http.header("grpc-status")
    }
}

impl GatewayMesh {
    /// A unary call of `path` (`/pkg.Service/Method`) with an empty message, over h2c to the
    /// router's port 80 as `grpc.example.com`.
    fn grpc_call(&self, path: &str) -> anyhow::Result<GrpcAnswer> {
        // The request message: not compressed, zero bytes long.
        let empty = self.mesh.dir().join("empty-grpc-message");
        std::fs::write(&empty, [0u8; 5])?;
        let resolve = format!("{HOST}:80:{ROUTER_IP}");
        let data = format!("@{}", empty.display());
        let http = self.client.curl(
            &format!("http://{HOST}{path}"),
            &[
                "--http2-prior-knowledge",
                "--resolve",
                &resolve,
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--data-binary",
                &data,
            ],
        );
        // A message is a flag byte and a four-byte length before the payload, our JSON.
        let message = http
            .body
            .find('{')
            .and_then(|start| serde_json::from_str(&http.body[start..]).ok());
        Ok(GrpcAnswer { http, message })
    }

    fn upstream_requests(&self, service: &str) -> u64 {
        let stat = format!(
            "cluster.outbound|{GRPC_PORT}||{service}.apps.svc.cluster.local.upstream_rq_total"
        );
        self.router.envoy_stat(&stat).unwrap_or(0)
    }
}

#[test]
fn grpc_routes_match_a_method_or_a_whole_service_and_other_calls_get_no_route() -> anyhow::Result<()>
{
    let grpc = [("grpc", GRPC_PORT)];
    let gw = GatewayMesh::start(
        vec![
            service("hello", "10.96.6.10", &grpc, &[("app", "hello")]),
            service("greeter", "10.96.6.11", &grpc, &[("app", "greeter")]),
            gateway(HTTP_LISTENER),
            ROUTE.to_string(),
        ],
        vec![
            Backend::bare("hello", HELLO_IP, "hello")?.serving("--grpc", GRPC_PORT),
            Backend::bare("greeter", GREETER_IP, "greeter")?.serving("--grpc", GRPC_PORT),
        ],
    )?;
    let answered_by = |answer: &GrpcAnswer| -> Option<String> {
        let message = answer.message.as_ref()?;
        (answer.grpc_status() == Some("0"))
            .then(|| message["pod"].as_str().unwrap_or("").to_owned())
    };
    // Both backends answer once their clusters' endpoints arrived.
    for (path, pod) in [
        ("/pkg.Greeter/Hello", "hello"),
        ("/pkg.Greeter/Bye", "greeter"),
    ] {
        let mut last = None;
        let reached = wait_for(CONVERGE, || {
            let answer = gw.grpc_call(path).ok()?;
            let by = answered_by(&answer);
            last = Some(answer.http);
            (by.as_deref() == Some(pod)).then_some(())
        });
        assert!(
            reached.is_some(),
            "{path} never answered by {pod}: {last:?}\n{}",
            gw.diagnostics()
        );
    }

    let hello = gw.grpc_call("/pkg.Greeter/Hello")?;
    assert_eq!(hello.http.status, 200, "{:?}", hello.http);
    assert_eq!(hello.http.header("content-type"), Some("application/grpc"));
    assert_eq!(hello.grpc_status(), Some("0"), "{:?}", hello.http);
    let message = hello.message.expect("a message");
    assert_eq!(message["pod"], "hello");
    assert_eq!(
        message["path"], "/pkg.Greeter/Hello",
        "the path as sent: {message}"
    );
    assert_eq!(message["content-type"], "application/grpc");

    let bye = gw.grpc_call("/pkg.Greeter/Bye")?;
    assert_eq!(
        answered_by(&bye).as_deref(),
        Some("greeter"),
        "{:?}",
        bye.http
    );
    // The method is matched exactly, not as a prefix.
    let hello_again = gw.grpc_call("/pkg.Greeter/HelloAgain")?;
    assert_eq!(
        answered_by(&hello_again).as_deref(),
        Some("greeter"),
        "{:?}",
        hello_again.http
    );

    // Another service (or a service whose name merely starts alike) matches no rule: Envoy's own
    // answer, gRPC's UNIMPLEMENTED, and no backend sees the call.
    let before = (
        gw.upstream_requests("hello"),
        gw.upstream_requests("greeter"),
    );
    for path in ["/pkg.Other/Hello", "/pkg.GreeterX/Hello"] {
        // Envoy answers before it has read the request's body and then resets the stream, which
        // curl now and then reports as a framing error instead of the answer: ask again.
        let mut unrouted = gw.grpc_call(path)?;
        for _ in 0..5 {
            if unrouted.http.status != 0 {
                break;
            }
            assert_eq!(unrouted.message, None, "{path}: {:?}", unrouted.http);
            unrouted = gw.grpc_call(path)?;
        }
        assert_eq!(unrouted.message, None, "{path}: {:?}", unrouted.http);
        assert_eq!(
            unrouted.grpc_status(),
            Some("12"),
            "{path}: {:?}",
            unrouted.http
        );
    }
    let after = (
        gw.upstream_requests("hello"),
        gw.upstream_requests("greeter"),
    );
    assert_eq!(before, after, "unrouted calls reached a backend");
    Ok(())
}
