//! Metrics leaving inspeq for other systems: statsd lines after each cycle
//! (`statsd.rs`), in Inspeqtor's format so existing dashboards keep working.

pub mod statsd;
