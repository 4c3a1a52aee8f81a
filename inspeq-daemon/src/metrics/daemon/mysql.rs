//! `mysql:*`: MySQL's and MariaDB's `SHOW GLOBAL STATUS`, over TCP or a Unix socket, as `username` with
//! `password`, through the `mysql_async` crate: the handshake (native, `caching_sha2_password` and MariaDB's
//! `unix_socket` authentication, capability flags, the auth-switch dance) is too much protocol to keep by hand,
//! and that crate is the one Rust's MySQL users rely on. It is built without TLS, its pool and its derive macros:
//! inspeq keeps one `Conn` per service and sends text queries only.
//!
//! `Seconds_Behind_Master` is not a status variable: it comes from `SHOW REPLICA STATUS`, which needs a privilege
//! (`REPLICATION CLIENT`, MariaDB's `SLAVE MONITOR`) that `SHOW GLOBAL STATUS` does not. So it is asked for only
//! when a rule reads it, and then a server that cannot say it (not a replica, replication stopped, privilege
//! missing) fails the collection with the reason: a lag rule that silently never fired would be the worst answer.

use std::path::Path;

use mysql_async::{Conn, OptsBuilder, Row, prelude::Queryable as _};

use super::{CollectError, Collector, Reading};
use crate::config::{
    metrics::Daemon,
    model::{DaemonAddress, DaemonSource, Secret},
};

/// The catalogue's name of the replica's lag.
const LAG: &str = "Seconds_Behind_Master";

/// Where MySQL and MariaDB put their Unix socket: Debian and Ubuntu, RHEL, and upstream's default.
const LOCAL_SOCKETS: &[&str] = &["/run/mysqld/mysqld.sock", "/var/lib/mysql/mysql.sock", "/tmp/mysql.sock"];

pub struct Mysql {
    address: DaemonAddress,
    username: String,
    password: Option<Secret>,
    /// Whether a rule reads [`LAG`].
    lag: bool,
    /// The kept connection, and where it goes.
    connection: Option<(Conn, DaemonAddress)>,
    /// The server's `Uptime` at the last collection, and a count of the starts seen: a smaller uptime is a new
    /// start of the server (its counters started over). Neither MariaDB nor MySQL says more of its instance.
    uptime: Option<f64>,
    starts: u64,
}

impl Mysql {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Mysql {
            address: source.address.clone(),
            // The checker fills in the catalogue's default (`root`).
            username: source.username.clone().unwrap_or_default(),
            password: source.password.clone(),
            lag: source.watched.contains(LAG),
            connection: None,
            uptime: None,
            starts: 0,
        }
    }

    /// Where to connect: as MySQL's own clients do, `localhost` on the default port means the local Unix socket
    /// (the first of [`LOCAL_SOCKETS`] that exists), which is also where Debian's `root` may log in without a
    /// password (`unix_socket` authentication). Any other host, or another port, is TCP.
    fn target(&self) -> DaemonAddress {
        match &self.address {
            DaemonAddress::Tcp { host, port: 3306 } if host == "localhost" => LOCAL_SOCKETS
                .iter()
                .find(|path| Path::new(path).exists())
                .map_or_else(|| self.address.clone(), |path| DaemonAddress::Unix((*path).to_owned())),
            address => address.clone(),
        }
    }

    async fn connect(&self) -> Result<(Conn, DaemonAddress), CollectError> {
        let address = self.target();
        let options = OptsBuilder::default()
            .user(Some(self.username.as_str()))
            .pass(self.password.as_ref().map(|p| p.expose().to_owned()))
            // Not the client's own switch to the socket after a TCP connection: where inspeq connects is the
            // configuration's.
            .prefer_socket(false)
            .tcp_nodelay(true)
            // Text queries only: no statement is ever prepared.
            .stmt_cache_size(0);
        let options = match &address {
            DaemonAddress::Tcp { host, port } => options.ip_or_hostname(host.as_str()).tcp_port(*port),
            DaemonAddress::Unix(path) => options.socket(Some(path.as_str())),
        };
        let connection = Conn::new(options).await.map_err(|source| error(&address, source, true))?;
        Ok((connection, address))
    }

    async fn status(&mut self, connection: &mut Conn, address: &DaemonAddress) -> Result<Reading, CollectError> {
        let rows: Vec<(String, String)> =
            connection.query("SHOW GLOBAL STATUS").await.map_err(|e| error(address, e, false))?;
        let mut reading =
            Reading::of_fields(Daemon::Mysql.family(), rows.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        if self.lag {
            let lag = replica_lag(connection, address).await?;
            reading.values.push((LAG, lag));
        }
        let uptime = rows.iter().find(|(name, _)| name == "Uptime").and_then(|(_, v)| v.parse::<f64>().ok());
        if let (Some(now), Some(before)) = (uptime, self.uptime)
            && now < before
        {
            self.starts += 1;
        }
        self.uptime = uptime.or(self.uptime);
        reading.instance = Some(self.starts.to_string());
        Ok(reading)
    }
}

/// The replica's lag in seconds: `SHOW REPLICA STATUS` (MariaDB 10.5 and MySQL 8.0.22 on), else the older
/// `SHOW SLAVE STATUS` that MySQL 8.4 no longer knows; MySQL 8.0.22 on names the column `Seconds_Behind_Source`.
async fn replica_lag(connection: &mut Conn, address: &DaemonAddress) -> Result<f64, CollectError> {
    let row: Option<Row> = match connection.query_first("SHOW REPLICA STATUS").await {
        Ok(row) => row,
        // ER_PARSE_ERROR: a server older than the word.
        Err(mysql_async::Error::Server(e)) if e.code == 1064 => {
            connection.query_first("SHOW SLAVE STATUS").await.map_err(|e| error(address, e, false))?
        }
        Err(e) => return Err(error(address, e, false)),
    };
    let refused = |message: &str| CollectError::Refused { address: address.clone(), message: message.to_owned() };
    let Some(row) = row else {
        return Err(refused("it is no replica (SHOW REPLICA STATUS is empty), so Seconds_Behind_Master has no value"));
    };
    let column = ["Seconds_Behind_Master", "Seconds_Behind_Source"]
        .into_iter()
        .find_map(|name| row.get_opt::<Option<String>, _>(name).and_then(Result::ok));
    match column {
        Some(Some(seconds)) => seconds.parse().map_err(|_| CollectError::Protocol {
            address: address.clone(),
            expected: "a number of seconds behind the source",
            found: super::quote(seconds.as_bytes()),
        }),
        Some(None) => Err(refused("replication is not running (Seconds_Behind_Master is NULL)")),
        None => Err(refused("SHOW REPLICA STATUS has no Seconds_Behind_Master column")),
    }
}

/// `mysql_async`'s error as a [`CollectError`]: the server's own refusals (a wrong password, a missing privilege)
/// with its code and words; a broken stream as I/O, which a kept connection gets one more try for.
fn error(address: &DaemonAddress, source: mysql_async::Error, connecting: bool) -> CollectError {
    let address = address.clone();
    match source {
        mysql_async::Error::Server(e) => {
            CollectError::Refused { address, message: format!("ERROR {} ({}): {}", e.code, e.state, e.message) }
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(source)) if connecting => {
            CollectError::Connect { address, source }
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(source)) => CollectError::Io { address, source },
        source => CollectError::Client { address, source: Box::new(source) },
    }
}

impl Collector for Mysql {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        let (mut connection, address) = match self.connection.take() {
            Some(kept) => kept,
            None => self.connect().await?,
        };
        let result = self.status(&mut connection, &address).await;
        // A refusal of the replica's status leaves the connection sound; anything else may not have.
        if result.is_ok() || matches!(result, Err(CollectError::Refused { .. })) {
            self.connection = Some((connection, address));
        }
        result
    }

    fn connected(&self) -> bool {
        self.connection.is_some()
    }

    fn disconnect(&mut self) {
        self.connection = None;
    }
}
