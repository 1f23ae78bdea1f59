//! `meshd-echo`: the app in end-to-end tests.
//!
//! HTTP (`--http PORT`, repeatable): every request is answered with JSON describing it and who
//! answered — `{"pod", "namespace", "port", "method", "path", "query", "headers", "remote"}` — so
//! a test sees where routing sent it and what the proxies added. Query parameters steer the
//! answer: `status=CODE` sets the status, `delay_ms=N` waits first, `fail_first=N` answers the
//! first N requests for the path with `status` (503 if not given) and later ones with 200 — a
//! backend that recovers, for retry tests. `GET /_count` returns `{path: requests}` seen so far
//! (retries, mirrors); `/_count?reset=1` also clears it. `--always-status CODE` answers every
//! request without `status=` with CODE: a broken pod, for outlier detection.
//!
//! Tracing: `forward=http://HOST:PORT/PATH` makes the app call that URL first, passing on the
//! trace context it received (`x-request-id`, B3, W3C) as Istio asks apps to, and include the
//! answer under `"forwarded"`. A Zipkin collector too: `POST /api/v2/spans` (JSON, as Envoy
//! reports) is kept and answered 202; `GET /_spans` returns every span received so far.
//!
//! TCP (`--tcp PORT`, repeatable): each line received is sent back as `NAME: line`.
//!
//! gRPC (`--grpc PORT`, repeatable): HTTP/2 without TLS (prior knowledge), as a gRPC server
//! behind a proxy speaks it. Every call succeeds: one message whose payload is JSON describing the
//! call — `{"pod", "namespace", "port", "path", "authority", "content-type"}` — then trailer
//! `grpc-status: 0`. Whatever the method, so a test sees where routing sent a call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Parser as _;
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Parser, Debug)]
#[command(name = "meshd-echo", about = "Echo app for meshd's end-to-end tests")]
struct Args {
    /// Name reported in every answer (the pod's name).
    #[arg(long, env = "POD_NAME", default_value = "echo")]
    name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Serve HTTP/1.1 on this port (repeatable).
    #[arg(long)]
    http: Vec<u16>,
    /// Serve line echo on this port (repeatable).
    #[arg(long)]
    tcp: Vec<u16>,
    /// Serve gRPC over h2c on this port (repeatable).
    #[arg(long)]
    grpc: Vec<u16>,
    /// Address to listen on (a loopback address lets several run on one host).
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// Answer every request with this status (a broken pod), unless `status=` says otherwise.
    #[arg(long)]
    always_status: Option<u16>,
}

struct Echo {
    name: String,
    namespace: String,
    always_status: Option<StatusCode>,
    counts: Mutex<BTreeMap<String, u64>>,
    spans: Mutex<Vec<serde_json::Value>>,
}

/// The headers that carry a trace from one hop to the next; apps must copy them.
const TRACE_HEADERS: [&str; 10] = [
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "x-ot-span-context",
];

#[derive(Clone)]
struct PortState {
    echo: Arc<Echo>,
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.http.is_empty() || !args.tcp.is_empty() || !args.grpc.is_empty(),
        "nothing to serve: give --http PORT, --tcp PORT and/or --grpc PORT"
    );
    let always_status = args
        .always_status
        .map(StatusCode::from_u16)
        .transpose()
        .context("--always-status is not an HTTP status")?;
    let echo = Arc::new(Echo {
        name: args.name,
        namespace: args.namespace,
        always_status,
        counts: Mutex::new(BTreeMap::new()),
        spans: Mutex::new(Vec::new()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for port in args.http {
        let listener = bind(args.address, port).await?;
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(PortState {
                echo: echo.clone(),
                port,
            })
            .into_make_service_with_connect_info::<SocketAddr>();
        tasks.spawn(async move {
            axum::serve(listener, app)
                .await
                .with_context(|| format!("serving HTTP on {port}"))
        });
    }
    for port in args.tcp {
        let listener = bind(args.address, port).await?;
        let name = echo.name.clone();
        tasks.spawn(serve_lines(listener, name));
    }
    for port in args.grpc {
        let listener = bind(args.address, port).await?;
        let state = PortState {
            echo: echo.clone(),
            port,
        };
        tasks.spawn(serve_grpc(listener, state));
    }
    println!("meshd-echo {}.{} serving", echo.name, echo.namespace);
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn bind(address: std::net::IpAddr, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind((address, port))
        .await
        .with_context(|| format!("binding {address}:{port}"))
}

async fn answer(
    State(state): State<PortState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: Vec<(String, String)> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    println!("{method} {uri} from {remote} on :{}", state.port);

    if path == "/api/v2/spans" && method == Method::POST {
        let received: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap_or_default();
        state.echo.spans.lock().extend(received);
        return json(StatusCode::ACCEPTED, String::new());
    }
    if path == "/_spans" {
        let spans = serde_json::Value::Array(state.echo.spans.lock().clone());
        return json(StatusCode::OK, spans.to_string());
    }
    if path == "/_count" {
        let mut counts = state.echo.counts.lock();
        let body = serde_json::to_string(&*counts).unwrap_or_default();
        if param("reset").is_some() {
            counts.clear();
        }
        return json(StatusCode::OK, body);
    }
    let seen = {
        let mut counts = state.echo.counts.lock();
        let count = counts.entry(path.clone()).or_default();
        *count += 1;
        *count
    };

    if let Some(delay) = param("delay_ms").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let requested = param("status")
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok());
    let status = match param("fail_first").and_then(|n| n.parse::<u64>().ok()) {
        Some(failures) if seen <= failures => requested.unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        Some(_) => StatusCode::OK,
        None => requested
            .or(state.echo.always_status)
            .unwrap_or(StatusCode::OK),
    };

    let mut echoed: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        echoed
            .entry(name.as_str().to_owned())
            .and_modify(|existing| {
                existing.push_str(", ");
                existing.push_str(&value);
            })
            .or_insert(value);
    }
    let mut body = serde_json::json!({
        "pod": state.echo.name,
        "namespace": state.echo.namespace,
        "port": state.port,
        "method": method.as_str(),
        "path": path,
        "query": uri.query().unwrap_or_default(),
        "headers": echoed,
        "remote": remote.to_string(),
    });
    if let Some(url) = param("forward") {
        let passed: Vec<(&str, String)> = TRACE_HEADERS
            .iter()
            .filter_map(|h| Some((*h, headers.get(*h)?.to_str().ok()?.to_owned())))
            .collect();
        body["forwarded"] = match forward(url, &passed).await {
            Ok((status, answer)) => serde_json::json!({"status": status, "body": answer}),
            Err(e) => serde_json::json!({"error": e.to_string()}),
        };
    }
    json(status, body.to_string())
}

/// GET `url` (plain `http://host:port/path`) with `headers`, over HTTP/1.1: the status and the
/// body (JSON if it parses).
async fn forward(
    url: &str,
    headers: &[(&str, String)],
) -> anyhow::Result<(u16, serde_json::Value)> {
    let rest = url
        .strip_prefix("http://")
        .context("forward= takes an http:// URL")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let mut stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(authority))
        .await
        .context("connecting")??;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw),
    )
    .await
    .context("reading the answer")??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
    Ok((status, value))
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

fn json(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn serve_lines(listener: TcpListener, name: String) -> anyhow::Result<()> {
    loop {
        let (stream, remote) = listener.accept().await.context("accepting")?;
        println!("tcp connection from {remote}");
        let name = name.clone();
        tokio::spawn(async move {
            // A client going away mid-line is normal; nothing to report.
            let _ = echo_lines(stream, &name).await;
        });
    }
}

async fn echo_lines(stream: TcpStream, name: &str) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        write
            .write_all(format!("{name}: {line}\n").as_bytes())
            .await?;
    }
    Ok(())
}

async fn serve_grpc(listener: TcpListener, state: PortState) -> anyhow::Result<()> {
    loop {
        let (stream, remote) = listener.accept().await.context("accepting")?;
        println!("h2c connection from {remote} on :{}", state.port);
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = grpc_connection(stream, state).await {
                println!("h2c connection from {remote}: {err}");
            }
        });
    }
}

async fn grpc_connection(stream: TcpStream, state: PortState) -> Result<(), h2::Error> {
    let mut connection = h2::server::handshake(stream).await?;
    while let Some(call) = connection.accept().await {
        let (request, respond) = call?;
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = grpc_call(request, respond, &state).await {
                println!("gRPC call: {err}");
            }
        });
    }
    Ok(())
}

/// Answers one call (after reading the request to its end) with a message describing it.
async fn grpc_call(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    state: &PortState,
) -> Result<(), h2::Error> {
    let (head, mut body) = request.into_parts();
    while let Some(data) = body.data().await {
        let data = data?;
        let _ = body.flow_control().release_capacity(data.len());
    }
    let header = |name: &str| {
        head.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    };
    println!("gRPC {} on :{}", head.uri.path(), state.port);
    let described = serde_json::json!({
        "pod": state.echo.name,
        "namespace": state.echo.namespace,
        "port": state.port,
        "path": head.uri.path(),
        "authority": head.uri.authority().map(|a| a.as_str()).unwrap_or_default(),
        "content-type": header("content-type"),
    })
    .to_string();
    // A gRPC message: uncompressed flag, big-endian length, payload.
    let mut message = vec![0u8];
    message.extend((described.len() as u32).to_be_bytes());
    message.extend(described.as_bytes());

    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap_or_default();
    let mut send = respond.send_response(response, false)?;
    send.send_data(message.into(), false)?;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    send.send_trailers(trailers)
}
