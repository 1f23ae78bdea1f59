//! meshd end to end, as one test binary. Each group of tests is a module named after what it
//! covers, so `cargo test -p meshd-tests security::` runs one group; the harnesses (meshes,
//! clusters, YAML) are the `meshd_tests` library.
//!
//! Tests run on parallel threads (libtest's default: one per core; `--test-threads N` for more).
//! Nothing needs serialising: every mesh is an island of network namespaces with its own meshd,
//! and clusters and meshd on the host run on free loopback ports.
//!
//! A new group: write `tests/e2e/<group>.rs`, opening with a `//!` doc that says what behaviour it
//! proves, and add `mod <group>;` below.
//!
//! Needs root, `make test-deps` and `cargo build --workspace --bins`; a missing piece fails the
//! tests that need it, naming it — nothing is skipped.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod authz;
mod foundation;
mod gateway;
mod harness;
mod kube_harness;
mod kube_source;
mod security;
mod sidecar;
mod sidecar_scope;
mod traffic_policy;
mod traffic_routing;
mod webhooks;
