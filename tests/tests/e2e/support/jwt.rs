//! A JWT issuer outside the mesh: an ES256 key made for the test, its JWKS served from a pod
//! without a sidecar (only meshd, in the hub, fetches it), and the tokens it signs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use meshd_tests::{Mesh, PodSpec};

use super::write_readable;

/// The `iss` of every token an [`Issuer`] signs.
pub const ISSUER: &str = "https://issuer.meshd.test";

/// An ES256 issuer: a P-256 key made for the test, its JWKS, and the tokens it signs.
pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
}

impl Issuer {
    pub fn new(kid: &str) -> Issuer {
        Issuer {
            key: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            kid: kid.to_string(),
        }
    }

    pub fn jwks(&self) -> String {
        // Uncompressed point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
        }]})
        .to_string()
    }

    /// A token from [`ISSUER`] for `sub`, valid for an hour, with `groups`.
    pub fn token(&self, sub: &str, groups: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": sub, "iat": now, "exp": now + 3600, "groups": groups,
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", b64url(signature.as_ref()))
    }
}

/// The header carrying `token`, for curl's `-H`.
pub fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

/// Base64url without padding, as JOSE writes it.
fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Serves `document` as `http://IP:PORT/jwks.json` from pod `issuer` (no sidecar); returns the
/// file, which can be replaced while it runs.
pub fn serve_jwks(mesh: &Mesh, ip: &str, port: u16, document: &str) -> anyhow::Result<PathBuf> {
    let dir = mesh.dir().join("issuer");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("jwks.json");
    write_readable(&file, document)?;
    let keys = mesh.add_pod(PodSpec::new("issuer", "default").ip(ip.parse()?))?;
    keys.spawn(&[
        "python3",
        "-m",
        "http.server",
        &port.to_string(),
        "--bind",
        "0.0.0.0",
        "--directory",
        dir.to_str().unwrap(),
    ])?;
    keys.wait_listening(port, Duration::from_secs(10))?;
    Ok(file)
}

#[test]
fn base64url_matches_the_rfc_4648_vectors() {
    for (plain, encoded) in [
        ("", ""),
        ("f", "Zg"),
        ("fo", "Zm8"),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg"),
        ("fooba", "Zm9vYmE"),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(b64url(plain.as_bytes()), encoded);
    }
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}
