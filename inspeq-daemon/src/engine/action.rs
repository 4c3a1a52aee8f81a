//! What the engine asks the daemon to do: plain data, carried out by the executor (init systems, alert channels,
//! argv execution). Actions say what, never how.

use core::net::SocketAddr;
use std::time::Duration;

use crate::config::metrics::Daemon;
use crate::config::model::{Location, ProbeId};
use crate::engine::input::Target;
use crate::exit::Exit;

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Send `event` to people. Both names are kept apart for the outbox, which picks the route in Inspeqtor's
    /// order (`alert::Routes::select`): the rule's `route`, else the check's `owner` if a route has that name,
    /// else the default route (the log when none is configured).
    Alert {
        /// `alert NAME` in the rule; `None` for a bare `alert` and for the alerts the engine raises itself
        /// (down, up, a failed restart).
        route: Option<String>,
        /// The check's `with owner NAME` (the jobs check's for job alerts).
        owner: Option<String>,
        event: Notice,
    },
    Restart {
        service: String,
    },
    /// A rule asked for a restart the init system does by itself (systemd's `Restart=`, runit): nothing to send,
    /// but the alert says who brings the service back.
    InitRestarts {
        service: String,
    },
    Reload {
        service: String,
    },
    /// Stop acting on the service until an operator sends `Remonitor`. The engine has already stopped.
    Unmonitor {
        service: String,
    },
    /// Run a program (argv, never a shell); `event` lets the executor describe it in the environment.
    Exec {
        argv: Vec<String>,
        event: Notice,
    },
}

/// What the engine noticed about a target, for an alert or an `exec`: one name per meaning, so not the loop's
/// `daemon::Event` (what drives the loop) nor `alert::AlertKind` (what a channel is told).
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub target: Target,
    pub kind: NoticeKind,
    /// The rule that fired, if a rule did.
    pub rule: Option<RuleRef>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NoticeKind {
    /// A cycle rule tripped for its `for N cycles`.
    RuleFailed {
        value: f64,
    },
    /// Two good cycles in a row after a failure.
    RuleRecovered {
        value: f64,
        failed_for: Duration,
    },
    /// `if FAMILY is unreachable` tripped for its `for N cycles`.
    Unreachable {
        daemon: Daemon,
    },
    /// Two cycles in a row with a collection that worked, after [`NoticeKind::Unreachable`].
    Reachable {
        daemon: Daemon,
        failed_for: Duration,
    },
    /// A probe's `is closed` / `fails` rule tripped for its `for N cycles`.
    ProbeFailed {
        probe: ProbeId,
    },
    /// Two probes in a row answered, after [`NoticeKind::ProbeFailed`].
    ProbeAnswers {
        probe: ProbeId,
        failed_for: Duration,
    },
    /// `listening PORT stopped`: the service no longer listens on `port`. `address` and `pid`: the socket that
    /// closed and the process that closed it, when the kernel reported the close (not when a cycle's list of
    /// listeners found the port gone).
    ListenerStopped {
        port: u16,
        address: Option<SocketAddr>,
        pid: Option<u32>,
    },
    /// The service listens on `port` again, after [`NoticeKind::ListenerStopped`].
    Listening {
        port: u16,
        failed_for: Duration,
    },
    /// An event rule (exited, crashed, signaled, `oom_killed`, `exit_code`) matched an exit.
    ProcessExited(Exit),
    /// The service went down without an event rule covering it (Inspeqtor's `ProcessDoesNotExist`).
    ProcessDown,
    /// The service is back after a `ProcessDown` (Inspeqtor's `ProcessExists`).
    ProcessUp {
        pid: u32,
    },
    /// A restart inspeq asked for failed; `reason` is the init system's answer. The service stays down: the
    /// next start resolves it like a `ProcessUp` resolves a `ProcessDown`.
    RestartFailed {
        reason: String,
    },
    /// A `worker crashed` / `worker oom_killed` rule matched a worker's death.
    WorkerDied(Exit),
    /// `worker crashed > N within W` tripped: `deaths` seen within `window`.
    WorkerDeaths {
        deaths: usize,
        window: Duration,
    },
    WorkerDeathsRecovered,
    /// `forks > N/sec` tripped: `forks` forks seen within `window`.
    ForkRate {
        forks: u64,
        window: Duration,
    },
    ForkRateRecovered,
    /// `restarts > N within W` tripped.
    Flapping {
        restarts: usize,
        window: Duration,
    },
    FlappingRecovered,
    JobOverdue {
        job: String,
        every: Duration,
    },
    JobRan {
        job: String,
    },
}

/// Which rule fired, for templates ("memory:rss > 2g for 3 cycles" at services.d/web.inq:4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleRef {
    pub text: String,
    pub location: Location,
}
