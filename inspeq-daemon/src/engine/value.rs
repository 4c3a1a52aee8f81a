//! From raw samples to the value a rule compares: gauges as they are, counters as the change since the previous
//! sample, CPU seconds as a percentage of the interval. A value that cannot be known yet is `None`, and the rule
//! is skipped for that cycle rather than compared against a made-up 0 or -1.
//!
//! The same conversion gives `show`, `export`, the Prometheus page and statsd their values ([`reading`]), so what
//! operators see is what the rules compare.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::metrics::MetricKind;
use crate::config::model::{MetricName, MetricRule};
use crate::engine::input::Sample;
use crate::engine::time::Timestamp;

/// The previous raw value of each metric of a target, and when it was taken.
pub type Previous = BTreeMap<MetricName, (f64, Timestamp)>;

/// How far a cumulative value (a counter, CPU seconds) moved since the previous sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Change {
    pub delta: f64,
    pub secs: f64,
}

impl Change {
    /// The change per second.
    #[must_use]
    pub fn per_sec(self) -> f64 {
        self.delta / self.secs
    }

    /// CPU seconds as the share of the interval spent on `cores` cores, in percent.
    #[must_use]
    pub fn cpu_percent(self, cores: u32) -> f64 {
        self.per_sec() / f64::from(cores.max(1)) * 100.0
    }
}

/// The change from `previous` to `current` at `now`; `None` without a previous sample, when no time passed, or
/// when the value went backwards: the process (or the daemon behind the counter) restarted, so there is no honest
/// change this cycle.
#[must_use]
pub fn change(current: f64, previous: Option<(f64, Timestamp)>, now: Timestamp) -> Option<Change> {
    let (before, then) = previous?;
    let delta = current - before;
    let secs = now.since(then).as_secs_f64();
    (current.is_finite() && delta >= 0.0 && secs > 0.0).then_some(Change { delta, secs })
}

/// A sampled metric in the unit the catalogue gives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// A gauge as sampled, CPU seconds as a percentage of the interval (of `cores` cores), a counter per second:
    /// what a rule on the metric compares (for a counter, what a `/sec` rule compares).
    pub value: f64,
    /// For a counter: its change since the previous sample, which a rule without `/sec` compares (and statsd's
    /// counters carry).
    pub delta: Option<f64>,
}

/// `current`, a raw sample of a metric of `kind`, as [`Reading`]; `None` for a cumulative metric until it has a
/// previous sample (see [`change`]).
#[must_use]
pub fn reading(
    kind: MetricKind,
    current: f64,
    previous: Option<(f64, Timestamp)>,
    now: Timestamp,
    cores: u32,
) -> Option<Reading> {
    if !current.is_finite() {
        return None;
    }
    match kind {
        MetricKind::Gauge => Some(Reading { value: current, delta: None }),
        MetricKind::Counter => {
            change(current, previous, now).map(|c| Reading { value: c.per_sec(), delta: Some(c.delta) })
        }
        MetricKind::CpuSeconds => {
            change(current, previous, now).map(|c| Reading { value: c.cpu_percent(cores), delta: None })
        }
    }
}

#[must_use]
pub fn rule_value(
    rule: &MetricRule,
    sample: &Sample,
    previous: &Previous,
    now: Timestamp,
    cycle_time: Duration,
    host: bool,
) -> Option<f64> {
    let current = *sample.values.get(&rule.metric)?;
    // Host CPU is a share of every core; a process's is of one core, like top(1).
    let cores = if host { sample.cores.unwrap_or(1) } else { 1 };
    let read = reading(rule.kind, current, previous.get(&rule.metric).copied(), now, cores)?;
    let cycle_secs = cycle_time.as_secs_f64().max(f64::MIN_POSITIVE);
    Some(match (rule.kind, read.delta) {
        (MetricKind::Counter, Some(delta)) if !rule.threshold.per_sec => delta,
        (MetricKind::Counter, _) => read.value,
        // `/sec` on a gauge or CPU divides by the cycle time (the checker warns that it makes no sense).
        _ if rule.threshold.per_sec => read.value / cycle_secs,
        _ => read.value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(100);
    const T15: Timestamp = Timestamp::from_secs(115);

    #[test]
    fn a_gauge_reads_as_sampled() {
        let r = reading(MetricKind::Gauge, 64.0, None, T0, 1).unwrap();
        assert_eq!(r, Reading { value: 64.0, delta: None });
        assert_eq!(reading(MetricKind::Gauge, f64::NAN, None, T0, 1), None);
    }

    #[test]
    fn cpu_seconds_read_as_a_percentage_of_the_interval() {
        // 3 CPU seconds in 15 s: 20 % of one core, 10 % of a 2-core host.
        let r = reading(MetricKind::CpuSeconds, 13.0, Some((10.0, T0)), T15, 1).unwrap();
        assert!((r.value - 20.0).abs() < 1e-9, "{r:?}");
        let r = reading(MetricKind::CpuSeconds, 13.0, Some((10.0, T0)), T15, 2).unwrap();
        assert!((r.value - 10.0).abs() < 1e-9, "{r:?}");
        // Cumulative seconds alone mean nothing: no previous sample, no reading.
        assert_eq!(reading(MetricKind::CpuSeconds, 13.0, None, T15, 1), None);
    }

    #[test]
    fn a_counter_reads_per_second_and_keeps_its_change() {
        let r = reading(MetricKind::Counter, 1300.0, Some((1000.0, T0)), T15, 1).unwrap();
        assert_eq!(r, Reading { value: 20.0, delta: Some(300.0) });
    }

    #[test]
    fn a_restart_or_no_elapsed_time_gives_no_value() {
        assert_eq!(change(5.0, Some((10.0, T0)), T15), None, "went backwards");
        assert_eq!(change(15.0, Some((10.0, T15)), T15), None, "no time passed");
        assert_eq!(change(15.0, None, T15), None);
        assert_eq!(change(15.0, Some((10.0, T0)), T15), Some(Change { delta: 5.0, secs: 15.0 }));
    }
}
