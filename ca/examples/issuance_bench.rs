//! Issuance benchmark: how many workload certificates meshd's CA mints (and CSRs it signs) per
//! second, next to the raw ECDSA P-256 signing rate of the same machine measured in the same run —
//! the ratio says how much of issuance is the signature itself. A CSR also needs its requester's
//! signature verified (the proof that it holds the key), so raw verify-then-sign is the floor of
//! CSR signing and is measured too.
//!
//! `cargo run --release -p meshd-ca --example issuance_bench [-- SECONDS]`; prints one JSON line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _,
    UnparsedPublicKey,
};
use meshd_ca::{CaOptions, CertificateAuthority, Identity};

/// Runs `op` repeatedly for `budget` and returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    // Warm up caches and lazy initialisation outside the measurement.
    for i in 0..20 {
        op(i);
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        op(n);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    let budget = Duration::from_secs(seconds);
    let dir = tempfile::Builder::new()
        .prefix("meshd-issuance-bench-")
        .tempdir()?;
    let ca = Arc::new(CertificateAuthority::load_or_generate(CaOptions::new(
        dir.path(),
        "cluster.local",
    ))?);

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())?;
    let message = [7u8; 512];
    let raw_sign = rate(budget, |_| {
        let _ = key.sign(&rng, &message);
    });
    let signature = key.sign(&rng, &message)?;
    let public =
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, key.public_key().as_ref().to_vec());
    let raw_verify = rate(budget, |_| {
        assert!(public.verify(&message, signature.as_ref()).is_ok());
    });
    let raw_verify_and_sign = rate(budget, |_| {
        assert!(public.verify(&message, signature.as_ref()).is_ok());
        let _ = key.sign(&rng, &message);
    });

    let mint = rate(budget, |i| {
        let id = Identity::new("cluster.local", "bench", format!("sa-{}", i % 1000));
        let _ = ca.mint(&id, None);
    });

    let csr = {
        let params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        params.serialize_request(&key)?.pem()?
    };
    let id = Identity::new("cluster.local", "bench", "csr-client");
    let sign_csr = rate(budget, |_| {
        let _ = ca.sign_csr(&csr, &id, None);
    });

    println!(
        "{{\"seconds_per_case\":{seconds},\"raw_p256_signatures_per_s\":{raw_sign:.0},\"raw_p256_verifications_per_s\":{raw_verify:.0},\"raw_p256_verify_and_sign_per_s\":{raw_verify_and_sign:.0},\"mint_key_and_cert_per_s\":{mint:.0},\"sign_csr_per_s\":{sign_csr:.0},\"mint_vs_raw_sign\":{:.3},\"sign_csr_vs_raw_sign\":{:.3},\"sign_csr_vs_raw_verify_and_sign\":{:.3}}}",
        mint / raw_sign,
        sign_csr / raw_sign,
        sign_csr / raw_verify_and_sign
    );
    Ok(())
}
