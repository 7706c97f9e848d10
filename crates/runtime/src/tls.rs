//! Optional TLS for the cluster transport (rustls, TLS 1.3, ring provider). Every node
//! presents a certificate signed by the cluster's CA and requires the same of its peer
//! (mutual TLS); a dialer also checks that the peer's certificate names the host it
//! dialed. The cookie handshake still runs inside the TLS session, so a node needs both
//! a valid certificate and the cookie.
//!
//! Configured with `CLUSTER_TLS_CERT`, `CLUSTER_TLS_KEY` and `CLUSTER_TLS_CA` (PEM files);
//! see [`crate::config`].

use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Reading half of a connection, plain or TLS.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// Writing half of a connection, plain or TLS.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// A stream the transport can split into independently owned halves.
pub(crate) trait SplitIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Splits into boxed halves.
    fn split_boxed(self) -> (BoxRead, BoxWrite);
}

impl SplitIo for TcpStream {
    fn split_boxed(self) -> (BoxRead, BoxWrite) {
        let (r, w) = self.into_split();
        (Box::new(r), Box::new(w))
    }
}

impl SplitIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn split_boxed(self) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self);
        (Box::new(r), Box::new(w))
    }
}

impl SplitIo for tokio_rustls::client::TlsStream<TcpStream> {
    fn split_boxed(self) -> (BoxRead, BoxWrite) {
        let (r, w) = tokio::io::split(self);
        (Box::new(r), Box::new(w))
    }
}

/// TLS settings of a node: its acceptor and connector.
#[derive(Clone)]
pub struct TlsSettings {
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) connector: TlsConnector,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings(mutual TLS 1.3)")
    }
}

impl TlsSettings {
    /// Loads the node certificate chain, its private key and the CA (PEM files).
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self, String> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| format!("{}: {e}", cert.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate", cert.display()));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))? {
            let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no CA certificate", ca.display()));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| format!("client verifier: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("node certificate: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("node certificate: {e}"))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The name a dialer expects in the certificate of `host`.
    pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
    }
}
