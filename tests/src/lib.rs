//! Harnesses for meshd's end-to-end tests (the `e2e` test binary, `tests/e2e/`).
//!
//! - [`Mesh`]: mesh in a box — pods as network namespaces, captured by `meshd iptables`, with stock
//!   Envoy sidecars bootstrapped by `meshd bootstrap` and a `meshd serve` in the hub.
//! - [`kube::KubeCluster`]: a real kube-apiserver + etcd on loopback.
//! - [`yaml`]: the Kubernetes and Istio objects tests feed meshd's file source.
//! - [`wait_until`] / [`wait_for`]: polling for eventual states.
//! - [`ports`]: loopback ports no two parallel tests share.
//! - [`prometheus::Prometheus`]: Debian's Prometheus scraping the sidecars, queried over its API.
//! - [`fuzz`]: differential fuzzing of meshd against the real Envoy (`tests/tests/fuzz_envoy.rs`,
//!   the `meshd-fuzz` binary).
//! - the `meshd-echo` binary: the app tests talk to.

pub mod deps;
pub mod fuzz;
pub mod http;
pub mod kube;
pub mod mesh;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod wait;
pub mod yaml;

pub use http::HttpResult;
pub use mesh::{Mesh, Meshd, NodeType, Pod, PodSpec};
pub use process::App;
pub use wait::{wait_for, wait_until};
