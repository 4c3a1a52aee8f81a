//! The control socket's listener. Each connection carries one request line; it
//! becomes a [`Control`] for the daemon loop, whose answer goes back as one line.
//! The socket is created mode 0660, optionally with a group, so a deploy user can
//! use `inspeqctl` without root; the peer's credentials are logged.
//!
//! Whoever may connect must not be able to stall or exhaust the daemon: at most
//! [`Limits::max_connections`] are served at once (the others are told "busy"),
//! each must send its request and take its answer within [`Limits::idle_timeout`],
//! a request is at most [`MAX_REQUEST_BYTES`], and a failing `accept` (out of file
//! descriptors) is retried after a pause that grows, never at once.

use std::{
    io::ErrorKind,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream, unix::OwnedReadHalf},
    sync::{Semaphore, mpsc, oneshot},
};

use super::protocol::{MAX_REQUEST_BYTES, Request, RequestError, Response, decode_request};

/// A request waiting for the daemon loop's answer.
pub struct Control {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// How much the control socket serves at once, and how long it waits for a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is answered "busy" and closed. Each holds at most one request buffer
    /// of [`MAX_REQUEST_BYTES`], so this bounds the memory and descriptors that clients can pin.
    pub max_connections: usize,
    /// How long a client may take to send its request, and to take the answer. `inspeqctl` sends at once; only a
    /// stuck or hostile client waits that long.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        // 64: far more than operators and a dashboard poll with, far fewer than the 4096 descriptors the shipped
        // unit allows (dist/inspeqd.service).
        Self { max_connections: 64, idle_timeout: Duration::from_secs(10) }
    }
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("binding the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another inspeqd answers on {0}")]
    InUse(PathBuf),
    #[error(
        "{path} exists and is {what}, not a socket; refusing to replace it (remove it, or choose another --socket)"
    )]
    NotASocket { path: PathBuf, what: &'static str },
    #[error("{path} is a socket that cannot be probed; refusing to replace it")]
    Probe {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("inspecting {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("removing the stale socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("setting permissions of {path}")]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("group `{0}` does not exist")]
    NoGroup(String),
}

fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam returns a pointer to static storage or null; read at once.
    let entry = unsafe { libc::getgrnam(cname.as_ptr()) };
    (!entry.is_null()).then(|| unsafe { (*entry).gr_gid })
}

/// What a file that is not a socket is, for the refusal.
fn kind(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "not a socket"
    }
}

/// Makes way for the socket at `path`: nothing there, or a socket nobody answers on (a daemon that died), which
/// is removed. Anything else is refused: a live socket is another daemon's, and a file, a directory or a link is
/// nobody's mistake to delete.
async fn clear_stale(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(ServerError::Inspect { path: path.to_path_buf(), source }),
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket { path: path.to_path_buf(), what: kind(meta.file_type()) });
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(ServerError::InUse(path.to_path_buf())),
        // Refused: no listener behind it. Anything else (a full backlog, no permission) may be a live daemon.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|source| ServerError::RemoveStale { path: path.to_path_buf(), source })
        }
        Err(source) => Err(ServerError::Probe { path: path.to_path_buf(), source }),
    }
}

/// Binds `path` (replacing a stale socket, refusing anything else), mode 0660 and
/// owned by `group` when given. On any error no socket file is left behind.
pub async fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ServerError> {
    // Before anything exists, so that a wrong group leaves nothing to clean up.
    let gid = group.map(|g| group_id(g).ok_or_else(|| ServerError::NoGroup(g.to_owned()))).transpose()?;
    clear_stale(path).await?;
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind { path: path.to_path_buf(), source })?;
    let permissions = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| gid.map_or(Ok(()), |gid| std::os::unix::fs::chown(path, None, Some(gid))));
    if let Err(source) = permissions {
        let _ = std::fs::remove_file(path);
        return Err(ServerError::Permissions { path: path.to_path_buf(), source });
    }
    Ok(listener)
}

/// The pause before the next `accept` after one failed: 100 ms, doubling to 1 s while failures go on.
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    fn next(&mut self) -> Duration {
        self.failures += 1;
        Self::FIRST.saturating_mul(1 << (self.failures - 1).min(4)).min(Self::MAX)
    }
}

/// The answer to a connection beyond the limit. One short line: it always fits in a new socket's send buffer, so
/// it is written without waiting.
fn busy_line(limits: Limits) -> Vec<u8> {
    let response = Response::Error {
        message: format!("busy: {} control connections are open, the limit; try again", limits.max_connections),
    };
    line(&response)
}

fn line(response: &Response) -> Vec<u8> {
    let mut text =
        serde_json::to_string(response).unwrap_or_else(|_| r#"{"reply":"error","message":"unserialisable"}"#.into());
    text.push('\n');
    text.into_bytes()
}

/// Accepts connections until the task is dropped, sending each request to `loop_tx`.
pub async fn serve(listener: UnixListener, loop_tx: mpsc::Sender<Control>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let busy = busy_line(limits);
    let mut backoff = Backoff { failures: 0 };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE/ENFILE and the like: the connection stays in the backlog, so retrying at once would spin.
                let pause = backoff.next();
                if backoff.failures == 1 {
                    tracing::warn!("control: accept failed: {err}; retrying after pauses up to {:?}", Backoff::MAX);
                } else {
                    tracing::debug!("control: accept failed again ({}): {err}", backoff.failures);
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if backoff.failures > 0 {
            tracing::info!("control: accepting again after {} failed attempts", backoff.failures);
            backoff.failures = 0;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("control: {} connections open, refusing one more", limits.max_connections);
            // Best effort: a peer that cannot take one line now gets the close alone.
            let _ = stream.try_write(&busy);
            continue;
        };
        let tx = loop_tx.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, tx, limits.idle_timeout).await {
                tracing::debug!("control: connection ended: {err}");
            }
            drop(slot);
        });
    }
}

/// What reading a request gave.
enum Read {
    /// The line (with its newline, or up to the end of input).
    Line(Vec<u8>),
    /// The client closed without sending anything (a probe).
    Nothing,
    TooLong,
}

/// Reads one line of at most [`MAX_REQUEST_BYTES`]. The buffer starts small and grows only as bytes arrive, so an
/// idle connection holds a few hundred bytes.
async fn read_line(read: &mut OwnedReadHalf) -> std::io::Result<Read> {
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    let mut scanned = 0;
    loop {
        if let Some(end) = buf[scanned..].iter().position(|&b| b == b'\n') {
            buf.truncate(scanned + end + 1);
            return Ok(Read::Line(buf));
        }
        scanned = buf.len();
        if buf.len() >= MAX_REQUEST_BYTES {
            return Ok(Read::TooLong);
        }
        if buf.len() == buf.capacity() {
            buf.reserve_exact(buf.len().min(MAX_REQUEST_BYTES - buf.len()));
        }
        let room = buf.capacity() - buf.len();
        if (&mut *read).take(room as u64).read_buf(&mut buf).await? == 0 {
            return Ok(if buf.is_empty() { Read::Nothing } else { Read::Line(buf) });
        }
    }
}

async fn handle(stream: UnixStream, loop_tx: mpsc::Sender<Control>, idle: Duration) -> std::io::Result<()> {
    let peer = stream.peer_cred().ok();
    let (mut read, mut write) = stream.into_split();
    let response = match tokio::time::timeout(idle, read_line(&mut read)).await {
        Err(_) => Response::Error { message: format!("timed out: no request within {idle:?}") },
        Ok(Err(err)) => return Err(err),
        Ok(Ok(Read::Nothing)) => return Ok(()),
        Ok(Ok(Read::TooLong)) => Response::Error { message: RequestError::TooLong.to_string() },
        Ok(Ok(Read::Line(line))) => match decode_request(&line) {
            Err(err) => Response::Error { message: err.to_string() },
            Ok(request) => {
                if let Some(peer) = peer {
                    // Requests that change something are logged with who asked; reads
                    // (a dashboard polling `status`) only at debug, to stay quiet.
                    if matches!(request, Request::Status | Request::Export | Request::Show { .. }) {
                        tracing::debug!("control: {request:?} from uid {} pid {:?}", peer.uid(), peer.pid());
                    } else {
                        tracing::info!("control: {request:?} from uid {} pid {:?}", peer.uid(), peer.pid());
                    }
                }
                let (reply, answer) = oneshot::channel();
                if loop_tx.send(Control { request, reply }).await.is_err() {
                    Response::Error { message: "the daemon is shutting down".into() }
                } else {
                    answer.await.unwrap_or(Response::Error { message: "the daemon dropped the request".into() })
                }
            }
        },
    };
    // The answer too must be taken in time: a client that never reads would hold its slot forever.
    tokio::time::timeout(idle, async {
        write.write_all(&line(&response)).await?;
        write.shutdown().await
    })
    .await
    .unwrap_or_else(|_| Err(std::io::Error::new(ErrorKind::TimedOut, format!("answer not taken within {idle:?}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_pause_from_100ms_doubling_to_1s() {
        let mut backoff = Backoff { failures: 0 };
        let pauses: Vec<u64> = (0..7).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn the_busy_answer_is_one_error_line() {
        let busy = busy_line(Limits::default());
        assert!(busy.len() < 200 && busy.ends_with(b"\n"));
        let response: Response = serde_json::from_slice(&busy).unwrap();
        assert!(matches!(response, Response::Error { message } if message.starts_with("busy: 64 control connections")));
    }
}
