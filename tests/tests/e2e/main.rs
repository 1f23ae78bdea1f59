//! meshd end to end, as one test binary. Each group of tests is a module named after what it
//! covers, so `cargo test -p meshd-tests security::` runs one group; what the groups share —
//! timeouts, the standard mesh, Kubernetes clusters, meshd on the host, polling helpers — is in
//! [`support`], and the harnesses themselves (meshes, clusters, YAML) in the `meshd_tests` library.
//!
//! Tests run on parallel threads (libtest's default: one per core; `--test-threads N` for more).
//! Nothing needs serialising: every mesh is an island of network namespaces with its own meshd,
//! and every cluster or meshd on the host gets loopback ports no other test of this process gets.
//!
//! A new group: write `tests/e2e/<group>.rs`, opening with a `//!` doc that says what behaviour it
//! proves, and add `mod <group>;` below. Take fixtures from `support`; one that a second group
//! needs moves there too.
//!
//! Needs root, `make test-deps` and `cargo build --workspace --bins`; a missing piece fails the
//! tests that need it, naming it — nothing is skipped.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod support;

mod analysis;
mod authz;
mod egress;
mod foundation;
mod gateway;
mod gateway_api;
mod gateway_api_kube;
mod harness;
mod image;
mod istioctl;
mod jwks_source;
mod kube_harness;
mod kube_source;
mod lifecycle;
mod never_nack;
mod replicas;
mod security;
mod sidecar;
mod sidecar_scope;
mod sniffing;
mod telemetry;
mod traffic_policy;
mod traffic_routing;
mod webhooks;
