//! Key material that must not be printed.

use std::fmt;

use zeroize::Zeroizing;

/// A PEM private key. `Debug` prints `<redacted>`, there is no `Display`, and the memory is wiped
/// on drop; read it with [`SecretPem::expose`] only where it is handed to its consumer.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPem(Zeroizing<String>);

impl SecretPem {
    pub fn new(pem: String) -> Self {
        Self(Zeroizing::new(pem))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_key() {
        let secret = SecretPem::new("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n".to_string());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{secret:#?}"), "<redacted>");
        assert!(secret.expose().contains("c2VjcmV0"));
    }
}
