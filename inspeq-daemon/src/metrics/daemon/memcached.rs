//! `memcached:*`: memcached's `stats`, over its text protocol on TCP, written here (one command, `STAT name
//! value` lines up to `END`): a client crate would bring a pool and the binary protocol for that.

use super::{CollectError, Collector, Connection, Reading};
use crate::config::{
    metrics::Daemon,
    model::{DaemonAddress, DaemonSource},
};

/// At most this many `STAT` lines are read before `END`: memcached 1.6 sends about 90.
const MAX_LINES: usize = 4096;

pub struct Memcached {
    address: DaemonAddress,
    connection: Option<Connection>,
}

impl Memcached {
    #[must_use]
    pub fn new(source: &DaemonSource) -> Self {
        Memcached { address: source.address.clone(), connection: None }
    }

    async fn stats(connection: &mut Connection) -> Result<Reading, CollectError> {
        connection.send(b"stats\r\n").await?;
        let mut lines = Vec::new();
        loop {
            let line = connection.line().await?;
            if line == "END" {
                break;
            }
            if let Some(stat) = line.strip_prefix("STAT ") {
                if lines.len() == MAX_LINES {
                    return Err(connection.protocol("at most 4096 STAT lines", line.as_bytes()));
                }
                lines.push(stat.to_owned());
                continue;
            }
            if line == "ERROR" || line.starts_with("SERVER_ERROR") || line.starts_with("CLIENT_ERROR") {
                return Err(CollectError::Refused { address: connection.address.clone(), message: line });
            }
            return Err(connection.protocol("memcached's STAT lines", line.as_bytes()));
        }
        Ok(parse_stats(&lines))
    }
}

/// `name value` pairs (`STAT ` stripped).
fn parse_stats(lines: &[String]) -> Reading {
    let fields: Vec<(&str, &str)> = lines.iter().filter_map(|l| l.split_once(' ')).collect();
    let mut reading = Reading::of_fields(Daemon::Memcached.family(), fields.iter().copied());
    let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    // A server's start: its pid and the time it started (`time` - `uptime`, both from the clock memcached reads
    // once a second, so exact), which a restart changes even when the pid comes back the same (a container's pid
    // 1).
    if let (Some(pid), Some(time), Some(uptime)) = (field("pid"), field("time"), field("uptime"))
        && let (Ok(time), Ok(uptime)) = (time.parse::<i64>(), uptime.parse::<i64>())
    {
        reading.instance = Some(format!("{pid}@{}", time - uptime));
    }
    reading
}

impl Collector for Memcached {
    async fn collect(&mut self) -> Result<Reading, CollectError> {
        if self.connection.is_none() {
            self.connection = Some(Connection::open(&self.address).await?);
        }
        let Some(connection) = self.connection.as_mut() else { unreachable!("connected above") };
        let result = Self::stats(connection).await;
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
    fn stats_give_the_catalogues_fields_and_the_servers_start() {
        let lines: Vec<String> = [
            "pid 812",
            "uptime 100",
            "time 1764650000",
            "version 1.6.21",
            "curr_connections 2",
            "cmd_get 10",
            "get_hits 9",
            "bytes 4096",
            "rusage_user 0.010000",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let reading = parse_stats(&lines);
        assert_eq!(
            reading.values,
            vec![("curr_connections", 2.0), ("cmd_get", 10.0), ("get_hits", 9.0), ("bytes", 4096.0)]
        );
        assert_eq!(reading.instance.as_deref(), Some("812@1764649900"));
    }
}
