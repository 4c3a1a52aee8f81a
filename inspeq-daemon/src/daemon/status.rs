//! The daemon's state as the control protocol's [`Status`]: what `inspeqctl
//! status` prints and `export` dumps. Engine and init types stay unserialisable;
//! this is where they become protocol values.

use super::Daemon;
use crate::{
    control::protocol::{AlertHealth, JobStatus, KernelHealth, MetricValue, RuleStatus, ServiceStatus, Status, WorkerCounts},
    engine::{Phase, Target},
    export::prometheus,
    init::ServiceState,
    kernel::Mode,
};

fn rules(daemon: &Daemon, target: &Target) -> Vec<RuleStatus> {
    daemon
        .engine
        .rule_phases(target)
        .into_iter()
        .map(|(rule, phase)| RuleStatus {
            rule: rule.text.clone(),
            state: match phase {
                Phase::Ok => "ok",
                Phase::Triggered => "triggered",
                Phase::Recovered => "recovered",
            }
            .into(),
            value: None,
        })
        .collect()
}

impl Daemon {
    /// What the Prometheus page shows.
    pub(super) fn snapshot(&mut self) -> prometheus::Snapshot {
        let stats = self.monitor.stats();
        let outbox = self.outbox.stats();
        let mut rules = Vec::new();
        let targets = std::iter::once(Target::Host).chain(self.services.keys().map(|n| Target::Service(n.clone())));
        for target in targets {
            for (rule, phase) in self.engine.rule_phases(&target) {
                rules.push((target.to_string(), rule.text.clone(), phase != Phase::Ok));
            }
        }
        prometheus::Snapshot {
            metrics: self.history.latest().map(|(t, m, v)| (t.to_owned(), m.to_owned(), v)).collect(),
            rules,
            services: self.services.iter().map(|(n, s)| (n.clone(), s.main_pid().is_some(), self.engine.counts(n).0)).collect(),
            alerts_raised: self.raised,
            alerts_delivered: outbox.delivered,
            alert_send_failures: outbox.failed_sends,
            alerts_pending: self.outbox.pending() as u64,
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
        let blind_spots = mode.blind_spots().iter().map(|b| (*b).to_owned()).collect();
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
                    processes: s.members.len().max(usize::from(s.main_pid().is_some())),
                    restarts,
                    workers: WorkerCounts { crashed, oom_killed },
                    rules: rules(self, &Target::Service(name.clone())),
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
            host: rules(self, &Target::Host),
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
            },
        }
    }
}
