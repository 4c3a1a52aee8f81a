//! The recent values of every sampled metric, per target: what `inspeqctl show`
//! draws and `export` reports. A fixed number of cycles per metric, like
//! Inspeqtor's one hour at 15 s cycles, kept across reloads.

use std::collections::{BTreeMap, VecDeque};

/// How many samples each metric keeps.
pub const SLOTS: usize = 240;

#[derive(Default)]
pub struct History {
    series: BTreeMap<(String, String), VecDeque<f64>>,
}

impl History {
    pub fn record(&mut self, target: &str, metric: &str, value: f64) {
        let series = self.series.entry((target.to_owned(), metric.to_owned())).or_default();
        if series.len() == SLOTS {
            series.pop_front();
        }
        series.push_back(value);
    }

    /// Oldest first.
    pub fn values(&self, target: &str, metric: &str) -> Vec<f64> {
        self.series.get(&(target.to_owned(), metric.to_owned())).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// The latest value of every metric, for `export`.
    pub fn latest(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.series.iter().filter_map(|((t, m), s)| Some((t.as_str(), m.as_str(), *s.back()?)))
    }

    /// Forgets targets no longer configured.
    pub fn retain_targets(&mut self, keep: impl Fn(&str) -> bool) {
        self.series.retain(|(t, _), _| keep(t));
    }
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
}
