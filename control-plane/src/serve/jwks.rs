//! JWKS documents for RequestAuthentication `jwksUri`s, fetched by meshd and inlined into the
//! proxies' jwt_authn config (as istiod does), so no proxy ever reaches out to an issuer.
//!
//! [`JwksCache`] keeps the last good document per URI. Before a snapshot is published the index
//! loop asks it for the URIs the snapshot uses ([`JwksCache::resolve`]): URIs it has not seen are
//! fetched then, concurrently, each within [`FETCH_TIMEOUT`]. [`spawn_refresher`] fetches known
//! URIs again every `--jwks-refresh` (ones that never worked sooner) and asks the index loop for a
//! rebuild when a key set changed. A failed fetch keeps the previous keys; a URI that never worked
//! has none, and its issuer's tokens are refused.
//!
//! The client is a minimal HTTP/1.1 GET: one request per connection (`Connection: close`), bodies
//! framed by Content-Length, chunked or the end of the connection, a few redirects; TLS with
//! rustls on aws-lc-rs, trusting the system bundle.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::SourceEvent;

/// The longest one fetch (connect, TLS, request, response, redirects) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Where Debian-like systems keep the trusted roots.
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";
/// A URI that never produced keys is tried again this often (or every refresh, if sooner).
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// JWKS documents are a few kilobytes; anything much bigger is not one.
const MAX_BODY: usize = 1 << 20;
const MAX_HEADER: usize = 64 << 10;
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL: {0}")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    NotJwks(String),
}

/// An `http://` or `https://` URL, split for one GET.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    /// Without IPv6 brackets.
    host: String,
    port: u16,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(text: &str) -> Result<Url, FetchError> {
        let bad = |why: &str| FetchError::Url(format!("{text:?}: {why}"));
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("not an http(s) URL"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("credentials in URLs are not supported"));
        }
        let default_port = if tls { 443 } else { 80 };
        let parse_port = |p: &str| p.parse::<u16>().map_err(|_| bad("invalid port"));
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (host, parse_port(p)?),
                None if after.is_empty() => (host, default_port),
                None => return Err(bad("junk after the address")),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (host, parse_port(p)?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let path = if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host[:port]` as the `Host` header states it.
    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// Where a redirect's `Location` points.
    fn join(&self, location: &str) -> Result<Url, FetchError> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with('/') && !location.starts_with("//") {
            Ok(Url {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            Err(FetchError::Malformed(format!(
                "unsupported redirect Location {location:?}"
            )))
        }
    }
}

/// The parts of a response a JWKS fetch looks at.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// Fetches JWKS documents over HTTP/1.1.
#[derive(Clone)]
pub struct Fetcher {
    /// The TLS client config, or why there is none (no usable roots).
    tls: Result<Arc<rustls::ClientConfig>, String>,
    timeout: Duration,
}

impl Fetcher {
    /// Trusting the roots in the PEM bundle at `roots` (e.g. [`SYSTEM_ROOTS`]). Without a usable
    /// bundle only `http://` URIs can be fetched.
    pub fn new(roots: &Path, timeout: Duration) -> Fetcher {
        let tls = load_roots(roots).and_then(client_config);
        if let Err(e) = &tls {
            tracing::warn!(error = %e, "no trusted roots for https jwksUri fetches");
        }
        Fetcher { tls, timeout }
    }

    #[cfg(test)]
    fn with_roots(roots: rustls::RootCertStore, timeout: Duration) -> Fetcher {
        Fetcher {
            tls: client_config(roots),
            timeout,
        }
    }

    /// GETs `uri` (following a few redirects) and checks the answer is a JWKS.
    pub async fn fetch(&self, uri: &str) -> Result<String, FetchError> {
        tokio::time::timeout(self.timeout, self.fetch_following(uri))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn fetch_following(&self, uri: &str) -> Result<String, FetchError> {
        let mut url = Url::parse(uri)?;
        for _ in 0..=MAX_REDIRECTS {
            let response = self.get(&url).await?;
            match response.status {
                200 => {
                    let text = String::from_utf8(response.body)
                        .map_err(|_| FetchError::NotJwks("the body is not UTF-8".to_string()))?;
                    meshd_model::authz::jwt::check_jwks(&text).map_err(FetchError::NotJwks)?;
                    return Ok(text);
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = response.location.ok_or_else(|| {
                        FetchError::Malformed("a redirect without Location".to_string())
                    })?;
                    url = url.join(&location)?;
                }
                status => return Err(FetchError::Status(status)),
            }
        }
        Err(FetchError::Malformed(format!(
            "more than {MAX_REDIRECTS} redirects"
        )))
    }

    async fn get(&self, url: &Url) -> Result<Response, FetchError> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|source| FetchError::Connect {
                addr: url.authority(),
                source,
            })?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: meshd\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n",
            url.path,
            url.authority()
        );
        if !url.tls {
            return exchange(tcp, &request).await;
        }
        let config = self.tls.clone().map_err(FetchError::Tls)?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| FetchError::Url(format!("{:?}: {e}", url.host)))?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        exchange(stream, &request).await
    }
}

fn load_roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .filter_map(Result::ok);
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    if roots.is_empty() {
        return Err(format!("no certificates in {}", path.display()));
    }
    Ok(roots)
}

fn client_config(roots: rustls::RootCertStore) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Sends `request` and reads until the response is complete by its framing, or the peer closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> Result<Response, FetchError> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(response) = parse_response(&buf, false)? {
            return Ok(response);
        }
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // Many servers close TLS without close_notify; the framing tells whether all arrived.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return parse_response(&buf, true)?.ok_or_else(|| {
                FetchError::Malformed("the connection closed mid-response".to_string())
            });
        }
        if buf.len() + n > MAX_HEADER + MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn malformed(why: impl Into<String>) -> FetchError {
    FetchError::Malformed(why.into())
}

/// The response in `buf` once it is complete; `None` while more is to come. `eof`: nothing more
/// will come.
fn parse_response(buf: &[u8], eof: bool) -> Result<Option<Response>, FetchError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if eof {
            Err(malformed("no complete header"))
        } else if buf.len() > MAX_HEADER {
            Err(malformed("header too long"))
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| malformed("header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;
    let mut location = None;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("header line {line:?}")))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "location" => location = Some(value.to_string()),
            "content-length" => {
                content_length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| malformed(format!("Content-Length {value:?}")))?,
                )
            }
            "transfer-encoding" => {
                chunked = value
                    .rsplit(',')
                    .next()
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            }
            _ => {}
        }
    }
    let rest = &buf[end + 4..];
    if (100..200).contains(&status) {
        // An interim response (100 Continue): the real one follows.
        return parse_response(rest, eof);
    }
    let body = if chunked {
        match decode_chunked(rest)? {
            Some(body) => body,
            None if eof => return Err(malformed("the chunked body was cut short")),
            None => return Ok(None),
        }
    } else if let Some(len) = content_length {
        if len > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        if rest.len() >= len {
            rest[..len].to_vec()
        } else if eof {
            return Err(malformed("the body is shorter than its Content-Length"));
        } else {
            return Ok(None);
        }
    } else if eof {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Response {
        status,
        location,
        body,
    }))
}

/// A complete chunked body, decoded; `None` while its last chunk has not arrived.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, FetchError> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[..line_end])
            .map_err(|_| malformed("chunk size line is not UTF-8"))?;
        // Chunk extensions (`;name=value`) are allowed and mean nothing here.
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| malformed(format!("chunk size {size_text:?}")))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailer lines, then an empty line.
            loop {
                let Some(end) = find(data, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(out));
                }
                data = &data[end + 2..];
            }
        }
        if out.len() + size > MAX_BODY {
            return Err(FetchError::TooLarge);
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        if &data[size..size + 2] != b"\r\n" {
            return Err(malformed("a chunk is not followed by CRLF"));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

struct Entry {
    /// The last good document.
    keys: Option<String>,
    /// Why the last fetch failed, if it did.
    error: Option<String>,
    attempted: Instant,
}

/// What a snapshot gets for its `jwksUri`s.
#[derive(Debug, Default)]
pub struct Resolved {
    /// Documents by URI.
    pub keys: BTreeMap<String, String>,
    /// Why, by URI, for the URIs that have no keys.
    pub errors: BTreeMap<String, String>,
}

/// The JWKS documents meshd has fetched, by URI.
pub struct JwksCache {
    fetcher: Fetcher,
    refresh: Duration,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl JwksCache {
    pub fn new(fetcher: Fetcher, refresh: Duration) -> JwksCache {
        JwksCache {
            fetcher,
            refresh,
            entries: Mutex::default(),
        }
    }

    /// The keys for `uris`, fetching those not seen before; forgets URIs no longer in use.
    pub async fn resolve(&self, uris: &BTreeSet<String>) -> Resolved {
        let missing: Vec<String> = {
            let mut entries = self.entries.lock();
            entries.retain(|uri, _| uris.contains(uri));
            uris.iter()
                .filter(|uri| !entries.contains_key(*uri))
                .cloned()
                .collect()
        };
        let results =
            futures::future::join_all(missing.iter().map(|uri| self.fetcher.fetch(uri))).await;
        let mut entries = self.entries.lock();
        for (uri, result) in missing.into_iter().zip(results) {
            let mut entry = Entry {
                keys: None,
                error: None,
                attempted: Instant::now(),
            };
            record(&uri, &mut entry, result);
            entries.insert(uri, entry);
        }
        let mut resolved = Resolved::default();
        for uri in uris {
            match entries.get(uri) {
                Some(Entry {
                    keys: Some(keys), ..
                }) => {
                    resolved.keys.insert(uri.clone(), keys.clone());
                }
                Some(Entry { error, .. }) => {
                    let why = error.clone().unwrap_or_else(|| "not fetched".to_string());
                    resolved.errors.insert(uri.clone(), why);
                }
                None => {
                    resolved
                        .errors
                        .insert(uri.clone(), "not fetched".to_string());
                }
            }
        }
        resolved
    }

    /// Fetches again the URIs that are due; true if some URI's keys changed.
    pub async fn refresh_due(&self) -> bool {
        let now = Instant::now();
        let retry = self.retry_interval();
        let due: Vec<String> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| {
                let wait = if e.keys.is_some() {
                    self.refresh
                } else {
                    retry
                };
                now.saturating_duration_since(e.attempted) >= wait
            })
            .map(|(uri, _)| uri.clone())
            .collect();
        if due.is_empty() {
            return false;
        }
        let results =
            futures::future::join_all(due.iter().map(|uri| self.fetcher.fetch(uri))).await;
        let mut changed = false;
        let mut entries = self.entries.lock();
        for (uri, result) in due.into_iter().zip(results) {
            // Gone meanwhile: no snapshot uses it any more.
            let Some(entry) = entries.get_mut(&uri) else {
                continue;
            };
            let before = entry.keys.clone();
            record(&uri, entry, result);
            changed |= entry.keys != before;
        }
        changed
    }

    /// How often the refresher looks for due URIs.
    fn retry_interval(&self) -> Duration {
        self.refresh.min(FAILED_RETRY)
    }
}

/// Applies a fetch result: new keys replace the old, a failure keeps them.
fn record(uri: &str, entry: &mut Entry, result: Result<String, FetchError>) {
    entry.attempted = Instant::now();
    match result {
        Ok(keys) => {
            if entry.keys.as_ref() != Some(&keys) {
                tracing::info!(uri, "fetched new JWKS");
            }
            entry.keys = Some(keys);
            entry.error = None;
        }
        Err(e) => {
            if entry.keys.is_some() {
                tracing::warn!(uri, error = %e, "fetching JWKS failed; keeping the keys fetched before");
            } else {
                tracing::warn!(uri, error = %e, "fetching JWKS failed; tokens from its issuers are refused");
            }
            entry.error = Some(e.to_string());
        }
    }
}

/// Refreshes the cache in the background; when keys change, asks the index loop to rebuild.
pub fn spawn_refresher(cache: Arc<JwksCache>, tx: mpsc::UnboundedSender<SourceEvent>) {
    tokio::spawn(async move {
        let period = cache.retry_interval().max(Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; the index loop does the first fetches.
        tick.tick().await;
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            if cache.refresh_due().await {
                tracing::info!("JWKS changed; rebuilding the configuration");
                if tx.send(SourceEvent::Refresh).is_err() {
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::TcpListener;

    const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"x","y":"y","kid":"k1"}]}"#;

    fn fetcher() -> Fetcher {
        Fetcher::with_roots(rustls::RootCertStore::empty(), Duration::from_secs(2))
    }

    /// Serves one connection per answer in `answers` (raw bytes, written in the given pieces),
    /// keeping each connection open afterwards; returns the base URL and the requests seen.
    async fn serve(answers: Vec<Vec<&'static [u8]>>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let requests = seen.clone();
        tokio::spawn(async move {
            for pieces in answers {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while find(&request, b"\r\n\r\n").is_none() {
                    let n = stream.read(&mut buf).await.unwrap();
                    request.extend_from_slice(&buf[..n]);
                }
                requests
                    .lock()
                    .push(String::from_utf8_lossy(&request).into_owned());
                for piece in pieces {
                    stream.write_all(piece).await.unwrap();
                    stream.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Hold the connection open: the client must stop by the framing alone.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(stream);
                });
            }
        });
        (base, seen)
    }

    fn leak(text: String) -> &'static [u8] {
        Box::leak(text.into_bytes().into_boxed_slice())
    }

    #[tokio::test]
    async fn a_content_length_body_is_read_without_waiting_for_close() {
        let head = leak(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            JWKS.len()
        ));
        let (a, b) = JWKS.as_bytes().split_at(10);
        let (base, seen) = serve(vec![vec![head, a, b]]).await;
        let keys = fetcher()
            .fetch(&format!("{base}/keys.json?v=1"))
            .await
            .unwrap();
        assert_eq!(keys, JWKS);
        let request = seen.lock()[0].clone();
        assert!(
            request.starts_with("GET /keys.json?v=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        let authority = base.trim_start_matches("http://");
        assert!(
            request.contains(&format!("\r\nHost: {authority}\r\n")),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_chunked_body_is_reassembled() {
        let (a, b) = JWKS.split_at(17);
        let body = leak(format!(
            "{:x};ext=1\r\n{a}\r\n{:X}\r\n{b}\r\n0\r\nX-Trailer: t\r\n\r\n",
            a.len(),
            b.len()
        ));
        let (first, second) = body.split_at(9);
        let head: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (base, _) = serve(vec![vec![head, first, second]]).await;
        assert_eq!(fetcher().fetch(&format!("{base}/")).await.unwrap(), JWKS);
    }

    #[test]
    fn a_body_without_framing_ends_with_the_connection() {
        let raw = format!("HTTP/1.0 200 OK\r\n\r\n{JWKS}");
        assert_eq!(parse_response(raw.as_bytes(), false).unwrap(), None);
        let response = parse_response(raw.as_bytes(), true).unwrap().unwrap();
        assert_eq!(response.body, JWKS.as_bytes());
    }

    #[test]
    fn truncated_and_garbled_responses_are_errors() {
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        assert!(parse_response(short, false).unwrap().is_none());
        assert!(parse_response(short, true).is_err());
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab";
        assert!(parse_response(cut, true).is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
        let bad_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse_response(bad_chunk, false).is_err());
    }

    #[tokio::test]
    async fn redirects_are_followed_and_errors_name_the_status() {
        let redirect: &[u8] =
            b"HTTP/1.1 302 Found\r\nLocation: /moved\r\nContent-Length: 0\r\n\r\n";
        let ok = leak(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{JWKS}",
            JWKS.len()
        ));
        let (base, seen) = serve(vec![vec![redirect], vec![ok]]).await;
        assert_eq!(fetcher().fetch(&format!("{base}/old")).await.unwrap(), JWKS);
        assert!(seen.lock()[1].starts_with("GET /moved "));

        let missing: &[u8] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let (base, _) = serve(vec![vec![missing]]).await;
        let err = fetcher().fetch(&format!("{base}/")).await.unwrap_err();
        assert!(matches!(err, FetchError::Status(404)), "{err}");
    }

    #[tokio::test]
    async fn a_document_without_keys_is_not_a_jwks() {
        let body: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"issuer\":\"i\"}";
        let (base, _) = serve(vec![vec![body]]).await;
        let err = fetcher().fetch(&format!("{base}/")).await.unwrap_err();
        assert!(matches!(err, FetchError::NotJwks(_)), "{err}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let (base, _) = serve(vec![vec![b"HTTP/1.1 200 OK\r\n"]]).await;
        let fetcher =
            Fetcher::with_roots(rustls::RootCertStore::empty(), Duration::from_millis(300));
        let err = fetcher.fetch(&format!("{base}/")).await.unwrap_err();
        assert!(matches!(err, FetchError::Timeout(_)), "{err}");
    }

    #[test]
    fn urls_split_into_host_port_and_path() {
        let u = Url::parse("https://keys.example/a/b?x=1#frag").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path.as_str()),
            (true, "keys.example", 443, "/a/b?x=1")
        );
        assert_eq!(u.authority(), "keys.example");
        let u = Url::parse("http://[::1]:8080?q").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 8080, "/?q")
        );
        assert_eq!(u.authority(), "[::1]:8080");
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://user:pw@x/").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    #[tokio::test]
    async fn https_is_verified_against_the_given_roots() {
        let dir = std::env::temp_dir().join(format!("meshd-jwks-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = meshd_ca::CertificateAuthority::load_or_generate(meshd_ca::CaOptions::new(
            &dir,
            "cluster.local",
        ))
        .unwrap();
        let cert = super::super::tls::ServingCert::issue(
            &ca,
            vec!["localhost".to_string()],
            vec!["127.0.0.1".parse().unwrap()],
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/jwks", listener.local_addr().unwrap());
        let mut incoming = super::super::tls::incoming(listener, cert);
        tokio::spawn(async move {
            use tokio_stream::StreamExt as _;
            while let Some(Ok(mut tls)) = incoming.next().await {
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{JWKS}",
                    JWKS.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(
            CertificateDer::pem_slice_iter(ca.root_bundle_pem().as_bytes()).filter_map(Result::ok),
        );
        let trusting = Fetcher::with_roots(roots, Duration::from_secs(5));
        assert_eq!(trusting.fetch(&url).await.unwrap(), JWKS);
        // The system bundle does not hold meshd's private root.
        let system = Fetcher::new(Path::new(SYSTEM_ROOTS), Duration::from_secs(5));
        let err = system.fetch(&url).await.unwrap_err();
        assert!(matches!(err, FetchError::Tls(_)), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn failed_refreshes_keep_the_keys_and_changes_are_reported() {
        let v1 = leak(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{JWKS}",
            JWKS.len()
        ));
        let rotated = JWKS.replace("k1", "k2");
        let v2 = leak(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{rotated}",
            rotated.len()
        ));
        let down: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        let (base, _) = serve(vec![vec![v1], vec![down], vec![v1], vec![v2]]).await;
        let uri = format!("{base}/jwks");
        let cache = JwksCache::new(fetcher(), Duration::ZERO);
        let uris = BTreeSet::from([uri.clone()]);
        let first = cache.resolve(&uris).await;
        assert_eq!(first.keys[&uri], JWKS);
        // Resolving again does not fetch again.
        assert_eq!(cache.resolve(&uris).await.keys[&uri], JWKS);
        assert!(!cache.refresh_due().await, "a failure keeps the keys");
        assert_eq!(cache.resolve(&uris).await.keys[&uri], JWKS);
        assert!(!cache.refresh_due().await, "the same keys again");
        assert!(cache.refresh_due().await, "rotated keys");
        assert_eq!(cache.resolve(&uris).await.keys[&uri], rotated);
        // A URI no snapshot uses any more is forgotten.
        assert!(cache.resolve(&BTreeSet::new()).await.keys.is_empty());
        assert!(!cache.refresh_due().await);
    }

    #[tokio::test]
    async fn a_uri_that_cannot_be_fetched_has_an_error_and_no_keys() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/jwks", listener.local_addr().unwrap());
        drop(listener);
        let cache = JwksCache::new(fetcher(), Duration::from_secs(600));
        let resolved = cache.resolve(&BTreeSet::from([uri.clone()])).await;
        assert!(resolved.keys.is_empty());
        assert!(
            resolved.errors[&uri].starts_with("connecting to 127.0.0.1:"),
            "{:?}",
            resolved.errors
        );
    }
}
