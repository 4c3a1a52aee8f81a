//! Per-cycle metrics sampled from procfs and sysfs: the host's (`host.rs`) and a
//! service's processes (`process.rs`); and what a service's own server reports
//! over its protocol (`daemon/`: redis, memcached, nginx, memstats), collected in tasks
//! off the loop. Samplers return plain `(metric, value)`
//! pairs named as the rule language names them (`memory:rss`, `load:1`, `swap`);
//! the daemon turns them into engine samples. Only the cycle needs these: events
//! (exits, forks, RSS crossings) come from the kernel as they happen.
//!
//! No process is spawned: everything is a file read, or a request on a kept
//! connection.

pub mod daemon;
pub mod host;
pub mod process;

/// One sampled value: the metric's name (`family` or `family:name`) and its raw
/// value (gauges as measured, counters and CPU seconds cumulative).
pub type Value = (String, f64);
