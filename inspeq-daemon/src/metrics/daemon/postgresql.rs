//! `postgresql:*`: PostgreSQL's statistics views, over TCP or its Unix socket, as `username` (with `password`,
//! SCRAM or MD5, when the server asks for one), through the `tokio-postgres` crate: the startup and
//! authentication exchanges (SCRAM-SHA-256 above all) are more protocol than inspeq should keep by hand. It is
//! built without TLS and without its type conversions: one text query, whose cells are numbers.
//!
//! The metrics are Inspeqtor's and more, all from one query per cycle:
//! - server-wide sums over `pg_stat_database` (every database, as Inspeqtor summed them): `numbackends`,
//!   `rollbacks` (`xact_rollback`), `xact_commit`, `deadlocks`, `blks_read`, `blks_hit`, `blk_hit_rate` (the
//!   percentage of block reads served from shared buffers), the `tup_*` counters, `conflicts`, `temp_files`,
//!   `temp_bytes`;
//! - `pg_stat_bgwriter`'s `buffers_clean`, `maxwritten_clean` and `buffers_alloc` (the columns every version
//!   from 9.2 to 17 has; 17 moved the checkpoint ones to a view of their own);
//! - `max_connections`, the server's setting, beside `numbackends`;
//! - of the database connected to (`database`, by default the user's own, as with `psql`): `seq_scans` (sequential
//!   scans of its tables) and `total_size` (its tables' bytes, indexes and TOAST included).

use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage, config::SslMode};

use super::{CollectError, Collector, Reading};
use crate::config::{
    metrics::Daemon,
    model::{DaemonAddress, DaemonSource, Secret},
};

/// The query, its columns named as the catalogue names the metrics, and `started`, the server's start.
const QUERY: &str = "SELECT \
    d.numbackends, d.rollbacks, d.xact_commit, d.deadlocks, d.blks_read, d.blks_hit, \
    CASE WHEN d.blks_read + d.blks_hit > 0 THEN 100.0 * d.blks_hit / (d.blks_read + d.blks_hit) END \
      AS blk_hit_rate, \
    d.tup_returned, d.tup_fetched, d.tup_inserted, d.tup_updated, d.tup_deleted, d.conflicts, d.temp_files, \
    d.temp_bytes, \
    b.buffers_clean, b.maxwritten_clean, b.buffers_alloc, \
    current_setting('max_connections') AS max_connections, \
    (SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_user_tables) AS seq_scans, \
    (SELECT coalesce(sum(pg_total_relation_size(relid)), 0) FROM pg_stat_user_tables) AS total_size, \
    pg_postmaster_start_time()::text AS started \
  FROM (SELECT sum(numbackends) AS numbackends, sum(xact_rollback) AS rollbacks, \
          sum(xact_commit) AS xact_commit, sum(deadlocks) AS deadlocks, sum(blks_read) AS blks_read, \
          sum(blks_hit) AS blks_hit, sum(tup_returned) AS tup_returned, sum(tup_fetched) AS tup_fetched, \
          sum(tup_inserted) AS tup_inserted, sum(tup_updated) AS tup_updated, sum(tup_deleted) AS tup_deleted, \
          sum(conflicts) AS conflicts, sum(temp_files) AS temp_files, sum(temp_bytes) AS temp_bytes \
        FROM pg_stat_database) d, pg_stat_bgwriter b";

pub struct Postgresql {
    address: DaemonAddress,
    username: String,
    database: Option<String>,
    password: Option<Secret>,
    client: Option<Client>,
}

impl Postgresql {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Postgresql {
            address: source.address.clone(),
            // The checker fills in the catalogue's default (`postgres`).
            username: source.username.clone().unwrap_or_default(),
            database: source.database.clone(),
            password: source.password.clone(),
            client: None,
        }
    }

    async fn connect(&self) -> Result<Client, CollectError> {
        let mut config = Config::new();
        config
            .user(&self.username)
            .dbname(self.database.as_deref().unwrap_or(&self.username))
            .application_name("inspeq")
            // inspeq's TLS-less build: a server that insists on TLS refuses, and says so.
            .ssl_mode(SslMode::Disable);
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        match &self.address {
            DaemonAddress::Tcp { host, port } => config.host(host).port(*port),
            // `socket` names the socket itself (`/run/postgresql/.s.PGSQL.5433`) or, as libpq's `host` does, its
            // directory (`/run/postgresql`), for the default port's socket in it.
            DaemonAddress::Unix(path) => match socket_parts(path) {
                (dir, Some(port)) => config.host_path(dir).port(port),
                (dir, None) => config.host_path(dir),
            },
        };
        let (client, connection) = config.connect(NoTls).await.map_err(|e| self.error(e))?;
        // The connection's half that reads the socket: it ends when the client is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    fn error(&self, source: tokio_postgres::Error) -> CollectError {
        let address = self.address.clone();
        if let Some(db) = source.as_db_error() {
            return CollectError::Refused {
                address,
                message: format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
            };
        }
        if source.is_closed() {
            return CollectError::Closed { address };
        }
        match std::error::Error::source(&source).and_then(|e| e.downcast_ref::<std::io::Error>()) {
            Some(io) => CollectError::Io { address, source: std::io::Error::new(io.kind(), io.to_string()) },
            None => CollectError::Client { address, source: Box::new(source) },
        }
    }

    async fn stats(&self, client: &Client) -> Result<Reading, CollectError> {
        let messages = client.simple_query(QUERY).await.map_err(|e| self.error(e))?;
        let Some(row) = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        }) else {
            return Err(CollectError::Protocol {
                address: self.address.clone(),
                expected: "one row of statistics",
                found: "no row".to_owned(),
            });
        };
        let fields = row.columns().iter().enumerate().filter_map(|(i, c)| Some((c.name(), row.get(i)?)));
        let mut reading = Reading::of_fields(Daemon::Postgresql.family(), fields);
        reading.instance = row.get("started").map(str::to_owned);
        Ok(reading)
    }
}

/// A `socket` path as a directory and, when it names the socket itself, the port in its name.
fn socket_parts(path: &str) -> (&str, Option<u16>) {
    let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
    match name.strip_prefix(".s.PGSQL.").and_then(|p| p.parse().ok()) {
        Some(port) => (if dir.is_empty() { "/" } else { dir }, Some(port)),
        None => (path, None),
    }
}

impl Collector for Postgresql {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        let client = match self.client.take() {
            Some(client) => client,
            None => self.connect().await?,
        };
        let result = self.stats(&client).await;
        if result.is_ok() {
            self.client = Some(client);
        }
        result
    }

    fn connected(&self) -> bool {
        self.client.is_some()
    }

    fn disconnect(&mut self) {
        self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_named_by_its_directory_or_by_itself() {
        assert_eq!(socket_parts("/run/postgresql"), ("/run/postgresql", None));
        assert_eq!(socket_parts("/run/postgresql/.s.PGSQL.5433"), ("/run/postgresql", Some(5433)));
    }
}
