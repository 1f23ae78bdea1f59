//! Differential fuzzing of meshd against the real Envoy: random but schema-shaped Kubernetes and
//! Istio objects of every kind meshd reads go through parsing, assembly, translation for a few
//! proxies and the server's checks; whatever passes is loaded by `envoy --mode validate`. Envoy
//! refusing anything meshd let through, or a panic anywhere, is a failure, shrunk to the objects
//! and resources that cause it and printed with the seed that reproduces it.
//!
//! - [`rng`]: the seeded PRNG; [`atoms`]: field values, valid and hostile;
//! - [`world`], [`kube`], [`registry`], [`traffic`], [`security`]: objects per kind;
//!   [`mutate`]: one-field mutations; [`batch`]: a batch of objects and its proxies;
//! - [`pipeline`]: meshd's side, [`check`]: the server's checks; [`envoy`]: Envoy's side,
//!   [`secrets`]: static stand-ins for SDS where validate mode needs them;
//! - [`minimize`]: shrinking; [`campaign`]: batches, figures, failures.
//!
//! `make test` runs a bounded campaign (`tests/tests/fuzz_envoy.rs`), `make fuzz` a long one
//! (the `meshd-fuzz` binary). `MESHD_FUZZ_SEED`, `MESHD_FUZZ_BATCHES`, `MESHD_FUZZ_SECONDS`
//! and `MESHD_FUZZ_BATCH` (one batch only) steer both.

pub mod atoms;
pub mod batch;
pub mod campaign;
pub mod check;
pub mod envoy;
pub mod kube;
pub mod minimize;
pub mod mutate;
pub mod pipeline;
pub mod registry;
pub mod rng;
pub mod secrets;
pub mod security;
pub mod telemetry;
pub mod traffic;
pub mod world;

use std::time::Duration;

pub use campaign::{Report, Settings};

/// A number as written in an environment variable: decimal or `0x` hex.
fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn env_number(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(text) => parse_number(&text)
            .map(Some)
            .ok_or_else(|| anyhow::anyhow!("{name}={text:?} is not a number")),
        Err(_) => Ok(None),
    }
}

impl Settings {
    /// `seed`, `batches` and `seconds` unless the environment says otherwise; Envoy where the
    /// harness finds it.
    pub fn from_env(seed: u64, batches: u64, seconds: u64) -> anyhow::Result<Settings> {
        Ok(Settings {
            seed: env_number("MESHD_FUZZ_SEED")?.unwrap_or(seed),
            batches: env_number("MESHD_FUZZ_BATCHES")?.unwrap_or(batches),
            time_limit: Duration::from_secs(env_number("MESHD_FUZZ_SECONDS")?.unwrap_or(seconds)),
            envoy: crate::deps::envoy_binary()?,
            shrink_budget: 400,
            only_batch: env_number("MESHD_FUZZ_BATCH")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_read_in_decimal_and_hex() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("0x2a"), Some(42));
        assert_eq!(parse_number("x"), None);
    }

    #[test]
    fn a_batch_seed_always_generates_the_same_objects() {
        let a = batch::Batch::generate(99);
        let b = batch::Batch::generate(99);
        assert_eq!(a.objects, b.objects);
        assert_eq!(a.text(), b.text());
    }
}
