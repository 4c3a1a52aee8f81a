//! From raw samples to the value a rule compares: gauges as they are, counters as the change since the previous
//! sample, CPU seconds as a percentage of the interval. A value that cannot be known yet is `None`, and the rule
//! is skipped for that cycle rather than compared against a made-up 0 or -1.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::metrics::MetricKind;
use crate::config::model::{MetricName, MetricRule};
use crate::engine::input::Sample;
use crate::engine::time::Timestamp;

/// The previous raw value of each metric of a target, and when it was taken.
pub type Previous = BTreeMap<MetricName, (f64, Timestamp)>;

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
    if !current.is_finite() {
        return None;
    }
    let cycle_secs = cycle_time.as_secs_f64().max(f64::MIN_POSITIVE);
    match rule.kind {
        MetricKind::Gauge => Some(if rule.threshold.per_sec {
            current / cycle_secs
        } else {
            current
        }),
        MetricKind::Counter | MetricKind::CpuSeconds => {
            let (before, then) = *previous.get(&rule.metric)?;
            let delta = current - before;
            let elapsed = now.since(then).as_secs_f64();
            // A counter going backwards means the process (or daemon) restarted: no honest delta this cycle.
            if delta < 0.0 || elapsed <= 0.0 {
                return None;
            }
            if rule.kind == MetricKind::Counter {
                return Some(if rule.threshold.per_sec {
                    delta / elapsed
                } else {
                    delta
                });
            }
            let cores = if host {
                f64::from(sample.cores.unwrap_or(1).max(1))
            } else {
                1.0
            };
            let percent = delta / elapsed / cores * 100.0;
            Some(if rule.threshold.per_sec {
                percent / cycle_secs
            } else {
                percent
            })
        }
    }
}
