//! What the daemon feeds the engine: observations from the kernel and the init systems, metric samples, the cycle
//! tick, and operator requests. Plain data, built by the daemon's edges.

use std::collections::BTreeMap;

use crate::config::model::MetricName;

/// What a sample or an event is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Host,
    /// A `check service` or `check process`, by name.
    Service(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Host => f.write_str("host"),
            Target::Service(name) => f.write_str(name),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// One cycle's measurements of a target. Rules whose metric is missing are skipped for this cycle.
    Sample(Sample),
    /// The main process of a service started (or was found running). Every start after the first counts as a
    /// restart for `restarts > N within ...`, and resets the service's counters (a new process starts from zero).
    ProcessStarted { service: String, pid: u32 },
    /// The main process of a service exited, as the kernel reported it.
    ProcessExited(ProcessExit),
    /// The init system reports the service down without an exit having been observed (e.g. at startup).
    ServiceDown { service: String },
    /// A process of the service forked.
    Forked { service: String },
    /// The cycle timer fired: job deadlines, fork-rate and flap windows are checked.
    Cycle,
    /// `inspeqctl deploy start`: silence rules for `deploy_length` or until `DeployFinished`.
    DeployStarted,
    /// `inspeqctl deploy finish`: silence one more cycle, then evaluate again (Inspeqtor #69/#76).
    DeployFinished,
    /// `inspeqctl job_done NAME`.
    JobDone { job: String },
    /// An operator re-enables a service after `unmonitor`.
    Remonitor { service: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub target: Target,
    /// Raw values: gauges as measured, counters as cumulative totals, CPU as cumulative CPU seconds.
    pub values: BTreeMap<MetricName, f64>,
    /// Online CPUs, to normalise host CPU percentages. `None` is taken as 1.
    pub cores: Option<u32>,
}

impl Sample {
    #[must_use]
    pub fn new(target: Target) -> Self {
        Sample {
            target,
            values: BTreeMap::new(),
            cores: None,
        }
    }

    /// Adds a value for `family[:name]` (a convenience for the daemon's samplers and for tests).
    #[must_use]
    pub fn with(mut self, metric: &str, value: f64) -> Self {
        let (family, name) = match metric.split_once(':') {
            Some((f, n)) => (f, Some(n)),
            None => (metric, None),
        };
        self.values.insert(MetricName::new(family, name), value);
        self
    }

    #[must_use]
    pub fn cores(mut self, cores: u32) -> Self {
        self.cores = Some(cores);
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    pub service: String,
    pub pid: u32,
    /// Set when the process called `exit()`; `None` when a signal killed it.
    pub exit_code: Option<i32>,
    /// The signal that killed it.
    pub signal: Option<i32>,
    pub core_dumped: bool,
    pub oom_killed: bool,
    /// The exit was asked for (inspeq's own restart, or the init system stopping the unit): no event rule fires.
    pub requested: bool,
    /// The init system judged the exit a success (systemd's `Result` is `success`, which honours
    /// `SuccessExitStatus=`): no crash. Set only when the daemon had to ask it, because the kernel side could not
    /// learn the status or the init system saw the exit first.
    pub init_says_clean: bool,
}

impl ProcessExit {
    /// Neither an exit code nor a signal is known: the kernel side saw the process vanish (pidfd, /proc polling)
    /// and the init system could not say either.
    #[must_use]
    pub fn status_unknown(&self) -> bool {
        self.exit_code.is_none() && self.signal.is_none()
    }

    /// A non-zero exit status or death by a signal. An exit whose status is unknown is a crash too, unless the
    /// init system reported a clean result: a service that vanished is down, and silence would be the worse error.
    #[must_use]
    pub fn crashed(&self) -> bool {
        if self.oom_killed {
            return true;
        }
        if self.init_says_clean {
            return false;
        }
        self.status_unknown() || self.exit_code.is_some_and(|c| c != 0) || self.signal.is_some()
    }
}

/// Percentage of swap in use. A host with no swap uses none of it: 0 %, not Inspeqtor's 100 % (#106, #135).
#[must_use]
pub fn swap_used_percent(total_kib: u64, free_kib: u64) -> f64 {
    if total_kib == 0 {
        return 0.0;
    }
    let used = total_kib.saturating_sub(free_kib);
    #[expect(
        clippy::cast_precision_loss,
        reason = "swap sizes in KiB are far below 2^52"
    )]
    let percent = used as f64 * 100.0 / total_kib as f64;
    percent
}
