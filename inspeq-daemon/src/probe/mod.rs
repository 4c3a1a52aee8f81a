//! Active probes: is the service serving? A TCP or Unix socket connect (`port`), an HTTP GET with the status and
//! body expected (`http`), a TLS handshake for the certificate's end (`tls`), each timed.
//!
//! A [`Prober`] is built once per probe from its checked [`Probe`] (the HTTP client and the TLS roots with it,
//! so a cycle does no setup) and run by the daemon in a task of its own, bounded by the probe's timeout
//! (`daemon::probes`): nothing here knows the loop. An HTTP probe opens a new connection each time: a server that
//! accepts no new connection is the failure it is there to see.

pub mod certificate;
pub mod http;
pub mod port;
pub mod roots;
pub mod tls;

use std::time::Duration;

use crate::config::model::{DaemonAddress, Probe, ProbeTarget};

/// What a probe that worked found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Answer {
    /// From the start of the connect to the end of the answer.
    pub took: Duration,
    /// A TLS probe's certificate: seconds until it ends, negative once it has.
    pub certificate_left: Option<f64>,
}

/// Why a probe failed. Shown in `status` and in the alert.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connecting to {address}: {source}")]
    Connect { address: DaemonAddress, source: std::io::Error },
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    #[error("{0}")]
    Http(#[from] http::HttpError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("reading the CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
}

/// One probe, ready to run.
pub enum Prober {
    Port(DaemonAddress),
    Http(Result<http::HttpProber, roots::RootsError>),
    Tls(Result<tls::TlsProber, roots::RootsError>),
}

impl Prober {
    /// Builds the probe's client (for `https` and `tls`, with the system's roots and the probe's CA file). A CA
    /// file that cannot be read makes every run fail with the reason, so `status` and the alert say it.
    #[must_use]
    pub fn new(probe: &Probe) -> Self {
        match &probe.target {
            ProbeTarget::Port(address) => Prober::Port(address.clone()),
            ProbeTarget::Http(http) => Prober::Http(http::HttpProber::new(http)),
            ProbeTarget::Tls(tls) => Prober::Tls(tls::TlsProber::new(tls)),
        }
    }

    /// Runs the probe once, within `timeout`.
    pub async fn run(&self, timeout: Duration) -> Result<Answer, ProbeError> {
        let started = tokio::time::Instant::now();
        let attempt = async {
            match self {
                Prober::Port(address) => port::connect(address).await.map(|()| None),
                Prober::Http(Ok(prober)) => prober.get().await.map(|()| None).map_err(ProbeError::from),
                Prober::Tls(Ok(prober)) => prober.handshake().await.map(Some).map_err(ProbeError::from),
                Prober::Http(Err(err)) | Prober::Tls(Err(err)) => Err(err.to_probe_error()),
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(certificate_left)) => Ok(Answer { took: started.elapsed(), certificate_left }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(ProbeError::Timeout { after: timeout }),
        }
    }
}
