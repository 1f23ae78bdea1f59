#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;

const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"k1"}]}"#;

/// What the issuer serves at `/jwks`, changeable while it runs; `/calls` counts requests.
#[derive(Clone, Default)]
struct Issuer {
    answer: Arc<parking_lot::Mutex<(StatusCode, String)>>,
    calls: Arc<AtomicUsize>,
}

impl Issuer {
    fn set(&self, status: StatusCode, body: &str) {
        *self.answer.lock() = (status, body.to_string());
    }
}

async fn jwks(State(issuer): State<Issuer>) -> Response {
    issuer.calls.fetch_add(1, Ordering::SeqCst);
    issuer.answer.lock().clone().into_response()
}

/// An issuer on loopback: `/jwks` (as set), `/moved` (redirects there), `/big` (2 MiB).
async fn serve_issuer() -> (String, Issuer) {
    let issuer = Issuer::default();
    issuer.set(StatusCode::OK, JWKS);
    let app = Router::new()
        .route("/jwks", get(jwks))
        .route("/moved", get(|| async { Redirect::temporary("/jwks") }))
        .route("/big", get(|| async { "x".repeat(2 << 20) }))
        .with_state(issuer.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, issuer)
}

/// A server that accepts connections and never answers.
async fn serve_silence() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    base
}

fn fetcher() -> Fetcher {
    Fetcher::new(Duration::from_secs(2)).unwrap()
}

#[tokio::test]
async fn a_jwks_is_fetched_and_redirects_are_followed() {
    let (base, _) = serve_issuer().await;
    assert_eq!(
        fetcher().fetch(&format!("{base}/jwks")).await.unwrap(),
        JWKS
    );
    assert_eq!(
        fetcher().fetch(&format!("{base}/moved")).await.unwrap(),
        JWKS
    );
}

#[tokio::test]
async fn errors_say_what_was_wrong() {
    let (base, issuer) = serve_issuer().await;
    issuer.set(StatusCode::NOT_FOUND, "");
    let err = fetcher().fetch(&format!("{base}/jwks")).await.unwrap_err();
    assert!(matches!(err, FetchError::Status(404)), "{err}");
    issuer.set(StatusCode::OK, r#"{"not":"keys"}"#);
    let err = fetcher().fetch(&format!("{base}/jwks")).await.unwrap_err();
    assert!(matches!(err, FetchError::NotJwks(_)), "{err}");
    let err = fetcher().fetch(&format!("{base}/big")).await.unwrap_err();
    assert!(matches!(err, FetchError::TooLarge), "{err}");
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let err = fetcher().fetch(&uri).await.unwrap_err();
    assert!(err.to_string().contains("onnect"), "{err}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let base = serve_silence().await;
    let quick = Fetcher::new(Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    let err = quick.fetch(&format!("{base}/jwks")).await.unwrap_err();
    assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn https_is_verified_against_the_trusted_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = meshd_ca::CertificateAuthority::load_or_generate(meshd_ca::CaOptions::new(
        dir.path(),
        "cluster.local",
    ))
    .unwrap();
    let cert = crate::tls::ServingCert::issue(
        &ca,
        vec!["localhost".to_string()],
        vec!["127.0.0.1".parse().unwrap()],
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/jwks", listener.local_addr().unwrap());
    let alpn = vec![b"http/1.1".to_vec()];
    let mut incoming = crate::tls::incoming_with_alpn(listener, cert, alpn);
    tokio::spawn(async move {
        use tokio_stream::StreamExt as _;
        while let Some(Ok(mut tls)) = incoming.next().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{JWKS}",
                    JWKS.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let trusting = Fetcher::trusting_only(&ca.root_bundle_pem(), Duration::from_secs(5)).unwrap();
    assert_eq!(trusting.fetch(&url).await.unwrap(), JWKS);
    // The system's trust store does not hold meshd's private root.
    let err = fetcher().fetch(&url).await.unwrap_err();
    assert!(matches!(err, FetchError::Http(_)), "{err}");
}

/// The next JWKS event the source sends, within a few seconds.
async fn next_event(rx: &mut mpsc::UnboundedReceiver<SourceEvent>) -> (String, Option<JwksState>) {
    match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
        Ok(Some(SourceEvent::Jwks { uri, state })) => (uri, state),
        other => panic!("expected a JWKS event, got {other:?}"),
    }
}

#[tokio::test]
async fn a_uri_that_never_answers_delays_no_other_uri() {
    let (base, _) = serve_issuer().await;
    let silent = format!("{}/jwks", serve_silence().await);
    let good = format!("{base}/jwks");
    let (wanted_tx, wanted) = watch::channel(BTreeSet::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn(
        Fetcher::new(Duration::from_secs(30)).unwrap(),
        Duration::from_secs(600),
        wanted,
        tx,
    );
    let started = Instant::now();
    wanted_tx.send_replace(BTreeSet::from([silent, good.clone()]));
    let (uri, state) = next_event(&mut rx).await;
    assert_eq!(uri, good);
    assert_eq!(state.unwrap().keys.as_deref(), Some(JWKS));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn failed_refreshes_keep_the_keys_and_forgotten_uris_are_dropped() {
    let (base, issuer) = serve_issuer().await;
    let uri = format!("{base}/jwks");
    let (wanted_tx, wanted) = watch::channel(BTreeSet::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn(fetcher(), Duration::from_millis(200), wanted, tx);
    wanted_tx.send_replace(BTreeSet::from([uri.clone()]));
    let (_, state) = next_event(&mut rx).await;
    assert_eq!(state.unwrap().keys.as_deref(), Some(JWKS));
    issuer.set(StatusCode::SERVICE_UNAVAILABLE, "");
    let (_, state) = next_event(&mut rx).await;
    let state = state.unwrap();
    assert_eq!(
        state.keys.as_deref(),
        Some(JWKS),
        "a failure keeps the keys"
    );
    assert!(state.error.unwrap().contains("503"));
    let rotated = JWKS.replace("k1", "k2");
    issuer.set(StatusCode::OK, &rotated);
    let (_, state) = next_event(&mut rx).await;
    assert_eq!(
        state.unwrap(),
        JwksState {
            keys: Some(rotated),
            error: None
        }
    );
    wanted_tx.send_replace(BTreeSet::new());
    assert_eq!(next_event(&mut rx).await, (uri, None));
    // Nothing is fetched for a URI nobody uses.
    let calls = issuer.calls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(issuer.calls.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn an_unreachable_uri_is_reported_with_no_keys() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/jwks", closed.local_addr().unwrap());
    drop(closed);
    let (wanted_tx, wanted) = watch::channel(BTreeSet::new());
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn(fetcher(), Duration::from_secs(600), wanted, tx);
    wanted_tx.send_replace(BTreeSet::from([uri.clone()]));
    let (got, state) = next_event(&mut rx).await;
    let state = state.unwrap();
    assert_eq!(got, uri);
    assert!(state.keys.is_none());
    assert!(state.error.is_some());
}
