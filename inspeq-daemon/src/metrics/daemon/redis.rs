//! `redis:*`: Redis's `INFO`, over TCP or a Unix socket, after `AUTH` when the check gives a `password`.
//!
//! The client is a few lines of RESP written here rather than a crate: inspeq sends two fixed commands and reads
//! two kinds of reply (a status or error line, a bulk string), and a Redis client crate would bring its own
//! connection manager, pool and runtime glue for that, around a protocol this small. Replies are read with a
//! bound ([`super::MAX_ANSWER_BYTES`]), so a peer that is not Redis cannot make inspeq hold unbounded memory.

use super::{CollectError, Collector, Connection, Reading};
use crate::config::{
    metrics::Daemon,
    model::{DaemonAddress, DaemonSource, Secret},
};

pub struct Redis {
    address: DaemonAddress,
    password: Option<Secret>,
    connection: Option<Connection>,
}

impl Redis {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Redis { address: source.address.clone(), password: source.password.clone(), connection: None }
    }
}

/// One RESP command: an array of bulk strings.
fn command(words: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A reply inspeq reads: `+OK`, `-ERR ...`, or a bulk string (`$N` and N bytes; `$-1` is none).
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Status(String),
    Error(String),
    Bulk(Option<Vec<u8>>),
}

async fn reply(connection: &mut Connection) -> Result<Reply, CollectError> {
    let line = connection.line().await?;
    let mut chars = line.chars();
    let kind = chars.next();
    let rest = chars.as_str();
    match kind {
        Some('+') => Ok(Reply::Status(rest.to_owned())),
        Some('-') => Ok(Reply::Error(rest.to_owned())),
        Some('$') => match rest.parse::<i64>() {
            Ok(-1) => Ok(Reply::Bulk(None)),
            Ok(n) if (0..=super::MAX_ANSWER_BYTES as i64).contains(&n) => {
                // The bulk string and its `\r\n`.
                let mut bytes = connection.exact(n as usize + 2).await?;
                bytes.truncate(n as usize);
                Ok(Reply::Bulk(Some(bytes)))
            }
            _ => Err(connection.protocol("a Redis bulk reply of at most 1 MiB", line.as_bytes())),
        },
        _ => Err(connection.protocol("a Redis reply", line.as_bytes())),
    }
}

/// `INFO`'s text: `# Section` headers and `name:value` lines.
fn parse_info(text: &str) -> Reading {
    let fields = text.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(':'));
    let mut reading = Reading::of_fields(Daemon::Redis.family(), fields.clone());
    // Each start of the server has a new run id.
    reading.instance = fields.clone().find(|(name, _)| *name == "run_id").map(|(_, id)| id.trim().to_owned());
    reading
}

impl Redis {
    async fn info(
        connection: &mut Connection,
        password: Option<&Secret>,
        fresh: bool,
    ) -> Result<Reading, CollectError> {
        if fresh && let Some(password) = password {
            connection.send(&command(&[b"AUTH", password.expose().as_bytes()])).await?;
            match reply(connection).await? {
                Reply::Status(_) => {}
                Reply::Error(message) => {
                    return Err(CollectError::Refused { address: connection.address.clone(), message });
                }
                Reply::Bulk(_) => return Err(connection.protocol("AUTH's status reply", b"a bulk string")),
            }
        }
        connection.send(&command(&[b"INFO"])).await?;
        match reply(connection).await? {
            Reply::Bulk(Some(bytes)) => Ok(parse_info(&String::from_utf8_lossy(&bytes))),
            Reply::Error(message) => Err(CollectError::Refused { address: connection.address.clone(), message }),
            other => Err(connection.protocol("INFO's bulk reply", format!("{other:?}").as_bytes())),
        }
    }
}

impl Collector for Redis {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        let fresh = self.connection.is_none();
        if fresh {
            self.connection = Some(Connection::open(&self.address).await?);
        }
        let Some(connection) = self.connection.as_mut() else { unreachable!("connected above") };
        let result = Self::info(connection, self.password.as_ref(), fresh).await;
        if result.is_err() {
            self.connection = None;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(command(&[b"INFO"]), b"*1\r\n$4\r\nINFO\r\n");
        assert_eq!(command(&[b"AUTH", b"s3cr\"t"]), b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cr\"t\r\n");
    }

    #[test]
    fn info_gives_the_catalogues_fields_and_the_run_id() {
        let text = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c\r\n\r\n# Clients\r\nconnected_clients:3\r\n\
                    client_recent_max_input_buffer:20480\r\n# Memory\r\nused_memory:1048576\r\n\
                    used_memory_human:1.00M\r\n# Stats\r\ntotal_commands_processed:42\r\nkeyspace_hits:7\r\n\
                    # Keyspace\r\ndb0:keys=1,expires=0,avg_ttl=0\r\n";
        let reading = parse_info(text);
        assert_eq!(reading.instance.as_deref(), Some("4f1c"));
        assert_eq!(
            reading.values,
            vec![
                ("connected_clients", 3.0),
                ("client_recent_max_input_buffer", 20480.0),
                ("used_memory", 1_048_576.0),
                ("total_commands_processed", 42.0),
                ("keyspace_hits", 7.0),
            ]
        );
    }
}
