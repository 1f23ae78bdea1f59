//! Certificate signing requests: proof of key possession, the public key, the SANs asked for.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::CaError;
use crate::x509::general_name_text;

const MIN_RSA_BITS: usize = 2048;

/// What the CA takes from a CSR: its public key. The SANs are kept only to refuse foreign ones.
#[derive(Debug)]
pub(crate) struct ParsedCsr {
    pub(crate) public_key: rcgen::SubjectPublicKeyInfo,
    pub(crate) requested_sans: Vec<String>,
}

pub(crate) fn parse_csr(csr_pem: &str) -> Result<ParsedCsr, CaError> {
    let invalid = |reason: String| CaError::InvalidCsr(reason);
    let block = pem::parse(csr_pem).map_err(|e| invalid(format!("not PEM: {e}")))?;
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(invalid(format!(
            "PEM block is {:?}, not CERTIFICATE REQUEST",
            block.tag()
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| invalid(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(invalid("trailing bytes after the request".into()));
    }
    // Proof that the requester holds the private key of the public key it wants certified.
    csr.verify_signature()
        .map_err(|e| invalid(format!("signature does not verify: {e}")))?;

    let spki = &csr.certification_request_info.subject_pki;
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(invalid(format!(
            "RSA key of {} bits; at least {MIN_RSA_BITS} required",
            rsa.key_size()
        )));
    }
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| invalid(format!("unsupported public key: {e}")))?;

    let mut requested_sans = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        match ext {
            ParsedExtension::SubjectAlternativeName(san) => {
                requested_sans.extend(san.general_names.iter().map(general_name_text));
            }
            ParsedExtension::ParseError { error } => {
                return Err(invalid(format!("unreadable extension: {error}")));
            }
            _ => {}
        }
    }
    Ok(ParsedCsr {
        public_key,
        requested_sans,
    })
}
