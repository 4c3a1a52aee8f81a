//! The certificates an `https` or `tls` probe trusts: the system's CA bundle (what `curl` and `openssl` on the
//! host trust, so a private CA the operator installed counts), else the bundled Mozilla roots, plus the probe's
//! own `ca_file`.

use rustls::pki_types::{CertificateDer, pem::PemObject as _};

/// Where distributions keep their CA bundle: Debian and Ubuntu, RHEL and Fedora, openSUSE, Alpine's.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A CA file that could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading the CA file {path}: {reason}")]
pub struct RootsError {
    pub path: String,
    pub reason: String,
}

impl RootsError {
    pub(super) fn to_probe_error(&self) -> super::ProbeError {
        super::ProbeError::CaFile { path: self.path.clone(), reason: self.reason.clone() }
    }
}

/// The certificates of a PEM file.
///
/// # Errors
/// [`RootsError`] when it cannot be read or holds no certificate.
pub fn pem_file(path: &str) -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let error = |reason: String| RootsError { path: path.to_owned(), reason };
    let certificates: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in it".to_owned()));
    }
    Ok(certificates)
}

/// The roots a probe trusts: the system's bundle (or, without one, the bundled Mozilla roots), and `ca_file`'s.
///
/// # Errors
/// [`RootsError`] for a `ca_file` that cannot be used; a damaged system bundle falls back to the bundled roots.
pub fn store(ca_file: Option<&str>) -> Result<rustls::RootCertStore, RootsError> {
    let mut store = rustls::RootCertStore::empty();
    let system = SYSTEM_BUNDLES.iter().find_map(|path| pem_file(path).ok());
    match system {
        Some(certificates) => {
            store.add_parsable_certificates(certificates);
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    if let Some(path) = ca_file {
        let (added, _) = store.add_parsable_certificates(pem_file(path)?);
        if added == 0 {
            return Err(RootsError { path: path.to_owned(), reason: "no usable CA certificate in it".to_owned() });
        }
    }
    Ok(store)
}
