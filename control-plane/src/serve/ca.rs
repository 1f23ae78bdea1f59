//! meshd's CA as `meshd serve` runs it: where it lives on disk, who may ask it for certificates,
//! and the task that renews certificates and follows root rotation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use meshd_ca::{AuthError, Authenticator, Caller, CertificateAuthority, Identity};
use meshd_kube::{ReviewError, TokenReviewer};
use meshd_proto::type_url;

use super::generator::MeshGenerator;
use super::pusher::Pusher;
use super::secrets::Secrets;
use crate::tls::ServingCert;

/// How long proxies get to take a new trust bundle before certificates from a new CA follow.
pub const ROOT_ROLL_GRACE: Duration = Duration::from_secs(3);

/// The CA, and the private directory holding a generated one (removed when dropped).
pub struct LoadedCa {
    pub ca: Arc<CertificateAuthority>,
    _generated: Option<tempfile::TempDir>,
}

/// The CA from `dir` (Istio's plug-in layout, or a root generated and persisted there), or, with
/// no directory, a root generated in a fresh private directory: created exclusively under an
/// unpredictable name, mode 0700, so no other local user can plant or read CA files.
pub fn load(
    dir: Option<&PathBuf>,
    trust_domain: &str,
    workload_ttl: Duration,
) -> anyhow::Result<LoadedCa> {
    let (dir, generated) = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (d.clone(), None)
        }
        None => {
            use std::os::unix::fs::PermissionsExt as _;
            let tmp = tempfile::Builder::new()
                .prefix("meshd-ca-")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .context("creating a private directory for the generated CA")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    let ca = CertificateAuthority::load_or_generate(meshd_ca::CaOptions {
        dir: dir.clone(),
        trust_domain: trust_domain.to_string(),
        workload_ttl,
        max_ttl: Duration::from_secs(90 * 24 * 3600),
    })
    .with_context(|| format!("loading the CA from {}", dir.display()))?;
    Ok(LoadedCa {
        ca: Arc::new(ca),
        _generated: generated,
    })
}

/// The trust bundle as the Kubernetes writers read it: whatever the CA holds at that moment.
pub fn trust_bundle(ca: &Arc<CertificateAuthority>) -> meshd_kube::TrustBundle {
    let ca = ca.clone();
    Arc::new(move || ca.root_bundle_pem())
}

/// How callers of the certificate service prove who they are: the way proxies do on the TLS port.
pub enum CaAuthenticator {
    /// File source: the connection's source address is a Pod's IP.
    Address(Arc<MeshGenerator>),
    /// Kubernetes source: a service-account token the API server vouches for.
    Token {
        reviewer: Arc<TokenReviewer>,
        generator: Arc<MeshGenerator>,
    },
}

impl Authenticator for CaAuthenticator {
    fn authenticate(&self, caller: &Caller) -> Result<Identity, AuthError> {
        match self {
            CaAuthenticator::Address(generator) => {
                let snapshot = generator.snapshot();
                let remote = caller
                    .remote_addr
                    .ok_or_else(|| AuthError::new("no source address"))?;
                let pod = snapshot
                    .pod_by_ip(&remote.ip().to_string())
                    .ok_or_else(|| AuthError::new(format!("no pod has address {}", remote.ip())))?;
                Ok(Identity::new(
                    &snapshot.mesh.trust_domain,
                    &pod.namespace,
                    &pod.service_account,
                ))
            }
            CaAuthenticator::Token {
                reviewer,
                generator,
            } => {
                let token = caller
                    .bearer_token
                    .as_deref()
                    .ok_or(AuthError::NoCredentials)?;
                match reviewer.lookup(Some(token)) {
                    Ok(who) => Ok(Identity::new(
                        &generator.snapshot().mesh.trust_domain,
                        &who.namespace,
                        &who.service_account,
                    )),
                    Err(ReviewError::Rejected(e)) => Err(AuthError::Rejected(e)),
                    Err(ReviewError::Unavailable(e)) => Err(AuthError::Unavailable(e)),
                }
            }
        }
    }
}

/// Renews workload certificates at half-life and follows CA changes (root rotation), pushing SDS;
/// keeps the serving certificates (xDS and webhook ports) current the same way.
pub async fn rotate_certificates(
    secrets: Arc<Secrets>,
    serving: Vec<Arc<ServingCert>>,
    pusher: Arc<Pusher>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let mut changed = secrets.expire_due(std::time::SystemTime::now());
        let mut reissue = false;
        match secrets.ca().reload() {
            Ok(true) => {
                // Two phases, so no proxy ever meets a certificate its peer does not trust yet:
                // first every proxy gets the bundle with old and new roots, then new certificates.
                tracing::info!("CA changed on disk; distributing the new trust bundle");
                pusher.push_if_serving(&[type_url::SECRET]);
                tokio::time::sleep(ROOT_ROLL_GRACE).await;
                tracing::info!("reissuing every workload certificate from the new CA");
                secrets.clear();
                changed = true;
                reissue = true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reloading the CA failed; keeping the current one")
            }
        }
        for cert in &serving {
            if let Err(e) = cert.renew(secrets.ca(), reissue) {
                tracing::error!(error = %e, "renewing a serving certificate failed");
            }
        }
        if changed {
            pusher.push_if_serving(&[type_url::SECRET]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_lives_in_a_private_unpredictable_directory() {
        let a = load(None, "cluster.local", Duration::from_secs(3600)).unwrap();
        let b = load(None, "cluster.local", Duration::from_secs(3600)).unwrap();
        let dir_a = a._generated.as_ref().unwrap().path().to_path_buf();
        let dir_b = b._generated.as_ref().unwrap().path().to_path_buf();
        assert_ne!(dir_a, dir_b);
        assert!(
            !dir_a.ends_with(format!("meshd-ca-{}", std::process::id())),
            "{}",
            dir_a.display()
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&dir_a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
        drop(a);
        assert!(!dir_a.exists(), "removed with the CA");
    }
}
