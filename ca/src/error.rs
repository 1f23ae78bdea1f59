//! What can go wrong in the CA. Messages name files, identities and reasons, never key material.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid SPIFFE identity {uri:?}: {reason}")]
    InvalidIdentity { uri: String, reason: &'static str },

    #[error("identity {identity} is outside this CA's trust domain {trust_domain}")]
    ForeignTrustDomain {
        identity: String,
        trust_domain: String,
    },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CA files in {}: {reason}", dir.display())]
    InvalidCaFiles { dir: PathBuf, reason: String },

    #[error("invalid CSR: {0}")]
    InvalidCsr(String),

    #[error("CSR asks for {requested:?}, but the caller may only have {allowed}")]
    ForeignSan {
        requested: Vec<String>,
        allowed: String,
    },

    #[error("invalid certificate name {0:?}")]
    InvalidName(String),

    #[error("the signing certificate chain has expired")]
    Expired,

    #[error("invalid certificate: {0}")]
    Certificate(String),

    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),

    #[error("the system random number generator failed")]
    Random,
}
