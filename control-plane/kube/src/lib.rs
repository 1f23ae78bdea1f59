//! Everything meshd says to the Kubernetes API server, behind a small API:
//!
//! - [`spawn_source`] / [`list_once`]: the Kubernetes config source — discovery and watches of
//!   every kind meshd reads, converted into [`meshd_model::SourceEvent`]s (or listed once, for
//!   `meshd analyze --kubeconfig`);
//! - [`LeaderElection`]: which replica writes;
//! - [`root_cert::spawn`]: ConfigMap `istio-ca-root-cert` in every namespace (leader only);
//! - [`ca_bundle::spawn`]: the `caBundle` of meshd's webhook configurations (leader only);
//! - [`gateway_deploy::spawn`]: the Deployment, Service and ServiceAccount of each Gateway of a
//!   class meshd serves, and GatewayClass `istio` (leader only);
//! - [`gateway_status::spawn`]: the `status` of Gateway API objects (leader only);
//! - [`TokenReviewer`] and [`TokenReviewLayer`]: proxy identity from service-account tokens.
//!
//! Nothing else in meshd depends on `kube`.

mod backoff;
pub mod ca_bundle;
mod client;
mod convert;
mod discover;
pub mod gateway_deploy;
pub mod gateway_status;
mod leader;
pub mod root_cert;
mod source;
pub mod token_review;
mod watch;

#[cfg(test)]
mod test_support;

use std::sync::Arc;

pub use client::{KubeContext, client, is_conflict, native_sidecars, native_sidecars_in};
pub use leader::{LEADER_LEASE, LeaderElection, LeaseTiming, holder_identity};
pub use source::{list_once, spawn_source};
pub use token_review::{ReviewError, ReviewedToken, TokenReviewLayer, TokenReviewer, bearer};

/// The name the Kubernetes source reports `Synced` under.
pub const SOURCE: &str = "kube";

/// The PEM trust bundle meshd's CA hands out now (old and new roots during a rotation). Read
/// again whenever a writer checks that what the cluster holds is current.
pub type TrustBundle = Arc<dyn Fn() -> String + Send + Sync>;
