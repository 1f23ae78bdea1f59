use std::net::IpAddr;

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use serde_json::json;
use tower::ServiceExt as _;

use super::*;
use crate::tls::serving_ips;

fn mk_webhooks(objects: Vec<Object>) -> Arc<Webhooks> {
    let objects: BTreeMap<_, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let snapshot = Arc::new(Snapshot::build(
        1,
        Arc::new(objects),
        Arc::new(meshd_model::MeshConfig::default()),
    ));
    Arc::new(Webhooks::new(
        InjectConfig::default(),
        move || snapshot.clone(),
        Metrics::default(),
    ))
}

fn mk_namespace(name: &str, labels: Value) -> Object {
    Object::parse(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    }))
    .unwrap()
    .unwrap()
}

fn review(version: &str, namespace: &str, operation: &str, object: Value) -> Value {
    json!({
        "apiVersion": version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "0df28fbd-5f5f-11e8-bc74-36e6bb280816",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": object,
        },
    })
}

async fn call(webhooks: Arc<Webhooks>, path: &str, body: Value) -> (StatusCode, Value) {
    let response = router(webhooks)
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn mk_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web-0" },
        "spec": { "containers": [{ "name": "web", "image": "nginx" }] },
    })
}

/// The patch of an answer: bytes, which kube's types write as a JSON array of numbers (Go's
/// decoder takes that as well as base64 for `[]byte`).
fn decoded_patch(response: &Value) -> Value {
    let patch = &response["response"]["patch"];
    let bytes: Vec<u8> = match patch {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        Value::Array(numbers) => numbers
            .iter()
            .map(|n| u8::try_from(n.as_u64().expect("a byte")).unwrap())
            .collect(),
        other => panic!("no patch: {other}"),
    };
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn inject_answers_with_a_json_patch_in_the_reviews_version() {
    for version in SUPPORTED_VERSIONS {
        let (status, body) = call(
            mk_webhooks(vec![]),
            "/inject",
            review(version, "shop", "CREATE", mk_pod()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["apiVersion"], version);
        assert_eq!(body["kind"], "AdmissionReview");
        let response = &body["response"];
        assert_eq!(response["uid"], "0df28fbd-5f5f-11e8-bc74-36e6bb280816");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = decoded_patch(&body);
        assert!(
            patch.as_array().unwrap().iter().any(
                |op| op["path"] == "/spec/containers/-" && op["value"]["name"] == "istio-proxy"
            )
        );
    }
}

#[tokio::test]
async fn namespace_meshd_knows_decides_injection() {
    let webhooks = mk_webhooks(vec![
        mk_namespace("plain", json!({})),
        mk_namespace("meshed", json!({ "istio-injection": "enabled" })),
    ]);
    let (_, body) = call(
        webhooks.clone(),
        "/inject",
        review("admission.k8s.io/v1", "plain", "CREATE", mk_pod()),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
    let (_, body) = call(
        webhooks,
        "/inject",
        review("admission.k8s.io/v1", "meshed", "CREATE", mk_pod()),
    )
    .await;
    assert!(decoded_patch(&body).is_array());
}

#[tokio::test]
async fn bad_annotation_refuses_the_pod_with_the_reason() {
    let mut pod = mk_pod();
    pod["metadata"]["annotations"] =
        json!({ "traffic.sidecar.istio.io/excludeOutboundPorts": "nope" });
    let (_, body) = call(
        mk_webhooks(vec![]),
        "/inject",
        review("admission.k8s.io/v1", "shop", "CREATE", pod),
    )
    .await;
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "injection failed: annotation traffic.sidecar.istio.io/excludeOutboundPorts"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn validate_refuses_with_analyzes_message_and_passes_warnings() {
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": { "name": "reviews", "namespace": "shop" },
        "spec": {
            "hosts": ["reviews"],
            "http": [{
                "match": [{ "uri": { "regex": "(" } }],
                "route": [{ "destination": { "host": "reviews" } }],
            }],
        },
    });
    let (_, body) = call(
        mk_webhooks(vec![]),
        "/validate",
        review("admission.k8s.io/v1beta1", "shop", "CREATE", vs.clone()),
    )
    .await;
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(body["response"]["allowed"], false);
    let message = body["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Error [IST0106] (VirtualService shop/reviews) spec.http[0].match[0].uri.regex: invalid regex"),
        "{message}"
    );

    let mut fine = vs;
    fine["spec"]["http"][0]["match"][0]["uri"] = json!({ "prefix": "/" });
    let (_, body) = call(
        mk_webhooks(vec![]),
        "/validate",
        review("admission.k8s.io/v1", "shop", "UPDATE", fine),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .is_none_or(str::is_empty),
        "{body}"
    );
}

#[tokio::test]
async fn validations_are_counted_by_resource_as_istiod_labels_them() {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let objects: BTreeMap<ObjectKey, Object> = BTreeMap::new();
    let snapshot = Arc::new(Snapshot::build(
        1,
        Arc::new(objects),
        Arc::new(meshd_model::MeshConfig::default()),
    ));
    let webhooks = Arc::new(Webhooks::new(
        InjectConfig::default(),
        move || snapshot.clone(),
        metrics,
    ));
    let telemetry = |percent: f64| {
        let mut review = review(
            "admission.k8s.io/v1",
            "shop",
            "CREATE",
            json!({
                "apiVersion": "telemetry.istio.io/v1", "kind": "Telemetry",
                "metadata": {"name": "sampling", "namespace": "shop"},
                "spec": {"tracing": [{"randomSamplingPercentage": percent}]},
            }),
        );
        review["request"]["kind"] =
            json!({"group": "telemetry.istio.io", "version": "v1", "kind": "Telemetry"});
        review["request"]["resource"] =
            json!({"group": "telemetry.istio.io", "version": "v1", "resource": "telemetries"});
        review
    };
    let (_, body) = call(webhooks.clone(), "/validate", telemetry(10.0)).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let (_, body) = call(webhooks, "/validate", telemetry(150.0)).await;
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for line in [
        "galley_validation_passed_total{group=\"telemetry.istio.io\",version=\"v1\",resource=\"telemetries\"} 1",
        "galley_validation_failed_total{group=\"telemetry.istio.io\",version=\"v1\",resource=\"telemetries\",reason=\"invalid_resource\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from\n{text}"
        );
    }
}

#[tokio::test]
async fn garbage_and_unknown_versions_are_bad_requests() {
    let (status, _) = call(mk_webhooks(vec![]), "/inject", json!("nope")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        mk_webhooks(vec![]),
        "/validate",
        review("admission.k8s.io/v2", "shop", "CREATE", mk_pod()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn only_pod_creation_is_injected_and_deletes_are_not_validated() {
    let (_, body) = call(
        mk_webhooks(vec![]),
        "/inject",
        review("admission.k8s.io/v1", "shop", "UPDATE", mk_pod()),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none());
    let (_, body) = call(
        mk_webhooks(vec![]),
        "/validate",
        review("admission.k8s.io/v1", "shop", "DELETE", Value::Null),
    )
    .await;
    assert_eq!(body["response"]["allowed"], true);
}

#[test]
fn serving_certificate_ips_always_hold_loopback() {
    assert_eq!(
        serving_ips("0.0.0.0:15017".parse().unwrap()),
        [IpAddr::from([127, 0, 0, 1])]
    );
    assert_eq!(
        serving_ips("10.0.0.5:15017".parse().unwrap()),
        [IpAddr::from([127, 0, 0, 1]), IpAddr::from([10, 0, 0, 5])]
    );
}
