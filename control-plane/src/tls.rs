//! meshd's TLS port: a rustls server whose certificate, signed by meshd's own CA, is replaced
//! while it runs — at half-life, and after the CA changes — without dropping connections.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use meshd_ca::{CertificateAuthority, IssuedCert};
use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a serving certificate lives; it is renewed at half-life.
const SERVING_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServingCert {
    names: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    current: RwLock<(Arc<CertifiedKey>, SystemTime)>,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("ips", &self.ips)
            .finish_non_exhaustive()
    }
}

fn certified_key(issued: &IssuedCert) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("parsing the serving certificate chain")?;
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.expose().as_bytes())
        .context("parsing the serving key")?;
    let signer = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key)
        .context("loading the serving key")?;
    Ok(CertifiedKey::new(chain, signer))
}

impl ServingCert {
    pub fn issue(
        ca: &CertificateAuthority,
        names: Vec<String>,
        ips: Vec<std::net::IpAddr>,
    ) -> anyhow::Result<Arc<Self>> {
        let issued = ca.serving_cert_with_ttl(&names, &ips, Some(SERVING_TTL))?;
        let current = RwLock::new((Arc::new(certified_key(&issued)?), issued.rotation_due()));
        Ok(Arc::new(ServingCert {
            names,
            ips,
            current,
        }))
    }

    /// Replaces the certificate if its renewal is due, or always with `force` (the CA changed).
    pub fn renew(&self, ca: &CertificateAuthority, force: bool) -> anyhow::Result<bool> {
        if !force && self.current.read().1 > SystemTime::now() {
            return Ok(false);
        }
        let issued = ca.serving_cert_with_ttl(&self.names, &self.ips, Some(SERVING_TTL))?;
        *self.current.write() = (Arc::new(certified_key(&issued)?), issued.rotation_due());
        tracing::info!(serial = %issued.serial, "renewed meshd's serving certificate");
        Ok(true)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().0.clone())
    }
}

/// IP SANs for a serving certificate: 127.0.0.1 (tests and port-forwards connect there), and
/// the listen address when it names one.
pub fn serving_ips(addr: std::net::SocketAddr) -> Vec<std::net::IpAddr> {
    let mut ips = vec![std::net::IpAddr::from([127, 0, 0, 1])];
    if !addr.ip().is_unspecified() && !ips.contains(&addr.ip()) {
        ips.push(addr.ip());
    }
    ips
}

/// TLS connections accepted on `listener`, handshakes done off the accept loop so one slow client
/// never holds up another.
pub fn incoming(
    listener: TcpListener,
    cert: Arc<ServingCert>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    incoming_with_alpn(listener, cert, vec![b"h2".to_vec()])
}

/// [`incoming`] offering other application protocols (the webhook port speaks HTTP/1.1).
pub fn incoming_with_alpn(
    listener: TcpListener,
    cert: Arc<ServingCert>,
    alpn: Vec<Vec<u8>>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a TLS connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // Responses end in a short segment that must not wait for the peer's delayed ACK.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "setting TCP_NODELAY failed");
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
