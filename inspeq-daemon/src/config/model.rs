//! The checked configuration: what the daemon and the engine run on.
//!
//! Everything here has been validated by the semantic pass: metric names exist, routes exist, amounts are numbers,
//! channels have their parameters, and those parameters are parsed (URLs, email addresses, durations, the TLS mode a
//! port implies), so that building a channel from its part of the model has nothing left to check. Types carry
//! meaning (enums, durations, byte counts) rather than strings. Passwords, secrets and keys are [`Secret`]s: no
//! `Debug` of the model shows them.

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::config::ast::Op;
use crate::config::metrics::{Daemon, MetricKind, Unit};

/// Where in the configuration something was written, for messages such as "rule at services.d/web.inq:4".
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Location {
    pub path: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Config {
    pub settings: Settings,
    /// Keyed by route name; the default route (`send alerts via ...`) has the key `None`.
    pub routes: BTreeMap<Option<String>, Route>,
    pub host: Option<Check>,
    /// `check service` and `check process`, in file order.
    pub services: Vec<Check>,
    pub jobs: Vec<Job>,
}

impl Config {
    /// The host check followed by the service and process checks.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.host.iter().chain(&self.services)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `set cycle_time`: seconds between metric samples; also the window of `forks > N/sec`.
    pub cycle_time: Duration,
    /// `set deploy_length`: how long `start deploy` silences if `finish deploy` never comes.
    pub deploy_length: Duration,
    pub log_level: Option<LogLevel>,
    /// `set expose_port`: `None` when set to 0 (off).
    pub expose_port: Option<u16>,
    pub statsd_location: Option<String>,
    /// `set socket`: the control socket path.
    pub socket: Option<String>,
    /// `set state_dir`: durable state such as the alert outbox.
    pub state_dir: Option<String>,
    /// `set metrics_listen`: address of the Prometheus endpoint.
    pub metrics_listen: Option<String>,
    /// `None`: `set restart_limit 0`, no cap.
    pub restart_limit: Option<RestartLimit>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cycle_time: Duration::from_secs(15),
            deploy_length: Duration::from_secs(5 * 60),
            log_level: None,
            expose_port: Some(4677),
            statsd_location: None,
            socket: None,
            state_dir: None,
            metrics_listen: None,
            restart_limit: Some(RestartLimit::default()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Verbose,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// `None` for the default route.
    pub name: Option<String>,
    pub channel: Channel,
    pub location: Location,
}

/// A route's channel with its checked parameters: each channel of `alert::` is built from its own part.
#[derive(Clone, Debug, PartialEq)]
pub enum Channel {
    /// `email` and `gmail` (a preset with `smtp.gmail.com`, STARTTLS on 587).
    Email(Email),
    Slack(Slack),
    Webhook(Webhook),
    PagerDuty(PagerDuty),
    Alertmanager(Alertmanager),
    Log,
}

impl Channel {
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Channel::Email(e) if e.gmail => "gmail",
            Channel::Email(_) => "email",
            Channel::Slack(_) => "slack",
            Channel::Webhook(_) => "webhook",
            Channel::PagerDuty(_) => "pagerduty",
            Channel::Alertmanager(_) => "alertmanager",
            Channel::Log => "log",
        }
    }
}

/// A value that must never be printed: a password, a signing secret, a routing key, a URL that is its own
/// credential. `Debug` and `Display` show `***`, so a `{:?}` of the model (or of anything holding it) cannot leak
/// it; the one way to the value is [`Secret::expose`], at the place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself, for the channel that sends it (and for tests).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl<T> std::fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// An email address the checker accepted by the rules lettre's `Address` applies (an RFC 5321 local part, a
/// domain or an IP literal), with an optional display name (`Ops <ops@example.com>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub user: String,
    pub domain: String,
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} <{}@{}>", self.user, self.domain),
            None => write!(f, "{}@{}", self.user, self.domain),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    pub gmail: bool,
    /// A DNS name or an IP address (TLS checks the server's certificate against it).
    pub smtp_server: String,
    pub smtp_port: u16,
    /// Decided by the checker from `tls`, the port and `username` (see `check::global::default_tls`).
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `None`: the channel sends as `inspeq@HOSTNAME`.
    pub from_email: Option<Mailbox>,
    /// At least one.
    pub to_email: Vec<Mailbox>,
    /// `tls_ca_file`: an absolute path to PEM certificates trusted besides the bundled Mozilla roots, for a relay
    /// with a private CA. Always `None` with [`Tls::None`]. Read when the route is built.
    pub tls_ca_file: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain text, then `STARTTLS`, which is required: never a silent fallback to plain text.
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
    /// Plain text throughout: for a relay on the same machine or network.
    None,
}

/// A Slack incoming webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slack {
    /// A secret: whoever has an incoming webhook's URL can post to the channel (Slack says to keep it secret).
    pub url: Secret<url::Url>,
    pub icon_emoji: Option<String>,
    pub username: Option<String>,
    pub channel: Option<String>,
}

/// Alertmanager-style JSON POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    /// `http` or `https`.
    pub url: url::Url,
    /// Enables the HMAC-SHA256 signature header.
    pub secret: Option<Secret>,
}

/// PagerDuty's Events API v2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagerDuty {
    pub routing_key: Secret,
    /// Overrides PagerDuty's endpoint (tests point it at a local receiver).
    pub url: Option<url::Url>,
    /// `payload.severity` of every event this route triggers; `None`: each condition's own.
    pub severity: Option<Severity>,
}

/// Pushes to an Alertmanager's `/api/v2/alerts`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alertmanager {
    /// The Alertmanager's base URL.
    pub url: url::Url,
    /// `firing_for` (default 24 hours): how far ahead of a firing alert its `endsAt` is set, so how long
    /// Alertmanager treats it as firing if no recovery comes (inspeq sends once; Prometheus re-sends).
    pub firing_for: Duration,
}

/// How bad an alert is: PagerDuty's severities, which every structured format uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    // In this order: the worst first, so the smallest is the worst.
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub const NAMES: &str = "critical, error, warning or info";

    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }

    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        [Severity::Critical, Severity::Error, Severity::Warning, Severity::Info]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    /// `host` for the host check.
    pub name: String,
    /// Route of bare `alert` actions (Inspeqtor's `owner`).
    pub owner: Option<String>,
    pub init: Option<InitKind>,
    pub scope: Option<UnitScope>,
    /// `with bus ADDRESS`: the systemd manager's D-Bus address (checked), instead of
    /// the scope's default bus.
    pub bus: Option<String>,
    /// `with cgroup_root PATH`: where the manager's cgroup root is on this host
    /// (absolute), for a manager in a cgroup namespace; default the cgroup2 mount.
    pub cgroup_root: Option<String>,
    /// `with restart_command "..."`: argv, never a shell. Lets `restart` work on a `check process`.
    pub restart_command: Option<Vec<String>>,
    /// Every `with` parameter as written, including daemon connection keys (`port`, `socket`, ...).
    pub params: CheckParams,
    /// The daemon families this check's rules read (a metric rule on `redis:*`, `if redis is unreachable`), each
    /// with where its server is: what the daemon collects for it every cycle. One per family, in catalogue order.
    pub daemons: Vec<DaemonSource>,
    /// The active probes this check's rules ask (`port`, `http`, `tls`), each once however many rules read it,
    /// by [`ProbeId`]: what the daemon probes every cycle (or `interval`).
    pub probes: Vec<Probe>,
    pub exposes: Vec<String>,
    pub rules: Vec<Rule>,
    pub location: Location,
}

impl Check {
    /// The init system this check names, if any: `with init X`, or systemd when it names a systemd manager of
    /// its own (`scope user`, `bus`, `cgroup_root`); `None` leaves it to whichever detected init system knows the
    /// service. The daemon picks the backend by this, and `check` judges the parameters that only one init system
    /// reads (`pidfile`) by the same answer.
    #[must_use]
    pub fn named_init(&self) -> Option<InitKind> {
        let manager_given = self.scope == Some(UnitScope::User) || self.bus.is_some() || self.cgroup_root.is_some();
        match self.init {
            None if manager_given => Some(InitKind::Systemd),
            init => init,
        }
    }
}

/// Where a daemon family's server answers, from the check's `with` parameters over the catalogue's defaults:
/// built once by the checker, so the collector has nothing left to parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSource {
    pub daemon: Daemon,
    pub address: DaemonAddress,
    /// `password` (redis's `AUTH`, MySQL's and PostgreSQL's login).
    pub password: Option<Secret>,
    /// `username` (MySQL, PostgreSQL).
    pub username: Option<String>,
    /// `database` (PostgreSQL: the database whose tables `seq_scans` and `total_size` count).
    pub database: Option<String>,
    /// The family's metrics the check's rules read, by their catalogue names: a collector may ask for what
    /// costs more only when it is read (MySQL's replica status, which needs a privilege of its own).
    pub watched: std::collections::BTreeSet<&'static str>,
    /// The HTTP path of a status page (nginx's `endpoint`), starting with `/`.
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonAddress {
    /// `hostname` and `port`: a name is resolved when the connection is made, so a changed DNS entry is followed
    /// at the next reconnection.
    Tcp { host: String, port: u16 },
    /// `socket`: an absolute path to a Unix socket, preferred over TCP when given.
    Unix(String),
}

impl std::fmt::Display for DaemonAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // An IPv6 literal in brackets, so the port stays readable.
            DaemonAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            DaemonAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            DaemonAddress::Unix(path) => write!(f, "unix:{path}"),
        }
    }
}

/// A check's `with` parameters as written. A map whose `Debug` hides the values of the parameters that are
/// secrets (`password`, for the daemon a check's metrics connect to), so printing a check cannot leak them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CheckParams(BTreeMap<String, String>);

impl CheckParams {
    /// The parameters whose values are secrets.
    pub const SECRETS: &[&str] = &["password"];

    /// Sets `key`, returning the value it had.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        self.0.insert(key, value)
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.0.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &String)> {
        self.0.iter()
    }
}

impl From<BTreeMap<String, String>> for CheckParams {
    fn from(map: BTreeMap<String, String>) -> Self {
        CheckParams(map)
    }
}

impl std::fmt::Debug for CheckParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            let shown: &str = if Self::SECRETS.contains(&k.as_str()) { "***" } else { v };
            map.entry(k, &shown);
        }
        map.finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    Host,
    /// Found through an init system.
    Service,
    /// Found without an init system.
    Process(ProcessSelector),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessSelector {
    PidFile(String),
    /// A regular expression matched against the command line.
    Matching(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitKind {
    Systemd,
    Upstart,
    Runit,
    Initd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnitScope {
    System,
    User,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub condition: Condition,
    pub actions: Vec<ActionSpec>,
    /// The condition as written (`memory:rss > 2g for 3 cycles`), for alerts and status.
    pub text: String,
    pub location: Location,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// Sampled once per cycle.
    Metric(MetricRule),
    /// Any exit of the main process.
    Exited,
    /// Exit with a non-zero status, or death by a signal.
    Crashed,
    /// Death by a signal, optionally a given one.
    Signaled(Option<i32>),
    OomKilled,
    ExitCode {
        op: Op,
        code: i64,
    },
    /// More than `per_sec` forks per second, measured over one cycle.
    Forks {
        per_sec: f64,
    },
    /// More than `count` (re)starts within `window`.
    Restarts {
        count: u32,
        window: Window,
    },
    /// `if FAMILY is unreachable [for N cycles]`: the collection of a daemon family failed (refused, timed out, an
    /// answer that is no answer) in `cycles` cycles in a row. Judged once per cycle, like a metric rule.
    Unreachable {
        daemon: Daemon,
        cycles: u32,
    },
    /// `worker crashed`, `worker oom_killed`: another process of the service than its main one died by a signal
    /// or the OOM killer. With `> N within W`, more than `count` such deaths within the window.
    Worker {
        what: WorkerEvent,
        more_than: Option<(u32, Window)>,
    },
    /// `port 8080 is closed`, `http "URL" fails`, `http "URL" time > 500ms`, `tls "host:443" expires within 14
    /// days`: what an active probe of the check found, judged once per probe, like a metric rule.
    Probe {
        probe: ProbeId,
        test: ProbeTest,
    },
    /// `listening 8080 stopped`: a TCP socket of the service listening on `port` closed. The kernel reports the
    /// close the moment it happens (eBPF); every cycle's list of the service's listeners (`sock_diag`) catches it
    /// too, where the kernel side cannot. Judged again once the port is listened on.
    ListenerStopped {
        port: u16,
    },
}

/// A check's probe, by its place in [`Check::probes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u32);

/// What a probe rule asks of its probe.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProbeTest {
    /// `is closed`, `fails`: the probe failed in `cycles` probes in a row.
    Fails { cycles: u32 },
    /// `time OP DURATION`: the probe's response time in milliseconds, in probes that answered.
    Time { op: Op, millis: f64, cycles: u32 },
    /// `expires within DURATION`: the server's certificate ends sooner than `within` from now (or has ended).
    Expires { within: Duration },
}

/// An active probe: what it reaches, how long it may take, how often it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub target: ProbeTarget,
    /// The whole probe (connect, handshake, request, body) must end within this.
    pub timeout: Duration,
    /// `with interval DURATION`: probe at most this often; `None` is every cycle.
    pub interval: Option<Duration>,
}

/// What a probe reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeTarget {
    /// `port 8080` (localhost), `port "[::1]:8080"`, `port "/run/app.sock"`: a TCP connect, or a Unix stream
    /// socket's.
    Port(DaemonAddress),
    /// `http "http://127.0.0.1:8080/health"`: a GET.
    Http(HttpProbe),
    /// `tls "example.com:443"`: a TLS handshake, for the certificate's expiry.
    Tls(TlsProbe),
}

/// `http "URL" [with status N, body "REGEX", ca_file PATH, timeout D]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// `http` or `https`, checked.
    pub url: url::Url,
    /// The status the answer must have; `None` takes any status below 400. Redirects are not followed.
    pub status: Option<u16>,
    /// A regular expression the body (its first [`HttpProbe::BODY_LIMIT`] bytes) must match, checked to compile by
    /// [`crate::config::names::body_pattern`].
    pub body: Option<String>,
    /// A PEM file of CA certificates trusted besides the system's, for `https`.
    pub ca_file: Option<String>,
}

impl HttpProbe {
    /// How much of a body is read to match `body`.
    pub const BODY_LIMIT: usize = 1 << 20;
}

/// `tls "HOST:PORT" [with server_name NAME, ca_file PATH, timeout D]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsProbe {
    pub host: String,
    pub port: u16,
    /// The name the certificate must carry (and the SNI sent): the host unless given.
    pub server_name: String,
    /// A PEM file of CA certificates trusted besides the system's.
    pub ca_file: Option<String>,
}

impl std::fmt::Display for ProbeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeTarget::Port(address) => write!(f, "port {address}"),
            ProbeTarget::Http(http) => write!(f, "http {}", http.url),
            ProbeTarget::Tls(tls) if tls.host.contains(':') => write!(f, "tls [{}]:{}", tls.host, tls.port),
            ProbeTarget::Tls(tls) => write!(f, "tls {}:{}", tls.host, tls.port),
        }
    }
}

/// Which worker deaths a `worker` rule counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEvent {
    /// Killed by a signal other than a stop signal, or dumped core, or OOM-killed.
    Crashed,
    OomKilled,
}

/// The built-in cap on restarts (`set restart_limit N`, `set restart_window DURATION`): a service with a rule
/// that restarts it and no `restarts` rule of its own is unmonitored, with one alert, after more than `count`
/// restarts within `window`, so a restart can never loop unbounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartLimit {
    pub count: u32,
    pub window: Duration,
}

impl Default for RestartLimit {
    fn default() -> Self {
        RestartLimit { count: 5, window: Duration::from_secs(5 * 60) }
    }
}

impl Condition {
    /// Event rules are evaluated when an observation arrives rather than once per cycle.
    #[must_use]
    pub fn is_event(&self) -> bool {
        !matches!(self, Condition::Metric(_) | Condition::Unreachable { .. } | Condition::Probe { .. })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricRule {
    pub metric: MetricName,
    pub kind: MetricKind,
    pub unit: Unit,
    pub op: Op,
    pub threshold: Amount,
    /// Consecutive tripped cycles needed to trigger (`for N cycles`), at least 1.
    pub cycles: u32,
}

/// `family` plus optional `name`: `memory(rss)` and `memory:rss` are the same metric.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricName {
    pub family: String,
    pub name: Option<String>,
}

impl MetricName {
    pub fn new(family: &str, name: Option<&str>) -> Self {
        MetricName { family: family.to_owned(), name: name.map(str::to_owned) }
    }
}

impl std::fmt::Display for MetricName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}:{name}", self.family),
            None => f.write_str(&self.family),
        }
    }
}

/// A threshold: `1.5g` is 1.5 × 1024³, `90%` is 90, `10k/sec` is 10240 per second.
#[derive(Clone, Debug, PartialEq)]
pub struct Amount {
    pub value: f64,
    pub suffix: Suffix,
    pub per_sec: bool,
    /// As written, for display (`1.5g`, `90%`, `1k/sec`).
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suffix {
    None,
    /// k, m, g, t or p: powers of 1024.
    Binary(u32),
    Percent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Time(Duration),
    Cycles(u32),
}

impl Window {
    #[must_use]
    pub fn duration(self, cycle_time: Duration) -> Duration {
        match self {
            Window::Time(d) => d,
            Window::Cycles(n) => cycle_time.saturating_mul(n),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActionSpec {
    /// `alert` or `alert ROUTE`; `None` means the check's owner, then the default route.
    Alert {
        route: Option<String>,
    },
    Restart,
    Reload,
    Unmonitor,
    Exec {
        argv: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub name: String,
    pub every: Duration,
    pub owner: Option<String>,
    pub location: Location,
}
