//! The checker against the real Envoy: for each rule, a resource (or response) Envoy 1.40
//! refuses is caught, and a near miss Envoy takes passes; and the RE2 estimate's calibration.

#![allow(clippy::unwrap_used)]

#[path = "check/case.rs"]
mod case;
#[path = "check/clusters.rs"]
mod clusters;
#[path = "check/direct.rs"]
mod direct;
#[path = "check/endpoints.rs"]
mod endpoints;
#[path = "check/envoy.rs"]
mod envoy;
#[path = "check/listeners.rs"]
mod listeners;
#[path = "check/re2.rs"]
mod re2;
#[path = "check/routes.rs"]
mod routes;
#[path = "check/secrets.rs"]
mod secrets;
#[path = "check/sets.rs"]
mod sets;
#[path = "support/envoy.rs"]
mod support_envoy;

#[test]
fn route_table_rules_catch_what_envoy_refuses_and_pass_its_near_misses() {
    case::run(routes::cases());
}

#[test]
fn cluster_rules_catch_what_envoy_refuses_and_pass_its_near_misses() {
    case::run(clusters::cases());
}

#[test]
fn endpoint_rules_catch_what_envoy_refuses_and_pass_its_near_misses() {
    case::run(endpoints::cases());
}

#[test]
fn listener_rules_catch_what_envoy_refuses_and_pass_its_near_misses() {
    case::run(listeners::cases());
}

#[test]
fn secret_rules_catch_what_envoy_refuses_and_pass_its_near_misses() {
    case::run(secrets::cases());
}

#[test]
fn rules_across_a_response_catch_what_envoy_rejects_and_pass_its_near_misses() {
    case::run(sets::cases());
}
