//! Proxy identity from Kubernetes service-account tokens, checked with the TokenReview API.
//!
//! A proxy on the TLS port sends `authorization: Bearer <token>` (stock Envoy: google_grpc with
//! the `envoy.grpc_credentials.file_based_metadata` call credentials, which re-read the projected
//! token file on every new stream; see `meshd bootstrap --token-file`). The API server says
//! whose token it is (`system:serviceaccount:NS:SA`) for the audience meshd asks for.
//!
//! Admission (`Generator::connect`) and the CA's `Authenticator` are synchronous, and a review is
//! a network call. So the review runs earlier, asynchronously: [`TokenReviewLayer`] wraps the TLS
//! gRPC server and reviews a request's token before the request reaches any service; the sync
//! code then only looks the answer up in the cache that review filled. Answers are kept for
//! [`REVIEW_TTL`] (rejections for [`REJECTION_TTL`]) so a reconnect storm costs the API server
//! one review per token, not one per stream. An API server that cannot be asked is never cached:
//! the stream is refused as unavailable and the proxy retries.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;

/// How long an accepted token's review is trusted.
pub const REVIEW_TTL: Duration = Duration::from_secs(60);
/// How long a rejected token stays rejected without asking again.
pub const REJECTION_TTL: Duration = Duration::from_secs(5);
/// Reviews kept at most; expired ones are dropped first.
const CACHE_LIMIT: usize = 16_384;
/// The user extra key kubelet-projected (pod-bound) tokens carry.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Whose token it is, as the API server says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewedToken {
    pub namespace: String,
    pub service_account: String,
    /// The pod a bound token was issued for, if it was.
    pub pod_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    #[error("token rejected: {0}")]
    Rejected(String),
    #[error("token review unavailable: {0}")]
    Unavailable(String),
}

/// Reads the API server's answer: only an authenticated service account, for our audience.
pub fn reviewed_token(
    status: &TokenReviewStatus,
    audience: &str,
) -> Result<ReviewedToken, ReviewError> {
    if status.authenticated != Some(true) {
        return Err(ReviewError::Rejected(
            status
                .error
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "not authenticated".to_string()),
        ));
    }
    // The server only authenticates tokens for the audiences asked for; an answer naming others
    // (an old server ignoring `spec.audiences`) is not good enough.
    if let Some(audiences) = &status.audiences
        && !audiences.iter().any(|a| a == audience)
    {
        return Err(ReviewError::Rejected(format!(
            "token is not for audience {audience}"
        )));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let mut parts = username.split(':');
    let (Some("system"), Some("serviceaccount"), Some(namespace), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ReviewError::Rejected(format!(
            "{username:?} is not a service account"
        )));
    };
    if namespace.is_empty() || sa.is_empty() {
        return Err(ReviewError::Rejected(format!(
            "{username:?} is not a service account"
        )));
    }
    let pod_name = user
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|names| names.first())
        .cloned();
    Ok(ReviewedToken {
        namespace: namespace.to_string(),
        service_account: sa.to_string(),
        pod_name,
    })
}

struct Cached {
    until: Instant,
    result: Result<ReviewedToken, ReviewError>,
}

/// Reviews tokens with the API server, remembering answers briefly.
pub struct TokenReviewer {
    api: Option<Api<TokenReview>>,
    audience: String,
    cache: Mutex<HashMap<String, Cached>>,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: String) -> Self {
        TokenReviewer {
            api: Some(Api::all(client)),
            audience,
            cache: Mutex::default(),
        }
    }

    /// A reviewer that asks nobody: every token is unavailable until [`TokenReviewer::remember`]
    /// is told the answer (for tests of what relies on reviews).
    pub fn offline(audience: &str) -> Self {
        TokenReviewer {
            api: None,
            audience: audience.to_string(),
            cache: Mutex::default(),
        }
    }

    /// The answer for `token`, from the cache or the API server.
    pub async fn review(&self, token: &str) -> Result<ReviewedToken, ReviewError> {
        if let Some(hit) = self.cached(token) {
            return hit;
        }
        let Some(api) = &self.api else {
            return Err(ReviewError::Unavailable("no API server".to_string()));
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            api.create(&PostParams::default(), &review),
        )
        .await;
        let result = match answer {
            Ok(Ok(answer)) => reviewed_token(&answer.status.unwrap_or_default(), &self.audience),
            Ok(Err(e)) => return Err(ReviewError::Unavailable(e.to_string())),
            Err(_) => return Err(ReviewError::Unavailable("timed out".to_string())),
        };
        self.remember(token, result.clone());
        result
    }

    /// A still-fresh answer for `token`, if one was given.
    pub fn cached(&self, token: &str) -> Option<Result<ReviewedToken, ReviewError>> {
        let cache = self.cache.lock();
        let hit = cache.get(token)?;
        (hit.until > Instant::now()).then(|| hit.result.clone())
    }

    /// Keeps `result` as the answer for `token` for as long as its kind of answer is trusted.
    pub fn remember(&self, token: &str, result: Result<ReviewedToken, ReviewError>) {
        let ttl = match &result {
            Ok(_) => REVIEW_TTL,
            Err(ReviewError::Rejected(_)) => REJECTION_TTL,
            Err(ReviewError::Unavailable(_)) => return,
        };
        let now = Instant::now();
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(
            token.to_string(),
            Cached {
                until: now + ttl,
                result,
            },
        );
    }

    /// What the sync side does: the review the layer already made for this token.
    pub fn lookup(&self, token: Option<&str>) -> Result<ReviewedToken, ReviewError> {
        let token = token.ok_or_else(|| {
            ReviewError::Rejected("no `authorization: Bearer <token>` metadata".to_string())
        })?;
        self.cached(token).unwrap_or_else(|| {
            Err(ReviewError::Unavailable(
                "the token has not been reviewed yet".to_string(),
            ))
        })
    }
}

/// The bearer token of an `authorization` value.
pub fn bearer(value: Option<&str>) -> Option<&str> {
    let (scheme, token) = value?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Reviews the bearer token of every request (when there is a reviewer) before passing it on.
#[derive(Clone)]
pub struct TokenReviewLayer {
    reviewer: Option<Arc<TokenReviewer>>,
}

impl TokenReviewLayer {
    pub fn new(reviewer: Option<Arc<TokenReviewer>>) -> Self {
        TokenReviewLayer { reviewer }
    }
}

impl<S> tower::Layer<S> for TokenReviewLayer {
    type Service = TokenReviewService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TokenReviewService {
            inner,
            reviewer: self.reviewer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct TokenReviewService<S> {
    inner: S,
    reviewer: Option<Arc<TokenReviewer>>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for TokenReviewService<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the readied service goes with this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let token = self.reviewer.as_ref().and_then(|_| {
            bearer(
                request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok()),
            )
            .map(str::to_string)
        });
        let reviewer = self.reviewer.clone();
        Box::pin(async move {
            if let (Some(reviewer), Some(token)) = (reviewer, token)
                && let Err(ReviewError::Unavailable(e)) = reviewer.review(&token).await
            {
                // The stream is refused where the answer is looked up; say why here.
                tracing::warn!(error = %e, "token review failed");
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn mk_status(username: &str, audiences: &[&str], pod: Option<&str>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_string()),
                extra: pod
                    .map(|p| BTreeMap::from([(POD_NAME_EXTRA.to_string(), vec![p.to_string()])])),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_service_account_token_for_our_audience_names_namespace_account_and_pod() {
        let who = reviewed_token(
            &mk_status(
                "system:serviceaccount:apps:sleep",
                &["istio-ca"],
                Some("sleep-1"),
            ),
            "istio-ca",
        )
        .unwrap();
        assert_eq!(
            who,
            ReviewedToken {
                namespace: "apps".into(),
                service_account: "sleep".into(),
                pod_name: Some("sleep-1".into()),
            }
        );
    }

    #[test]
    fn other_users_audiences_and_failures_are_rejected() {
        let rejected = |status: TokenReviewStatus| {
            matches!(
                reviewed_token(&status, "istio-ca"),
                Err(ReviewError::Rejected(_))
            )
        };
        assert!(rejected(mk_status(
            "system:serviceaccount:apps:sleep",
            &["api"],
            None
        )));
        assert!(rejected(mk_status("alice", &["istio-ca"], None)));
        assert!(rejected(mk_status(
            "system:serviceaccount:apps",
            &["istio-ca"],
            None
        )));
        assert!(rejected(mk_status(
            "system:serviceaccount:a:b:c",
            &["istio-ca"],
            None
        )));
        let mut failed = mk_status("system:serviceaccount:apps:sleep", &["istio-ca"], None);
        failed.authenticated = Some(false);
        failed.error = Some("token expired".into());
        assert_eq!(
            reviewed_token(&failed, "istio-ca"),
            Err(ReviewError::Rejected("token expired".into()))
        );
    }

    #[test]
    fn lookups_answer_only_from_fresh_reviews() {
        let reviewer = TokenReviewer::offline("istio-ca");
        assert!(matches!(
            reviewer.lookup(None),
            Err(ReviewError::Rejected(_))
        ));
        assert!(matches!(
            reviewer.lookup(Some("t1")),
            Err(ReviewError::Unavailable(_))
        ));
        let who = ReviewedToken {
            namespace: "apps".into(),
            service_account: "sleep".into(),
            pod_name: None,
        };
        reviewer.remember("t1", Ok(who.clone()));
        reviewer.remember("t2", Err(ReviewError::Unavailable("down".into())));
        assert_eq!(reviewer.lookup(Some("t1")), Ok(who));
        assert!(reviewer.cached("t2").is_none(), "outages are never cached");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
