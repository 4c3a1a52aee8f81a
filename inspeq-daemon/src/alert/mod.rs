//! Alerts: what happened to a service, told to people through channels (email,
//! Slack, webhook, PagerDuty, Alertmanager, the log).
//!
//! The executor turns the engine's alert actions into [`Alert`]s and hands them
//! to the [`outbox::Outbox`], which picks a route ([`route`]), writes each alert
//! to disk before anything else and delivers it from a tokio task, so the event
//! loop never waits for a mail server. Each route has exactly one [`Channel`],
//! built by [`channel`] from the route's part of the checked config model
//! (`config::model::Channel`): the checker has validated and parsed every
//! parameter, so each channel's constructor only assembles; channels render with
//! [`template`] and only know how to talk to their service.
//!
//! An alert names a *condition* (the service's process, one rule, one job) and
//! whether it now fires or is resolved: receivers that pair alerts (PagerDuty,
//! Alertmanager, webhooks) get one stable fingerprint per host, service and
//! condition, so a recovery closes the incident its failure opened.

pub mod alertmanager;
pub mod email;
pub mod log;
pub mod outbox;
pub mod pagerduty;
pub mod route;
pub mod slack;
pub mod template;
pub mod webhook;

use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::config;
/// One scale of severities for the config (`pagerduty` `severity`) and for every structured format.
pub use crate::config::model::Severity;
/// How a process ended: the type the kernel side decoded, stored in the outbox as it is.
pub use crate::exit::ExitStatus;
pub use outbox::{Outbox, OutboxConfig};
pub use route::{Routes, Target};

/// One thing that happened to a checked service (or the host, or a job) and
/// what inspeq did about it. Plain data: the outbox stores it as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The machine inspeq runs on.
    pub hostname: String,
    /// The check's name: a service, `host`, or the jobs check.
    pub service: String,
    pub event: AlertKind,
    /// What inspeq did in response, in order.
    pub actions: Vec<Response>,
    /// When inspeq saw it happen.
    pub at: SystemTime,
    /// The outbox's sequence number, unique per outbox directory; 0 until the
    /// alert is queued. Channels use it for idempotency keys (email Message-ID).
    #[serde(default)]
    pub seq: u64,
}

impl Alert {
    pub fn new(hostname: impl Into<String>, service: impl Into<String>, event: AlertKind, at: SystemTime) -> Self {
        Self { hostname: hostname.into(), service: service.into(), event, actions: Vec::new(), at, seq: 0 }
    }

    /// The same alert, also saying what inspeq did.
    #[must_use]
    pub fn with_actions(mut self, actions: impl IntoIterator<Item = Response>) -> Self {
        self.actions.extend(actions);
        self
    }

    /// The stable key receivers pair firing and resolved alerts with.
    pub fn fingerprint(&self) -> String {
        template::fingerprint(&self.hostname, &self.service, &self.event.condition().key)
    }
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AlertKind {
    /// The service has no running process (Inspeqtor's ProcessDoesNotExist).
    ProcessDown,
    /// The service runs again (Inspeqtor's ProcessExists).
    ProcessUp {
        pid: Option<u32>,
    },
    /// The service's main process exited on its own, or a signal killed it.
    Crashed {
        pid: u32,
        exit: ExitStatus,
    },
    /// The kernel's OOM killer chose the service's process.
    OomKilled {
        pid: u32,
        rss_bytes: Option<u64>,
    },
    /// A restart inspeq asked for failed, or the init system gave up bringing
    /// the service back; `reason` is the init system's own answer.
    RestartFailed {
        reason: String,
    },
    /// A process of the service other than its main one died by a signal.
    WorkerCrashed {
        pid: u32,
        exit: ExitStatus,
    },
    /// The OOM killer chose a process of the service other than its main one.
    WorkerOomKilled {
        pid: u32,
        /// Resident bytes at exit, when the kernel side knew them. Records from before this field read as `None`.
        #[serde(default)]
        rss_bytes: Option<u64>,
    },
    /// More than a rule's count of workers died within its window.
    WorkerDeaths {
        deaths: u32,
        within_secs: u64,
    },
    RuleFailed(RuleState),
    RuleRecovered(RuleState),
    /// `if FAMILY is unreachable` tripped: collecting the daemon's metrics failed for the rule's cycles. Its
    /// metric rules have no value meanwhile.
    Unreachable {
        /// The rule as written: the condition's key, shared with [`AlertKind::Reachable`].
        rule: String,
        /// `redis`, `memcached`, `nginx`, `memstats`.
        daemon: String,
        /// Why the last collection failed, in the collector's words (`connecting to 127.0.0.1:6379: Connection
        /// refused`).
        error: String,
    },
    /// The daemon answers again: two collections in a row worked.
    Reachable {
        rule: String,
        daemon: String,
        /// How long it had been unreachable.
        for_secs: u64,
    },
    /// A probe's `is closed` / `fails` rule tripped: the port, URL or TLS server did not answer as asked.
    ProbeFailed {
        rule: String,
        /// What was probed (`http http://127.0.0.1:8080/health`, `port localhost:8080`).
        probe: String,
        /// Why the last probe failed, in the prober's words (`HTTP 500 Internal Server Error, expected below 400`).
        error: String,
    },
    /// The probe answers again: two probes in a row did.
    ProbeAnswers {
        rule: String,
        probe: String,
        for_secs: u64,
    },
    /// `listening PORT stopped`: the service no longer listens on the port. `address` and `pid`: the socket that
    /// closed and the process that closed it, when the kernel reported it.
    ListenerStopped {
        rule: String,
        port: u16,
        #[serde(default)]
        address: Option<String>,
        #[serde(default)]
        pid: Option<u32>,
    },
    /// The service listens on the port again.
    Listening {
        rule: String,
        port: u16,
        for_secs: u64,
    },
    /// The init system restarted the service (inspeq asked, or it did on its own).
    Restarted {
        pid: Option<u32>,
    },
    /// The service restarted `restarts` times within `within`.
    FlapDetected {
        restarts: u32,
        within_secs: u64,
    },
    /// inspeq stopped watching the service.
    Unmonitored {
        reason: String,
    },
    /// A recurring job did not report in time.
    JobOverdue {
        job: String,
        every_secs: u64,
    },
    /// An overdue job ran again.
    JobRan {
        job: String,
    },
    /// `inspeqctl test-alert`.
    Test,
}

/// A rule's state when it failed or recovered, as display strings: the engine
/// owns units and rounding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleState {
    /// Identifies the rule within its check (e.g. `memory:rss > 100m`); part of
    /// the fingerprint, so it must not change between failure and recovery.
    pub rule: String,
    /// `memory:rss`, `cpu:user`, ...
    pub metric: String,
    pub comparison: Comparison,
    /// The current value (`612m`).
    pub value: String,
    /// The threshold (`500m`).
    pub threshold: String,
    /// For how long the rule has been failing (or had failed, on recovery).
    pub for_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
    /// A certificate's end within the threshold's span.
    Within,
}

/// What inspeq did about an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Restart,
    /// The init system (`init`: systemd, runit, ...) restarts it by itself;
    /// inspeq sent no restart of its own.
    InitRestarts {
        init: String,
    },
    Reload,
    Unmonitor,
    /// Ran a command (argv joined for display).
    Exec(String),
}

/// Whether an alert opens or closes its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// The condition an event belongs to. Firing and resolved events of one
/// condition share `key`, `name` and `severity`, because Alertmanager pairs
/// alerts by their whole label set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// Unique within a check: `process`, `rule:<rule>`, `job:<name>`, ...
    pub key: String,
    /// Alertmanager's `alertname`.
    pub name: &'static str,
    pub severity: Severity,
    /// No later event resolves it (a restart, a test): receivers that keep
    /// incidents open should let it expire.
    pub one_shot: bool,
}

impl AlertKind {
    /// The `snake_case` name used in JSON and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertKind::ProcessDown => "process_down",
            AlertKind::ProcessUp { .. } => "process_up",
            AlertKind::Crashed { .. } => "crashed",
            AlertKind::OomKilled { .. } => "oom_killed",
            AlertKind::RestartFailed { .. } => "restart_failed",
            AlertKind::WorkerCrashed { .. } => "worker_crashed",
            AlertKind::WorkerOomKilled { .. } => "worker_oom_killed",
            AlertKind::WorkerDeaths { .. } => "worker_deaths",
            AlertKind::RuleFailed(_) => "rule_failed",
            AlertKind::RuleRecovered(_) => "rule_recovered",
            AlertKind::Unreachable { .. } => "unreachable",
            AlertKind::Reachable { .. } => "reachable",
            AlertKind::ProbeFailed { .. } => "probe_failed",
            AlertKind::ProbeAnswers { .. } => "probe_answers",
            AlertKind::ListenerStopped { .. } => "listener_stopped",
            AlertKind::Listening { .. } => "listening",
            AlertKind::Restarted { .. } => "restarted",
            AlertKind::FlapDetected { .. } => "flap_detected",
            AlertKind::Unmonitored { .. } => "unmonitored",
            AlertKind::JobOverdue { .. } => "job_overdue",
            AlertKind::JobRan { .. } => "job_ran",
            AlertKind::Test => "test",
        }
    }

    pub fn status(&self) -> Status {
        match self {
            AlertKind::ProcessUp { .. }
            | AlertKind::RuleRecovered(_)
            | AlertKind::Reachable { .. }
            | AlertKind::ProbeAnswers { .. }
            | AlertKind::Listening { .. }
            | AlertKind::JobRan { .. } => Status::Resolved,
            _ => Status::Firing,
        }
    }

    pub fn condition(&self) -> Condition {
        let stateful = |key: String, name, severity| Condition { key, name, severity, one_shot: false };
        let one_shot = |key: &str, name, severity| Condition { key: key.to_owned(), name, severity, one_shot: true };
        match self {
            // A crash or an OOM kill takes the process down: the next ProcessUp
            // resolves all three.
            // A failed restart leaves it down the same way.
            AlertKind::ProcessDown
            | AlertKind::ProcessUp { .. }
            | AlertKind::Crashed { .. }
            | AlertKind::OomKilled { .. }
            | AlertKind::RestartFailed { .. } => stateful("process".into(), "InspeqServiceDown", Severity::Critical),
            // The service keeps running: each death is news, nothing stays open.
            AlertKind::WorkerCrashed { .. } | AlertKind::WorkerOomKilled { .. } => {
                one_shot("worker", "InspeqWorkerDied", Severity::Error)
            }
            AlertKind::WorkerDeaths { .. } => one_shot("workers", "InspeqWorkersDying", Severity::Error),
            AlertKind::RuleFailed(r) | AlertKind::RuleRecovered(r) => {
                stateful(format!("rule:{}", r.rule), "InspeqRuleFailed", Severity::Error)
            }
            AlertKind::Unreachable { rule, .. } | AlertKind::Reachable { rule, .. } => {
                stateful(format!("rule:{rule}"), "InspeqDaemonUnreachable", Severity::Error)
            }
            AlertKind::ProbeFailed { rule, .. } | AlertKind::ProbeAnswers { rule, .. } => {
                stateful(format!("rule:{rule}"), "InspeqProbeFailed", Severity::Error)
            }
            AlertKind::ListenerStopped { rule, .. } | AlertKind::Listening { rule, .. } => {
                stateful(format!("rule:{rule}"), "InspeqListenerStopped", Severity::Critical)
            }
            AlertKind::JobOverdue { job, .. } | AlertKind::JobRan { job } => {
                stateful(format!("job:{job}"), "InspeqJobOverdue", Severity::Warning)
            }
            AlertKind::Restarted { .. } => one_shot("restarted", "InspeqServiceRestarted", Severity::Info),
            AlertKind::FlapDetected { .. } => one_shot("flapping", "InspeqServiceFlapping", Severity::Critical),
            AlertKind::Unmonitored { .. } => one_shot("unmonitored", "InspeqServiceUnmonitored", Severity::Critical),
            AlertKind::Test => one_shot("test", "InspeqTest", Severity::Info),
        }
    }
}

/// A future a channel returns; boxed so that routes can hold `dyn Channel`.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;

/// How a channel wants several pending alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// The format carries a list (webhook, Alertmanager, the log): pending alerts
    /// go out together, each still itself.
    Native,
    /// One alert per message; a flood becomes one digest message.
    Digest,
}

/// A way of telling people. One per route.
pub trait Channel: Send + Sync {
    /// The channel's configuration name (`email`, `slack`, ...).
    fn kind(&self) -> &'static str;

    fn batching(&self) -> Batching {
        Batching::Digest
    }

    /// The least time between two messages, from the service's published limit.
    fn min_interval(&self) -> Option<Duration> {
        None
    }

    /// Delivers `alerts`: one alert, a native batch, or (for [`Batching::Digest`]
    /// channels given more than one) a digest. Success means the service took
    /// them; the outbox retries on error.
    fn send<'a>(&'a self, alerts: &'a [Alert]) -> SendFuture<'a>;
}

/// Why a delivery failed. The outbox retries every kind; [`SendError::retry_after`]
/// is the service's own word on when.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("SMTP server {server}: {source}")]
    Smtp {
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("building the message: {source}")]
    Message {
        #[source]
        source: lettre::error::Error,
    },
    #[error("POST {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("POST {url}: HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    #[error("POST {url}: rate limited (HTTP 429)")]
    RateLimited { url: String, retry_after: Option<Duration> },
    #[error("writing to the log: {source}")]
    Log {
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl SendError {
    /// When the service asked to be called again (HTTP 429 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A route's channel could not be built from its checked model. Only what the checker cannot see (it reads no
/// file) fails here: the CA file of an email route, and the machine's own name in the default sender address.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("alert route {route}: reading tls_ca_file {path}: {source}")]
    ReadCaFile {
        route: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("alert route {route}: tls_ca_file {path}: {reason}")]
    BadCaFile { route: String, path: PathBuf, reason: String },
    #[error("alert route {route}: TLS for {server}: {reason}")]
    Tls { route: String, server: String, reason: String },
    #[error("alert route {route}: the address {address} is not one an SMTP server takes: {reason}")]
    Address { route: String, address: String, reason: String },
    #[error("duplicate alert config for {0}")]
    DuplicateRoute(String),
}

/// Builds the channel of one checked route.
///
/// # Errors
/// [`ConfigError`] for what the checker could not check (see there), naming the route.
pub fn channel(
    route: &config::model::Route,
    http: &reqwest::Client,
    hostname: &str,
) -> Result<Arc<dyn Channel>, ConfigError> {
    let name = route.name.as_deref().unwrap_or("default");
    Ok(match &route.channel {
        config::model::Channel::Email(model) => Arc::new(email::Email::new(name, model, hostname)?),
        config::model::Channel::Slack(model) => Arc::new(slack::Slack::new(model, http.clone())),
        config::model::Channel::Webhook(model) => Arc::new(webhook::Webhook::new(name, model, http.clone())),
        config::model::Channel::PagerDuty(model) => Arc::new(pagerduty::PagerDuty::new(model, http.clone())),
        config::model::Channel::Alertmanager(model) => Arc::new(alertmanager::Alertmanager::new(model, http.clone())),
        config::model::Channel::Log => Arc::new(log::Log::stdout()),
    })
}

/// The HTTP client the web channels share: rustls with the bundled Mozilla
/// roots, bounded connect and request times.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("inspeq/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a rustls client with default settings always builds")
}

/// Where a web channel POSTs, and how its errors name the place: the URL itself, or (for a URL that is a secret,
/// Slack's) the URL with its path hidden.
pub(crate) struct Endpoint {
    pub url: url::Url,
    pub shown: String,
}

impl Endpoint {
    pub fn new(url: url::Url) -> Self {
        Self { shown: url.to_string(), url }
    }

    /// An endpoint whose URL is a credential: errors (logged, and printed by `inspeqctl test-alert`) show its
    /// scheme, host and port only (no path, query or user info).
    pub fn secret(url: url::Url) -> Self {
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        Self { shown: format!("{}://{}{port}/***", url.scheme(), url.host_str().unwrap_or_default()), url }
    }
}

/// POSTs a JSON body and maps the answer: 2xx is delivered, 429 is a rate limit
/// (with the server's `Retry-After`, in seconds), anything else an error.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    endpoint: &Endpoint,
    body: Vec<u8>,
    headers: &[(&'static str, String)],
) -> Result<(), SendError> {
    let url = &endpoint.shown;
    let mut request =
        http.post(endpoint.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    // reqwest's errors carry the whole URL: the endpoint says how it is shown.
    let response =
        request.send().await.map_err(|source| SendError::Http { url: url.to_owned(), source: source.without_url() })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(SendError::RateLimited { url: url.to_owned(), retry_after });
    }
    let text = response.text().await.unwrap_or_default();
    let body = template::truncated(&text, 512).to_owned();
    Err(SendError::Status { url: url.to_owned(), status: status.as_u16(), body })
}

/// This machine's name, as alerts report it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The outcome of sending a test alert through one route.
#[derive(Debug)]
pub struct TestOutcome {
    pub route: String,
    pub channel: &'static str,
    pub result: Result<(), SendError>,
}

/// `inspeqctl test-alert [ROUTE]`: sends a [`AlertKind::Test`] alert straight
/// through each route (or only `only`), bypassing the outbox so the answer is
/// the channel's own, and waits at most `timeout` per route.
pub async fn test_routes(routes: &Routes, only: Option<&str>, hostname: &str, timeout: Duration) -> Vec<TestOutcome> {
    let mut outcomes = Vec::new();
    for route in routes.iter().filter(|r| only.is_none_or(|name| r.name.matches(name))) {
        let alert = Alert::new(hostname, "inspeq", AlertKind::Test, SystemTime::now());
        let result = match tokio::time::timeout(timeout, route.channel.send(std::slice::from_ref(&alert))).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout(timeout)),
        };
        outcomes.push(TestOutcome { route: route.name.to_string(), channel: route.channel.kind(), result });
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outbox stores alerts as JSON: every event must come back as it went in.
    #[test]
    fn every_event_survives_the_outbox_format() {
        let rule = RuleState {
            rule: "cpu:user > 90%".into(),
            metric: "cpu:user".into(),
            comparison: Comparison::Below,
            value: "95%".into(),
            threshold: "90%".into(),
            for_secs: None,
        };
        let events = [
            AlertKind::ProcessDown,
            AlertKind::ProcessUp { pid: Some(1) },
            AlertKind::Crashed { pid: 2, exit: ExitStatus::Signal { signal: 6, core_dumped: true } },
            AlertKind::Crashed { pid: 2, exit: ExitStatus::Code(1) },
            AlertKind::Crashed { pid: 2, exit: ExitStatus::Unknown },
            AlertKind::WorkerCrashed { pid: 4, exit: ExitStatus::Signal { signal: 11, core_dumped: false } },
            AlertKind::OomKilled { pid: 3, rss_bytes: None },
            AlertKind::OomKilled { pid: 3, rss_bytes: Some(1 << 30) },
            AlertKind::WorkerOomKilled { pid: 5, rss_bytes: Some(64 << 20) },
            AlertKind::RuleFailed(rule.clone()),
            AlertKind::RuleRecovered(rule),
            AlertKind::Unreachable {
                rule: "redis is unreachable for 3 cycles".into(),
                daemon: "redis".into(),
                error: "connecting to 127.0.0.1:6379: Connection refused (os error 111)".into(),
            },
            AlertKind::Reachable {
                rule: "redis is unreachable for 3 cycles".into(),
                daemon: "redis".into(),
                for_secs: 45,
            },
            AlertKind::ProbeFailed {
                rule: "http \"http://127.0.0.1:8080/health\" fails for 2 cycles".into(),
                probe: "http http://127.0.0.1:8080/health".into(),
                error: "HTTP 500 Internal Server Error, expected a status below 400".into(),
            },
            AlertKind::ProbeAnswers {
                rule: "port 8080 is closed".into(),
                probe: "port localhost:8080".into(),
                for_secs: 30,
            },
            AlertKind::ListenerStopped {
                rule: "listening 8080 stopped".into(),
                port: 8080,
                address: Some("0.0.0.0:8080".into()),
                pid: Some(42),
            },
            AlertKind::ListenerStopped { rule: "listening 8080 stopped".into(), port: 8080, address: None, pid: None },
            AlertKind::Listening { rule: "listening 8080 stopped".into(), port: 8080, for_secs: 5 },
            AlertKind::Restarted { pid: None },
            AlertKind::FlapDetected { restarts: 5, within_secs: 60 },
            AlertKind::Unmonitored { reason: "flapping".into() },
            AlertKind::JobOverdue { job: "backup".into(), every_secs: 3600 },
            AlertKind::JobRan { job: "backup".into() },
            AlertKind::Test,
        ];
        for event in events {
            let alert = Alert::new("h", "s", event, SystemTime::UNIX_EPOCH)
                .with_actions([Response::Restart, Response::Exec("/bin/true".into())]);
            let json = serde_json::to_string(&alert).unwrap();
            assert_eq!(serde_json::from_str::<Alert>(&json).unwrap(), alert, "{json}");
        }
    }
}
