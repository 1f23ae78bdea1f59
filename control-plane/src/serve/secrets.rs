//! SDS: each proven identity's certificate (`default`) and the trust bundle (`ROOTCA`), minted by
//! meshd's CA, cached until their rotation is due, and shared by every proxy of that identity.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshd_ca::{CertificateAuthority, Identity, IssuedCert};
use meshd_translate::secret::{trust_bundle, workload_certificate};
use meshd_translate::tls::{SECRET_DEFAULT, SECRET_ROOTCA};
use meshd_xds::Resource;
use parking_lot::Mutex;

use crate::encode::resource;

/// A certificate as sent: its metadata (for rotation and debugging) and the encoded secret.
pub struct IssuedSecret {
    pub serial: String,
    pub rotation_due: SystemTime,
    pub resource: Arc<Resource>,
}

pub struct Secrets {
    ca: Arc<CertificateAuthority>,
    ttl: Option<Duration>,
    workload: Mutex<HashMap<String, Arc<IssuedSecret>>>,
    root: Mutex<Option<(String, Arc<Resource>)>>,
}

impl Secrets {
    pub fn new(ca: Arc<CertificateAuthority>, ttl: Option<Duration>) -> Self {
        Secrets {
            ca,
            ttl,
            workload: Mutex::default(),
            root: Mutex::default(),
        }
    }

    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// The `default` secret for `identity`, minted on first use and again once rotation is due.
    pub fn workload(&self, identity: &Identity) -> Option<Arc<IssuedSecret>> {
        let key = identity.uri();
        if let Some(hit) = self.workload.lock().get(&key)
            && hit.rotation_due > SystemTime::now()
        {
            return Some(hit.clone());
        }
        // Minted outside the lock: signing is the slow part, and racing mints are harmless.
        let cert: IssuedCert = match self.ca.mint(identity, self.ttl) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(identity = %key, error = %e, "minting a workload certificate failed");
                return None;
            }
        };
        let secret = workload_certificate(&cert.chain_pem, cert.key_pem.expose());
        let issued = Arc::new(IssuedSecret {
            serial: cert.serial.clone(),
            rotation_due: cert.rotation_due(),
            resource: resource(SECRET_DEFAULT.to_string(), &secret),
        });
        tracing::info!(identity = %key, serial = %issued.serial, "issued workload certificate");
        self.workload.lock().insert(key, issued.clone());
        Some(issued)
    }

    /// The `ROOTCA` secret: every trusted root, so a root rotation keeps old and new trusted.
    pub fn root(&self) -> Arc<Resource> {
        let bundle = self.ca.root_bundle_pem();
        let mut cached = self.root.lock();
        if let Some((pem, res)) = cached.as_ref()
            && *pem == bundle
        {
            return res.clone();
        }
        let secret = trust_bundle(&bundle);
        let res = resource(SECRET_ROOTCA.to_string(), &secret);
        *cached = Some((bundle, res.clone()));
        res
    }

    /// Drops certificates whose rotation is due (they are minted anew on the next request).
    /// True if any was dropped, so proxies must be pushed.
    pub fn expire_due(&self, now: SystemTime) -> bool {
        let mut map = self.workload.lock();
        let before = map.len();
        map.retain(|_, s| s.rotation_due > now);
        map.len() != before
    }

    /// Forgets every certificate, e.g. after the CA's signing key changed.
    pub fn clear(&self) {
        self.workload.lock().clear();
    }
}
