//! The client side of the control socket, for `inspeqctl`: one request line out,
//! one response line back, within a time limit so that a daemon that does not
//! answer is an error rather than a hang.

use std::{path::Path, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
};

use super::protocol::{Request, RequestLine, Response, VERSION};

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path} (is inspeqd running, and may you use its socket?)")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("inspeqd on {path} did not answer within {after:?} (is it stuck? `--timeout` waits longer)")]
    Timeout { path: String, after: Duration },
    #[error("inspeqd closed the connection without an answer")]
    Closed,
    #[error("talking to inspeqd")]
    Io(#[from] std::io::Error),
    #[error("inspeqd sent an answer this inspeqctl does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends `request` to the daemon at `socket` and waits at most `timeout` for its answer.
pub async fn send(socket: &Path, request: Request, timeout: Duration) -> Result<Response, ClientError> {
    tokio::time::timeout(timeout, exchange(socket, request))
        .await
        .unwrap_or_else(|_| Err(ClientError::Timeout { path: socket.display().to_string(), after: timeout }))
}

async fn exchange(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect { path: socket.display().to_string(), source })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&RequestLine { version: VERSION, request })?;
    line.push('\n');
    // A daemon at its connection limit answers "busy" and closes without reading: the request may then fail to
    // go out, but the answer is there to read.
    let sent = write.write_all(line.as_bytes()).await;
    let mut answer = String::new();
    let read = BufReader::new(read).read_line(&mut answer).await;
    if answer.is_empty() {
        sent?;
        read?;
        return Err(ClientError::Closed);
    }
    Ok(serde_json::from_str(&answer)?)
}
