//! Validation of Istio objects as `meshd analyze` does it: the object is parsed and a snapshot is
//! built from it alone; an error finding refuses it, with analyze's text.
//!
//! Alone, because admission must judge the object by itself: whether a referenced host or Gateway
//! exists depends on what is applied next. Those findings are warnings in analyze anyway, and the
//! ones that only say "something else is missing" are left out of the warnings here, since with
//! nothing else in the snapshot they would fire for every object.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshd_model::finding::GATEWAY_API_CONDITION;
use meshd_model::object::GATEWAY_API_GROUP;
use meshd_model::{MeshConfig, Object, Severity, Snapshot};
use serde_json::Value;

/// Findings that only report other objects missing (references, pods a subset selects, a
/// Gateway API route's parent or a listener's Secret).
const NEEDS_OTHER_OBJECTS: [&str; 3] = ["IST0101", "IST0173", GATEWAY_API_CONDITION];
/// API groups the webhook judges (Istio's and the Gateway API); everything else is allowed
/// untouched.
const ISTIO_GROUP_SUFFIX: &str = "istio.io";

/// The webhook's answer about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Analyze's error lines, one per finding; empty means allowed.
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Judges `object` (as the API server sends it). `namespace` and `name` come from the admission
/// request: an object being created may not carry them yet.
pub fn review(object: &Value, namespace: &str, name: &str, mesh: Arc<MeshConfig>) -> Verdict {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    if !group.ends_with(ISTIO_GROUP_SUFFIX) && group != GATEWAY_API_GROUP {
        return Verdict::default();
    }
    // An object on its way out (finalizers being removed) must stay updatable, whatever it holds.
    if !object["metadata"]["deletionTimestamp"].is_null() {
        return Verdict::default();
    }
    let mut object = object.clone();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if !namespace.is_empty() && meta.get("namespace").is_none_or(|n| n == "") {
            meta.insert("namespace".to_owned(), Value::from(namespace));
        }
        if meta.get("name").is_none_or(|n| n == "") {
            let generated = meta
                .get("generateName")
                .and_then(Value::as_str)
                .map(|prefix| format!("{prefix}*"));
            let name = if name.is_empty() {
                generated.unwrap_or_default()
            } else {
                name.to_owned()
            };
            meta.insert("name".to_owned(), Value::from(name));
        }
    }
    let parsed = match Object::parse(object) {
        Ok(Some(parsed)) => parsed,
        // A kind meshd does not read (EnvoyFilter, Telemetry, …): not meshd's to judge.
        Ok(None) => return Verdict::default(),
        Err(e) => {
            return Verdict {
                errors: vec![format!("{} [IST0106] {e}", Severity::Error)],
                warnings: Vec::new(),
            };
        }
    };
    let key = parsed.key();
    let objects = BTreeMap::from([(key.clone(), parsed)]);
    let snapshot = Snapshot::build(0, Arc::new(objects), mesh);
    let mut verdict = Verdict::default();
    for finding in snapshot.findings.iter().filter(|f| f.object == key) {
        match finding.severity {
            Severity::Error => verdict.errors.push(finding.to_string()),
            Severity::Warning if !NEEDS_OTHER_OBJECTS.contains(&finding.code) => {
                verdict.warnings.push(finding.to_string())
            }
            _ => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mk_vs(regex: &str) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "VirtualService",
            "metadata": { "name": "reviews" },
            "spec": {
                "hosts": ["reviews"],
                "http": [{
                    "match": [{ "uri": { "regex": regex } }],
                    "route": [{ "destination": { "host": "reviews" } }],
                }],
            },
        })
    }

    fn mesh() -> Arc<MeshConfig> {
        Arc::new(MeshConfig::default())
    }

    /// What `meshd analyze` prints for the same object in a file.
    fn analyze_lines(object: &Value) -> Vec<String> {
        let (objects, errors) = meshd_model::documents::parse(&object.to_string(), true);
        assert!(errors.is_empty(), "{errors:?}");
        let objects = objects.into_iter().map(|o| (o.key(), o)).collect();
        let snapshot = Snapshot::build(0, Arc::new(objects), mesh());
        snapshot
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn bad_regex_is_refused_with_analyzes_message() {
        let vs = mk_vs("(unclosed");
        let verdict = review(&vs, "shop", "reviews", mesh());
        assert!(!verdict.allowed());
        let mut vs_in_shop = vs.clone();
        vs_in_shop["metadata"]["namespace"] = json!("shop");
        assert_eq!(verdict.errors, analyze_lines(&vs_in_shop));
        assert!(
            verdict.errors[0].starts_with("Error [IST0106] (VirtualService shop/reviews) spec.http[0].match[0].uri.regex: invalid regex"),
            "{verdict:?}"
        );
    }

    #[test]
    fn valid_object_is_allowed_without_reference_warnings() {
        let verdict = review(&mk_vs("^/api/.*"), "shop", "reviews", mesh());
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn schema_errors_from_parsing_are_refused_as_ist0106() {
        let mut vs = mk_vs("^/x");
        vs["spec"]["http"] = json!("not a list");
        let verdict = review(&vs, "shop", "reviews", mesh());
        assert_eq!(verdict.errors.len(), 1);
        assert!(
            verdict.errors[0]
                .starts_with("Error [IST0106] VirtualService shop/reviews: field `spec.http`"),
            "{verdict:?}"
        );
    }

    #[test]
    fn non_istio_and_unknown_istio_kinds_are_allowed() {
        let pod = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" }, "spec": "junk" });
        assert!(review(&pod, "shop", "p", mesh()).allowed());
        let filter = json!({
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": { "name": "f" },
            "spec": "junk",
        });
        assert!(review(&filter, "shop", "f", mesh()).allowed());
    }

    fn mk_http_route(regex: &str) -> Value {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "shop" },
            "spec": {
                "parentRefs": [{ "name": "web" }],
                "rules": [{
                    "matches": [{ "path": { "type": "RegularExpression", "value": regex } }],
                    "backendRefs": [{ "name": "shop", "port": 80 }],
                }],
            },
        })
    }

    #[test]
    fn gateway_api_routes_are_judged_alone_by_the_virtual_service_rules() {
        let verdict = review(&mk_http_route("(unclosed"), "shop", "shop", mesh());
        assert!(!verdict.allowed());
        assert!(
            verdict.errors[0].starts_with(
                "Error [IST0106] (HTTPRoute shop/shop) spec.rules[0].matches[0].path: invalid regex"
            ),
            "{verdict:?}"
        );
        // Its parent and backend are missing when it is judged alone: not warned about.
        let verdict = review(&mk_http_route("^/api/.*"), "shop", "shop", mesh());
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn an_object_being_deleted_stays_updatable() {
        let mut vs = mk_vs("(unclosed");
        vs["metadata"]["deletionTimestamp"] = json!("2026-11-23T19:00:00Z");
        assert!(review(&vs, "shop", "reviews", mesh()).allowed());
    }

    #[test]
    fn a_generated_name_is_not_an_error() {
        let mut vs = mk_vs("^/x");
        vs["metadata"] = json!({ "generateName": "reviews-" });
        assert!(review(&vs, "shop", "", mesh()).allowed());
    }
}
