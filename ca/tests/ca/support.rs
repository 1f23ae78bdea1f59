//! Builders and checks shared by the tests: plug-in CAs, CSRs, chain verification.

use std::path::Path;
use std::time::{Duration, SystemTime};

use meshd_ca::{CaOptions, CertificateAuthority, Identity};
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, DnValue, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, RsaKeySize, SanType,
};
use rustls_pki_types::{CertificateDer, UnixTime};

pub const TD: &str = "cluster.local";

pub fn mk_identity(ns: &str, sa: &str) -> Identity {
    Identity::new(TD, ns, sa)
}

pub fn mk_ca(dir: &Path) -> CertificateAuthority {
    CertificateAuthority::load_or_generate(CaOptions::new(dir, TD)).expect("CA")
}

/// DER of every certificate in a PEM string.
pub fn ders(pem: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem)
        .expect("PEM")
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect()
}

/// Verifies `chain` (leaf first, then intermediates; a trailing root is ignored by path building)
/// against the roots in `bundle_pem` with webpki, for client and server use.
pub fn verify(chain: &[Vec<u8>], bundle_pem: &str) -> Result<(), webpki::Error> {
    verify_at(chain, bundle_pem, SystemTime::now())
}

pub fn verify_at(chain: &[Vec<u8>], bundle_pem: &str, at: SystemTime) -> Result<(), webpki::Error> {
    let roots: Vec<CertificateDer<'static>> = ders(bundle_pem)
        .into_iter()
        .map(CertificateDer::from)
        .collect();
    let anchors = roots
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = CertificateDer::from(chain[0].clone());
    let intermediates: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf)?;
    let time = UnixTime::since_unix_epoch(at.duration_since(SystemTime::UNIX_EPOCH).unwrap());
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            time,
            usage,
            None,
            None,
        )?;
    }
    Ok(())
}

fn ca_params(cn: &str, lifetime: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    // PrintableString like many real CAs, so the issuer name must survive byte for byte.
    name.push(
        DnType::OrganizationName,
        DnValue::PrintableString("Istio".try_into().unwrap()),
    );
    name.push(DnType::CommonName, cn);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + lifetime).into();
    params
}

/// A root that signs intermediates for plug-in layouts.
pub struct PluginRoot {
    root: CertifiedIssuer<'static, KeyPair>,
}

pub struct PluginCa {
    pub root_pem: String,
    pub intermediate_pem: String,
    pub intermediate_not_after: SystemTime,
}

impl PluginRoot {
    pub fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = ca_params("Root CA", Duration::from_secs(10 * 365 * 86400));
        Self {
            root: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.root.pem()
    }

    /// Istio's plug-in layout with a fresh intermediate that signs (as `make -f
    /// Makefile.selfsigned.mk <cluster>-cacerts` produces): cert-chain.pem = intermediate + root.
    pub fn write_intermediate(&self, dir: &Path, lifetime: Duration) -> PluginCa {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = ca_params("Intermediate CA", lifetime);
        params.use_authority_key_identifier_extension = true;
        let intermediate = params.signed_by(&key, &self.root).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca-cert.pem"), intermediate.pem()).unwrap();
        std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("root-cert.pem"), self.pem()).unwrap();
        std::fs::write(
            dir.join("cert-chain.pem"),
            format!("{}{}", intermediate.pem(), self.pem()),
        )
        .unwrap();
        PluginCa {
            root_pem: self.pem(),
            intermediate_pem: intermediate.pem(),
            intermediate_not_after: SystemTime::now() + lifetime,
        }
    }
}

/// A plug-in CA with a new root and an intermediate that signs.
pub fn write_plugin_ca(dir: &Path, intermediate_lifetime: Duration) -> PluginCa {
    PluginRoot::new().write_intermediate(dir, intermediate_lifetime)
}

/// A plug-in CA whose root is RSA-2048 and signs directly (no intermediate). Returns the root PEM.
pub fn write_rsa_plugin_root(dir: &Path) -> String {
    let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
    let root = ca_params("RSA Root CA", Duration::from_secs(365 * 86400))
        .self_signed(&key)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca-cert.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root.pem()).unwrap();
    root.pem()
}

/// A CSR with the given subject CN and URI/DNS SANs.
pub fn mk_csr(cn: Option<&str>, uris: &[&str], dns: &[&str]) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    if let Some(cn) = cn {
        name.push(DnType::CommonName, cn);
    }
    params.distinguished_name = name;
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI(Ia5String::try_from(*u).unwrap()))
        .chain(
            dns.iter()
                .map(|d| SanType::DnsName(Ia5String::try_from(*d).unwrap())),
        )
        .collect();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key)
}

pub fn secs_between(a: SystemTime, b: SystemTime) -> i64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
