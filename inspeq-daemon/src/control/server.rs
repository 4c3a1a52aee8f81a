//! The control socket's listener. Each connection carries one request line; it
//! becomes a [`Control`] for the daemon loop, whose answer goes back as one line.
//! The socket is created mode 0660, optionally with a group, so a deploy user can
//! use `inspeqctl` without root; the peer's credentials are logged.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::protocol::{Request, RequestLine, Response, VERSION};

/// A request waiting for the daemon loop's answer.
pub struct Control {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
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

/// Binds `path` (replacing a stale socket, refusing a live one), mode 0660 and
/// owned by `group` when given.
pub async fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, ServerError> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Bind { path: path.to_path_buf(), source })?;
    let perm = |source| ServerError::Permissions { path: path.to_path_buf(), source };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perm)?;
    if let Some(group) = group {
        let gid = group_id(group).ok_or_else(|| ServerError::NoGroup(group.to_owned()))?;
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(perm)?;
    }
    Ok(listener)
}

/// Accepts connections until the listener fails, sending each request to `loop_tx`.
pub async fn serve(listener: UnixListener, loop_tx: mpsc::Sender<Control>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let tx = loop_tx.clone();
        tokio::spawn(async move {
            if let Err(err) = handle(stream, tx).await {
                tracing::debug!("control: connection ended: {err}");
            }
        });
    }
}

async fn handle(stream: UnixStream, loop_tx: mpsc::Sender<Control>) -> std::io::Result<()> {
    let peer = stream.peer_cred().ok();
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One request per connection, bounded so a stuck client cannot pin memory.
    BufReader::new(read.take(64 * 1024)).read_line(&mut line).await?;
    let response = match serde_json::from_str::<RequestLine>(&line) {
        Ok(RequestLine { version, .. }) if version != VERSION => {
            Response::Error { message: format!("protocol version {version} not supported (daemon speaks {VERSION})") }
        }
        Ok(RequestLine { request, .. }) => {
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
        Err(err) => Response::Error { message: format!("bad request: {err}") },
    };
    let mut text = serde_json::to_string(&response).unwrap_or_else(|_| r#"{"reply":"error","message":"unserialisable"}"#.into());
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}
