//! The parts of `meshd` that answer Kubernetes admission — the webhook server and its pure
//! decisions (sidecar injection, object validation), with the capture rules injection embeds and
//! the serving certificates — as a library, so the binary serves them and the fuzzers in `fuzz/`
//! can drive the same router with hostile AdmissionReviews.

pub mod admission;
pub mod inject;
pub mod iptables;
pub mod tls;
