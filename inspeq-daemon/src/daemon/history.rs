//! The recent values of every sampled metric, per target: what `inspeqctl show`
//! draws, `export` reports and the Prometheus page serves. A fixed number of
//! cycles per metric, like Inspeqtor's one hour at 15 s cycles, kept across reloads.
//!
//! Values are kept in the metric's catalogue unit, converted by the engine's own
//! conversion (`engine::value::reading`) from the raw samples: CPU seconds as a
//! percentage, counters per second, gauges as sampled. So `show` draws what the
//! rules compare, never cumulative seconds or totals; [`shown`] says how a
//! sampled metric is converted and in which unit it is shown.

use std::collections::{BTreeMap, VecDeque};

use crate::{
    config::{
        metrics::{self, MetricKind, Scope, Unit as CatalogueUnit},
        model::MetricName,
    },
    control::protocol::Unit,
    engine::Target,
};

/// How many samples each metric keeps.
pub const SLOTS: usize = 240;

/// Target → metric → values: nested, so that a cycle's record looks a series up
/// by borrowed names and allocates only for a new one.
#[derive(Default)]
pub struct History {
    series: BTreeMap<String, BTreeMap<String, VecDeque<f64>>>,
}

impl History {
    /// Adds a value in the metric's catalogue unit (see [`shown`]).
    pub fn record(&mut self, target: &str, metric: &str, value: f64) {
        if !self.series.contains_key(target) {
            self.series.insert(target.to_owned(), BTreeMap::new());
        }
        let Some(metrics) = self.series.get_mut(target) else { return };
        if !metrics.contains_key(metric) {
            metrics.insert(metric.to_owned(), VecDeque::with_capacity(SLOTS));
        }
        let Some(series) = metrics.get_mut(metric) else { return };
        if series.len() == SLOTS {
            series.pop_front();
        }
        series.push_back(value);
    }

    /// Oldest first.
    pub fn values(&self, target: &str, metric: &str) -> Vec<f64> {
        self.series
            .get(target)
            .and_then(|metrics| metrics.get(metric))
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The latest value of every metric, for `export`.
    pub fn latest(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.series
            .iter()
            .flat_map(|(t, metrics)| metrics.iter().map(move |(m, s)| (t, m, s)))
            .filter_map(|(t, m, s)| Some((t.as_str(), m.as_str(), *s.back()?)))
    }

    /// Forgets targets no longer configured.
    pub fn retain_targets(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|t, _| keep(t));
    }
}

/// How a sampled metric is converted and shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shown {
    /// What the raw samples are, as the catalogue says.
    pub kind: MetricKind,
    /// What the converted values are in.
    pub unit: Unit,
    /// What a CPU percentage is a share of: every core for the host's totals, one
    /// for a core's own figure and for a service (like top(1)).
    pub cores: u32,
}

/// `metric` of `target` as the catalogue defines it, the host having `host_cores`
/// cores. The host's per-core CPU (`cpu:coreN`: for `show`, export and statsd,
/// never named by rules) is CPU seconds of one core. `None` for a metric the
/// catalogue does not know.
pub fn shown(target: &Target, metric: &MetricName, host_cores: u32) -> Option<Shown> {
    if *target == Target::Host && crate::metrics::host::is_per_core(&metric.to_string()) {
        return Some(Shown { kind: MetricKind::CpuSeconds, unit: Unit::Percent, cores: 1 });
    }
    let (scope, cores) = match target {
        Target::Host => (Scope::Host, host_cores.max(1)),
        Target::Service(_) => (Scope::Process, 1),
    };
    let resolved = metrics::lookup(&metric.family, metric.name.as_deref(), scope).ok()?;
    let unit = match (resolved.kind, resolved.unit) {
        (MetricKind::CpuSeconds, _) | (MetricKind::Gauge, CatalogueUnit::Percent) => Unit::Percent,
        (MetricKind::Gauge, CatalogueUnit::Bytes) => Unit::Bytes,
        (MetricKind::Gauge, CatalogueUnit::Count) => Unit::Count,
        (MetricKind::Counter, CatalogueUnit::Bytes) => Unit::BytesPerSec,
        (MetricKind::Counter, _) => Unit::PerSec,
    };
    Some(Shown { kind: resolved.kind, unit, cores })
}

/// The unit `show` gives `metric` of `target` (`host` or a service), as named on
/// the command line.
pub fn unit_of(target: &str, metric: &str) -> Option<Unit> {
    let target = if target == "host" { Target::Host } else { Target::Service(target.to_owned()) };
    let (family, name) = match metric.split_once(':') {
        Some((family, name)) => (family, Some(name)),
        None => (metric, None),
    };
    // The unit does not depend on the core count.
    shown(&target, &MetricName::new(family, name), 1).map(|s| s.unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_bounded_window_per_metric() {
        let mut h = History::default();
        for i in 0..(SLOTS + 10) {
            h.record("host", "load:1", i as f64);
        }
        let v = h.values("host", "load:1");
        assert_eq!(v.len(), SLOTS);
        assert_eq!(v[0], 10.0);
        assert_eq!(h.latest().collect::<Vec<_>>(), vec![("host", "load:1", (SLOTS + 9) as f64)]);
        assert!(h.values("host", "swap").is_empty());
        h.retain_targets(|t| t != "host");
        assert_eq!(h.latest().count(), 0);
    }

    fn name(text: &str) -> MetricName {
        let (family, name) = text.split_once(':').map_or((text, None), |(f, n)| (f, Some(n)));
        MetricName::new(family, name)
    }

    /// Every family the daemon samples, in the unit the catalogue gives it.
    #[test]
    fn every_sampled_metric_is_shown_in_its_catalogue_unit() {
        use MetricKind::{Counter, CpuSeconds, Gauge};
        let web = Target::Service("web".into());
        let shown_as =
            |target: &Target, metric: &str| shown(target, &name(metric), 4).map(|s| (s.kind, s.unit, s.cores));
        // A service's CPU, its own and its processes' together, is a share of one core.
        for cpu in ["cpu:user", "cpu:system", "cpu:total", "cpu:total_user", "cpu:total_system"] {
            assert_eq!(shown_as(&web, cpu), Some((CpuSeconds, Unit::Percent, 1)), "{cpu}");
        }
        assert_eq!(shown_as(&web, "memory:rss"), Some((Gauge, Unit::Bytes, 1)));
        assert_eq!(shown_as(&web, "memory:total_rss"), Some((Gauge, Unit::Bytes, 1)));
        // The host's CPU totals are a share of all its cores, each core's of itself.
        for cpu in [
            "cpu",
            "cpu:total",
            "cpu:user",
            "cpu:nice",
            "cpu:system",
            "cpu:iowait",
            "cpu:irq",
            "cpu:softirq",
            "cpu:steal",
        ] {
            assert_eq!(shown_as(&Target::Host, cpu), Some((CpuSeconds, Unit::Percent, 4)), "{cpu}");
        }
        assert_eq!(shown_as(&Target::Host, "cpu:core3"), Some((CpuSeconds, Unit::Percent, 1)));
        assert_eq!(shown_as(&Target::Host, "load:1"), Some((Gauge, Unit::Count, 4)));
        assert_eq!(shown_as(&Target::Host, "memory:used"), Some((Gauge, Unit::Percent, 4)));
        assert_eq!(shown_as(&Target::Host, "memory:available"), Some((Gauge, Unit::Bytes, 4)));
        assert_eq!(shown_as(&Target::Host, "swap"), Some((Gauge, Unit::Percent, 4)));
        assert_eq!(shown_as(&Target::Host, "disk:/var"), Some((Gauge, Unit::Percent, 4)));
        // Daemon families: counters per second, gauges as they are.
        assert_eq!(shown_as(&web, "mysql:Queries"), Some((Counter, Unit::PerSec, 1)));
        assert_eq!(shown_as(&web, "mysql:Bytes_sent"), Some((Counter, Unit::BytesPerSec, 1)));
        assert_eq!(shown_as(&web, "redis:used_memory"), Some((Gauge, Unit::Bytes, 1)));
        // Not per core on a service, nor anything the catalogue lacks.
        assert_eq!(shown_as(&web, "cpu:core0"), None);
        assert_eq!(unit_of("web", "cpu:total_user"), Some(Unit::Percent));
        assert_eq!(unit_of("host", "load:5"), Some(Unit::Count));
        assert_eq!(unit_of("host", "nope"), None);
    }
}
