//! Metrics leaving inspeq for other systems: statsd lines after each cycle
//! (`statsd.rs`), in Inspeqtor's format so existing dashboards keep working, and
//! a Prometheus `/metrics` page (`prometheus.rs`).

pub mod prometheus;
pub mod statsd;
