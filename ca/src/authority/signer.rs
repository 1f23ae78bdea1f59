//! The signing material in a CA directory (Istio's plug-in layout) — loading and checking it, or
//! generating a self-signed root into it.
//!
//! | file | holds |
//! |---|---|
//! | `ca-cert.pem` | the certificate meshd signs with (a root, or an intermediate) |
//! | `ca-key.pem` | its private key (PKCS#8, SEC1 or PKCS#1 PEM; ECDSA P-256/P-384 or RSA ≥ 2048) |
//! | `cert-chain.pem` | `ca-cert.pem`'s chain up to the root (the root itself may be included) |
//! | `root-cert.pem` | the trust bundle: every root workloads trust (more than one during rotation) |

use std::fmt;
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use aws_lc_rs::digest;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_RSA_SHA256,
    PublicKeyData,
};
use x509_parser::certificate::X509Certificate;
use x509_parser::public_key::PublicKey;

use super::{CLOCK_SKEW, ROOT_TTL, random_serial};
use crate::CaError;
use crate::x509::{
    certificate_pem, is_self_signed, issued_by, parse_certificate, pem_certificates, system_time,
};

pub(crate) const CA_CERT: &str = "ca-cert.pem";
pub(crate) const CA_KEY: &str = "ca-key.pem";
pub(crate) const CERT_CHAIN: &str = "cert-chain.pem";
pub(crate) const ROOT_CERT: &str = "root-cert.pem";

const MIN_RSA_BITS: usize = 2048;

/// A trusted root certificate.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Root {
    pub(crate) der: Vec<u8>,
    pub(crate) pem: String,
}

/// Everything needed to sign: the issuer (with its key), the chain to hand out, the roots.
pub(crate) struct Signer {
    pub(crate) issuer: Issuer<'static, KeyPair>,
    /// PEM, from the signing certificate up to (not including) the root; empty when meshd signs
    /// with the root itself.
    pub(crate) intermediates: Vec<String>,
    /// The root the signing chain ends at.
    pub(crate) anchor: Root,
    /// Everything in `root-cert.pem`.
    pub(crate) roots: Vec<Root>,
    /// The earliest expiry along the signing chain, root included: no leaf may outlive it.
    pub(crate) chain_not_after: SystemTime,
    pub(crate) anchor_not_after: SystemTime,
    /// Digest of the four files, to tell whether a reload has anything new.
    pub(crate) files_digest: Vec<u8>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("intermediates", &self.intermediates.len())
            .field("roots", &self.roots.len())
            .field("chain_not_after", &self.chain_not_after)
            .finish_non_exhaustive()
    }
}

/// The raw contents of the CA directory.
struct CaFiles {
    ca_cert: Option<Vec<u8>>,
    ca_key: Option<zeroize::Zeroizing<Vec<u8>>>,
    cert_chain: Option<Vec<u8>>,
    root_cert: Option<Vec<u8>>,
}

impl CaFiles {
    fn read(dir: &Path) -> Result<Self, CaError> {
        Ok(Self {
            ca_cert: read_optional(&dir.join(CA_CERT))?,
            ca_key: read_optional(&dir.join(CA_KEY))?.map(zeroize::Zeroizing::new),
            cert_chain: read_optional(&dir.join(CERT_CHAIN))?,
            root_cert: read_optional(&dir.join(ROOT_CERT))?,
        })
    }

    fn digest(&self) -> Vec<u8> {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for file in [
            self.ca_cert.as_deref(),
            self.ca_key.as_ref().map(|k| k.as_slice()),
            self.cert_chain.as_deref(),
            self.root_cert.as_deref(),
        ] {
            match file {
                Some(bytes) => {
                    ctx.update(&[1]);
                    ctx.update(&(bytes.len() as u64).to_be_bytes());
                    ctx.update(bytes);
                }
                None => ctx.update(&[0]),
            }
        }
        ctx.finish().as_ref().to_vec()
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, CaError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CaError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// What [`Signer::load`] found.
pub(crate) enum Loaded {
    /// Neither `ca-cert.pem` nor `ca-key.pem` exists.
    Empty,
    /// The files are those already loaded (same digest).
    Unchanged,
    Signer(Box<Signer>),
}

impl Signer {
    /// Loads and checks the CA in `dir`. `known_digest` short-cuts an unchanged directory.
    pub(crate) fn load(dir: &Path, known_digest: Option<&[u8]>) -> Result<Loaded, CaError> {
        let files = CaFiles::read(dir)?;
        let digest = files.digest();
        if known_digest == Some(digest.as_slice()) {
            return Ok(Loaded::Unchanged);
        }
        let invalid = |reason: String| CaError::InvalidCaFiles {
            dir: dir.to_path_buf(),
            reason,
        };
        let (ca_cert, ca_key) = match (&files.ca_cert, &files.ca_key) {
            (None, None) => return Ok(Loaded::Empty),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return Err(invalid(format!("{CA_CERT} without {CA_KEY}"))),
            (None, Some(_)) => return Err(invalid(format!("{CA_KEY} without {CA_CERT}"))),
        };

        let signing_der = pem_certificates(ca_cert)
            .map_err(|e| invalid(format!("{CA_CERT}: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| invalid(format!("{CA_CERT} holds no certificate")))?;
        let signing =
            parse_certificate(&signing_der).map_err(|e| invalid(format!("{CA_CERT}: {e}")))?;
        check_signing_certificate(&signing).map_err(|e| invalid(format!("{CA_CERT}: {e}")))?;

        let key = load_key(ca_key).map_err(|e| invalid(format!("{CA_KEY}: {e}")))?;
        if key.der_bytes() != signing.public_key().subject_public_key.data.as_ref() {
            return Err(invalid(format!(
                "{CA_KEY} is not the key of the certificate in {CA_CERT}"
            )));
        }

        let root_ders = match &files.root_cert {
            Some(bytes) => {
                pem_certificates(bytes).map_err(|e| invalid(format!("{ROOT_CERT}: {e}")))?
            }
            None if is_self_signed(&signing) => vec![signing_der.clone()],
            None => {
                return Err(invalid(format!(
                    "{ROOT_CERT} is missing and {CA_CERT} is not a self-signed root"
                )));
            }
        };
        if root_ders.is_empty() {
            return Err(invalid(format!("{ROOT_CERT} holds no certificate")));
        }
        let roots_parsed = root_ders
            .iter()
            .map(|der| parse_certificate(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{ROOT_CERT}: {e}")))?;

        let chain_ders = match &files.cert_chain {
            Some(bytes) => {
                pem_certificates(bytes).map_err(|e| invalid(format!("{CERT_CHAIN}: {e}")))?
            }
            None => Vec::new(),
        };

        let (chain_ders_ordered, anchor_index) = signing_chain(
            &signing,
            &signing_der,
            chain_ders,
            &root_ders,
            &roots_parsed,
        )
        .map_err(invalid)?;

        let anchor_cert = &roots_parsed[anchor_index];
        let anchor_not_after = system_time(anchor_cert.validity().not_after);
        let mut chain_not_after = anchor_not_after;
        for der in &chain_ders_ordered {
            let cert = parse_certificate(der)?;
            chain_not_after = chain_not_after.min(system_time(cert.validity().not_after));
        }
        if chain_not_after <= SystemTime::now() {
            return Err(invalid("the signing chain has expired".into()));
        }

        let issuer = Issuer::from_ca_cert_der(&signing_der.as_slice().into(), key)
            .map_err(|e| invalid(format!("{CA_CERT}: {e}")))?;
        let roots = root_ders
            .into_iter()
            .map(|der| Root {
                pem: certificate_pem(&der),
                der,
            })
            .collect::<Vec<_>>();
        Ok(Loaded::Signer(Box::new(Signer {
            issuer,
            intermediates: chain_ders_ordered
                .iter()
                .map(|der| certificate_pem(der))
                .collect(),
            anchor: roots[anchor_index].clone(),
            roots,
            chain_not_after,
            anchor_not_after,
            files_digest: digest,
        })))
    }
}

/// The chain meshd hands out: the signing certificate, then whatever of `cert-chain.pem` leads
/// from it to a root of the bundle (empty when the signing certificate is that root); and the
/// index of that root in the bundle.
fn signing_chain(
    signing: &X509Certificate<'_>,
    signing_der: &[u8],
    chain_ders: Vec<Vec<u8>>,
    root_ders: &[Vec<u8>],
    roots: &[X509Certificate<'_>],
) -> Result<(Vec<Vec<u8>>, usize), String> {
    if is_self_signed(signing) {
        let anchor = root_ders
            .iter()
            .position(|der| der == signing_der)
            .ok_or_else(|| {
                format!("{CA_CERT} is a self-signed root that {ROOT_CERT} does not include")
            })?;
        return Ok((Vec::new(), anchor));
    }
    let mut chain = vec![signing_der.to_vec()];
    for der in chain_ders {
        if der == signing_der || root_ders.contains(&der) {
            continue;
        }
        let cert = parse_certificate(&der).map_err(|e| format!("{CERT_CHAIN}: {e}"))?;
        if is_self_signed(&cert) {
            // A root missing from the bundle: the chain would end somewhere nobody trusts.
            return Err(format!(
                "{CERT_CHAIN} ends at a root that {ROOT_CERT} does not include"
            ));
        }
        chain.push(der);
    }
    let parsed = chain
        .iter()
        .map(|der| parse_certificate(der))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{CERT_CHAIN}: {e}"))?;
    for pair in parsed.windows(2) {
        if !issued_by(&pair[0], &pair[1]) {
            return Err(format!(
                "{CERT_CHAIN} is not a chain: {} was not issued by {}",
                pair[0].subject(),
                pair[1].subject()
            ));
        }
    }
    // `chain` starts with the signing certificate, so it is never empty.
    let last = parsed.last().unwrap_or(signing);
    let anchor = roots
        .iter()
        .position(|root| issued_by(last, root))
        .ok_or_else(|| {
            format!(
                "the chain of {CA_CERT} does not lead to a root in {ROOT_CERT} (issuer {})",
                last.issuer()
            )
        })?;
    Ok((chain, anchor))
}

fn check_signing_certificate(cert: &X509Certificate<'_>) -> Result<(), String> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| e.to_string())?
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err("not a CA certificate (basicConstraints CA:true missing)".into());
    }
    if let Some(ku) = cert.key_usage().map_err(|e| e.to_string())?
        && !ku.value.key_cert_sign()
    {
        return Err("keyUsage does not allow keyCertSign".into());
    }
    if let Ok(PublicKey::RSA(rsa)) = cert.public_key().parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(format!(
            "RSA key of {} bits; at least {MIN_RSA_BITS} required",
            rsa.key_size()
        ));
    }
    Ok(())
}

fn load_key(pem: &[u8]) -> Result<KeyPair, String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_string())?;
    // The parse error names the format problem only, never the key.
    let key = KeyPair::from_pem(text).map_err(|e| e.to_string())?;
    let alg = key.algorithm();
    if alg != &PKCS_ECDSA_P256_SHA256 && alg != &PKCS_ECDSA_P384_SHA384 && alg != &PKCS_RSA_SHA256 {
        return Err(format!(
            "unsupported key type {alg:?}; use ECDSA P-256/P-384 or RSA"
        ));
    }
    Ok(key)
}

/// Generates a self-signed ECDSA P-256 root for `trust_domain` and writes it into `dir` in the
/// plug-in layout, so the next start loads it like a plugged-in CA.
pub(crate) fn generate_root(dir: &Path, trust_domain: &str) -> Result<(), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let now = SystemTime::now();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, trust_domain);
    name.push(DnType::CommonName, "meshd root CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + ROOT_TTL).into();
    params.serial_number = Some(random_serial()?.into());
    let cert = params.self_signed(&key)?;
    let cert_pem = cert.pem();
    let key_pem = zeroize::Zeroizing::new(key.serialize_pem());

    create_dir(dir)?;
    // The key goes first: a crash after it leaves "ca-key.pem without ca-cert.pem", an error a
    // person resolves, never a certificate whose key is lost.
    write_atomically(&dir.join(CA_KEY), key_pem.as_bytes(), 0o600)?;
    write_atomically(&dir.join(ROOT_CERT), cert_pem.as_bytes(), 0o644)?;
    write_atomically(&dir.join(CERT_CHAIN), cert_pem.as_bytes(), 0o644)?;
    write_atomically(&dir.join(CA_CERT), cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    };
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// Writes via a temporary file and a rename, so readers see the old or the new file, never half.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let tmp: PathBuf = path.with_extension("pem.tmp");
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A leftover from a crash could carry other permissions; `mode` applies only on creation.
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)
}
