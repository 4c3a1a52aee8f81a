//! Daemon metrics on the loop's side: one task per service and daemon family (`metrics::daemon`), started with
//! the service and ended with it, that collects when the cycle asks and reports back as [`Event::Collected`];
//! and what the loop keeps of each (when it last tried and succeeded, why it last failed) for `status` and the
//! unreachable alert.
//!
//! The task owns its collector, so the connection lives across cycles; each collection is bounded by
//! [`TIMEOUT`]; after failures it waits before connecting again (1 s, doubling to a minute), and the cycles it
//! skips meanwhile report the failure again, so `if FAMILY is unreachable for N cycles` counts cycles, not
//! attempts. A cycle that asks while a collection is still running is not queued twice.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};

use super::{Daemon, event::Event, executor::Executor, history};
use crate::{
    config::{
        metrics::{Daemon as Family, MetricKind},
        model::{DaemonSource, MetricName},
    },
    control::protocol::CollectionStatus,
    engine::{Collection, Input, Sample, Target, Timestamp},
    metrics::daemon::{
        CollectError, Collector, Reading, TIMEOUT, memcached::Memcached, memstats::Memstats, mysql::Mysql,
        nginx::Nginx, postgresql::Postgresql, redis::Redis,
    },
};

/// The longest wait before connecting again after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// What a collection task reports.
pub struct Report {
    pub service: String,
    pub daemon: Family,
    /// Which task: a task of a check a reload replaced may still report once.
    pub task: u64,
    /// When the answer (or the failure) came.
    pub at: Instant,
    pub result: Result<Collected, Failure>,
}

/// Why a cycle got no reading: the collector's error, and how long until the task connects again while it
/// backs off (a cycle it skips reports the last error again).
#[derive(Clone, Debug)]
pub struct Failure {
    pub error: Arc<CollectError>,
    pub retry_in: Option<Duration>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        match self.retry_in {
            Some(wait) => write!(f, " (connecting again in {}s)", wait.as_secs() + 1),
            None => Ok(()),
        }
    }
}

/// A collection that worked.
pub struct Collected {
    pub reading: Reading,
    /// Another instance of the server than the one that answered before.
    pub restarted: bool,
}

/// The loop's side of one collection task.
struct Task {
    id: u64,
    source: DaemonSource,
    /// Dropped with the task's entry, which ends the task.
    asks: mpsc::Sender<()>,
    last_attempt: Option<Timestamp>,
    last_success: Option<Timestamp>,
    error: Option<Failure>,
}

/// Every collection task, by service and family.
#[derive(Default)]
pub struct Collections {
    tasks: BTreeMap<(String, Family), Task>,
    next_id: u64,
}

impl Collections {
    /// Starts a task for each `(service, source)` that has none with that source, and ends the tasks of the
    /// others (services gone, or whose check changed).
    pub fn sync<'a>(&mut self, wanted: impl IntoIterator<Item = (&'a str, &'a DaemonSource)>, executor: &Executor) {
        let mut keep = BTreeMap::new();
        for (service, source) in wanted {
            let key = (service.to_owned(), source.daemon);
            let task = match self.tasks.remove(&key) {
                Some(task) if task.source == *source => task,
                _ => {
                    self.next_id += 1;
                    start(service, source, self.next_id, executor)
                }
            };
            keep.insert(key, task);
        }
        self.tasks = keep;
    }

    /// Asks every task for a collection (a task still collecting is asked once).
    pub fn ask_all(&self) {
        for task in self.tasks.values() {
            let _ = task.asks.try_send(());
        }
    }

    /// Why the last collection of `daemon` for `service` failed, while it fails.
    pub fn error(&self, service: &str, daemon: Family) -> Option<&Failure> {
        self.tasks.get(&(service.to_owned(), daemon)).and_then(|t| t.error.as_ref())
    }

    /// What `status` shows of `service`'s collections at `now`.
    pub fn status(&self, service: &str, now: Timestamp) -> Vec<CollectionStatus> {
        self.tasks
            .iter()
            .filter(|((s, _), _)| s == service)
            .map(|((_, daemon), t)| CollectionStatus {
                family: daemon.name().to_owned(),
                address: t.source.address.to_string(),
                last_attempt_secs_ago: t.last_attempt.map(|at| now.since(at).as_secs()),
                last_success_secs_ago: t.last_success.map(|at| now.since(at).as_secs()),
                error: t.error.as_ref().map(ToString::to_string),
            })
            .collect()
    }
}

fn start(service: &str, source: &DaemonSource, id: u64, executor: &Executor) -> Task {
    let (asks, asked) = mpsc::channel(1);
    let (service, daemon) = (service.to_owned(), source.daemon);
    let events = executor.events();
    match daemon {
        Family::Redis => tokio::spawn(run(Redis::new(source), asked, events, service, daemon, id)),
        Family::Memcached => tokio::spawn(run(Memcached::new(source), asked, events, service, daemon, id)),
        Family::Nginx => tokio::spawn(run(Nginx::new(source), asked, events, service, daemon, id)),
        Family::Memstats => tokio::spawn(run(Memstats::new(source), asked, events, service, daemon, id)),
        Family::Mysql => tokio::spawn(run(Mysql::new(source), asked, events, service, daemon, id)),
        Family::Postgresql => tokio::spawn(run(Postgresql::new(source), asked, events, service, daemon, id)),
    };
    Task { id, source: source.clone(), asks, last_attempt: None, last_success: None, error: None }
}

/// One collection within [`TIMEOUT`]; a kept connection that broke under the request (the server closed it
/// while idle, or restarted) gets one more try on a new one.
async fn collect_once(collector: &mut impl Collector) -> Result<Reading, CollectError> {
    let attempt = async {
        let reused = collector.connected();
        match collector.collect().await {
            Err(err) if reused && err.broken_connection() => collector.collect().await,
            other => other,
        }
    };
    let outcome = tokio::time::timeout(TIMEOUT, attempt).await;
    outcome.unwrap_or_else(|_| {
        collector.disconnect();
        Err(CollectError::Timeout { after: TIMEOUT })
    })
}

async fn run(
    mut collector: impl Collector,
    mut asked: mpsc::Receiver<()>,
    events: mpsc::Sender<Event>,
    service: String,
    daemon: Family,
    task: u64,
) {
    let mut instance: Option<String> = None;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut last_error: Option<Arc<CollectError>> = None;
    while asked.recv().await.is_some() {
        let backing_off = retry_at.filter(|at| Instant::now() < *at).zip(last_error.clone());
        let result = if let Some((at, error)) = backing_off {
            Err(Failure { error, retry_in: Some(at - Instant::now()) })
        } else {
            match collect_once(&mut collector).await {
                Ok(reading) => {
                    failures = 0;
                    retry_at = None;
                    let restarted = reading.instance.is_some() && instance.is_some() && reading.instance != instance;
                    if reading.instance.is_some() {
                        instance.clone_from(&reading.instance);
                    }
                    Ok(Collected { reading, restarted })
                }
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_secs(1u64 << (failures - 1).min(6)).min(MAX_BACKOFF);
                    retry_at = Some(Instant::now() + wait);
                    let error = Arc::new(err);
                    last_error = Some(error.clone());
                    Err(Failure { error, retry_in: None })
                }
            }
        };
        let report = Report { service: service.clone(), daemon, task, at: Instant::now(), result };
        if events.send(Event::Collected(report)).await.is_err() {
            break;
        }
    }
}

impl Daemon {
    /// Starts and ends collection tasks to match the configuration's checks.
    pub(super) fn sync_collections(&mut self) {
        let wanted: Vec<(String, DaemonSource)> = self
            .services
            .values()
            .flat_map(|s| s.check.daemons.iter().map(|d| (s.check.name.clone(), d.clone())))
            .collect();
        self.collections.sync(wanted.iter().map(|(s, d)| (s.as_str(), d)), &self.executor);
    }

    /// A collection came back: its values (or its failure) become a sample of the service, recorded for `show`,
    /// `/metrics` and statsd like the cycle's, and stepped through the engine.
    pub(super) fn collected(&mut self, report: Report) {
        let Report { service, daemon, task, at, result } = report;
        let Some(entry) = self.collections.tasks.get_mut(&(service.clone(), daemon)).filter(|t| t.id == task) else {
            return;
        };
        let now = Timestamp::from_millis(at.saturating_duration_since(self.origin).as_millis() as u64);
        entry.last_attempt = Some(now);
        let mut sample = Sample::new(Target::Service(service.clone()));
        match result {
            Ok(Collected { reading, restarted }) => {
                entry.last_success = Some(now);
                if entry.error.take().is_some() {
                    tracing::info!("collect: service `{service}`: {daemon} at {} answers again", entry.source.address);
                }
                if restarted {
                    tracing::info!("collect: service `{service}`: {daemon} restarted; its counters start over");
                }
                for (name, value) in reading.values {
                    sample.values.insert(MetricName::new(daemon.name(), Some(name)), value);
                }
                sample = sample.collection(daemon, Collection::Reached { restarted });
            }
            Err(error) => {
                if entry.error.is_none() {
                    tracing::warn!("collect: service `{service}`: {daemon} unreachable: {error}");
                }
                entry.error = Some(error);
                sample = sample.collection(daemon, Collection::Failed);
            }
        }
        let mut lines = Vec::new();
        self.record(&sample, now, &mut lines);
        if let Some(statsd) = &mut self.statsd {
            statsd.send(&lines);
        }
        self.step(Input::Sample(sample), now);
    }
}

/// Whether `metric` of a sample must not be converted from the previous one: a counter of a server that
/// restarted since.
pub(super) fn across_restart(sample: &Sample, metric: &MetricName, shown: &history::Shown) -> bool {
    shown.kind != MetricKind::Gauge
        && sample
            .daemons
            .iter()
            .any(|(d, c)| *c == Collection::Reached { restarted: true } && d.name() == metric.family)
}
