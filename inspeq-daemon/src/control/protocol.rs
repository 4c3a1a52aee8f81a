//! The control protocol: one JSON request line, one JSON response line. Versioned
//! so a newer `inspeqctl` can tell an older daemon apart. Engine types never
//! derive `Serialize`; the daemon converts its state into these at the edge.

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// The longest request line the daemon reads, newline included. Requests are a command and a few names (a
/// few hundred bytes at most); the cap bounds what one connection can make the daemon hold.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Why a request line was not understood. The daemon answers each with [`Response::Error`], never a panic.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("bad request: not UTF-8 text")]
    NotUtf8,
    #[error("bad request: longer than {MAX_REQUEST_BYTES} bytes")]
    TooLong,
    #[error("protocol version {0} not supported (daemon speaks {VERSION})")]
    Version(u32),
    /// serde_json's message, made one line of printable text: it quotes what the client sent (an unknown
    /// command's name), which may hold newlines and terminal escapes, and be 8 KiB long.
    #[error("bad request: {0}")]
    Json(String),
}

/// The longest quote of a client's request in an error reply, in characters.
const MAX_ERROR_CHARS: usize = 200;

impl From<serde_json::Error> for RequestError {
    fn from(err: serde_json::Error) -> Self {
        let mut text = String::new();
        for c in err.to_string().chars() {
            if text.chars().count() >= MAX_ERROR_CHARS {
                text.push('…');
                break;
            }
            if c.is_control() {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
        Self::Json(text)
    }
}

/// Only the version, read first: a newer client's unknown command is then reported as a version mismatch, not
/// as a command this daemon has never heard of.
#[derive(Deserialize)]
struct Envelope {
    version: u32,
}

/// Decodes one request line (a trailing newline is allowed).
///
/// # Errors
/// What was wrong with the line, to be sent back as [`Response::Error`].
pub fn decode_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::TooLong);
    }
    let text = std::str::from_utf8(line).map_err(|_| RequestError::NotUtf8)?;
    let Envelope { version } = serde_json::from_str(text)?;
    if version != VERSION {
        return Err(RequestError::Version(version));
    }
    let RequestLine { request, .. } = serde_json::from_str(text)?;
    Ok(request)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Services, rules, jobs, kernel health.
    Status,
    /// Everything `status` has plus the latest metric values.
    Export,
    /// Silence alerts and actions for `deploy_length`.
    StartDeploy,
    /// End the deploy window (one grace cycle follows).
    FinishDeploy,
    /// The recent history of one metric of one target (`host` or a service name).
    Show { target: String, metric: String },
    /// A job ran (for `jobs.d` checks).
    JobDone { job: String },
    /// Reload the configuration (as SIGHUP does).
    Reload,
    /// Send a test alert through every route, or through `route` alone.
    TestAlert { route: Option<String> },
    /// Act on an unmonitored service again.
    Remonitor { service: String },
}

/// The envelope of every request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLine {
    pub version: u32,
    #[serde(flatten)]
    pub request: Request,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "one reply per request, serialised and dropped at once: never stored in bulk, so boxing buys nothing"
)]
pub enum Response {
    /// Done; a line for people.
    Ok {
        message: String,
    },
    Status(Status),
    Show(Show),
    TestAlert {
        routes: Vec<RouteOutcome>,
    },
    /// The request could not be carried out; the daemon is unaffected.
    Error {
        message: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    pub version: String,
    pub uptime_secs: u64,
    pub cycle_secs: u64,
    /// Set while a deploy silences alerts and actions.
    pub silenced_for_secs: Option<u64>,
    pub kernel: KernelHealth,
    pub services: Vec<ServiceStatus>,
    pub host: Vec<RuleStatus>,
    /// The host check's active probes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_probes: Vec<ProbeStatus>,
    pub jobs: Vec<JobStatus>,
    /// Latest values per target (only in `export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricValue>,
    pub alerts: AlertHealth,
    #[serde(default)]
    pub log: LogHealth,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KernelHealth {
    /// The kernel tier: `ebpf`, `proc_connector`, `pidfd` or `proc` (polling),
    /// with `fallback_reason` saying why it is not eBPF.
    pub mode: String,
    pub fallback_reason: Option<String>,
    /// What the running tier cannot see (empty for eBPF).
    #[serde(default)]
    pub blind_spots: Vec<String>,
    /// Records emitted and dropped by the kernel, per kind (exit, fork, rss).
    pub emitted: [u64; 3],
    pub dropped: [u64; 3],
    pub observations: u64,
    pub missing_tracepoints: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `systemd`, `runit`, ... or `process` for `check process`.
    pub init: String,
    /// `up`, `down`, `not_found`, `unmonitored`, `starting`, `stopping`.
    pub state: String,
    pub pid: Option<u32>,
    pub cgroup: Option<String>,
    /// How the kernel watches it: `cgroup` or `tree`.
    pub watched_by: Option<String>,
    /// Set when the main pid is a wrapper (a shell, a `logger` pipeline): the
    /// whole cgroup or tree is watched so the real server's crash is still seen.
    pub wrapper: Option<String>,
    pub processes: usize,
    /// New main processes after the first, as the init system confirmed them
    /// (inspeq's restarts, the init system's own, an operator's).
    pub restarts: u64,
    /// Deaths of the service's other processes by a signal or the OOM killer.
    #[serde(default)]
    pub workers: WorkerCounts,
    pub rules: Vec<RuleStatus>,
    /// The daemon families collected for this service (`redis`, ...): when each was last tried and last answered,
    /// and why it fails while it does. Absent for services without daemon-metric rules, and from older daemons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<CollectionStatus>,
    /// The check's active probes (`port`, `http`, `tls`): when each last ran and answered, how long it took,
    /// and why it fails while it does. Absent for checks without probe rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<ProbeStatus>,
    /// The TCP sockets the service listens on, with their accept queues, as the last cycle listed them (for
    /// services with `listening` or `accept_queue` rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerStatus>,
}

/// One active probe of a check.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// Its number in the check: two probes of the same target with other options have the same `probe`.
    #[serde(default)]
    pub id: u32,
    /// What it probes (`http http://127.0.0.1:8080/health`, `port localhost:8080`, `tls example.com:443`).
    pub probe: String,
    /// Null before the first probe came back.
    pub last_attempt_secs_ago: Option<u64>,
    /// Null while no probe has answered yet.
    pub last_success_secs_ago: Option<u64>,
    /// How long the last answer took.
    pub last_time_ms: Option<f64>,
    /// Why the last probe failed; null while it answers.
    pub error: Option<String>,
}

/// One listening TCP socket of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// `0.0.0.0:8080`, `[::]:8080`.
    pub address: String,
    /// Connections waiting for `accept()`.
    pub accept_queue: u32,
    /// The listen backlog: the most that may wait.
    pub backlog: u32,
}

/// One daemon family's collection for a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionStatus {
    /// `redis`, `memcached`, `nginx`, `memstats`.
    pub family: String,
    /// Where it is collected from (`127.0.0.1:6379`, `unix:/run/redis.sock`).
    pub address: String,
    /// Null before the first collection came back.
    pub last_attempt_secs_ago: Option<u64>,
    /// Null while no collection has worked yet.
    pub last_success_secs_ago: Option<u64>,
    /// Why the last collection failed; null while it works. A failure is no zero: the family's rules have no value.
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounts {
    /// Killed by a signal other than a stop signal (`TERM`, `INT`, `HUP`,
    /// `PIPE`), dumped core, or OOM-killed.
    pub crashed: u64,
    /// Of those, chosen by the OOM killer.
    pub oom_killed: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// The rule as written.
    pub rule: String,
    /// `ok`, `triggered`, `recovered`, `pending`.
    pub state: String,
    /// The rule's value, in `unit`: the last value a metric rule compared, a `forks` rule's rate and a
    /// `restarts` rule's count in their windows now, an `exit_code` rule's last exit code. Null when there is
    /// none; `value_text` says why, and the other exit rules give their exit in `last_exit`.
    pub value: Option<f64>,
    #[serde(default)]
    pub unit: Option<Unit>,
    /// The value for people (`12.5%`, `96.0m`, `1 restart within 5m`, `last exit: pid 7 was killed by signal 9
    /// (SIGKILL)`), or why there is none (`no value yet: CPU needs two samples`).
    #[serde(default)]
    pub value_text: String,
    /// Exit rules: how the main process ended last (null before the first exit).
    #[serde(default)]
    pub last_exit: Option<LastExit>,
}

/// A main process's exit, as the kernel (or the init system's record) gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExit {
    pub pid: u32,
    /// Null when a signal ended it, or when its status is unknown (then `signal` is null too).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub oom_killed: bool,
    /// inspeq or the init system asked for it (a restart, a stop): no exit rule judges it.
    pub requested: bool,
}

/// The unit of a value in `status`, `show` and `export`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// CPU (of one core for a service, so a busy service can pass 100; of all cores for the host), memory, swap
    /// and disk use.
    Percent,
    Bytes,
    /// A plain number: load, connections, a counter's change over one cycle, restarts.
    Count,
    /// A rate: a counter's change per second, forks per second.
    PerSec,
    BytesPerSec,
    /// `/sec` on a percentage (the checker warns): the percentage divided by the cycle time.
    PercentPerSec,
    ExitCode,
    /// A probe's response time.
    Milliseconds,
    /// The time left on a certificate.
    Days,
}

impl Unit {
    /// `value` for people: `12.5%`, `96.0m` (bytes as the rule language writes them), `3`, `0.52`, `12/s`.
    pub fn format(self, value: f64) -> String {
        match self {
            Self::Percent => format!("{value:.1}%"),
            Self::Bytes => bytes(value),
            Self::Count => number(value),
            Self::PerSec => format!("{}/s", number(value)),
            Self::BytesPerSec => format!("{}/s", bytes(value)),
            Self::PercentPerSec => format!("{value:.1}%/s"),
            Self::ExitCode => format!("{value:.0}"),
            Self::Milliseconds => format!("{value:.1} ms"),
            Self::Days => format!("{value:.1} days"),
        }
    }
}

/// Bytes as the rule language writes them (`64.1m`), powers of 1024.
pub fn bytes(value: f64) -> String {
    let mut v = value;
    for suffix in ["", "k", "m", "g", "t"] {
        if v.abs() < 1024.0 || suffix == "t" {
            return if suffix.is_empty() { format!("{v:.0}") } else { format!("{v:.1}{suffix}") };
        }
        v /= 1024.0;
    }
    unreachable!()
}

/// A whole number as such, anything else with two decimals.
pub fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{value:.0}") } else { format!("{value:.2}") }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    pub every_secs: u64,
    pub last_run_secs_ago: Option<u64>,
    pub overdue: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub target: String,
    pub metric: String,
    pub value: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertHealth {
    pub raised: u64,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub pending: u64,
    /// Alerts that could not be written to the outbox (sent, but lost to a restart).
    #[serde(default)]
    pub unpersisted: u64,
    /// Outbox records that could not be read back at start (damaged; their
    /// bytes are kept as `*.bad`), and entries there that are not segment files.
    #[serde(default)]
    pub unreadable: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LogHealth {
    /// Log lines dropped because standard error was not taking them.
    pub dropped_lines: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Show {
    pub target: String,
    pub metric: String,
    /// The values' unit, as the metric catalogue gives it (CPU in percent, counters per second); null for a
    /// metric the daemon does not know.
    #[serde(default)]
    pub unit: Option<Unit>,
    /// Oldest first, one per cycle.
    pub values: Vec<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
}

impl Show {
    /// Fills min/max/avg from `values`.
    pub fn new(target: String, metric: String, unit: Option<Unit>, values: Vec<f64>) -> Self {
        let min = values.iter().copied().reduce(f64::min);
        let max = values.iter().copied().reduce(f64::max);
        let avg = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
        Self { target, metric, unit, values, min, max, avg }
    }

    /// A value of this metric for people, in its unit (two decimals without one).
    pub fn format(&self, value: f64) -> String {
        self.unit.map_or_else(|| format!("{value:.2}"), |u| u.format(value))
    }

    /// The values as a one-line sparkline (▁▂▃▄▅▆▇█).
    pub fn sparkline(&self) -> String {
        const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
        let (Some(min), Some(max)) = (self.min, self.max) else { return String::new() };
        let span = max - min;
        self.values
            .iter()
            .map(|v| if span > 0.0 { BARS[(((v - min) / span) * 7.0).round() as usize] } else { BARS[3] })
            .collect()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteOutcome {
    pub route: String,
    pub channel: String,
    pub ok: bool,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_json_lines() {
        let line = RequestLine {
            version: VERSION,
            request: Request::Show { target: "nginx".into(), metric: "memory:rss".into() },
        };
        let text = serde_json::to_string(&line).unwrap();
        assert_eq!(text, r#"{"version":1,"command":"show","target":"nginx","metric":"memory:rss"}"#);
        assert_eq!(serde_json::from_str::<RequestLine>(&text).unwrap(), line);
        let status: RequestLine = serde_json::from_str(r#"{"version":1,"command":"status"}"#).unwrap();
        assert_eq!(status.request, Request::Status);
        assert!(serde_json::from_str::<RequestLine>(r#"{"version":1,"command":"format_disk"}"#).is_err());
    }

    #[test]
    fn undecodable_requests_are_errors_with_a_reason() {
        assert_eq!(decode_request(b"{\"version\":1,\"command\":\"status\"}\n").unwrap(), Request::Status);
        let error = |line: &[u8]| decode_request(line).unwrap_err().to_string();
        assert_eq!(error(b"{\"version\":1,\"command\":\"show\",\"target\":\"\xff\"}"), "bad request: not UTF-8 text");
        assert_eq!(error(&vec![b' '; MAX_REQUEST_BYTES + 1]), "bad request: longer than 8192 bytes");
        // A newer client's command: the version is what it needs to hear about.
        assert_eq!(
            error(br#"{"version":2,"command":"frobnicate"}"#),
            "protocol version 2 not supported (daemon speaks 1)"
        );
        assert!(error(br#"{"command":"status"}"#).starts_with("bad request: missing field `version`"));
        assert!(
            error(br#"{"version":1,"command":"format_disk"}"#)
                .starts_with("bad request: unknown variant `format_disk`")
        );
        assert!(error(b"").starts_with("bad request: EOF while parsing"));
        // What the client wrote comes back on one line, printable and short (found by fuzzing).
        let sly = format!(r#"{{"version":1,"command":"status\n\u001b[2J{}"}}"#, "x".repeat(5000));
        let message = error(sly.as_bytes());
        assert!(message.starts_with(r"bad request: unknown variant `status\n\u{1b}[2Jxxx"), "{message}");
        assert!(message.ends_with('…') && message.chars().count() < 250, "{message}");
        // Deep nesting is an error, not a stack overflow (serde_json skips unknown fields without recursing).
        let deep = [&b"{\"a\":"[..], &[b'['; 8000]].concat();
        assert!(error(&deep).starts_with("bad request: EOF while parsing a list"), "{}", error(&deep));
    }

    #[test]
    fn show_summarises_and_draws() {
        let show = Show::new("host".into(), "load:1".into(), Some(Unit::Count), vec![1.0, 2.0, 3.0, 8.0]);
        assert_eq!((show.min, show.max, show.avg), (Some(1.0), Some(8.0), Some(3.5)));
        assert_eq!(show.sparkline(), "▁▂▃█");
        assert_eq!(Show::new("h".into(), "m".into(), None, vec![]).sparkline(), "");
        assert_eq!(Show::new("h".into(), "m".into(), None, vec![5.0, 5.0]).sparkline(), "▄▄");
    }

    #[test]
    fn values_are_written_in_their_unit() {
        assert_eq!(Unit::Percent.format(12.345), "12.3%");
        assert_eq!(Unit::Bytes.format(96.0 * 1048576.0), "96.0m");
        assert_eq!(Unit::Bytes.format(512.0), "512");
        assert_eq!(Unit::Count.format(3.0), "3");
        assert_eq!(Unit::Count.format(0.52), "0.52");
        assert_eq!(Unit::PerSec.format(12.5), "12.50/s");
        assert_eq!(Unit::BytesPerSec.format(2048.0), "2.0k/s");
        assert_eq!(Unit::ExitCode.format(75.0), "75");
        let show = Show::new("web".into(), "cpu:total_user".into(), Some(Unit::Percent), vec![20.0]);
        assert_eq!(show.format(20.0), "20.0%");
        assert_eq!(Show::new("web".into(), "x".into(), None, vec![]).format(1.0), "1.00");
        // Units are snake_case words in JSON.
        assert_eq!(serde_json::to_string(&Unit::BytesPerSec).unwrap(), r#""bytes_per_sec""#);
    }
}
