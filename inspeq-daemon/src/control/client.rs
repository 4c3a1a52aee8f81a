//! The client side of the control socket, for `inspeqctl`: one request line out,
//! one response line back.

use std::path::Path;

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
    #[error("talking to inspeqd")]
    Io(#[from] std::io::Error),
    #[error("inspeqd sent an answer this inspeqctl does not understand: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends `request` to the daemon at `socket` and waits for its answer.
pub async fn send(socket: &Path, request: Request) -> Result<Response, ClientError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect { path: socket.display().to_string(), source })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&RequestLine { version: VERSION, request })?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    let mut answer = String::new();
    BufReader::new(read).read_line(&mut answer).await?;
    Ok(serde_json::from_str(&answer)?)
}
