//! Gateway API status, leader only: what the model says each GatewayClass, Gateway and route
//! should report (`Snapshot.gateway_api.statuses`, without `lastTransitionTime`s), written to
//! the objects' `/status` subresource when it differs from what they report.
//!
//! Fed with the snapshots the index loop publishes, the latest only; the status an object
//! carries is the one the Kubernetes source read with it (`snapshot.objects`). Comparing ignores
//! `lastTransitionTime`. A condition keeps the time it has while its type, status, reason and
//! message stay; a new or changed one gets the time of the write. A route's `parents` entries of
//! other controllers are kept as they are, as the Gateway API requires of every controller; only
//! the entries naming [`CONTROLLER_NAME`] are meshd's. One merge patch per changed object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use meshd_model::gateway_api::CONTROLLER_NAME;
use meshd_model::{Kind, Object, ObjectKey, Snapshot};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::client::{KubeContext, is_not_found};
use crate::discover::gateway_api_resource;

/// How soon failed writes are tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long a written status is not written again while the snapshot still shows the old one
/// (the watch has not delivered the write yet).
const CATCH_UP: Duration = Duration::from_secs(30);

/// Writes Gateway API status as the snapshots say, while this replica leads.
pub fn spawn(ctx: KubeContext, snapshots: watch::Receiver<Arc<Snapshot>>) {
    tokio::spawn(run(ctx, snapshots));
}

async fn run(mut ctx: KubeContext, mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    let mut writer = Writer {
        client: ctx.client.clone(),
        written: BTreeMap::new(),
    };
    let mut tick = tokio::time::interval(RETRY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    loop {
        tokio::select! {
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                dirty = true;
            }
            changed = ctx.leader.changed() => {
                if changed.is_err() {
                    return;
                }
                writer.written.clear();
                dirty = true;
            }
            _ = tick.tick() => {}
        }
        if !dirty || !*ctx.leader.borrow() {
            continue;
        }
        let snapshot = snapshots.borrow_and_update().clone();
        if snapshot.version == 0 {
            continue;
        }
        dirty = !writer.write(&snapshot).await;
    }
}

struct Writer {
    client: kube::Client,
    /// What was written last per object (the model's status) and when.
    written: BTreeMap<ObjectKey, (Value, Instant)>,
}

impl Writer {
    /// Writes every status that differs; false when a write failed (retried soon).
    async fn write(&mut self, snapshot: &Snapshot) -> bool {
        let mut ok = true;
        let now = now();
        for (key, desired) in &snapshot.gateway_api.statuses {
            // Not (or no longer) read from the cluster: nothing to write to.
            let Some(object) = snapshot.objects.get(key) else {
                continue;
            };
            let current = status_of(object);
            if !differs(key.kind, desired, current) {
                self.written.remove(key);
                continue;
            }
            if self
                .written
                .get(key)
                .is_some_and(|(written, at)| written == desired && at.elapsed() < CATCH_UP)
            {
                continue;
            }
            let patch = patch_of(key.kind, desired, current, &now);
            match patch_status(&self.client, key, &patch).await {
                Ok(()) => {
                    tracing::info!(object = %key, "Gateway API status written");
                    self.written
                        .insert(key.clone(), (desired.clone(), Instant::now()));
                }
                Err(e) if is_not_found(&e) => {
                    tracing::debug!(object = %key, "status not written: the object is gone");
                }
                Err(e) => {
                    tracing::warn!(object = %key, error = %e, "writing Gateway API status failed; retrying");
                    ok = false;
                }
            }
        }
        self.written
            .retain(|key, _| snapshot.gateway_api.statuses.contains_key(key));
        ok
    }
}

/// Now, as Kubernetes writes times: RFC 3339, UTC, whole seconds.
fn now() -> String {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The status an object was read with.
fn status_of(object: &Object) -> Option<&Value> {
    match object {
        Object::GatewayClass(o) => o.status.as_ref(),
        Object::KubeGateway(o) => o.status.as_ref(),
        Object::HttpRoute(o) => o.status.as_ref(),
        Object::GrpcRoute(o) => o.status.as_ref(),
        Object::TcpRoute(o) => o.status.as_ref(),
        Object::TlsRoute(o) => o.status.as_ref(),
        _ => None,
    }
}

/// Routes share their status with the other controllers of their parents.
fn is_route(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HttpRoute | Kind::GrpcRoute | Kind::TcpRoute | Kind::TlsRoute
    )
}

fn is_ours(parent: &Value) -> bool {
    parent.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME)
}

/// `parents` entries of `status`, those meshd wrote (`ours`) or the others.
fn parents(status: Option<&Value>, ours: bool) -> Vec<Value> {
    status
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| is_ours(p) == ours)
        .cloned()
        .collect()
}

/// The same value without any `lastTransitionTime`.
fn without_times(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, v)| (k.clone(), without_times(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// Whether the object's status says something else than the model, times aside. For a route
/// only meshd's `parents` entries count.
fn differs(kind: Kind, desired: &Value, current: Option<&Value>) -> bool {
    let current = if is_route(kind) {
        let mut ours = Map::new();
        ours.insert("parents".to_owned(), Value::Array(parents(current, true)));
        Value::Object(ours)
    } else {
        current
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()))
    };
    without_times(&current) != without_times(desired)
}

/// Whether `a` (from the model) and `b` (from the object) are the same list entry: a listener
/// by its name, a route parent by its reference and controller.
fn same_entry(a: &Value, b: &Value) -> bool {
    if let Some(name) = a.get("name") {
        return b.get("name") == Some(name);
    }
    if let Some(parent) = a.get("parentRef") {
        return b.get("parentRef") == Some(parent)
            && b.get("controllerName") == a.get("controllerName");
    }
    false
}

/// Gives every condition under `desired` a `lastTransitionTime`: the one the same condition has
/// in `current` when its type, status, reason and message are the same, else `now`.
fn fill_times(desired: &mut Value, current: Option<&Value>, now: &str) {
    match desired {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let current = current.and_then(|c| c.get(key));
                if key == "conditions" {
                    fill_condition_times(value, current, now);
                } else {
                    fill_times(value, current, now);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let current = current
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| same_entry(item, c)));
                fill_times(item, current, now);
            }
        }
        _ => {}
    }
}

fn fill_condition_times(conditions: &mut Value, current: Option<&Value>, now: &str) {
    let Some(conditions) = conditions.as_array_mut() else {
        return;
    };
    let current = current.and_then(Value::as_array);
    for condition in conditions {
        let unchanged = current.into_iter().flatten().find(|c| {
            ["type", "status", "reason", "message"]
                .iter()
                .all(|field| c.get(field) == condition.get(field))
        });
        let time = unchanged
            .and_then(|c| c.get("lastTransitionTime"))
            .filter(|t| t.is_string())
            .cloned()
            .unwrap_or_else(|| Value::String(now.to_owned()));
        if let Some(condition) = condition.as_object_mut() {
            condition.insert("lastTransitionTime".to_owned(), time);
        }
    }
}

/// The merge patch that makes the object's status the model's (with times). For a route, the
/// other controllers' `parents` entries first, as they were, then meshd's; other fields of a
/// route's status are left alone. For a GatewayClass or a Gateway, fields the model no longer
/// sets are removed.
fn patch_of(kind: Kind, desired: &Value, current: Option<&Value>, now: &str) -> Value {
    let mut status = desired.clone();
    fill_times(&mut status, current, now);
    let mut patch = match status {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if is_route(kind) {
        let mut all = parents(current, false);
        if let Some(Value::Array(ours)) = patch.remove("parents") {
            all.extend(ours);
        }
        patch.insert("parents".to_owned(), Value::Array(all));
    } else if let Some(Value::Object(current)) = current {
        for key in current.keys() {
            if !patch.contains_key(key) {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    serde_json::json!({ "status": patch })
}

async fn patch_status(
    client: &kube::Client,
    key: &ObjectKey,
    patch: &Value,
) -> Result<(), kube::Error> {
    let resource = gateway_api_resource(key.kind);
    let api: Api<DynamicObject> = if key.kind.namespaced() {
        Api::namespaced_with(client.clone(), &key.namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const THEN: &str = "2026-12-01T10:00:00Z";
    const NOW: &str = "2026-12-05T13:00:00Z";

    fn condition(ty: &str, status: &str, reason: &str) -> Value {
        json!({"type": ty, "status": status, "reason": reason, "message": "", "observedGeneration": 1})
    }

    fn timed(mut condition: Value, time: &str) -> Value {
        condition["lastTransitionTime"] = json!(time);
        condition
    }

    fn gateway_status(listener_conditions: Vec<Value>) -> Value {
        json!({
            "addresses": [{"type": "IPAddress", "value": "10.0.0.9"}],
            "conditions": [condition("Accepted", "True", "Accepted"), condition("Programmed", "True", "Programmed")],
            "listeners": [{"name": "http", "attachedRoutes": 1,
                           "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                           "conditions": listener_conditions}],
        })
    }

    fn parent(gateway: &str, controller: &str, conditions: Vec<Value>) -> Value {
        json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway},
            "controllerName": controller,
            "conditions": conditions,
        })
    }

    #[test]
    fn a_status_equal_but_for_transition_times_is_not_written() {
        let desired = gateway_status(vec![condition("Accepted", "True", "Accepted")]);
        let mut current = desired.clone();
        current["conditions"][0]["lastTransitionTime"] = json!(THEN);
        current["conditions"][1]["lastTransitionTime"] = json!(THEN);
        current["listeners"][0]["conditions"][0]["lastTransitionTime"] = json!(THEN);
        assert!(!differs(Kind::KubeGateway, &desired, Some(&current)));
        current["listeners"][0]["attachedRoutes"] = json!(0);
        assert!(differs(Kind::KubeGateway, &desired, Some(&current)));
        assert!(differs(Kind::KubeGateway, &desired, None));
    }

    #[test]
    fn unchanged_conditions_keep_their_time_and_changed_ones_get_now() {
        let current = json!({
            "conditions": [timed(condition("Accepted", "True", "Accepted"), THEN),
                           timed(condition("Programmed", "False", "Pending"), THEN)],
            "listeners": [{"name": "http", "conditions": [timed(condition("Accepted", "True", "Accepted"), THEN)]}],
        });
        let desired = gateway_status(vec![
            condition("Accepted", "True", "Accepted"),
            condition("ResolvedRefs", "True", "ResolvedRefs"),
        ]);
        let patch = patch_of(Kind::KubeGateway, &desired, Some(&current), NOW);
        let status = &patch["status"];
        assert_eq!(status["conditions"][0]["lastTransitionTime"], THEN);
        // Programmed went from False to True.
        assert_eq!(status["conditions"][1]["lastTransitionTime"], NOW);
        let listener = &status["listeners"][0]["conditions"];
        assert_eq!(listener[0]["lastTransitionTime"], THEN);
        assert_eq!(listener[1]["lastTransitionTime"], NOW);
        // What was written reads back as equal.
        assert!(!differs(Kind::KubeGateway, &desired, Some(status)));
    }

    #[test]
    fn a_message_change_is_a_transition() {
        let current =
            json!({"conditions": [timed(condition("Accepted", "True", "Accepted"), THEN)]});
        let mut changed = condition("Accepted", "True", "Accepted");
        changed["message"] = json!("Handled by meshd");
        let desired = json!({"conditions": [changed]});
        let patch = patch_of(Kind::GatewayClass, &desired, Some(&current), NOW);
        assert_eq!(patch["status"]["conditions"][0]["lastTransitionTime"], NOW);
    }

    #[test]
    fn fields_the_model_no_longer_sets_are_removed_from_a_gateways_status() {
        let current =
            json!({"conditions": [], "addresses": [{"type": "IPAddress", "value": "10.0.0.1"}]});
        let desired = json!({"conditions": [condition("Accepted", "True", "Accepted")]});
        let patch = patch_of(Kind::KubeGateway, &desired, Some(&current), NOW);
        assert_eq!(patch["status"]["addresses"], Value::Null);
        assert!(
            patch["status"]
                .as_object()
                .is_some_and(|s| s.contains_key("addresses"))
        );
    }

    #[test]
    fn other_controllers_route_parents_are_kept_and_do_not_count() {
        let theirs = parent(
            "edge",
            "example.com/other",
            vec![timed(condition("Accepted", "False", "NotAllowed"), THEN)],
        );
        let ours_then = parent(
            "web",
            CONTROLLER_NAME,
            vec![timed(condition("Accepted", "True", "Accepted"), THEN)],
        );
        let current = json!({"parents": [theirs.clone(), ours_then]});
        let desired = json!({"parents": [parent("web", CONTROLLER_NAME, vec![condition("Accepted", "True", "Accepted")])]});
        // The other controller's entry is not meshd's to judge.
        assert!(!differs(Kind::HttpRoute, &desired, Some(&current)));

        let desired = json!({"parents": [
            parent("web", CONTROLLER_NAME, vec![condition("Accepted", "True", "Accepted"), condition("ResolvedRefs", "False", "BackendNotFound")]),
            parent("api", CONTROLLER_NAME, vec![condition("Accepted", "True", "Accepted")]),
        ]});
        assert!(differs(Kind::HttpRoute, &desired, Some(&current)));
        let patch = patch_of(Kind::HttpRoute, &desired, Some(&current), NOW);
        let written = patch["status"]["parents"].as_array().expect("parents");
        assert_eq!(written.len(), 3);
        assert_eq!(written[0], theirs);
        assert_eq!(written[1]["conditions"][0]["lastTransitionTime"], THEN);
        assert_eq!(written[1]["conditions"][1]["lastTransitionTime"], NOW);
        assert_eq!(written[2]["parentRef"]["name"], "api");
        assert_eq!(written[2]["conditions"][0]["lastTransitionTime"], NOW);
        assert!(!differs(Kind::HttpRoute, &desired, Some(&patch["status"])));
    }

    #[test]
    fn a_route_no_gateway_of_ours_accepts_loses_only_our_entries() {
        let theirs = parent("edge", "example.com/other", vec![]);
        let current = json!({"parents": [theirs.clone(), parent("web", CONTROLLER_NAME, vec![])]});
        let desired = json!({"parents": []});
        assert!(differs(Kind::TcpRoute, &desired, Some(&current)));
        let patch = patch_of(Kind::TcpRoute, &desired, Some(&current), NOW);
        assert_eq!(patch["status"]["parents"], json!([theirs]));
        assert!(!differs(Kind::TcpRoute, &desired, None));
    }

    #[test]
    fn now_is_rfc3339_utc_in_whole_seconds() {
        let now = now();
        assert_eq!(now.len(), "2026-12-05T13:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
    }
}
