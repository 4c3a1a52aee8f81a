//! `http "URL" fails`: a GET on a new connection, the status as expected (the probe's `status`, else any below
//! 400; redirects are answers, not followed) and, with `body "REGEX"`, the first
//! [`HttpProbe::BODY_LIMIT`] bytes of the body matching it.

use std::sync::Arc;

use crate::config::model::HttpProbe;
use crate::config::names;

use super::roots::{self, RootsError};

/// Why an HTTP probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("GET {url}: {}", chain(source))]
    Request { url: String, source: reqwest::Error },
    #[error("GET {url}: HTTP {status}, expected {expected}")]
    Status { url: String, status: reqwest::StatusCode, expected: String },
    #[error("GET {url}: the body does not match `{pattern}`")]
    Body { url: String, pattern: String },
}

/// reqwest's error with its causes (`error sending request: ... Connection refused`).
fn chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// One `http` probe's client and expectations.
pub struct HttpProber {
    client: reqwest::Client,
    url: reqwest::Url,
    status: Option<u16>,
    body: Option<(String, regex::bytes::Regex)>,
}

impl HttpProber {
    /// The client: no redirects, no pooled connections, for `https` the roots of [`roots::store`]. No timeout of
    /// its own: the probe's bounds the whole run (`Prober::run`), so a hung server reads as one.
    ///
    /// # Errors
    /// [`RootsError`] for a `ca_file` that cannot be used.
    pub fn new(probe: &HttpProbe) -> Result<Self, RootsError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .user_agent(concat!("inspeq/", env!("CARGO_PKG_VERSION")));
        if probe.url.scheme() == "https" {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| RootsError { path: String::new(), reason: e.to_string() })?
                .with_root_certificates(roots::store(probe.ca_file.as_deref())?)
                .with_no_client_auth();
            builder = builder.use_preconfigured_tls(tls);
        }
        // The checker compiled the same pattern with the same function, so it compiles here too.
        let body = probe.body.as_ref().and_then(|p| names::body_pattern(p).ok().map(|re| (p.clone(), re)));
        let client = builder.build().map_err(|e| RootsError { path: String::new(), reason: chain(&e) })?;
        Ok(HttpProber { client, url: probe.url.clone(), status: probe.status, body })
    }

    /// One GET, judged.
    ///
    /// # Errors
    /// [`HttpError`]: no answer, the wrong status, a body that does not match.
    pub async fn get(&self) -> Result<(), HttpError> {
        let url = self.url.to_string();
        let request = |source| HttpError::Request { url: url.clone(), source };
        let mut response = self.client.get(self.url.clone()).send().await.map_err(request)?;
        let status = response.status();
        let expected = match self.status {
            Some(code) => (status.as_u16() != code).then(|| code.to_string()),
            None => (status.as_u16() >= 400).then(|| "a status below 400".to_owned()),
        };
        if let Some(expected) = expected {
            return Err(HttpError::Status { url, status, expected });
        }
        let Some((pattern, regex)) = &self.body else { return Ok(()) };
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request)? {
            body.extend_from_slice(&chunk);
            if body.len() >= HttpProbe::BODY_LIMIT {
                body.truncate(HttpProbe::BODY_LIMIT);
                break;
            }
        }
        if regex.is_match(&body) { Ok(()) } else { Err(HttpError::Body { url, pattern: pattern.clone() }) }
    }
}
