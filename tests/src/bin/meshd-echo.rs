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
//! TCP (`--tcp PORT`, repeatable): each line received is sent back as `NAME: line`.

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
}

#[derive(Clone)]
struct PortState {
    echo: Arc<Echo>,
    port: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.http.is_empty() || !args.tcp.is_empty(),
        "nothing to serve: give --http PORT and/or --tcp PORT"
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
    let body = serde_json::json!({
        "pod": state.echo.name,
        "namespace": state.echo.namespace,
        "port": state.port,
        "method": method.as_str(),
        "path": path,
        "query": uri.query().unwrap_or_default(),
        "headers": echoed,
        "remote": remote.to_string(),
    });
    json(status, body.to_string())
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
