//! The JWKS source: meshd fetches the documents behind RequestAuthentication `jwksUri`s (no proxy
//! ever does, as with istiod) and hands them to the index as [`SourceEvent::Jwks`] events, like
//! files and watches hand in objects.
//!
//! The index loop says which URIs the current snapshot uses (a `watch` channel); every URI is
//! fetched in a task of its own, within [`FETCH_TIMEOUT`], so a `jwksUri` that never answers
//! delays nothing but its own keys. Known URIs are fetched again every `--jwks-refresh`, and ones
//! that never worked every [`FAILED_RETRY`]. A failed refresh keeps the keys fetched before; a URI
//! that never worked has none, and tokens of its issuer are refused meanwhile.
//!
//! HTTP is reqwest's: TLS by rustls on aws-lc-rs, verified against the system trust store,
//! `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` from the environment, a few redirects.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use meshd_model::{JwksState, SourceEvent};
use tokio::sync::{mpsc, watch};

/// The longest one fetch (connect, TLS, request, response, redirects) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A URI that never produced keys is tried again this often (or every refresh, if sooner).
const FAILED_RETRY: Duration = Duration::from_secs(30);
/// JWKS documents are a few kilobytes; anything much bigger is not one.
const MAX_BODY: usize = 1 << 20;
const MAX_REDIRECTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response larger than {MAX_BODY} bytes")]
    TooLarge,
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    NotJwks(String),
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        // reqwest's own message names the step; its sources say why.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        FetchError::Http(text)
    }
}

/// Fetches JWKS documents.
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
}

impl Fetcher {
    /// Trusting the system's roots, proxies from the environment.
    pub fn new(timeout: Duration) -> Result<Fetcher, FetchError> {
        Self::build(reqwest::Client::builder(), timeout)
    }

    /// Trusting only `roots` (PEM): for tests with a private CA.
    #[cfg(test)]
    fn trusting_only(roots_pem: &str, timeout: Duration) -> Result<Fetcher, FetchError> {
        let roots = reqwest::Certificate::from_pem_bundle(roots_pem.as_bytes())?;
        Self::build(reqwest::Client::builder().tls_certs_only(roots), timeout)
    }

    fn build(builder: reqwest::ClientBuilder, timeout: Duration) -> Result<Fetcher, FetchError> {
        let client = builder
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .user_agent("meshd")
            .timeout(timeout)
            .build()?;
        Ok(Fetcher { client, timeout })
    }

    /// GETs `uri` and checks the answer is a JWKS.
    pub async fn fetch(&self, uri: &str) -> Result<String, FetchError> {
        // reqwest's timeout covers the body too; this one also covers a body read in pieces.
        tokio::time::timeout(self.timeout, self.get(uri))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.timeout)))
    }

    async fn get(&self, uri: &str) -> Result<String, FetchError> {
        let mut response = self
            .client
            .get(uri)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| match e.is_timeout() {
                true => FetchError::Timeout(self.timeout),
                false => e.into(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(body)
            .map_err(|_| FetchError::NotJwks("the body is not UTF-8".to_string()))?;
        meshd_model::authz::jwt::check_jwks(&text).map_err(FetchError::NotJwks)?;
        Ok(text)
    }
}

/// What the source knows of one URI.
struct Entry {
    state: JwksState,
    attempted: Option<Instant>,
    in_flight: bool,
}

/// Starts the source: fetches what `wanted` names, and again when due, until the index goes away.
pub fn spawn(
    fetcher: Fetcher,
    refresh: Duration,
    wanted: watch::Receiver<BTreeSet<String>>,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    tokio::spawn(run(fetcher, refresh, wanted, tx));
}

async fn run(
    fetcher: Fetcher,
    refresh: Duration,
    mut wanted: watch::Receiver<BTreeSet<String>>,
    tx: mpsc::UnboundedSender<SourceEvent>,
) {
    let retry = refresh.min(FAILED_RETRY);
    let (done_tx, mut done) = mpsc::unbounded_channel::<(String, Result<String, FetchError>)>();
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut tick = tokio::time::interval(retry.clamp(Duration::from_millis(100), FAILED_RETRY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                let uris = wanted.borrow_and_update().clone();
                let gone: Vec<String> =
                    entries.keys().filter(|u| !uris.contains(*u)).cloned().collect();
                for uri in gone {
                    entries.remove(&uri);
                    if tx.send(SourceEvent::Jwks { uri, state: None }).is_err() {
                        return;
                    }
                }
                for uri in uris {
                    entries.entry(uri).or_insert(Entry {
                        state: JwksState::default(),
                        attempted: None,
                        in_flight: false,
                    });
                }
            }
            Some((uri, result)) = done.recv() => {
                // Gone meanwhile: no snapshot uses it any more.
                let Some(entry) = entries.get_mut(&uri) else { continue };
                entry.in_flight = false;
                let before = entry.state.clone();
                record(&uri, &mut entry.state, result);
                if entry.state != before {
                    if before.keys.is_some() && entry.state.keys != before.keys {
                        tracing::info!(%uri, "JWKS changed; rebuilding the configuration");
                    }
                    let state = Some(entry.state.clone());
                    if tx.send(SourceEvent::Jwks { uri, state }).is_err() {
                        return;
                    }
                }
            }
            _ = tick.tick() => {}
        }
        // Start whatever is due: new URIs at once, the others per refresh or retry period.
        let now = Instant::now();
        for (uri, entry) in entries.iter_mut() {
            let period = if entry.state.keys.is_some() {
                refresh
            } else {
                retry
            };
            let due = entry
                .attempted
                .is_none_or(|at| now.saturating_duration_since(at) >= period);
            if entry.in_flight || !due {
                continue;
            }
            entry.in_flight = true;
            entry.attempted = Some(now);
            let (fetcher, uri, done_tx) = (fetcher.clone(), uri.clone(), done_tx.clone());
            tokio::spawn(async move {
                let result = fetcher.fetch(&uri).await;
                let _ = done_tx.send((uri, result));
            });
        }
    }
}

/// Applies a fetch result: new keys replace the old, a failure keeps them.
fn record(uri: &str, state: &mut JwksState, result: Result<String, FetchError>) {
    match result {
        Ok(keys) => {
            if state.keys.as_ref() != Some(&keys) {
                tracing::info!(uri, "fetched new JWKS");
            }
            state.keys = Some(keys);
            state.error = None;
        }
        Err(e) => {
            if state.keys.is_some() {
                tracing::warn!(uri, error = %e, "fetching JWKS failed; keeping the keys fetched before");
            } else {
                tracing::warn!(uri, error = %e, "fetching JWKS failed; tokens from its issuers are refused");
            }
            state.error = Some(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests;
