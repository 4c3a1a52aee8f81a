//! The metric catalogue, as data: every metric a rule may name, whether it is a gauge or a counter, its unit and
//! which kinds of check may use it; plus the event subjects of event rules and the daemon families' connection
//! parameters.
//!
//! The semantic pass, the engine and the daemon's samplers all read this one table, so a metric is added here
//! once. Daemon families and their metric names follow Inspeqtor 2.0 (reference §2) so old files keep working.

/// How a raw sampled value becomes the value a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// The latest sample is the value.
    Gauge,
    /// Samples are cumulative; a rule sees the change since the previous sample (or its rate with `/sec`).
    Counter,
    /// Samples are cumulative CPU seconds; a rule sees the share of the interval spent on CPU, in percent.
    /// Host CPU is additionally divided by the number of cores, so 100 % means every core busy.
    CpuSeconds,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Percent,
    Bytes,
    /// A plain number: load average, connections, queries.
    Count,
}

/// Where a metric can be measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `check host`.
    Host,
    /// The process (tree) of a `check service` or `check process`.
    Process,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDef {
    pub family: &'static str,
    /// `None` for bare metrics (`swap`, host `cpu`).
    pub name: Option<&'static str>,
    pub kind: MetricKind,
    pub unit: Unit,
    pub scope: Scope,
}

const fn m(family: &'static str, name: &'static str, kind: MetricKind, unit: Unit, scope: Scope) -> MetricDef {
    MetricDef { family, name: Some(name), kind, unit, scope }
}

use MetricKind::{Counter, CpuSeconds, Gauge};
use Scope::{Host, Process};
use Unit::{Bytes, Count, Percent};

/// Host and process metrics, collected by inspeq itself from procfs.
pub static BUILTIN: &[MetricDef] = &[
    // Inspeqtor's quirk #106/#135 is fixed at the source: a host without swap reports 0 %.
    MetricDef { family: "swap", name: None, kind: Gauge, unit: Percent, scope: Host },
    m("load", "1", Gauge, Count, Host),
    m("load", "5", Gauge, Count, Host),
    m("load", "15", Gauge, Count, Host),
    // Host CPU is normalised per core (Inspeqtor let a busy 8-core host read 800 %); bare `cpu` is the total.
    MetricDef { family: "cpu", name: None, kind: CpuSeconds, unit: Percent, scope: Host },
    m("cpu", "total", CpuSeconds, Percent, Host),
    m("cpu", "user", CpuSeconds, Percent, Host),
    m("cpu", "nice", CpuSeconds, Percent, Host),
    m("cpu", "system", CpuSeconds, Percent, Host),
    m("cpu", "iowait", CpuSeconds, Percent, Host),
    m("cpu", "irq", CpuSeconds, Percent, Host),
    m("cpu", "softirq", CpuSeconds, Percent, Host),
    m("cpu", "steal", CpuSeconds, Percent, Host),
    // Inspeqtor had no host memory metric (#116).
    m("memory", "used", Gauge, Percent, Host),
    m("memory", "available", Gauge, Bytes, Host),
    m("memory", "rss", Gauge, Bytes, Process),
    m("memory", "total_rss", Gauge, Bytes, Process),
    // Process CPU is a percentage of one core, like top(1).
    m("cpu", "user", CpuSeconds, Percent, Process),
    m("cpu", "system", CpuSeconds, Percent, Process),
    m("cpu", "total", CpuSeconds, Percent, Process),
    m("cpu", "total_user", CpuSeconds, Percent, Process),
    m("cpu", "total_system", CpuSeconds, Percent, Process),
    // The longest accept queue of the service's listening TCP sockets (connections waiting for `accept()`), from
    // the kernel's `sock_diag`; 0 for a service that listens nowhere.
    MetricDef { family: "accept_queue", name: None, kind: Gauge, unit: Count, scope: Process },
];

/// `disk:<mount point>` is open-ended: any absolute path names a mount point.
pub const DISK: MetricDef = MetricDef { family: "disk", name: None, kind: Gauge, unit: Percent, scope: Host };

/// The daemons a service check can sample over their own protocols: one name per family of [`DAEMONS`], so the
/// model, the engine and the collectors name a family by type, never by its string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Daemon {
    Mysql,
    Redis,
    Memcached,
    Nginx,
    Postgresql,
    Memstats,
}

impl Daemon {
    /// This daemon's entry in [`DAEMONS`].
    #[must_use]
    pub fn family(self) -> &'static DaemonFamily {
        // Every variant has its entry: `every_daemon_has_a_family` checks the table.
        DAEMONS.iter().find(|d| d.daemon == self).unwrap_or(&DAEMONS[0])
    }

    /// The family's name as rules write it (`redis`).
    #[must_use]
    pub fn name(self) -> &'static str {
        self.family().family
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl DaemonFamily {
    /// The catalogue's own name of this family's metric `name`, if it has one.
    #[must_use]
    pub fn metric(&self, name: &str) -> Option<&'static str> {
        self.gauges.iter().chain(self.counters).find(|n| **n == name).copied()
    }
}

/// The daemon family named `family` (`redis`), if there is one.
#[must_use]
pub fn daemon_family(family: &str) -> Option<&'static DaemonFamily> {
    DAEMONS.iter().find(|d| d.family == family)
}

/// A daemon a service check can sample over its own protocol, with the `with` parameters it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DaemonFamily {
    pub daemon: Daemon,
    pub family: &'static str,
    /// Whether the daemon samples this family. A family that is not collected is in the catalogue so that its
    /// metric names resolve (and a misspelling gets the usual "expected one of"), but `check` refuses its rules:
    /// they could never fire. Every family is collected now (`metrics::daemon`); the flag stays so that a
    /// family added to the catalogue before its collector cannot pass `check`.
    pub collected: bool,
    /// `(parameter, default)`.
    pub params: &'static [(&'static str, Option<&'static str>)],
    pub gauges: &'static [&'static str],
    pub counters: &'static [&'static str],
}

pub static DAEMONS: &[DaemonFamily] = &[
    DaemonFamily {
        daemon: Daemon::Mysql,
        family: "mysql",
        collected: true,
        // No default `socket`: `localhost` on port 3306 is the local socket, found where the distributions put
        // it (`metrics::daemon::mysql`), as MySQL's own clients read `localhost`.
        params: &[
            ("hostname", Some("localhost")),
            ("port", Some("3306")),
            ("socket", None),
            ("username", Some("root")),
            ("password", None),
        ],
        gauges: &[
            "Innodb_buffer_pool_pages_data",
            "Innodb_buffer_pool_bytes_data",
            "Innodb_buffer_pool_pages_free",
            "Innodb_buffer_pool_pages_total",
            "Innodb_num_open_files",
            "Max_used_connections",
            "Open_files",
            "Open_tables",
            "Prepared_stmt_count",
            "Qcache_free_blocks",
            "Qcache_free_memory",
            "Qcache_queries_in_cache",
            "Seconds_Behind_Master",
            "Threads_cached",
            "Threads_connected",
            "Threads_running",
        ],
        counters: &[
            "Aborted_clients",
            "Aborted_connects",
            "Bytes_received",
            "Bytes_sent",
            "Com_delete",
            "Com_delete_multi",
            "Com_insert",
            "Com_insert_select",
            "Com_select",
            "Com_update",
            "Com_update_multi",
            "Connections",
            "Created_tmp_disk_tables",
            "Created_tmp_files",
            "Created_tmp_tables",
            "Innodb_buffer_pool_reads",
            "Innodb_data_read",
            "Innodb_data_reads",
            "Innodb_data_writes",
            "Innodb_data_written",
            "Innodb_deadlocks",
            "Innodb_pages_created",
            "Innodb_pages_read",
            "Innodb_pages_written",
            "Innodb_rows_deleted",
            "Innodb_rows_inserted",
            "Innodb_rows_read",
            "Innodb_rows_updated",
            "Key_reads",
            "Key_writes",
            "Qcache_hits",
            "Qcache_inserts",
            "Qcache_lowmem_prunes",
            "Qcache_not_cached",
            "Queries",
            "Questions",
            "Slow_queries",
            "Table_locks_immediate",
            "Table_locks_waited",
            "Threads_created",
        ],
    },
    DaemonFamily {
        daemon: Daemon::Redis,
        family: "redis",
        collected: true,
        params: &[("hostname", Some("localhost")), ("port", Some("6379")), ("socket", None), ("password", None)],
        gauges: &[
            "connected_clients",
            // Inspeqtor's names; Redis 5 replaced them with the two after them, which Redis 7 reports.
            "client_longest_output_list",
            "client_biggest_input_buf",
            "client_recent_max_output_buffer",
            "client_recent_max_input_buffer",
            "blocked_clients",
            "used_memory",
            "used_memory_rss",
            "used_memory_peak",
            "used_memory_lua",
            "rdb_changes_since_last_save",
            "rdb_last_bgsave_time_sec",
            "rdb_current_bgsave_time_sec",
            "aof_last_rewrite_time_sec",
            "aof_current_rewrite_time_sec",
            "instantaneous_ops_per_sec",
            "latest_fork_usec",
            "master_last_io_seconds_ago",
            "connected_slaves",
            "repl_backlog_size",
        ],
        counters: &[
            "total_connections_received",
            "total_commands_processed",
            "rejected_connections",
            "sync_full",
            "sync_partial_ok",
            "sync_partial_err",
            "expired_keys",
            "evicted_keys",
            "keyspace_hits",
            "keyspace_misses",
            "pubsub_channels",
            "pubsub_patterns",
        ],
    },
    DaemonFamily {
        daemon: Daemon::Memcached,
        family: "memcached",
        collected: true,
        params: &[("hostname", Some("localhost")), ("port", Some("11211"))],
        gauges: &["curr_connections", "threads", "bytes", "curr_items"],
        counters: &[
            "total_connections",
            "cmd_get",
            "cmd_set",
            "cmd_flush",
            "cmd_touch",
            "get_hits",
            "get_misses",
            "delete_hits",
            "delete_misses",
            "incr_hits",
            "incr_misses",
            "decr_hits",
            "decr_misses",
            "cas_hits",
            "cas_misses",
            "cas_badval",
            "touch_hits",
            "touch_misses",
            "auth_cmds",
            "auth_errors",
            "bytes_read",
            "bytes_written",
            "malloc_fails",
            "total_items",
            "expired_unfetched",
            "evicted_unfetched",
            "evictions",
            "reclaimed",
            "crawler_reclaimed",
        ],
    },
    DaemonFamily {
        daemon: Daemon::Nginx,
        family: "nginx",
        collected: true,
        params: &[("hostname", Some("localhost")), ("port", Some("80")), ("endpoint", Some("/status"))],
        gauges: &["Active_connections", "Reading", "Writing", "Waiting"],
        counters: &["accepts", "handled", "requests"],
    },
    DaemonFamily {
        daemon: Daemon::Postgresql,
        family: "postgresql",
        collected: true,
        // `socket`: the Unix socket, or its directory as libpq's `host` takes it (`/run/postgresql`).
        params: &[
            ("database", None),
            ("hostname", Some("localhost")),
            ("port", Some("5432")),
            ("socket", None),
            ("username", Some("postgres")),
            ("password", None),
        ],
        gauges: &["numbackends", "blk_hit_rate", "total_size", "max_connections"],
        counters: &[
            "rollbacks",
            "deadlocks",
            "seq_scans",
            "xact_commit",
            "blks_read",
            "blks_hit",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
            "conflicts",
            "temp_files",
            "temp_bytes",
            "buffers_clean",
            "maxwritten_clean",
            "buffers_alloc",
        ],
    },
    DaemonFamily {
        daemon: Daemon::Memstats,
        family: "memstats",
        collected: true,
        params: &[("port", Some("8080")), ("path", Some("/debug/vars"))],
        gauges: &["Alloc", "HeapAlloc"],
        counters: &["TotalAlloc", "NumGC", "PauseTotalNs"],
    },
];

/// Whether `key` is a `with` parameter some daemon family reads to reach its daemon (`port`, `socket`, ...).
#[must_use]
pub fn connection_parameter(key: &str) -> bool {
    DAEMONS.iter().any(|d| d.params.iter().any(|(p, _)| *p == key))
}

/// What a rule's metric resolved to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub kind: MetricKind,
    pub unit: Unit,
    /// Set for daemon families: the service's `with` parameters configure the source. `check` refuses a rule
    /// whose family is not [`DaemonFamily::collected`].
    pub daemon: Option<&'static DaemonFamily>,
}

/// Why a metric name was refused; the message names what would have been accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown metric family `{family}`, expected one of {expected}")]
    UnknownFamily { family: String, expected: String },
    #[error("unknown metric `{metric}`, expected one of {expected}")]
    UnknownName { metric: String, expected: String },
    #[error("`{metric}` is a {available} metric and cannot be used in a `check {check}`")]
    WrongScope { metric: String, available: &'static str, check: &'static str },
    #[error("`disk` needs a mount point, expected for example `disk:/` or `disk:/var`")]
    DiskWithoutMount,
    #[error("the disk mount point must be an absolute path, found `{0}`")]
    DiskNotAbsolute(String),
}

/// Resolves `family[:name]` for a check of the given scope.
///
/// # Errors
/// A [`LookupError`] naming the accepted alternatives when the metric does not exist for that scope.
pub fn lookup(family: &str, name: Option<&str>, scope: Scope) -> Result<Resolved, LookupError> {
    let check = match scope {
        Host => "host",
        Process => "service",
    };
    if family == "disk" {
        return match (scope, name) {
            (Process, _) => Err(LookupError::WrongScope { metric: "disk".into(), available: "host", check }),
            (_, None | Some("")) => Err(LookupError::DiskWithoutMount),
            (_, Some(mount)) if !mount.starts_with('/') => Err(LookupError::DiskNotAbsolute(mount.into())),
            _ => Ok(Resolved { kind: DISK.kind, unit: DISK.unit, daemon: None }),
        };
    }
    if let Some(def) = BUILTIN.iter().find(|d| d.family == family && d.name == name && d.scope == scope) {
        return Ok(Resolved { kind: def.kind, unit: def.unit, daemon: None });
    }
    if let Some(daemon) = DAEMONS.iter().find(|d| d.family == family) {
        if scope == Host {
            return Err(LookupError::WrongScope { metric: display(family, name), available: "service", check });
        }
        let Some(name) = name else {
            return Err(LookupError::UnknownName {
                metric: family.into(),
                expected: format!("{family}:{}", daemon.gauges[0]),
            });
        };
        let kind = if daemon.gauges.contains(&name) {
            Gauge
        } else if daemon.counters.contains(&name) {
            Counter
        } else {
            let expected = daemon
                .gauges
                .iter()
                .chain(daemon.counters)
                .take(6)
                .map(|n| format!("{family}:{n}"))
                .collect::<Vec<_>>();
            return Err(LookupError::UnknownName {
                metric: display(family, Some(name)),
                expected: format!("{}, …", expected.join(", ")),
            });
        };
        let unit = if name.contains("memory")
            || name.starts_with("client_recent_max")
            || (family == "memstats" && name.ends_with("Alloc"))
            || name.starts_with("Bytes")
            || name.starts_with("bytes")
            || name == "total_size"
        {
            Bytes
        } else if name == "blk_hit_rate" {
            Percent
        } else {
            Count
        };
        return Ok(Resolved { kind, unit, daemon: Some(daemon) });
    }
    let same_family: Vec<&MetricDef> = BUILTIN.iter().filter(|d| d.family == family).collect();
    if same_family.is_empty() {
        let mut families: Vec<&str> = BUILTIN.iter().filter(|d| d.scope == scope).map(|d| d.family).collect();
        if scope == Host {
            families.push("disk");
        } else {
            families.extend(DAEMONS.iter().map(|d| d.family));
        }
        families.dedup();
        return Err(LookupError::UnknownFamily { family: family.into(), expected: families.join(", ") });
    }
    let here: Vec<String> =
        same_family.iter().filter(|d| d.scope == scope).map(|d| display(d.family, d.name)).collect();
    if here.is_empty() {
        let available = if scope == Host { "service" } else { "host" };
        return Err(LookupError::WrongScope { metric: display(family, name), available, check });
    }
    Err(LookupError::UnknownName { metric: display(family, name), expected: here.join(", ") })
}

/// `family:name`, the canonical spelling used in alerts and status.
#[must_use]
pub fn display(family: &str, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{family}:{name}"),
        None => family.to_owned(),
    }
}

/// Subjects of event rules: evaluated the instant an observation arrives, for services and processes only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSubject {
    /// `if exited`: any exit of the main process.
    Exited,
    /// `if crashed`: a non-zero exit status or death by a signal.
    Crashed,
    /// `if signaled [SIG]`.
    Signaled,
    /// `if oom_killed`.
    OomKilled,
    /// `if exit_code OP N`.
    ExitCode,
    /// `if forks > N/sec`.
    Forks,
    /// `if restarts > N within WINDOW`.
    Restarts,
    /// `if worker crashed`, `if worker oom_killed`, `if worker crashed > N within WINDOW`.
    Worker,
}

pub static EVENT_SUBJECTS: &[(&str, EventSubject)] = &[
    ("exited", EventSubject::Exited),
    ("crashed", EventSubject::Crashed),
    ("signaled", EventSubject::Signaled),
    ("oom_killed", EventSubject::OomKilled),
    ("exit_code", EventSubject::ExitCode),
    ("forks", EventSubject::Forks),
    ("restarts", EventSubject::Restarts),
    ("worker", EventSubject::Worker),
];

#[must_use]
pub fn event_subject(word: &str) -> Option<EventSubject> {
    EVENT_SUBJECTS.iter().find(|(name, _)| *name == word).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_new_forms_resolve() {
        assert_eq!(lookup("swap", None, Host).map(|r| r.kind), Ok(Gauge));
        assert_eq!(lookup("cpu", Some("user"), Host).map(|r| r.kind), Ok(CpuSeconds));
        assert_eq!(lookup("mysql", Some("Queries"), Process).map(|r| r.kind), Ok(Counter));
        assert!(lookup("disk", Some("/backups"), Host).is_ok());
    }

    #[test]
    fn every_daemon_has_a_family() {
        use Daemon::*;
        for daemon in [Mysql, Redis, Memcached, Nginx, Postgresql, Memstats] {
            assert_eq!(daemon.family().daemon, daemon);
            assert_eq!(daemon_family(daemon.name()).map(|d| d.daemon), Some(daemon));
        }
        let collected: Vec<&str> = DAEMONS.iter().filter(|d| d.collected).map(|d| d.family).collect();
        assert_eq!(collected, ["mysql", "redis", "memcached", "nginx", "postgresql", "memstats"]);
    }

    #[test]
    fn refusals_name_the_alternatives() {
        assert_eq!(
            lookup("memory", Some("rsss"), Process).unwrap_err().to_string(),
            "unknown metric `memory:rsss`, expected one of memory:rss, memory:total_rss"
        );
        assert_eq!(
            lookup("load", Some("5"), Process).unwrap_err().to_string(),
            "`load:5` is a host metric and cannot be used in a `check service`"
        );
    }
}
