//! HTTPRoute filters through the router: RequestRedirect (status and Location), URLRewrite
//! (prefix and hostname, as the backend sees them), Request- and ResponseHeaderModifier,
//! RequestMirror (copies reach the mirror) and `timeouts.request` (a slow backend becomes a 504);
//! and `meshd proxy-config routes` naming the HTTPRoute each route came from.

use std::time::{Duration, Instant};

use meshd_tests::wait_until;

use super::{
    Backend, GatewayMesh, HTTP_LISTENER, HTTP_PORT, converge, gateway, http_route, service,
};
use crate::support::cli;

const SHOP_IP: &str = "10.77.6.10";
const MIRROR_IP: &str = "10.77.6.11";

const FILTER_RULES: &str = "  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
        statusCode: 301
  - matches: [{path: {type: Exact, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: secure.example.com}
  - matches: [{path: {type: PathPrefix, value: /strip}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        hostname: internal.example.com
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /}
    backendRefs: [{name: shop, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: URLRewrite
      urlRewrite:
        path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
    backendRefs: [{name: shop, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-route, value: headers}]
        add: [{name: x-hop, value: gateway}]
        remove: [x-secret]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set: [{name: x-served-by, value: shop}]
        add: [{name: x-hops, value: gateway}]
    backendRefs: [{name: shop, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /mirrored}}]
    filters:
    - type: RequestMirror
      requestMirror:
        backendRef: {name: mirror, port: 8080}
    backendRefs: [{name: shop, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 1s}
    backendRefs: [{name: shop, port: 8080}]
  - backendRefs: [{name: shop, port: 8080}]
";

const SHOP: &str = "shop.example.com";

fn filters_mesh() -> anyhow::Result<GatewayMesh> {
    let http = [("http", HTTP_PORT)];
    let gw = GatewayMesh::start(
        vec![
            service("shop", "10.96.6.10", &http, &[("app", "shop")]),
            service("mirror", "10.96.6.11", &http, &[("app", "mirror")]),
            gateway(HTTP_LISTENER),
            http_route("shop", &[SHOP], FILTER_RULES),
        ],
        vec![
            Backend::http("shop", SHOP_IP, "shop", None)?,
            Backend::http("mirror", MIRROR_IP, "mirror", None)?,
        ],
    )?;
    let first = gw.get_until_answered_by(SHOP, "/", &[], "shop");
    assert_eq!(
        first.echo_pod().as_deref(),
        Some("shop"),
        "{first:?}\n{}",
        gw.diagnostics()
    );
    Ok(gw)
}

#[test]
fn http_route_filters_redirect_rewrite_change_headers_mirror_and_time_out() -> anyhow::Result<()> {
    let gw = filters_mesh()?;

    // RequestRedirect: the prefix replaced, the status as asked; the backend never sees it.
    let redirect = gw.get(SHOP, "/old/page?x=1", &[]);
    assert_eq!(redirect.status, 301, "{redirect:?}\n{}", gw.diagnostics());
    assert_eq!(
        redirect.header("location"),
        Some("http://shop.example.com/new/page?x=1"),
        "{redirect:?}"
    );
    let moved = gw.get(SHOP, "/moved", &[]);
    assert_eq!(moved.status, 302, "the default status: {moved:?}");
    assert_eq!(
        moved.header("location"),
        Some("https://secure.example.com/moved"),
        "scheme and hostname replaced, the well-known port left out: {moved:?}"
    );
    assert_eq!(
        gw.count("shop", "/old/page")? + gw.count("shop", "/moved")?,
        0
    );

    // URLRewrite: the backend sees the rewritten path and Host.
    for (sent, seen) in [("/strip/a/b", "/a/b"), ("/strip", "/")] {
        let body = gw.get(SHOP, sent, &[]).json()?;
        assert_eq!(body["path"], seen, "{sent}: {body}");
        assert_eq!(body["headers"]["host"], "internal.example.com", "{body}");
    }
    let body = gw.get(SHOP, "/v1/items?q=1", &[]).json()?;
    assert_eq!(body["path"], "/v2/items", "{body}");
    assert_eq!(
        body["query"], "q=1",
        "the query survives the rewrite: {body}"
    );
    assert_eq!(body["headers"]["host"], SHOP, "no hostname rewrite: {body}");
    let body = gw.get(SHOP, "/stripped", &[]).json()?;
    assert_eq!(body["path"], "/stripped", "not below /strip: {body}");

    // Header modifiers: set overwrites, add appends, remove removes; on the response too.
    let response = gw.get(
        SHOP,
        "/headers",
        &[
            "-H",
            "x-route: client",
            "-H",
            "x-hop: client",
            "-H",
            "x-secret: s3cr3t",
        ],
    );
    let body = response.json()?;
    let headers = &body["headers"];
    assert_eq!(headers["x-route"], "headers", "set: {body}");
    assert_eq!(headers["x-hop"], "client, gateway", "add: {body}");
    assert!(headers["x-secret"].is_null(), "remove: {body}");
    assert_eq!(response.header("x-served-by"), Some("shop"), "{response:?}");
    assert_eq!(response.header("x-hops"), Some("gateway"), "{response:?}");
    let plain = gw.get(SHOP, "/plain", &["-H", "x-secret: s3cr3t"]);
    assert_eq!(plain.json()?["headers"]["x-secret"], "s3cr3t", "{plain:?}");
    assert_eq!(plain.header("x-served-by"), None, "{plain:?}");

    // RequestMirror: every request answered by shop, a copy of each at the mirror.
    converge("a first mirrored copy", || {
        gw.get(SHOP, "/mirrored/warm", &[]);
        match gw.count("mirror", "/mirrored/warm") {
            Ok(n) if n >= 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })?;
    const REQUESTS: u64 = 20;
    for i in 0..REQUESTS {
        let response = gw.get(SHOP, "/mirrored", &[]);
        assert_eq!(
            response.echo_pod().as_deref(),
            Some("shop"),
            "request {i}: {response:?}"
        );
    }
    let mut copies = 0;
    wait_until(Duration::from_secs(10), || {
        copies = gw.count("mirror", "/mirrored").unwrap_or(0);
        copies >= REQUESTS
    });
    assert_eq!(copies, REQUESTS, "copies at the mirror");
    assert_eq!(gw.count("shop", "/mirrored")?, REQUESTS);
    assert_eq!(gw.count("mirror", "/plain")?, 0, "only the mirrored rule");

    // timeouts.request: a 3 s backend becomes a 504 after about a second; a fast one is fine.
    let started = Instant::now();
    let slow = gw.get(SHOP, "/slow?delay_ms=3000", &[]);
    let took = started.elapsed();
    eprintln!("the slow request ended with {} after {took:?}", slow.status);
    assert_eq!(slow.status, 504, "{slow:?}\n{}", gw.diagnostics());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "timed out after {took:?}, not about 1s"
    );
    let quick = gw.get(SHOP, "/slow?delay_ms=200", &[]);
    assert_eq!(quick.echo_pod().as_deref(), Some("shop"), "{quick:?}");
    let unlimited = gw.get(SHOP, "/other?delay_ms=1500", &[]);
    assert_eq!(
        unlimited.status, 200,
        "no timeout on other rules: {unlimited:?}"
    );

    // proxy-config routes names the HTTPRoute behind each of the router's routes.
    let output = cli::in_hub(&gw.mesh, &["proxy-config", "routes", "web-istio.infra"])?;
    assert!(output.status.success(), "{}", cli::describe(&output));
    let rows = cli::parse_table(&cli::stdout(&output));
    let shop_rows: Vec<_> = rows
        .iter()
        .filter(|row| row.get("DOMAINS").is_some_and(|d| d.contains(SHOP)))
        .collect();
    assert!(
        shop_rows.len() >= 8,
        "a route per rule of the shop HTTPRoute: {rows:?}"
    );
    for row in &shop_rows {
        assert_eq!(
            row.get("VIRTUAL SERVICE").map(String::as_str),
            Some("HTTPRoute/shop.apps"),
            "{row:?}"
        );
    }
    assert!(
        shop_rows
            .iter()
            .any(|row| row.get("MATCH").map(String::as_str) == Some("/old*")),
        "{shop_rows:?}"
    );
    Ok(())
}
