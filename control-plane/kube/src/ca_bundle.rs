//! The `caBundle` of meshd's webhook configurations, kept equal to meshd's trust bundle.
//!
//! The install manifests leave `caBundle` out (re-applying them must not clear it); the leader
//! fills it in, and refills it when the root rotates (the bundle then holds old and new roots) or
//! someone overwrites it. Only webhooks whose bundle differs are patched, by name, with a strategic
//! merge patch (webhooks merge by `name`), so other fields and other writers are left alone.

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use meshd_model::Revision;

use crate::TrustBundle;

/// The configurations `manifests/` install (suffixed `-<revision>` for a revision other than the
/// default: each revision keeps its own).
pub const INJECTOR: &str = "meshd-sidecar-injector";
pub const VALIDATOR: &str = "meshd-validator";
const FIELD_MANAGER: &str = "meshd";
/// How often the leader looks again even when nothing changed on its side.
const RESYNC: Duration = Duration::from_secs(30);
/// After a failed attempt.
const RETRY: Duration = Duration::from_secs(5);

/// One webhook as far as its bundle goes: its name and the `caBundle` it has (decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookBundle {
    pub name: String,
    pub ca_bundle: Option<Vec<u8>>,
}

/// The strategic merge patch that sets `bundle` on every webhook that lacks it; `None` when all
/// have it already.
pub fn bundle_patch(webhooks: &[WebhookBundle], bundle: &[u8]) -> Option<Value> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bundle);
    let stale: Vec<Value> = webhooks
        .iter()
        .filter(|w| w.ca_bundle.as_deref() != Some(bundle))
        .map(|w| json!({ "name": w.name, "clientConfig": { "caBundle": encoded } }))
        .collect();
    (!stale.is_empty()).then(|| json!({ "webhooks": stale }))
}

fn mutating_bundles(config: &MutatingWebhookConfiguration) -> Vec<WebhookBundle> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| WebhookBundle {
            name: w.name.clone(),
            ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        })
        .collect()
}

fn validating_bundles(config: &ValidatingWebhookConfiguration) -> Vec<WebhookBundle> {
    config
        .webhooks
        .iter()
        .flatten()
        .map(|w| WebhookBundle {
            name: w.name.clone(),
            ca_bundle: w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        })
        .collect()
}

/// Brings both configurations' bundles up to `bundle`; returns how many were patched. A
/// configuration that is not installed is skipped (meshd may run without its webhooks).
pub async fn reconcile(
    client: &kube::Client,
    revision: &Revision,
    bundle: &[u8],
) -> Result<usize, kube::Error> {
    let (injector, validator) = (revision.suffixed(INJECTOR), revision.suffixed(VALIDATOR));
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let mut patched = 0;
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(config) = mutating.get_opt(&injector).await?
        && let Some(patch) = bundle_patch(&mutating_bundles(&config), bundle)
    {
        mutating
            .patch(&injector, &params, &Patch::Strategic(patch))
            .await?;
        patched += 1;
    }
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if let Some(config) = validating.get_opt(&validator).await?
        && let Some(patch) = bundle_patch(&validating_bundles(&config), bundle)
    {
        validating
            .patch(&validator, &params, &Patch::Strategic(patch))
            .await?;
        patched += 1;
    }
    Ok(patched)
}

/// Starts [`run`] in the background.
pub fn spawn(
    client: kube::Client,
    revision: Revision,
    leader: watch::Receiver<bool>,
    bundle: TrustBundle,
) {
    tokio::spawn(run(client, revision, leader, bundle));
}

/// Keeps the bundles current while this replica leads: at once on becoming leader, when the
/// trust bundle changes, and every [`RESYNC`]. Returns when the leader channel closes.
pub async fn run(
    client: kube::Client,
    revision: Revision,
    mut leader: watch::Receiver<bool>,
    bundle: TrustBundle,
) {
    loop {
        if !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let current = bundle();
        let wait = match reconcile(&client, &revision, current.as_bytes()).await {
            Ok(0) => RESYNC,
            Ok(n) => {
                tracing::info!(configurations = n, "patched the webhook CA bundle");
                RESYNC
            }
            Err(e) => {
                tracing::warn!(error = %e, "patching the webhook CA bundle failed; retrying");
                RETRY
            }
        };
        let deadline = Instant::now() + wait;
        loop {
            tokio::select! {
                changed = leader.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if Instant::now() >= deadline || bundle() != current {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    fn mk_bundle(name: &str, ca: Option<&[u8]>) -> WebhookBundle {
        WebhookBundle {
            name: name.to_owned(),
            ca_bundle: ca.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn only_webhooks_with_another_bundle_are_patched() {
        let root = b"-----BEGIN CERTIFICATE-----\nnew\n-----END CERTIFICATE-----\n";
        let encoded = base64::engine::general_purpose::STANDARD.encode(root);
        let patch = bundle_patch(
            &[
                mk_bundle("namespace.sidecar-injector.meshd.io", None),
                mk_bundle("object.sidecar-injector.meshd.io", Some(root)),
                mk_bundle("old.meshd.io", Some(b"old")),
            ],
            root,
        );
        assert_eq!(
            patch,
            Some(json!({ "webhooks": [
                { "name": "namespace.sidecar-injector.meshd.io", "clientConfig": { "caBundle": encoded } },
                { "name": "old.meshd.io", "clientConfig": { "caBundle": encoded } },
            ] }))
        );
        assert_eq!(
            bundle_patch(&[mk_bundle("a", Some(root))], root),
            None,
            "nothing to do"
        );
        assert_eq!(bundle_patch(&[], root), None);
    }

    /// What the fake API server saw: method, path and body of each request.
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

    /// A client whose "API server" holds one mutating configuration (bundle `held`) and no
    /// validating one.
    fn mk_client(held: Option<&'static [u8]>) -> (kube::Client, Seen) {
        let seen: Seen = Arc::default();
        let log = seen.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let log = log.clone();
            async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                let body = http_body_util::BodyExt::collect(request.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                    .unwrap_or_default();
                log.lock().push((method.clone(), path.clone(), body));
                let (status, answer) = if path
                    .ends_with("/mutatingwebhookconfigurations/meshd-sidecar-injector")
                {
                    let mut hook = json!({
                        "name": "namespace.sidecar-injector.meshd.io",
                        "clientConfig": { "service": { "name": "istiod", "namespace": "istio-system" } },
                        "sideEffects": "None",
                        "admissionReviewVersions": ["v1"],
                    });
                    if let Some(held) = held {
                        hook["clientConfig"]["caBundle"] =
                            json!(base64::engine::general_purpose::STANDARD.encode(held));
                    }
                    (
                        200,
                        json!({
                            "apiVersion": "admissionregistration.k8s.io/v1",
                            "kind": "MutatingWebhookConfiguration",
                            "metadata": { "name": INJECTOR },
                            "webhooks": [hook],
                        }),
                    )
                } else {
                    (
                        404,
                        json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found",
                        }),
                    )
                };
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(answer.to_string().into_bytes()))
                        .unwrap(),
                )
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn reconcile_patches_a_stale_bundle_by_webhook_name() {
        let (client, seen) = mk_client(None);
        assert_eq!(
            reconcile(&client, &Revision::default(), b"ROOT")
                .await
                .unwrap(),
            1
        );
        let seen = seen.lock().clone();
        let patch = seen
            .iter()
            .find(|(method, _, _)| method == "PATCH")
            .expect("a PATCH");
        assert_eq!(
            patch.1,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/meshd-sidecar-injector"
        );
        let body: Value = serde_json::from_str(&patch.2).unwrap();
        assert_eq!(
            body,
            json!({ "webhooks": [{
                "name": "namespace.sidecar-injector.meshd.io",
                "clientConfig": { "caBundle": base64::engine::general_purpose::STANDARD.encode(b"ROOT") },
            }] })
        );
        // The missing validating configuration was looked for, and skipped.
        assert!(seen.iter().any(|(method, path, _)| method == "GET"
            && path.ends_with("/validatingwebhookconfigurations/meshd-validator")));
    }

    #[tokio::test]
    async fn reconcile_leaves_a_current_bundle_alone() {
        let (client, seen) = mk_client(Some(b"ROOT"));
        assert_eq!(
            reconcile(&client, &Revision::default(), b"ROOT")
                .await
                .unwrap(),
            0
        );
        assert!(seen.lock().iter().all(|(method, _, _)| method == "GET"));
    }

    #[tokio::test]
    async fn only_the_leader_patches() {
        let (client, seen) = mk_client(None);
        let (leader_tx, leader_rx) = watch::channel(false);
        let bundle: TrustBundle = Arc::new(|| "ROOT".to_string());
        let task = tokio::spawn(run(client, Revision::default(), leader_rx, bundle));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(seen.lock().is_empty(), "a follower writes nothing");
        leader_tx.send(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !seen.lock().iter().any(|(method, _, _)| method == "PATCH") {
            assert!(Instant::now() < deadline, "the leader never patched");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(leader_tx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the patcher ends with the leader channel")
            .unwrap();
    }
}
