//! Daemon metrics: what a service's own server reports about itself over its own protocol (`redis:used_memory`,
//! `memcached:evictions`, `nginx:Active_connections`, a Go program's `memstats:HeapAlloc`), one file per family,
//! each a [`Collector`].
//!
//! A collector owns one connection to its server and keeps it across cycles (a server sees one client, not one
//! per cycle; Redis and memcached log each connection, nginx's `accepts` would count ours). It drops it on any
//! error, so the next collection connects afresh. What a collection reads is raw, like the procfs samplers':
//! gauges as reported, counters as the server's totals; the engine makes counters rates. The daemon runs each
//! collector in a task of its own, with the timeout and backoff (`daemon::collect`): nothing here knows the loop.
//!
//! The tiny text protocols (Redis's `INFO`, memcached's `stats`) are written here; MySQL's and PostgreSQL's
//! handshakes and authentication are not, and go through their client crates (`mysql_async`, `tokio-postgres`).
//! Adding a family is one file here implementing [`Collector`], one arm in `daemon::collect::start`, and
//! `collected: true` in the catalogue (`config::metrics::DAEMONS`).

pub mod memcached;
pub mod memstats;
pub mod mysql;
pub mod nginx;
pub mod postgresql;
pub mod redis;

use std::{future::Future, pin::Pin, time::Duration};

use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader};

use crate::config::{
    metrics::DaemonFamily,
    model::{DaemonAddress, DaemonSource},
};

/// How long one collection may take, connecting included. Two seconds is ages for a server on the same host or
/// network, and short enough that a hung server is reported at the cycle it hung in.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// The longest line (or bulk reply) a collector reads from a server: a server's stats are a few kilobytes, and a
/// peer that is not the server must not make inspeq hold unbounded memory.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// What one collection read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// The catalogue's metrics of the family that the server reported, by their catalogue names, raw. A metric
    /// the server does not report (a field a newer version dropped) is absent, and its rules have no value.
    pub values: Vec<(&'static str, f64)>,
    /// Which instance of the server answered (Redis's `run_id`; memcached's pid and start time), to tell a
    /// restarted server, whose counters started over, from the one before. `None` where the protocol says
    /// nothing of the kind (nginx: its counters going backwards is the only sign).
    pub instance: Option<String>,
}

impl Reading {
    /// The catalogue's metrics of `family` among `fields` (`name`, `value` as the server wrote it): numbers only;
    /// a field that is no number is left out, like one the server does not report.
    pub fn of_fields<'a>(family: &DaemonFamily, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut values = Vec::new();
        for (name, value) in fields {
            let Some(known) = family.metric(name) else { continue };
            if let Ok(number) = value.trim().parse::<f64>()
                && number.is_finite()
            {
                values.push((known, number));
            }
        }
        Reading { values, instance: None }
    }

    /// The value of `name`, if it was read.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// Why a collection failed, with the address it concerned. Shown in `status` and in the unreachable alert.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("connecting to {address}: {source}")]
    Connect { address: DaemonAddress, source: std::io::Error },
    #[error("talking to {address}: {source}")]
    Io { address: DaemonAddress, source: std::io::Error },
    #[error("{address} closed the connection")]
    Closed { address: DaemonAddress },
    /// The whole collection, connecting included, took longer than [`TIMEOUT`].
    #[error("no answer within {after:?}")]
    Timeout { after: Duration },
    /// The server answered with an error of its own (`-NOAUTH Authentication required.`, `SERVER_ERROR ...`).
    #[error("{address} refused: {message}")]
    Refused { address: DaemonAddress, message: String },
    /// What came back is not the protocol's answer (another server on that port, a truncated reply).
    #[error("{address} answered something that is not {expected}: {found}")]
    Protocol { address: DaemonAddress, expected: &'static str, found: String },
    // URLs as text: a parsed `Url` is large, and the error only says where.
    #[error("{url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url} answered something that is not {expected}: {found}")]
    Page { url: String, expected: &'static str, found: String },
    #[error("`{url}` is not a URL inspeq can fetch: {source}")]
    Url { url: String, source: url::ParseError },
    /// A client crate's own error that is none of the above (MySQL's, PostgreSQL's: a protocol step it could
    /// not take).
    #[error("{address}: {source}")]
    Client { address: DaemonAddress, source: Box<dyn std::error::Error + Send + Sync> },
}

impl CollectError {
    /// The connection broke under a request (a server that closed an idle connection, or restarted): worth one
    /// more try on a new connection before the collection counts as failed.
    #[must_use]
    pub fn broken_connection(&self) -> bool {
        matches!(self, CollectError::Io { .. } | CollectError::Closed { .. })
    }
}

/// A family's collector: one connection to one server, kept across collections.
pub trait Collector: Send + 'static {
    /// One collection, on the kept connection, connecting first when there is none. On any error the connection
    /// is dropped, so the next collection starts afresh.
    fn collect(&mut self) -> impl Future<Output = Result<Reading, CollectError>> + Send;

    /// Whether a connection is kept from an earlier collection (a failure on it may only mean it went stale).
    /// By default none is: the HTTP families' [`Page`] leaves keeping it to reqwest's pool, and hyper retries a
    /// request on a connection the server closed.
    fn connected(&self) -> bool {
        false
    }

    /// Drops the connection: after a timeout, where in the exchange it stood is unknown. By default there is
    /// nothing to drop: a timed-out request's connection goes with its future, and the pool keeps no broken one.
    fn disconnect(&mut self) {}
}

/// A byte stream to a server, TCP or a Unix socket, read through a buffer.
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

/// A line-oriented connection to a server, over TCP or a Unix socket, with bounded reads.
pub struct Connection {
    io: BufReader<Pin<Box<dyn Duplex>>>,
    pub address: DaemonAddress,
}

impl Connection {
    /// Connects to `address` (a host name is resolved now, so a changed DNS entry is followed at the next
    /// reconnection).
    ///
    /// # Errors
    /// [`CollectError::Connect`].
    pub async fn open(address: &DaemonAddress) -> Result<Self, CollectError> {
        let connect = |source| CollectError::Connect { address: address.clone(), source };
        let io: Pin<Box<dyn Duplex>> = match address {
            DaemonAddress::Tcp { host, port } => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect)?;
                // Requests are one small write each: no reason to wait for more.
                let _ = stream.set_nodelay(true);
                Box::pin(stream)
            }
            DaemonAddress::Unix(path) => Box::pin(tokio::net::UnixStream::connect(path).await.map_err(connect)?),
        };
        Ok(Connection { io: BufReader::new(io), address: address.clone() })
    }

    fn io_error(&self, source: std::io::Error) -> CollectError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            CollectError::Closed { address: self.address.clone() }
        } else {
            CollectError::Io { address: self.address.clone(), source }
        }
    }

    /// Writes `bytes` and flushes them.
    ///
    /// # Errors
    /// [`CollectError::Io`].
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), CollectError> {
        let result = async {
            self.io.get_mut().write_all(bytes).await?;
            self.io.get_mut().flush().await
        }
        .await;
        result.map_err(|e| self.io_error(e))
    }

    /// One line, without its `\r\n`, of at most [`MAX_ANSWER_BYTES`].
    ///
    /// # Errors
    /// [`CollectError::Closed`] at the end of the stream, [`CollectError::Protocol`] for a longer line or one that
    /// is not UTF-8.
    pub async fn line(&mut self) -> Result<String, CollectError> {
        let mut buf = Vec::new();
        let limit = MAX_ANSWER_BYTES as u64 + 2;
        let result = (&mut self.io).take(limit).read_until(b'\n', &mut buf).await;
        let read = result.map_err(|e| self.io_error(e))?;
        if read == 0 {
            return Err(CollectError::Closed { address: self.address.clone() });
        }
        if buf.last() != Some(&b'\n') {
            return Err(self.protocol("a line of at most 1 MiB", &buf));
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|e| self.protocol("text", e.as_bytes()))
    }

    /// Exactly `n` bytes (at most [`MAX_ANSWER_BYTES`]).
    ///
    /// # Errors
    /// [`CollectError::Closed`] or [`CollectError::Io`].
    pub async fn exact(&mut self, n: usize) -> Result<Vec<u8>, CollectError> {
        let mut buf = vec![0; n.min(MAX_ANSWER_BYTES)];
        let result = self.io.read_exact(&mut buf).await;
        result.map_err(|e| self.io_error(e))?;
        Ok(buf)
    }

    /// A [`CollectError::Protocol`] quoting the start of what came (printable, at most 80 characters).
    #[must_use]
    pub fn protocol(&self, expected: &'static str, found: &[u8]) -> CollectError {
        CollectError::Protocol { address: self.address.clone(), expected, found: quote(found) }
    }
}

/// A page a family reads over HTTP (nginx's status, a Go program's `/debug/vars`): `http://hostname:port/path`
/// through one reqwest client, whose pool keeps the connection between collections, with a bounded body.
pub struct Page {
    url: Result<url::Url, (String, url::ParseError)>,
    http: reqwest::Client,
    max_body: usize,
}

impl Page {
    /// The page of `source` (its `path`, else `default_path`), of at most `max_body` bytes.
    #[must_use]
    pub fn new(source: &DaemonSource, default_path: &str, max_body: usize) -> Self {
        let path = source.path.as_deref().unwrap_or(default_path);
        // The families read over HTTP take no `socket` in the catalogue: only TCP addresses reach here.
        let text = match &source.address {
            address @ DaemonAddress::Tcp { .. } => format!("http://{address}{path}"),
            DaemonAddress::Unix(path) => format!("unix:{path}"),
        };
        let url = url::Url::parse(&text).map_err(|e| (text, e));
        let http = reqwest::Client::builder()
            .user_agent(concat!("inspeq/", env!("CARGO_PKG_VERSION")))
            .timeout(TIMEOUT)
            // One connection, kept: what the family promises the server.
            .pool_max_idle_per_host(1)
            // The page is this server's, never a proxy's: a proxy in the environment must not answer it.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a client with these settings always builds");
        Page { url, http, max_body }
    }

    /// GETs the page: its body, cut at the bound.
    ///
    /// # Errors
    /// [`CollectError::Url`], [`CollectError::Http`] or [`CollectError::HttpStatus`].
    pub async fn get(&self) -> Result<String, CollectError> {
        let url = match &self.url {
            Ok(url) => url,
            Err((text, source)) => return Err(CollectError::Url { url: text.clone(), source: *source }),
        };
        let http = |source| CollectError::Http { url: url.to_string(), source };
        let mut response = self.http.get(url.clone()).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(CollectError::HttpStatus { url: url.to_string(), status: response.status().as_u16() });
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http)? {
            body.extend_from_slice(&chunk);
            if body.len() > self.max_body {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// A [`CollectError::Page`]: `body` is not `expected`.
    #[must_use]
    pub fn not(&self, expected: &'static str, body: &str) -> CollectError {
        let url = self.url.as_ref().map_or_else(|(text, _)| text.clone(), url::Url::to_string);
        CollectError::Page { url, expected, found: quote(body.as_bytes()) }
    }
}

/// The start of `bytes` as one short printable line, for an error message.
#[must_use]
pub fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(80)]);
    let mut out: String = text.chars().flat_map(char::escape_default).collect();
    if bytes.len() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::metrics::Daemon;

    #[test]
    fn only_the_catalogues_numeric_fields_are_read() {
        let reading = Reading::of_fields(
            Daemon::Memcached.family(),
            [("curr_items", "12"), ("version", "1.6.21"), ("evictions", "x"), ("cmd_get", "7")],
        );
        assert_eq!(reading.values, vec![("curr_items", 12.0), ("cmd_get", 7.0)]);
        assert_eq!(reading.get("cmd_get"), Some(7.0));
        assert_eq!(quote(b"HTTP/1.1 400\r\n"), "HTTP/1.1 400\\r\\n");
    }
}
