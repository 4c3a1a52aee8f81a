//! The cycle: sampling host and service metrics for the rules, asking the
//! collection tasks for daemon metrics (`collect.rs`), recording what is
//! sampled for `show`, statsd and Prometheus, and the kernel watch settings a
//! service's rules need.

use std::path::{Path, PathBuf};

use super::{Daemon, history};
use crate::{
    config::{self, model::Condition},
    engine::{Input, Sample, Target, Timestamp},
    export::{
        prometheus,
        statsd::{self, StatsdKind},
    },
    kernel::{RssLimits, WatchSettings},
    metrics,
};

/// What a check's rules read of its processes each cycle.
fn process_needs(check: &config::model::Check) -> metrics::process::Needs {
    check.rules.iter().fold(metrics::process::Needs::default(), |needs, rule| match &rule.condition {
        Condition::Metric(m) => needs.and(metrics::process::Needs::of(&m.metric.to_string())),
        _ => needs,
    })
}

impl Daemon {
    /// The kernel watch settings a service's rules need.
    pub(super) fn watch_settings(check: &config::model::Check) -> WatchSettings {
        let mut settings = WatchSettings { forks: false, rss: None, total_rss: None, listeners: false };
        for rule in &check.rules {
            match &rule.condition {
                Condition::Forks { .. } => settings.forks = true,
                // The kernel reports the close of a listening socket of the service the moment it happens.
                Condition::ListenerStopped { .. } => settings.listeners = true,
                Condition::Metric(m)
                    if m.metric.family == "memory" && matches!(m.op, config::ast::Op::Gt | config::ast::Op::Ge) =>
                {
                    // The kernel reports reaching its threshold (>=), in whole pages: for
                    // `> 64m` a crossing exactly at 64 MiB (one page at a time, no huge
                    // page overshooting it) would not satisfy the rule, and no second
                    // crossing would come. So `>` asks for one byte more.
                    let value = m.threshold.value as u64;
                    let bytes = if matches!(m.op, config::ast::Op::Gt) { value.saturating_add(1) } else { value };
                    match m.metric.name.as_deref() {
                        Some("rss") => {
                            let lowest = settings.rss.map_or(bytes, |r| r.threshold.min(bytes));
                            settings.rss = Some(RssLimits::threshold(lowest));
                        }
                        // The kernel keeps the service's total and reports its crossing.
                        Some("total_rss") => {
                            settings.total_rss = Some(settings.total_rss.map_or(bytes, |t| t.min(bytes)))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        settings
    }

    /// Records `sample`'s values in the history and as statsd lines, each in its
    /// metric's catalogue unit, by the engine's own conversion from the previous
    /// sample it keeps: so before the engine steps `sample`. A value that cannot
    /// be known yet (CPU's first sample) is left out, as the rules skip it.
    pub(super) fn record(&mut self, sample: &Sample, now: Timestamp, lines: &mut Vec<String>) {
        let target = sample.target.to_string();
        for (metric, raw) in &sample.values {
            let Some(shown) = history::shown(&sample.target, metric, sample.cores.unwrap_or(1)) else { continue };
            if super::collect::across_restart(sample, metric, &shown) {
                continue;
            }
            let Some(reading) = self.engine.reading(&sample.target, metric, shown.kind, *raw, shown.cores, now) else {
                continue;
            };
            let name = metric.to_string();
            self.history.record(&target, &name, reading.value);
            if self.statsd.is_none() {
                continue;
            }
            // statsd sums counters itself: a counter goes as its change this cycle.
            lines.push(match reading.delta {
                Some(delta) => statsd::line(&self.hostname, &target, &name, delta, StatsdKind::Counter),
                None => statsd::line(&self.hostname, &target, &name, reading.value, StatsdKind::Gauge),
            });
        }
    }

    /// The cycle: look up services that are not up, sample the host, ask the
    /// collection tasks, and start sampling the services, in slices
    /// ([`Self::sample_slice`]) so that an event never waits for more than one.
    pub(super) fn cycle(&mut self) {
        if self.sampling.is_some() {
            // The last cycle's slices are not done (a loop busy for a whole cycle): finish them first.
            while self.sampling.is_some() {
                self.sample_slice();
            }
        }
        let now = self.now();
        let started = crate::timing::enabled().then(std::time::Instant::now);
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            let up = self.services.get(name).is_some_and(|s| s.main_pid().is_some());
            if !up {
                self.lookup(name);
            }
        }
        let mut lines = Vec::new();
        if let Some(host) = &self.config.host {
            let mounts: Vec<PathBuf> = host
                .rules
                .iter()
                .filter_map(|r| match &r.condition {
                    Condition::Metric(m) if m.metric.family == "disk" => m.metric.name.as_ref().map(PathBuf::from),
                    _ => None,
                })
                .collect();
            let mount_refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
            let values = metrics::host::sample(&mount_refs);
            // Per-core values too, though rules name totals only: the engine keeps
            // their previous sample, which show, export and statsd convert from.
            let sample =
                values.iter().fold(Sample::new(Target::Host).cores(metrics::host::cores()), |s, (m, v)| s.with(m, *v));
            self.record(&sample, now, &mut lines);
            self.step(Input::Sample(sample), now);
        }
        // Daemon metrics come back as events, each stepped when it arrives.
        self.collections.ask_all();
        self.probes.ask_all();
        self.list_listeners();
        self.sampling = Some(Sampling { now, names: names.into(), lines, started, spent: Default::default() });
    }

    /// Samples the next [`SLICE`] services of the cycle under way; after the
    /// last, steps the engine's cycle and sends what was sampled. The loop calls
    /// it between events while a cycle's sampling is under way.
    pub(super) fn sample_slice(&mut self) {
        let Some(mut sampling) = self.sampling.take() else { return };
        let now = sampling.now;
        for _ in 0..SLICE {
            let Some(name) = sampling.names.pop_front() else { break };
            self.sample_service(&name, now, &mut sampling);
        }
        if !sampling.names.is_empty() {
            self.sampling = Some(sampling);
            return;
        }
        self.step(Input::Cycle, now);
        if let Some(statsd) = &mut self.statsd {
            statsd.send(&sampling.lines);
        }
        if let Some(started) = sampling.started {
            let [sampled, recorded, stepped] = sampling.spent.map(|d| d.as_micros());
            crate::timing::stamp(
                "cycle",
                "-",
                format_args!(
                    " took_us={} sampling_us={sampled} recording_us={recorded} stepping_us={stepped}",
                    started.elapsed().as_micros()
                ),
            );
        }
        self.release_pages_in = match self.release_pages_in {
            Some(0) => {
                tokio::task::spawn_blocking(|| match super::footprint::release_clean_file_pages() {
                    Ok(kib) => tracing::info!("memory: {kib} KiB of start-up code pages given back to the page cache"),
                    Err(err) => tracing::debug!("memory: reading /proc/self/smaps: {err}"),
                });
                None
            }
            Some(n) => Some(n - 1),
            None => None,
        };
        if self.metrics_page.is_some() {
            let page = prometheus::render(&self.snapshot());
            if let Some(tx) = &self.metrics_page {
                tx.send_replace(page);
            }
        }
    }

    /// Samples one service for the cycle under way: only what its rules read.
    fn sample_service(&mut self, name: &str, now: Timestamp, sampling: &mut Sampling) {
        let Some(service) = self.services.get_mut(name) else { return };
        let Some(main) = service.main_pid() else { return };
        // Only what its rules read: a service whose rules are all events costs no read.
        let needs = process_needs(&service.check);
        if needs.nothing() {
            return;
        }
        let at = std::time::Instant::now();
        // The kernel keeps these only for the thresholds the watch was given.
        let settings = Self::watch_settings(&service.check);
        let kernel = metrics::process::KernelRss {
            main: settings.rss.and_then(|_| self.monitor.process_rss(main)),
            total: settings.total_rss.and(service.watch).and_then(|(id, _)| self.monitor.rss_total(id)),
        };
        let mut files = std::mem::take(&mut service.files);
        let service = &*service;
        let cgroup = service.own_cgroup();
        let values =
            metrics::process::sample_needed(needs, main, || service.live_members(), cgroup, kernel, &mut files);
        if let Some(service) = self.services.get_mut(name) {
            service.files = files;
        }
        let sample = values.iter().fold(Sample::new(Target::Service(name.to_owned())), |s, (m, v)| s.with(m, *v));
        let sampled = std::time::Instant::now();
        self.record(&sample, now, &mut sampling.lines);
        let recorded = std::time::Instant::now();
        self.step(Input::Sample(sample), now);
        sampling.spent[0] += sampled - at;
        sampling.spent[1] += recorded - sampled;
        sampling.spent[2] += recorded.elapsed();
    }
}

/// How many services one slice of the cycle samples: at most about a
/// millisecond of reads before the loop takes the next event.
const SLICE: usize = 16;

/// A cycle's sampling under way.
pub(super) struct Sampling {
    /// The cycle's instant, for every slice's samples.
    now: Timestamp,
    /// The services not sampled yet.
    names: std::collections::VecDeque<String>,
    /// statsd lines so far.
    lines: Vec<String>,
    /// For the `timing: cycle` line: when it began, and the time spent sampling, recording, stepping.
    started: Option<std::time::Instant>,
    spent: [std::time::Duration; 3],
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn settings(rules: &str) -> WatchSettings {
        let text = format!("check service web\n{rules}");
        let (config, diagnostics) = config::load::load([("services.d/web.inq", text.as_str())]);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        Daemon::watch_settings(&config.services[0])
    }

    /// The kernel reports RSS reaching its threshold in whole pages (per-CPU
    /// counters move in batches of 32), so a crossing can land exactly on a
    /// page-aligned `64m`: for `>` the kernel must be asked for one byte more, or
    /// that crossing would not satisfy the rule and no second one would come.
    #[test]
    fn memory_rules_ask_the_kernel_for_the_first_value_that_satisfies_them() {
        let s = settings("  if memory:rss > 64m then alert\n");
        assert_eq!(s.rss.map(|r| r.threshold), Some((64 << 20) + 1));
        let s = settings("  if memory:rss >= 64m then alert\n");
        assert_eq!(s.rss.map(|r| r.threshold), Some(64 << 20));
        let s = settings("  if memory:total_rss > 2g then alert\n  if memory:total_rss > 1g then alert\n");
        assert_eq!((s.rss, s.total_rss), (None, Some((1 << 30) + 1)));
        let s = settings("  if memory:rss < 64m then alert\n");
        assert_eq!((s.rss, s.total_rss), (None, None));
    }
}
