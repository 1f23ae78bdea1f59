//! The checker against the real Envoy: for each rule, a resource Envoy 1.40 refuses is caught,
//! and a near miss Envoy takes passes; and the RE2 estimate's calibration.

#![allow(clippy::unwrap_used)]

#[path = "check/re2.rs"]
mod re2;
