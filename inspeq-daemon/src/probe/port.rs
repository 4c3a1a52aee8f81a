//! `port N is closed`: a TCP connect (a name resolved each time; every address tried, as a client would), or a
//! Unix stream socket's. The connection is closed at once: nothing is sent.

use crate::config::model::DaemonAddress;

use super::ProbeError;

/// Connects to `address` and hangs up.
///
/// # Errors
/// [`ProbeError::Connect`] with the system's reason (refused, no route, no such socket).
pub async fn connect(address: &DaemonAddress) -> Result<(), ProbeError> {
    let connect = |source| ProbeError::Connect { address: address.clone(), source };
    match address {
        DaemonAddress::Tcp { host, port } => {
            tokio::net::TcpStream::connect((host.as_str(), *port)).await.map_err(connect)?;
        }
        DaemonAddress::Unix(path) => {
            tokio::net::UnixStream::connect(path).await.map_err(connect)?;
        }
    }
    Ok(())
}
