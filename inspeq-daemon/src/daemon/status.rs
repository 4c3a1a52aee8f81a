//! The daemon's state as the control protocol's [`Status`]: what `inspeqctl
//! status` prints and `export` dumps. Engine and init types stay unserialisable;
//! this is where they become protocol values.
//!
//! A service's process count is read when `status` is asked, from its cgroup's
//! `cgroup.procs` or its process tree ([`super::services::Service::live_members`]),
//! never from fork records. Each rule carries its value in its own terms
//! ([`rule_value`]).

use super::Daemon;
use crate::{
    alert::template,
    config::{
        metrics::{self, MetricKind, Scope, Unit as CatalogueUnit},
        model::{Condition, MetricRule, Rule},
    },
    control::protocol::{
        AlertHealth, JobStatus, KernelHealth, LastExit, LogHealth, MetricValue, RuleStatus, ServiceStatus, Status,
        Unit, WorkerCounts,
    },
    engine::{Phase, RuleValue, Target, Timestamp},
    exit::Exit,
    export::prometheus,
    init::ServiceState,
    kernel::Mode,
};

fn rules(daemon: &Daemon, target: &Target, now: Timestamp) -> Vec<RuleStatus> {
    daemon
        .engine
        .rules(target, now)
        .into_iter()
        .map(|view| {
            let mut shown = rule_value(view.rule, view.value.as_ref());
            if let Target::Service(service) = target
                && let Some(text) = collection_text(daemon, service, view.rule, &shown)
            {
                shown.text = text;
            }
            RuleStatus {
                rule: view.rule.text.clone(),
                state: match view.phase {
                    Phase::Ok => "ok",
                    Phase::Triggered => "triggered",
                    Phase::Recovered => "recovered",
                }
                .into(),
                value: shown.value,
                unit: shown.unit,
                value_text: shown.text,
                last_exit: shown.last_exit,
            }
        })
        .collect()
}

/// For a rule on a daemon family whose collection fails now: why, in place of the value (a failure is no zero).
fn collection_text(daemon: &Daemon, service: &str, rule: &Rule, shown: &Shown) -> Option<String> {
    match &rule.condition {
        Condition::Unreachable { daemon: family, .. } => {
            daemon.collections.error(service, *family).map(|e| format!("unreachable: {e}"))
        }
        Condition::Metric(m) if shown.value.is_none() => {
            let family = metrics::daemon_family(&m.metric.family)?;
            let error = daemon.collections.error(service, family.daemon)?;
            Some(format!("unknown: {} is unreachable: {error}", family.family))
        }
        _ => None,
    }
}

/// A rule's value as `status` gives it.
#[derive(Clone, Debug, PartialEq)]
struct Shown {
    value: Option<f64>,
    unit: Option<Unit>,
    text: String,
    last_exit: Option<LastExit>,
}

/// The unit of what a metric rule compares: its metric's, made a rate by `/sec`
/// (a counter's change over the cycle without it).
fn metric_rule_unit(rule: &MetricRule) -> Unit {
    match (rule.kind, rule.unit, rule.threshold.per_sec) {
        (MetricKind::CpuSeconds, _, false) | (_, CatalogueUnit::Percent, false) => Unit::Percent,
        (MetricKind::CpuSeconds, _, true) | (_, CatalogueUnit::Percent, true) => Unit::PercentPerSec,
        (_, CatalogueUnit::Bytes, false) => Unit::Bytes,
        (_, CatalogueUnit::Bytes, true) => Unit::BytesPerSec,
        (_, CatalogueUnit::Count, false) => Unit::Count,
        (_, CatalogueUnit::Count, true) => Unit::PerSec,
    }
}

/// `pid 7 was killed by signal 9 (SIGKILL), OOM-killed, asked for`: the alert's words.
fn exit_words(exit: &Exit, requested: bool) -> String {
    let mut text = format!("pid {} {}", exit.pid, template::exit_text(exit.status));
    if exit.oom_killed {
        text.push_str(", OOM-killed");
    }
    if requested {
        text.push_str(", asked for");
    }
    text
}

/// What a rule's value is in its own terms: a metric rule's last comparison in the
/// rule's unit; a `forks` rule's rate over its window and a `restarts` rule's count
/// in its window, as they stand now; for exit rules the main process's last exit
/// (typed in `last_exit`, and an `exit_code` rule's number is that exit's code).
/// Without a value, the text says why.
fn rule_value(rule: &Rule, value: Option<&RuleValue>) -> Shown {
    let none = |unit, text: String| Shown { value: None, unit, text, last_exit: None };
    match (&rule.condition, value) {
        (Condition::Metric(m), Some(RuleValue::Metric(v))) => {
            let unit = metric_rule_unit(m);
            Shown { value: Some(*v), unit: Some(unit), text: unit.format(*v), last_exit: None }
        }
        (Condition::Metric(m), _) => {
            let daemon = metrics::lookup(&m.metric.family, m.metric.name.as_deref(), Scope::Process)
                .ok()
                .and_then(|r| r.daemon)
                .filter(|d| !d.collected);
            let collected = metrics::daemon_family(&m.metric.family).is_some_and(|d| d.collected);
            let why = match (daemon, m.kind) {
                (Some(d), _) => format!("not sampled: inspeq does not collect {}:* metrics yet", d.family),
                (None, MetricKind::Gauge) if collected => {
                    "no sample yet (or the server does not report this field)".to_owned()
                }
                (None, _) if collected => "no value yet: a rate needs two samples of the same server".to_owned(),
                (None, MetricKind::Gauge) => "no sample yet".to_owned(),
                // The first sample of a cumulative value, or the first after the process restarted.
                (None, _) => "no value yet: a rate needs two samples of the same process".to_owned(),
            };
            none(Some(metric_rule_unit(m)), why)
        }
        (Condition::Unreachable { .. }, Some(RuleValue::Reached(reached))) => {
            none(None, if *reached { "reached".to_owned() } else { "unreachable".to_owned() })
        }
        (Condition::Unreachable { daemon, .. }, _) => none(None, format!("{daemon} not collected yet")),
        (Condition::Forks { .. }, Some(RuleValue::Forks { forks, window })) => {
            let rate = *forks as f64 / window.as_secs_f64().max(f64::MIN_POSITIVE);
            let text = format!(
                "{forks} fork{} in the last {} ({})",
                if *forks == 1 { "" } else { "s" },
                template::duration(window.as_secs()),
                Unit::PerSec.format(rate)
            );
            Shown { value: Some(rate), unit: Some(Unit::PerSec), text, last_exit: None }
        }
        (Condition::Restarts { .. }, Some(RuleValue::Restarts { restarts, window })) => {
            let text = format!(
                "{restarts} restart{} within {}",
                if *restarts == 1 { "" } else { "s" },
                template::duration(window.as_secs())
            );
            Shown { value: Some(*restarts as f64), unit: Some(Unit::Count), text, last_exit: None }
        }
        (Condition::Worker { .. }, Some(RuleValue::Workers { deaths, window })) => {
            let within = window.map_or_else(String::new, |w| format!(" within {}", template::duration(w.as_secs())));
            let text = format!("{deaths} worker death{}{within}", if *deaths == 1 { "" } else { "s" });
            Shown { value: Some(*deaths as f64), unit: Some(Unit::Count), text, last_exit: None }
        }
        (condition, Some(RuleValue::Exit { exit, requested })) => {
            let (value, unit) = match condition {
                // An unknown status has no code: the value is null, never a 0.
                Condition::ExitCode { .. } => (exit.status.code().map(f64::from), Some(Unit::ExitCode)),
                _ => (None, None),
            };
            // The protocol's own (versioned) shape, field by field.
            let last_exit = LastExit {
                pid: exit.pid,
                exit_code: exit.status.code(),
                signal: exit.status.signal(),
                core_dumped: exit.status.core_dumped(),
                oom_killed: exit.oom_killed,
                requested: *requested,
            };
            Shown {
                value,
                unit,
                text: format!("last exit: {}", exit_words(exit, *requested)),
                last_exit: Some(last_exit),
            }
        }
        (Condition::ExitCode { .. }, _) => none(Some(Unit::ExitCode), "no exit seen yet".to_owned()),
        _ => none(None, "no exit seen yet".to_owned()),
    }
}

impl Daemon {
    /// What the Prometheus page shows.
    pub(super) fn snapshot(&mut self) -> prometheus::Snapshot {
        let now = self.now();
        let stats = self.monitor.stats();
        let outbox = self.outbox.stats();
        let mut rules = Vec::new();
        let targets = std::iter::once(Target::Host).chain(self.services.keys().map(|n| Target::Service(n.clone())));
        for target in targets {
            for view in self.engine.rules(&target, now) {
                rules.push((target.to_string(), view.rule.text.clone(), view.phase != Phase::Ok));
            }
        }
        prometheus::Snapshot {
            metrics: self.history.latest().map(|(t, m, v)| (t.to_owned(), m.to_owned(), v)).collect(),
            rules,
            services: self
                .services
                .iter()
                .map(|(n, s)| (n.clone(), s.main_pid().is_some(), self.engine.counts(n).0))
                .collect(),
            alerts_raised: self.raised,
            alerts_delivered: outbox.delivered,
            alert_send_failures: outbox.failed_sends,
            alerts_pending: self.outbox.pending() as u64,
            alerts_unpersisted: outbox.unpersisted,
            outbox_unreadable: outbox.unreadable,
            log_dropped_lines: crate::logging::dropped_lines(),
            kernel_emitted: stats.emitted,
            kernel_dropped: stats.dropped,
            kernel_ebpf: matches!(self.monitor.mode(), Mode::Ebpf),
        }
    }

    pub(super) fn status(&mut self, with_metrics: bool) -> Status {
        let now = self.now();
        let stats = self.monitor.stats();
        let mode = self.monitor.mode();
        let (tier, fallback_reason) = (mode.name().to_owned(), mode.reason().map(str::to_owned));
        // The tier's, and those of eBPF programs this kernel could not attach.
        let blind_spots = self.monitor.blind_spots().iter().map(|b| (*b).to_owned()).collect();
        let services = self
            .services
            .iter()
            .map(|(name, s)| {
                let (restarts, crashed, oom_killed) = self.engine.counts(name);
                let state = match s.status.as_ref().map(|st| st.state) {
                    _ if self.engine.is_unmonitored(name) => "unmonitored",
                    Some(ServiceState::Up) => "up",
                    Some(ServiceState::Starting) => "starting",
                    Some(ServiceState::Stopping) => "stopping",
                    Some(ServiceState::Down) => "down",
                    Some(ServiceState::NotFound) | None => "not_found",
                };
                ServiceStatus {
                    name: name.clone(),
                    init: s.backend.as_ref().map(|b| b.kind().name().to_owned()).unwrap_or_default(),
                    state: state.into(),
                    pid: s.main_pid(),
                    cgroup: s.status.as_ref().and_then(|st| st.cgroup.as_ref()).map(|c| c.path.display().to_string()),
                    watched_by: s.watch.map(|(_, how)| how.to_owned()),
                    wrapper: s.status.as_ref().and_then(|st| st.wrapper.as_ref()).map(|w| format!("{w:?}")),
                    // Read now, one cgroup.procs (or one tree) per service: 500
                    // services cost about 16 ms of the loop (docs/performance.md).
                    processes: s.live_members().len(),
                    restarts,
                    workers: WorkerCounts { crashed, oom_killed },
                    rules: rules(self, &Target::Service(name.clone()), now),
                    collections: self.collections.status(name, now),
                }
            })
            .collect();
        let outbox = self.outbox.stats();
        Status {
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            cycle_secs: self.config.settings.cycle_time.as_secs(),
            silenced_for_secs: self.engine.silenced_until(now).map(|until| until.since(now).as_secs()),
            kernel: KernelHealth {
                mode: tier,
                fallback_reason,
                blind_spots,
                emitted: stats.emitted,
                dropped: stats.dropped,
                observations: self.observations,
                missing_tracepoints: self.monitor.missing_tracepoints().to_vec(),
            },
            services,
            host: rules(self, &Target::Host, now),
            jobs: self
                .engine
                .jobs()
                .map(|(job, last_run, overdue)| JobStatus {
                    name: job.name.clone(),
                    every_secs: job.every.as_secs(),
                    last_run_secs_ago: Some(now.since(last_run).as_secs()),
                    overdue,
                })
                .collect(),
            metrics: if with_metrics {
                self.history
                    .latest()
                    .map(|(t, m, v)| MetricValue { target: t.to_owned(), metric: m.to_owned(), value: v })
                    .collect()
            } else {
                Vec::new()
            },
            alerts: AlertHealth {
                raised: self.raised,
                delivered: outbox.delivered,
                failed_attempts: outbox.failed_sends,
                pending: self.outbox.pending() as u64,
                unpersisted: outbox.unpersisted,
                unreadable: outbox.unreadable,
            },
            log: LogHealth { dropped_lines: crate::logging::dropped_lines() },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::exit::ExitStatus;

    /// The rules of one `check service web` with `rules`.
    fn rules_of(rules: &str) -> Vec<Rule> {
        let text = format!("check service web\n{rules}");
        let (config, diagnostics) = crate::config::load::load([("services.d/web.inq", text.as_str())]);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        config.services[0].rules.clone()
    }

    fn shown(rule: &str, value: Option<RuleValue>) -> Shown {
        let rule = rules_of(&format!("  if {rule} then alert\n")).remove(0);
        rule_value(&rule, value.as_ref())
    }

    #[test]
    fn metric_rules_show_their_last_comparison_in_the_rules_unit() {
        let s = shown("cpu:total_user > 90%", Some(RuleValue::Metric(20.04)));
        assert_eq!((s.value, s.unit, s.text.as_str()), (Some(20.04), Some(Unit::Percent), "20.0%"));
        let s = shown("memory:rss > 64m", Some(RuleValue::Metric(96.0 * 1048576.0)));
        assert_eq!((s.unit, s.text.as_str()), (Some(Unit::Bytes), "96.0m"));
        let s = shown("mysql:Queries > 1k/sec", Some(RuleValue::Metric(12.5)));
        assert_eq!((s.unit, s.text.as_str()), (Some(Unit::PerSec), "12.50/s"));
        let s = shown("mysql:Queries > 1000", Some(RuleValue::Metric(300.0)));
        assert_eq!((s.unit, s.text.as_str()), (Some(Unit::Count), "300"));
        let s = shown("mysql:Bytes_sent > 1m/sec", Some(RuleValue::Metric(2048.0)));
        assert_eq!((s.unit, s.text.as_str()), (Some(Unit::BytesPerSec), "2.0k/s"));
    }

    #[test]
    fn a_metric_rule_without_a_value_says_why() {
        let s = shown("cpu:total_user > 90%", None);
        assert_eq!((s.value, s.unit), (None, Some(Unit::Percent)));
        assert_eq!(s.text, "no value yet: a rate needs two samples of the same process");
        assert_eq!(shown("memory:rss > 64m", None).text, "no sample yet");
        assert_eq!(
            shown("mysql:Queries > 1k/sec", None).text,
            "no value yet: a rate needs two samples of the same server"
        );
        assert_eq!(
            shown("mysql:Threads_connected > 100", None).text,
            "no sample yet (or the server does not report this field)"
        );
    }

    #[test]
    fn forks_and_restarts_show_their_windows_now() {
        let s = shown("forks > 10/sec", Some(RuleValue::Forks { forks: 30, window: Duration::from_secs(15) }));
        assert_eq!(
            (s.value, s.unit, s.text.as_str()),
            (Some(2.0), Some(Unit::PerSec), "30 forks in the last 15s (2/s)")
        );
        let s = shown(
            "restarts > 3 within 5 minutes",
            Some(RuleValue::Restarts { restarts: 1, window: Duration::from_secs(300) }),
        );
        assert_eq!((s.value, s.unit, s.text.as_str()), (Some(1.0), Some(Unit::Count), "1 restart within 5m"));
    }

    #[test]
    fn exit_rules_show_the_last_exit() {
        let killed = RuleValue::Exit {
            exit: Exit::new(7, ExitStatus::Signal { signal: 9, core_dumped: false }),
            requested: false,
        };
        let s = shown("crashed", Some(killed.clone()));
        assert_eq!((s.value, s.unit), (None, None));
        assert_eq!(s.text, "last exit: pid 7 was killed by signal 9 (SIGKILL)");
        assert_eq!(
            s.last_exit,
            Some(LastExit {
                pid: 7,
                exit_code: None,
                signal: Some(9),
                core_dumped: false,
                oom_killed: false,
                requested: false
            })
        );
        // An exit_code rule's number is the code; a signal leaves it null.
        assert_eq!(shown("exit_code == 75", Some(killed)).value, None);
        let asked = RuleValue::Exit { exit: Exit::new(8, ExitStatus::Code(75)), requested: true };
        let s = shown("exit_code == 75", Some(asked));
        assert_eq!(
            (s.value, s.unit, s.text.as_str()),
            (Some(75.0), Some(Unit::ExitCode), "last exit: pid 8 exited with code 75, asked for")
        );
        let s = shown("exited", None);
        assert_eq!((s.value, s.text.as_str(), s.last_exit), (None, "no exit seen yet", None));
        // Unknown stays unknown: no code (not a 0) for an exit_code rule, the alert's words for it.
        let unknown = RuleValue::Exit { exit: Exit::new(9, ExitStatus::Unknown), requested: false };
        let s = shown("exit_code == 0", Some(unknown));
        assert_eq!(
            (s.value, s.text.as_str(), s.last_exit.map(|e| (e.exit_code, e.signal))),
            (None, "last exit: pid 9 exited with an unknown status", Some((None, None)))
        );
    }
}
