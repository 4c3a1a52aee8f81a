//! What the daemon feeds the engine: observations from the kernel and the init systems, metric samples, the cycle
//! tick, and operator requests. Plain data, built by the daemon's edges.

use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet};

use crate::config::metrics::Daemon;
use crate::config::model::{MetricName, ProbeId};
use crate::exit::{Exit, ExitStatus};

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
    /// The main process of a service exited, as the kernel reported it and the init system explained it.
    ProcessExited(ProcessExit),
    /// Another process of the service (a worker) died by a signal or the OOM killer, while nobody was stopping
    /// the service. A worker that exits, or dies of a stop signal (`TERM`, `INT`, `HUP`, `PIPE`, the way a phased
    /// restart ends workers), is no event: the daemon does not send it.
    WorkerDied(ProcessExit),
    /// The init system reports the service down without an exit having been observed (e.g. at startup).
    /// `stopped`: it is down because the init system was told to stop it (systemd `inactive`, runit "want down"):
    /// nothing to alert, nothing to restart.
    ServiceDown { service: String, stopped: bool },
    /// A restart inspeq asked for failed (or the init system gave up restarting it by itself); `reason` is the
    /// init system's own answer.
    RestartFailed { service: String, reason: String },
    /// A process of the service forked.
    Forked { service: String },
    /// A TCP socket of the service listening on `address` closed, as the kernel reported it the moment it did,
    /// and while nobody was stopping the service (the daemon asked the init system first).
    ListenerClosed { service: String, address: SocketAddr, pid: u32 },
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
    /// The daemon families collected for this sample, and how each collection went: a family that failed has no
    /// values here, and its rules have no value this cycle (a failure is a fact, never a zero).
    pub daemons: BTreeMap<Daemon, Collection>,
    /// The check's probes that ran for this sample, and what each found. A probe not here did not run (its
    /// interval has not passed): its rules are not judged this cycle.
    pub probes: BTreeMap<ProbeId, Probed>,
    /// The addresses the service's TCP sockets listen on, when they were listed for this sample (`sock_diag`).
    pub listeners: Option<BTreeSet<SocketAddr>>,
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Probed {
    /// It answered as the probe asks (connected; the HTTP status and body expected; a handshake), in `millis`.
    /// `certificate_left`: for a TLS probe, the seconds until the server's certificate expires (negative once it
    /// has).
    Answered { millis: f64, certificate_left: Option<f64> },
    /// It did not: refused, timed out, the wrong status or body, a failed handshake.
    Failed,
}

/// How one collection of a daemon family went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    /// The server answered. `restarted`: it is another instance than the one that answered last (redis's
    /// `run_id`, memcached's pid and start time), so its counters start over and no change is taken across it.
    Reached { restarted: bool },
    /// It did not (refused, timed out, an answer that is no answer): `if FAMILY is unreachable` trips.
    Failed,
}

impl Sample {
    #[must_use]
    pub fn new(target: Target) -> Self {
        Sample {
            target,
            values: BTreeMap::new(),
            cores: None,
            daemons: BTreeMap::new(),
            probes: BTreeMap::new(),
            listeners: None,
        }
    }

    /// Records how the collection of `daemon` went.
    #[must_use]
    pub fn collection(mut self, daemon: Daemon, collection: Collection) -> Self {
        self.daemons.insert(daemon, collection);
        self
    }

    /// Records what probe `probe` found.
    #[must_use]
    pub fn probed(mut self, probe: ProbeId, probed: Probed) -> Self {
        self.probes.insert(probe, probed);
        self
    }

    /// Records the addresses the service listens on.
    #[must_use]
    pub fn listening(mut self, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.listeners = Some(addresses.into_iter().collect());
        self
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

/// A process's exit as the engine judges it: the exit itself, carried as the kernel side (or the init system)
/// gave it, and what the daemon learned about why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    pub service: String,
    /// Which process, how it ended, the OOM killer's mark and its RSS at the end: what notices and alerts carry on.
    pub exit: Exit,
    /// Who asked for the exit, if anyone.
    pub cause: ExitCause,
    /// The init system judged the exit a success (systemd's `Result` is `success`, which honours
    /// `SuccessExitStatus=`): no crash. Set only when the daemon had to ask it, because the kernel side could not
    /// learn the status or the init system saw the exit first.
    pub init_says_clean: bool,
}

/// Why a main process ended, as the daemon learned it from its own actions and the init system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCause {
    /// Nobody asked: a crash, an OOM kill, or an exit on its own. Event rules judge it. `init_restarts`: the
    /// init system brings it back by itself (systemd's `Restart=`, runit), so a rule's `restart` is not sent
    /// again.
    Unexpected { init_restarts: bool },
    /// inspeq's own restart: no rule fires, no down alert.
    Restart,
    /// The init system stopped or restarted it on request (an operator's `systemctl stop|restart`, `sv down`):
    /// no rule fires, nothing is alerted, and inspeq never restarts it; a later start is the operator's.
    InitStopped,
}

impl ProcessExit {
    /// An exit nobody asked for, with nothing learned from the init system: what the kernel side reports.
    #[must_use]
    pub fn unexpected(service: impl Into<String>, exit: Exit) -> Self {
        ProcessExit {
            service: service.into(),
            exit,
            cause: ExitCause::Unexpected { init_restarts: false },
            init_says_clean: false,
        }
    }

    /// A worker's death that is an event: a signal other than the stop signals (`HUP`, `INT`, `TERM`, `PIPE`,
    /// systemd's clean signals, which a phased restart or a graceful stop sends), a core dump, or the OOM killer.
    /// An exit with a code, or an unknown one (a tier without eBPF found the worker gone), is none: workers come
    /// and go, and only a death the kernel saw is news.
    #[must_use]
    pub fn worker_crashed(&self) -> bool {
        const STOP_SIGNALS: [i32; 4] = [1, 2, 13, 15];
        let status = self.exit.status;
        self.exit.oom_killed || status.core_dumped() || status.signal().is_some_and(|s| !STOP_SIGNALS.contains(&s))
    }

    /// A non-zero exit status or death by a signal. An exit whose status is unknown is a crash too, unless the
    /// init system reported a clean result: a service that vanished is down, and silence would be the worse error.
    #[must_use]
    pub fn crashed(&self) -> bool {
        if self.exit.oom_killed {
            return true;
        }
        if self.init_says_clean {
            return false;
        }
        match self.exit.status {
            ExitStatus::Code(code) => code != 0,
            ExitStatus::Signal { .. } | ExitStatus::Unknown => true,
        }
    }
}

/// Percentage of swap in use. A host with no swap uses none of it: 0 %, not Inspeqtor's 100 % (#106, #135).
#[must_use]
pub fn swap_used_percent(total_kib: u64, free_kib: u64) -> f64 {
    if total_kib == 0 {
        return 0.0;
    }
    let used = total_kib.saturating_sub(free_kib);
    #[expect(clippy::cast_precision_loss, reason = "swap sizes in KiB are far below 2^52")]
    let percent = used as f64 * 100.0 / total_kib as f64;
    percent
}
