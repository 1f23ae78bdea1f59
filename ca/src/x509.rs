//! Reading certificates: PEM blocks, validity times, SANs, issuer links.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::time::ASN1Time;

use crate::CaError;

const CERTIFICATE: &str = "CERTIFICATE";

/// The DER of every `CERTIFICATE` block in `pem`, in order; other blocks are ignored.
pub(crate) fn pem_certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(pem).map_err(|e| format!("not PEM: {e}"))?;
    Ok(blocks
        .into_iter()
        .filter(|block| block.tag() == CERTIFICATE)
        .map(pem::Pem::into_contents)
        .collect())
}

/// One `CERTIFICATE` PEM block, `\n` line endings, ending in a newline.
pub(crate) fn certificate_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(CERTIFICATE, der.to_vec()), config)
}

pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, CaError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| CaError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CaError::Certificate(
            "trailing bytes after certificate".into(),
        ));
    }
    Ok(cert)
}

pub(crate) fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

/// Whether `issuer` signed `cert`: names chain and the signature verifies with `issuer`'s key.
pub(crate) fn issued_by(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    cert.issuer().as_raw() == issuer.subject().as_raw()
        && cert.verify_signature(Some(issuer.public_key())).is_ok()
}

pub(crate) fn is_self_signed(cert: &X509Certificate<'_>) -> bool {
    issued_by(cert, cert)
}

/// A SAN as text: URIs as they are, others with a `DNS:`/`IP:`/`email:` prefix.
pub(crate) fn general_name_text(name: &GeneralName<'_>) -> String {
    match name {
        GeneralName::URI(uri) => (*uri).to_string(),
        GeneralName::DNSName(dns) => format!("DNS:{dns}"),
        GeneralName::RFC822Name(email) => format!("email:{email}"),
        GeneralName::IPAddress(bytes) => match ip_from_bytes(bytes) {
            Some(ip) => format!("IP:{ip}"),
            None => "IP:<invalid>".to_string(),
        },
        other => format!("{other}"),
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The URI SANs of a DER certificate — what a peer's client certificate proves (its SPIFFE id).
pub fn uri_sans(cert_der: &[u8]) -> Result<Vec<String>, CaError> {
    let cert = parse_certificate(cert_der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CaError::Certificate(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// What a person checking a proxy's certificate wants to see: never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    pub serial: String,
    pub subject: String,
    pub issuer: String,
    pub uri_sans: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Summaries of every certificate in a PEM bundle, in order.
pub fn describe_pem(pem: &str) -> Result<Vec<CertSummary>, CaError> {
    let ders = pem_certificates(pem.as_bytes()).map_err(CaError::Certificate)?;
    ders.iter()
        .map(|der| {
            let cert = parse_certificate(der)?;
            Ok(CertSummary {
                serial: cert.raw_serial_as_string().replace(':', ""),
                subject: cert.subject().to_string(),
                issuer: cert.issuer().to_string(),
                uri_sans: uri_sans(der)?,
                not_before: system_time(cert.validity().not_before),
                not_after: system_time(cert.validity().not_after),
            })
        })
        .collect()
}
