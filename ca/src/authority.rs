//! The certificate authority: holds the signing chain, issues workload and serving certificates,
//! signs CSRs, and follows root rotation in its directory.

mod signer;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};

use crate::csr::parse_csr;
use crate::{CaError, Identity, SecretPem};
use signer::{Loaded, Root, Signer, generate_root};

/// Istio's default workload certificate lifetime.
pub const DEFAULT_WORKLOAD_TTL: Duration = Duration::from_secs(24 * 3600);
/// Istio's longest workload certificate lifetime.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Lifetime of a generated root, as Istio's self-signed root.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates start this long before they are issued, so clocks a little behind accept them.
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct CaOptions {
    /// The CA directory: Istio's plug-in layout, or where a generated root is kept.
    pub dir: PathBuf,
    pub trust_domain: String,
    /// Lifetime of a workload certificate when the caller asks for none.
    pub workload_ttl: Duration,
    /// No certificate lives longer, whatever is asked.
    pub max_ttl: Duration,
}

impl CaOptions {
    /// Options with Istio's lifetimes (24 h, at most 90 d).
    pub fn new(dir: impl Into<PathBuf>, trust_domain: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            trust_domain: trust_domain.into(),
            workload_ttl: DEFAULT_WORKLOAD_TTL,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// A freshly issued key and certificate.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// PKCS#8 PEM.
    pub key_pem: SecretPem,
    /// The leaf, then intermediates (not the root), PEM concatenated.
    pub chain_pem: String,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl IssuedCert {
    /// Half-way through the certificate's life: when to replace it.
    pub fn rotation_due(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life / 2
    }
}

/// One signed certificate, before it is packaged.
struct Signed {
    pem: String,
    serial: String,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// meshd's CA. Cheap to share (`Arc`); every method takes `&self`.
pub struct CertificateAuthority {
    options: CaOptions,
    signer: RwLock<Arc<Signer>>,
    /// Roots that left `root-cert.pem` in a rotation but are still trusted until
    /// [`CertificateAuthority::forget_old_roots`].
    old_roots: RwLock<Vec<Root>>,
    reloading: Mutex<()>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("options", &self.options)
            .field("signer", &*self.signer.read())
            .field("old_roots", &self.old_roots.read().len())
            .finish()
    }
}

impl CertificateAuthority {
    /// Istio's plug-in layout in `dir` (`ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
    /// `cert-chain.pem`) if present (ECDSA P-256/P-384 or RSA ≥ 2048 signing keys); else a
    /// self-signed ECDSA P-256 root (10 y) is generated and persisted in the same layout, so a
    /// restart keeps it. `root-cert.pem` always holds the trust bundle.
    pub fn load_or_generate(options: CaOptions) -> Result<Self, CaError> {
        Identity::parse(&crate::spiffe_id(&options.trust_domain, "ns", "sa")).map_err(|_| {
            CaError::InvalidIdentity {
                uri: options.trust_domain.clone(),
                reason: "not a valid trust domain",
            }
        })?;
        let dir = &options.dir;
        let signer = match Signer::load(dir, None)? {
            Loaded::Signer(signer) => {
                tracing::info!(dir = %dir.display(), roots = signer.roots.len(),
                    intermediates = signer.intermediates.len(), "loaded CA");
                signer
            }
            Loaded::Empty | Loaded::Unchanged => {
                generate_root(dir, &options.trust_domain)?;
                let Loaded::Signer(signer) = Signer::load(dir, None)? else {
                    return Err(CaError::InvalidCaFiles {
                        dir: dir.clone(),
                        reason: "the generated root could not be read back".into(),
                    });
                };
                tracing::info!(dir = %dir.display(), "generated a self-signed root CA");
                signer
            }
        };
        Ok(Self {
            options,
            signer: RwLock::new(Arc::from(signer)),
            old_roots: RwLock::default(),
            reloading: Mutex::new(()),
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.options.trust_domain
    }

    pub fn options(&self) -> &CaOptions {
        &self.options
    }

    /// PEM of every trusted root (the bundle Envoy's `ROOTCA` secret holds; more than one during
    /// rotation): `root-cert.pem`, then roots rotated out but not yet forgotten.
    pub fn root_bundle_pem(&self) -> String {
        let signer = self.signer.read().clone();
        let mut bundle: String = signer.roots.iter().map(|r| r.pem.as_str()).collect();
        for old in self.old_roots.read().iter() {
            if !signer.roots.contains(old) {
                bundle.push_str(&old.pem);
            }
        }
        bundle
    }

    /// Expiry of the root the signing chain ends at.
    pub fn root_not_after(&self) -> SystemTime {
        self.signer.read().anchor_not_after
    }

    /// A fresh ECDSA P-256 key and certificate for `id` (the SDS `default` secret). `ttl` defaults
    /// to the workload TTL and is clamped to the maximum and to the signing chain's expiry.
    pub fn mint(&self, id: &Identity, ttl: Option<Duration>) -> Result<IssuedCert, CaError> {
        let san = self.checked_san(id)?;
        let signer = self.signer.read().clone();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let signed = self.issue(&signer, &key, vec![san], self.ttl(ttl))?;
        tracing::debug!(identity = %id, serial = %signed.serial, "minted workload certificate");
        Ok(package(&signer, signed, &key))
    }

    /// Signs a CSR (PEM) for `id`. The SAN is always `id.uri()` and the CSR's subject is ignored;
    /// a CSR asking for any other SAN is refused. Returns the chain leaf first, root last
    /// (Istio's `CreateCertificate` shape).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &Identity,
        ttl: Option<Duration>,
    ) -> Result<Vec<String>, CaError> {
        let san = self.checked_san(id)?;
        let csr = parse_csr(csr_pem)?;
        let uri = id.uri();
        if csr.requested_sans.iter().any(|requested| *requested != uri) {
            return Err(CaError::ForeignSan {
                requested: csr.requested_sans,
                allowed: uri,
            });
        }
        let signer = self.signer.read().clone();
        let signed = self.issue(&signer, &csr.public_key, vec![san], self.ttl(ttl))?;
        tracing::debug!(identity = %id, serial = %signed.serial, "signed CSR");
        let mut chain = Vec::with_capacity(signer.intermediates.len() + 2);
        chain.push(signed.pem);
        chain.extend(signer.intermediates.iter().cloned());
        chain.push(signer.anchor.pem.clone());
        Ok(chain)
    }

    /// A serving certificate for meshd's own TLS ports with these DNS and IP SANs (for example
    /// `istiod.istio-system.svc`). It lives the workload TTL: replace it at `rotation_due`, and
    /// after a root rotation.
    pub fn serving_cert(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert, CaError> {
        self.serving_cert_with_ttl(dns_names, ips, None)
    }

    /// [`Self::serving_cert`] with a lifetime of its own (default the workload TTL, clamped to the
    /// maximum), for servers that cannot swap certificates often.
    pub fn serving_cert_with_ttl(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Option<Duration>,
    ) -> Result<IssuedCert, CaError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(CaError::InvalidName(String::new()));
        }
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            if name.is_empty() {
                return Err(CaError::InvalidName(name.clone()));
            }
            let ia5 = Ia5String::try_from(name.as_str())
                .map_err(|_| CaError::InvalidName(name.clone()))?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        let signer = self.signer.read().clone();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let signed = self.issue(&signer, &key, sans, self.ttl(ttl))?;
        tracing::debug!(?dns_names, ?ips, serial = %signed.serial, "issued serving certificate");
        Ok(package(&signer, signed, &key))
    }

    /// Reloads the CA from its directory if the files changed (root or intermediate rotation).
    /// Roots that left `root-cert.pem` stay in the bundle until [`Self::forget_old_roots`], so
    /// certificates from before the rotation keep verifying. Returns whether anything changed.
    /// On error the CA keeps signing with what it had.
    pub fn reload(&self) -> Result<bool, CaError> {
        let _one_at_a_time = self.reloading.lock();
        let current = self.signer.read().clone();
        let next = match Signer::load(&self.options.dir, Some(&current.files_digest))? {
            Loaded::Unchanged => return Ok(false),
            Loaded::Empty => {
                tracing::warn!(dir = %self.options.dir.display(),
                    "CA files are gone; keeping the CA in memory");
                return Ok(false);
            }
            Loaded::Signer(next) => next,
        };
        let mut old_roots = self.old_roots.write();
        for root in &current.roots {
            if !next.roots.contains(root) && !old_roots.contains(root) {
                old_roots.push(root.clone());
            }
        }
        old_roots.retain(|root| !next.roots.contains(root));
        tracing::info!(dir = %self.options.dir.display(), roots = next.roots.len(),
            old_roots = old_roots.len(), "reloaded CA");
        *self.signer.write() = Arc::from(next);
        Ok(true)
    }

    /// Ends a rotation's overlap: only `root-cert.pem`'s roots stay trusted. Returns whether the
    /// bundle changed.
    pub fn forget_old_roots(&self) -> bool {
        let mut old_roots = self.old_roots.write();
        let changed = !old_roots.is_empty();
        old_roots.clear();
        changed
    }

    fn ttl(&self, requested: Option<Duration>) -> Duration {
        requested
            .filter(|ttl| !ttl.is_zero())
            .unwrap_or(self.options.workload_ttl)
            .min(self.options.max_ttl)
    }

    /// The URI SAN for `id`, once `id` is known to be a well-formed identity of this trust domain.
    fn checked_san(&self, id: &Identity) -> Result<SanType, CaError> {
        let uri = id.uri();
        Identity::parse(&uri)?;
        if id.trust_domain != self.options.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                identity: uri,
                trust_domain: self.options.trust_domain.clone(),
            });
        }
        let ia5 = Ia5String::try_from(uri.as_str()).map_err(|_| CaError::InvalidIdentity {
            uri: uri.clone(),
            reason: "not ASCII",
        })?;
        Ok(SanType::URI(ia5))
    }

    fn issue(
        &self,
        signer: &Signer,
        public_key: &impl PublicKeyData,
        sans: Vec<SanType>,
        ttl: Duration,
    ) -> Result<Signed, CaError> {
        let now = whole_seconds(SystemTime::now());
        let not_before = now - CLOCK_SKEW;
        let not_after = (now + ttl).min(signer.chain_not_after);
        if not_after <= now {
            return Err(CaError::Expired);
        }
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(serial.clone().into());
        let cert = params.signed_by(public_key, &signer.issuer)?;
        Ok(Signed {
            pem: cert.pem(),
            serial: hex(&serial),
            not_before,
            not_after,
        })
    }
}

fn package(signer: &Signer, signed: Signed, key: &KeyPair) -> IssuedCert {
    let mut chain_pem = signed.pem;
    for intermediate in &signer.intermediates {
        chain_pem.push_str(intermediate);
    }
    IssuedCert {
        key_pem: SecretPem::new(key.serialize_pem()),
        chain_pem,
        serial: signed.serial,
        not_before: signed.not_before,
        not_after: signed.not_after,
    }
}

/// X.509 times have whole seconds; so do ours, so reported times equal the certificate's.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// 126 random bits, positive and of fixed length (top bit clear, next bit set), so the hex we
/// report is exactly what the certificate encodes.
pub(crate) fn random_serial() -> Result<Vec<u8>, CaError> {
    let mut serial = vec![0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| CaError::Random)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
