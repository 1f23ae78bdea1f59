//! meshd's certificate authority: SPIFFE identities, the signing CA (Istio's plug-in layout or a
//! generated root), workload and serving certificates, CSR signing, and Istio's
//! `IstioCertificateService` for agents that ask for certificates themselves.
//!
//! Private keys never reach logs: they live in [`SecretPem`] (whose `Debug` is redacted) or inside
//! the CA, whose `Debug` names only public facts.

mod authority;
mod csr;
mod error;
mod identity;
mod secret;
mod service;
mod x509;

pub use authority::{
    CaOptions, CertificateAuthority, DEFAULT_MAX_TTL, DEFAULT_WORKLOAD_TTL, IssuedCert, ROOT_TTL,
};
pub use error::CaError;
pub use identity::{Identity, spiffe_id};
pub use secret::SecretPem;
pub use service::{AuthError, Authenticator, Caller, CertificateService, PeerInfo};
pub use x509::{CertSummary, describe_pem, uri_sans};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_and_its_service_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<CertificateAuthority>();
        shareable::<IssuedCert>();
        struct Nobody;
        impl Authenticator for Nobody {
            fn authenticate(&self, _: &Caller) -> Result<Identity, AuthError> {
                Err(AuthError::NoCredentials)
            }
        }
        shareable::<CertificateService<Nobody>>();
    }
}
