//! Init systems: how inspeq finds a service, learns what to watch, and asks the
//! manager that runs it to restart or reload it. inspeq never supervises
//! processes itself.
//!
//! One trait, [`InitSystem`], sits at the seam; each manager has its own file:
//! - `systemd`: the D-Bus API (zbus on tokio), system or user scope, with
//!   property-change subscriptions so a restart's new cgroup is known at once.
//! - `upstart`: `initctl status|restart|reload`.
//! - `runit`: `sv status|restart|hup` on a service directory.
//! - `initd`: `/etc/init.d/NAME restart|reload`, pid from a pidfile.
//! - `pidfile`: processes outside any init system (`check process NAME with
//!   pidfile PATH | matching REGEX`), restarted by a configured command.
//! - `detect`: which of these a host runs, in a documented order.
//! - `command`: every command is an argv (never a shell) with a timeout.
//! - `wrapper`: is the main pid a shell or a `logger` pipeline rather than the server.
//! - `nspid`: a manager's `MainPID` from another pid namespace as inspeqd's pid.
//!
//! Every call a backend makes is bounded by a timeout (lookup 3 s, restart and
//! reload 30 s by default), so a hung init system costs the executor one timed-out
//! action and never blocks the event loop, which only reads [`ServiceChange`]s
//! from a channel.

mod command;
pub mod detect;
mod initd;
mod nspid;
mod pidfile;
mod runit;
mod systemd;
mod upstart;
mod wrapper;

use std::{fmt, future::Future, path::PathBuf, pin::Pin, time::Duration};

pub use command::{Argv, CommandError, CommandOutput};
pub use detect::{Detected, detect};
pub use initd::{InitD, InitDOptions};
pub use pidfile::{ProcessLocator, ProcessOptions, ProcessService};
pub use runit::{Runit, RunitOptions, parse_sv_status};
pub use systemd::{Scope, Systemd, SystemdOptions, bus_address_for};
pub use upstart::{Upstart, UpstartOptions, UpstartStatus, parse_initctl_status};
pub use wrapper::{Wrapper, detect_wrapper};

// Validated in the pure half so that `inspeqctl check` refuses exactly the names the backends would.
pub use crate::config::names::{InvalidServiceName, ServiceName};
use crate::{exit::ExitStatus, kernel::WatchTarget};

/// Lookups answer within this long by default (Inspeqtor's value).
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Restarts and reloads finish within this long by default.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a backend waits for its manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub lookup: Duration,
    /// Restart and reload.
    pub action: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { lookup: DEFAULT_LOOKUP_TIMEOUT, action: DEFAULT_ACTION_TIMEOUT }
    }
}

/// The init systems inspeq can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitKind {
    Systemd,
    Upstart,
    Runit,
    InitD,
    /// `check process`: a pidfile or a command-line match, no manager.
    Process,
}

impl InitKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Systemd => "systemd",
            Self::Upstart => "upstart",
            Self::Runit => "runit",
            Self::InitD => "init.d",
            Self::Process => "process",
        }
    }

    /// The value of `with init NAME` in a rule file.
    pub fn from_config(name: &str) -> Option<Self> {
        Some(match name {
            "systemd" => Self::Systemd,
            "upstart" => Self::Upstart,
            "runit" => Self::Runit,
            "initd" | "init.d" | "sysv" => Self::InitD,
            _ => return None,
        })
    }
}

impl fmt::Display for InitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a service stands, as its init system says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    /// Running (systemd: `active` or `reloading`).
    Up,
    /// On its way up (systemd `activating`, upstart `start/pre-start`, ...).
    Starting,
    /// On its way down while its processes still run (systemd `deactivating`): the exit, when it comes,
    /// is judged with what the init system says then.
    Stopping,
    /// Known to the init system but not running (stopped, failed).
    Down,
    /// The init system does not know it.
    NotFound,
}

/// What the init system means to do with the service, as it says itself: the difference between an
/// operator's `systemctl stop` and a crash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Intent {
    /// Keep it running; it does not bring it back by itself (or the init system cannot tell).
    #[default]
    Run,
    /// Stopping it, or stopped, because it was asked to (a stop job, systemd `inactive`, runit "want down",
    /// upstart goal `stop`).
    Stop,
    /// Restarting it because it was asked to (an operator's `systemctl restart`).
    Restart,
    /// Bringing it back by itself after it died (systemd's `Restart=`, runsv, upstart `respawn`).
    AutoRestart,
}

impl Intent {
    /// The init system was asked to stop or restart it: its exit is no crash.
    pub fn stops(self) -> bool {
        matches!(self, Self::Stop | Self::Restart)
    }
}

/// A cgroup v2 directory on this host, with its id (the directory's inode, what
/// the kernel side filters on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceCgroup {
    /// Absolute path inside the cgroup2 mount.
    pub path: PathBuf,
    pub id: u64,
}

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStatus {
    pub state: ServiceState,
    /// The manager's main process (host pid), when it has one.
    pub main_pid: Option<u32>,
    /// The service's own cgroup (systemd only).
    pub cgroup: Option<ServiceCgroup>,
    /// The main pid is a wrapper (a shell, a `logger` pipeline), not the server.
    pub wrapper: Option<Wrapper>,
    /// The manager's own words, for `status` (`active (running)`, `stop/waiting`, a
    /// stale pidfile's path, ...).
    pub detail: String,
    /// What the manager means to do with it.
    pub intent: Intent,
    /// How many times the manager restarted it by itself so far (systemd's
    /// `NRestarts`), where it counts them.
    pub init_restarts: Option<u32>,
}

impl ServiceStatus {
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self { state: ServiceState::NotFound, ..Self::down(detail) }
    }

    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            state: ServiceState::Down,
            main_pid: None,
            cgroup: None,
            wrapper: None,
            detail: detail.into(),
            intent: Intent::Run,
            init_restarts: None,
        }
    }

    /// Up with a main pid; the wrapper check runs here so every backend reports it.
    pub fn up(pid: u32, detail: impl Into<String>) -> Self {
        Self {
            state: ServiceState::Up,
            main_pid: Some(pid),
            cgroup: None,
            wrapper: detect_wrapper(pid),
            detail: detail.into(),
            intent: Intent::Run,
            init_restarts: None,
        }
    }

    pub fn with_intent(self, intent: Intent) -> Self {
        Self { intent, ..self }
    }

    /// What the kernel side should watch: the cgroup when the service has one
    /// (a restart gives it a new one), else the main process's tree — which also
    /// covers a server running behind a wrapper. `None` while not running.
    pub fn watch_target(&self) -> Option<WatchTarget> {
        if let Some(cgroup) = &self.cgroup {
            return Some(WatchTarget::CgroupId(cgroup.id));
        }
        self.main_pid.map(WatchTarget::Tree)
    }

    /// Whether an exit of `pid` means the service went down. A service's workers
    /// come and go (Puma's phased restart on USR1 replaces all of them), so only
    /// the main process, or the server behind a wrapper, counts.
    pub fn is_main_process(&self, pid: u32) -> bool {
        self.main_pid == Some(pid) || self.server_pid() == Some(pid)
    }

    /// The server behind a wrapper main process, when one was found.
    pub fn server_pid(&self) -> Option<u32> {
        self.wrapper.as_ref().and_then(Wrapper::server_pid)
    }
}

/// What the manager says about its main process's exit, once it has reaped it
/// (systemd's `ExecMainPID`/`ExecMainCode`/`ExecMainStatus`, the unit's `Result`
/// and timestamps; runit's want-down flag; upstart's goal): whether someone asked
/// for it, and how it ended when the kernel side could not tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MainExit {
    pub pid: u32,
    /// How it ended, as the manager recorded it; `Unknown` when it recorded nothing (or is not asked: every
    /// backend but systemd).
    pub status: ExitStatus,
    /// The manager judged it a success (`Result` is `success`: a clean exit, or
    /// one listed in `SuccessExitStatus=`).
    pub clean: bool,
    /// What the manager was doing: stopping it on request, or bringing it back by itself.
    pub intent: Intent,
}

/// A change an init system announced on its own (systemd's property changes):
/// the service's status as looked up right after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceChange {
    pub service: ServiceName,
    pub status: ServiceStatus,
}

/// The signal a `reload` delivers, where inspeq delivers it (runit, pidfile
/// processes). Managers with their own reload action (systemd's `ExecReload`,
/// upstart's `reload signal`, init.d's `reload`) decide themselves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReloadSignal {
    #[default]
    Hup,
    Usr1,
    Usr2,
    Int,
    Quit,
    Alrm,
    Term,
}

impl ReloadSignal {
    pub fn number(self) -> i32 {
        match self {
            Self::Hup => libc::SIGHUP,
            Self::Usr1 => libc::SIGUSR1,
            Self::Usr2 => libc::SIGUSR2,
            Self::Int => libc::SIGINT,
            Self::Quit => libc::SIGQUIT,
            Self::Alrm => libc::SIGALRM,
            Self::Term => libc::SIGTERM,
        }
    }

    /// `HUP`, `SIGHUP`, `usr1`, ...
    pub fn from_name(name: &str) -> Option<Self> {
        let upper = name.to_ascii_uppercase();
        Some(match upper.strip_prefix("SIG").unwrap_or(&upper) {
            "HUP" => Self::Hup,
            "USR1" => Self::Usr1,
            "USR2" => Self::Usr2,
            "INT" => Self::Int,
            "QUIT" => Self::Quit,
            "ALRM" => Self::Alrm,
            "TERM" => Self::Term,
            _ => return None,
        })
    }
}

/// Why an init system could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    InvalidName(#[from] InvalidServiceName),
    #[error("{init}: {action} {service}: {source}")]
    Command {
        init: InitKind,
        service: String,
        action: &'static str,
        #[source]
        source: CommandError,
    },
    #[error("{init}: {action} {service} failed: {message}")]
    Failed { init: InitKind, service: String, action: &'static str, message: String },
    #[error("{init}: {action} {service}: unexpected output {output:?}")]
    Unparsable { init: InitKind, service: String, action: &'static str, output: String },
    #[error("{init}: cannot {action} {service}: the init system does not know it")]
    NotFound { init: InitKind, service: String, action: &'static str },
    #[error("{init}: {action} {service} did not finish within {after:?}")]
    Timeout { init: InitKind, service: String, action: &'static str, after: Duration },
    #[error("systemd: connecting to {address}")]
    Connect {
        address: String,
        // Boxed: zbus's error is large and would bloat every InitError.
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("systemd: no D-Bus address for the {scope} manager: {reason}")]
    NoBus { scope: Scope, reason: String },
    #[error("systemd: {action} {service}: {source}")]
    DBus {
        service: String,
        action: &'static str,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("systemd: {action} {service}: job ended with result `{result}`")]
    JobFailed { service: String, action: &'static str, result: String },
    #[error("{service}: restart needs a configured restart_command")]
    NoRestartCommand { service: String },
    #[error("{service}: reload: {reason}")]
    Signal { service: String, reason: String },
}

/// A boxed future, so that [`InitSystem`] stays object safe: the daemon holds
/// each service's backend as `Arc<dyn InitSystem>`.
pub type InitFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, InitError>> + Send + 'a>>;

/// Stops a change subscription when dropped.
pub struct ChangeSubscription {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ChangeSubscription {
    pub(crate) fn new(tasks: Vec<tokio::task::JoinHandle<()>>) -> Self {
        Self { tasks }
    }
}

impl Drop for ChangeSubscription {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One init system, as the daemon's executor sees it. Every method is bounded
/// by the backend's [`Timeouts`].
pub trait InitSystem: Send + Sync {
    fn kind(&self) -> InitKind;

    /// The service's state, main pid and cgroup right now.
    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus>;

    /// Restarts the service (starts it when it is down) and returns when the
    /// manager says it is done; look it up again for the new pid and cgroup.
    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()>;

    /// Asks the service to reload its configuration.
    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()>;

    /// What the manager says about the exit of main process `pid`: asked after
    /// every main-process exit, so that an operator's stop is told from a crash,
    /// and a restart the manager does itself is not sent again. May wait (bounded
    /// by the lookup timeout) for the manager to reap it. `None` when it can say
    /// nothing about that pid. `restarts_before`: the manager's own restart
    /// count while `pid` ran (`ServiceStatus::init_restarts`). By default: the
    /// intent a fresh lookup reports.
    fn main_exit<'a>(
        &'a self,
        service: &'a ServiceName,
        pid: u32,
        restarts_before: Option<u32>,
    ) -> InitFuture<'a, Option<MainExit>> {
        let _ = restarts_before;
        Box::pin(async move {
            let status = self.lookup(service).await?;
            Ok(Some(MainExit { pid, status: ExitStatus::Unknown, clean: false, intent: status.intent }))
        })
    }

    /// What the manager's announcements already say about the exit of main
    /// process `pid` by `status`, without asking and without waiting: the
    /// event loop calls it as the exit arrives. `Some` only when the answer
    /// cannot be other than what [`Self::main_exit`] would give later (see
    /// systemd's); `None` (the default) sends the question to `main_exit`.
    fn main_exit_known(&self, service: &ServiceName, pid: u32, status: &ExitStatus) -> Option<MainExit> {
        let _ = (service, pid, status);
        None
    }

    /// Pushes a [`ServiceChange`] into `changes` whenever the manager announces
    /// that the service changed (state, main pid, cgroup), until the returned
    /// subscription is dropped. `None` when this init system announces nothing:
    /// then the kernel's exit observations and the cycle's lookups are all there is.
    fn subscribe<'a>(
        &'a self,
        service: &'a ServiceName,
        changes: tokio::sync::mpsc::Sender<ServiceChange>,
    ) -> InitFuture<'a, Option<ChangeSubscription>> {
        let _ = (service, changes);
        Box::pin(async { Ok(None) })
    }
}

/// Finds the first of `systems` (in detection order) that knows `service`.
/// Returns the index and the status, or `None` when none does, so the caller
/// looks again next cycle rather than giving up (Inspeqtor looked once).
/// An error from one system does not stop the search: a hung upstart must not
/// hide the service from runit.
pub async fn resolve(
    systems: &[std::sync::Arc<dyn InitSystem>],
    service: &ServiceName,
) -> (Option<(usize, ServiceStatus)>, Vec<InitError>) {
    let mut errors = Vec::new();
    for (i, system) in systems.iter().enumerate() {
        match system.lookup(service).await {
            Ok(status) if status.state == ServiceState::NotFound => {}
            Ok(status) => return (Some((i, status)), errors),
            Err(err) => errors.push(err),
        }
    }
    (None, errors)
}

/// The cgroup2 mount (`/sys/fs/cgroup/unified` on a hybrid host).
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    crate::kernel::cgroup::cgroup2_root().ok()
}

/// Whether `pid` names a live process (a zombie is not alive: it has exited).
pub(crate) fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised comm, which may itself hold ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_signals_by_name() {
        assert_eq!(ReloadSignal::from_name("SIGUSR1"), Some(ReloadSignal::Usr1));
        assert_eq!(ReloadSignal::from_name("hup"), Some(ReloadSignal::Hup));
        assert_eq!(ReloadSignal::from_name("KILL"), None);
    }

    #[test]
    fn a_cgroup_is_watched_in_preference_to_the_main_process() {
        let mut status = ServiceStatus::down("x");
        status.main_pid = Some(42);
        assert_eq!(status.watch_target(), Some(WatchTarget::Tree(42)));
        status.cgroup = Some(ServiceCgroup { path: "/sys/fs/cgroup/x".into(), id: 7 });
        assert_eq!(status.watch_target(), Some(WatchTarget::CgroupId(7)));
    }

    #[test]
    fn this_process_is_alive_and_pid_zero_is_not() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0));
    }
}
