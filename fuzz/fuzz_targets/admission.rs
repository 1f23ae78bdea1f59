//! The admission webhooks through their HTTP router, as the API server calls them: any body on
//! `/inject` and `/validate`, and — so the decisions behind the decoding are reached — any JSON
//! as the object of a well-formed AdmissionReview (v1 or v1beta1, any operation). The answer must
//! be 200 with an AdmissionReview for the same request, or 400; never a panic.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use libfuzzer_sys::fuzz_target;
use meshd::admission::{Metrics, Webhooks, router};
use meshd::inject::InjectConfig;
use meshd_model::{MeshConfig, Snapshot, documents};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const UID: &str = "0df28fbd-5f5f-11e8-bc74-36e6bb280816";

/// A namespace with injection on, so pods get as far as the injector.
const MESH: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: default, labels: {istio-injection: enabled}}\n";

fn webhooks() -> Arc<Webhooks> {
    static WEBHOOKS: OnceLock<Arc<Webhooks>> = OnceLock::new();
    WEBHOOKS
        .get_or_init(|| {
            let (objects, _) = documents::parse(MESH, false);
            let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
            let snapshot = Arc::new(Snapshot::build(
                1,
                Arc::new(objects),
                Arc::new(MeshConfig::default()),
            ));
            Arc::new(Webhooks::new(
                InjectConfig::default(),
                move || snapshot.clone(),
                Metrics::default(),
            ))
        })
        .clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime")
    })
}

/// `object` inside an AdmissionReview the way the API server sends one.
fn review(selector: u8, object: Value) -> Value {
    let version = if selector & 1 == 0 { "admission.k8s.io/v1" } else { "admission.k8s.io/v1beta1" };
    let operation = ["CREATE", "UPDATE", "DELETE", "CONNECT"][usize::from(selector >> 1) % 4];
    let kind = object["kind"].as_str().unwrap_or("Pod").to_string();
    json!({
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "fuzz"},
            "object": object,
        },
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let path = if selector & 0x80 == 0 { "/inject" } else { "/validate" };
    let wrapped = serde_json::from_slice::<Value>(rest)
        .ok()
        .filter(|_| selector & 0x40 == 0)
        .map(|object| review(selector, object));
    let body = match &wrapped {
        Some(review) => review.to_string().into_bytes(),
        None => rest.to_vec(),
    };
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let (status, answer) = runtime().block_on(async {
        let response = router(webhooks())
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("a body");
        (status, bytes)
    });
    assert!(
        status == StatusCode::OK || status == StatusCode::BAD_REQUEST,
        "status {status}"
    );
    if wrapped.is_some() && status == StatusCode::OK {
        let answer: Value = serde_json::from_slice(&answer).expect("the answer is JSON");
        assert_eq!(answer["response"]["uid"], UID, "{answer}");
    }
});
