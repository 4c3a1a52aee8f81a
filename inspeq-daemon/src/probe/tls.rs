//! `tls "host:443" expires within 14 days`: a TLS handshake, the server's certificate checked as a client would
//! (chain to the roots of [`roots::store`], the name), and the seconds until it ends.
//!
//! An expired certificate is what the rule measures, not a failed probe: the chain and the name are then checked
//! as of a moment it was still valid, and the answer says how long ago it ended. Any other verification failure
//! (an unknown issuer, the wrong name) fails the probe.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError as Invalid, DigitallySignedStruct, SignatureScheme};

use super::certificate;
use super::roots::{self, RootsError};
use crate::config::model::TlsProbe;

/// Why a TLS probe failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("connecting to {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("TLS handshake with {address}: {source}")]
    Handshake { address: String, source: std::io::Error },
    #[error("{address} sent no certificate")]
    NoCertificate { address: String },
    #[error("{address}: {source}")]
    Certificate { address: String, source: certificate::CertificateError },
}

/// One `tls` probe's configuration.
pub struct TlsProber {
    connector: tokio_rustls::TlsConnector,
    host: String,
    port: u16,
    name: ServerName<'static>,
}

impl TlsProber {
    /// # Errors
    /// [`RootsError`] for a `ca_file` that cannot be used, or a server name TLS cannot check.
    pub fn new(probe: &TlsProbe) -> Result<Self, RootsError> {
        let error = |reason: String| RootsError { path: probe.ca_file.clone().unwrap_or_default(), reason };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots::store(probe.ca_file.as_deref())?);
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| error(e.to_string()))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ExpiryIsMeasured { inner }))
            .with_no_client_auth();
        let name = ServerName::try_from(probe.server_name.clone()).map_err(|e| error(e.to_string()))?;
        Ok(TlsProber {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            host: probe.host.clone(),
            port: probe.port,
            name,
        })
    }

    /// One handshake: the seconds until the server's certificate ends (negative once it has).
    ///
    /// # Errors
    /// [`TlsError`]: no connection, a failed handshake (verification included), no certificate.
    pub async fn handshake(&self) -> Result<f64, TlsError> {
        let address = if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| TlsError::Connect { address: address.clone(), source })?;
        let stream = self
            .connector
            .connect(self.name.clone(), tcp)
            .await
            .map_err(|source| TlsError::Handshake { address: address.clone(), source })?;
        let (_, session) = stream.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(<[CertificateDer<'_>]>::first)
            .ok_or_else(|| TlsError::NoCertificate { address: address.clone() })?;
        let ends = certificate::not_after(leaf).map_err(|source| TlsError::Certificate { address, source })?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        #[expect(clippy::cast_precision_loss, reason = "seconds since 1970 are far below 2^52")]
        let left = ends as f64 - now;
        Ok(left)
    }
}

/// The system's verification, with an expired certificate let through (its end is the measurement) once its
/// chain and name check out as of a second before it ended.
#[derive(Debug)]
struct ExpiryIsMeasured {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ExpiryIsMeasured {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(Invalid::Expired | Invalid::ExpiredContext { .. })) => {
                let ends = certificate::not_after(end_entity)
                    .map_err(|_| rustls::Error::InvalidCertificate(Invalid::BadEncoding))?;
                let then = u64::try_from(ends.saturating_sub(1)).unwrap_or_default();
                let then = UnixTime::since_unix_epoch(Duration::from_secs(then));
                self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, then)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
