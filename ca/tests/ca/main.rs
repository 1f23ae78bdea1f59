//! meshd-ca through its public API: the CA on disk, issuance, rotation, and the gRPC service.
// Helpers outside `#[test]` functions panic on purpose: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

mod authority;
mod service;
mod support;
