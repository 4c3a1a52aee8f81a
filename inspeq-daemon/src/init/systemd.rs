//! systemd, through its D-Bus API (zbus on tokio) rather than `systemctl`: no
//! process per lookup, job results instead of exit codes, and property-change
//! signals, so that a restart — which gives the unit a new cgroup and so a new
//! cgroup id — re-keys the kernel watch at once instead of at the next poll.
//!
//! Scopes: the system manager on the system bus, and a user manager on its
//! user bus (`$XDG_RUNTIME_DIR/bus`), or any configured bus address. The
//! managers' private sockets (`systemd/private`) are not usable: see
//! [`bus_address_for`].
//!
//! `ControlGroup` is relative to the manager's cgroup root; on the host that is
//! the cgroup2 mount unless configured otherwise (`cgroup_root`: a manager in a
//! cgroup namespace). `MainPID` and `ExecMainPID` are in the manager's pid
//! namespace; the main pid is translated into inspeqd's on lookup (see `nspid`),
//! and each unit's recent translations are kept to compare `ExecMainPID` with
//! the pid of an exit the kernel side reported.
//!
//! How a main process ended is judged from the unit's record (`record.rs`), as
//! the unit's own `PropertiesChanged` signals carry it at the reap; only when
//! they have not said enough within [`SIGNAL_GRACE`] is it read property by
//! property.

mod record;

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use futures_util::StreamExt as _;
use record::{Judged, Mirror, Record, ServiceHalf, Settings, UnitHalf, is_restart_job, judge, known_at_once};
use zbus::{
    Connection, MatchRule, MessageStream,
    message::Type as MessageType,
    zvariant::{OwnedObjectPath, OwnedValue},
};

use crate::exit::ExitStatus;

use super::{
    ChangeSubscription, InitError, InitFuture, InitKind, InitSystem, Intent, MainExit, ServiceCgroup, ServiceChange,
    ServiceName, ServiceState, ServiceStatus, Timeouts, cgroup2_mount, detect_wrapper, nspid,
};

const DESTINATION: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
const JOB: &str = "org.freedesktop.systemd1.Job";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// Which manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    System,
    /// `with scope user`: the user manager of the user inspeq runs as.
    User,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::System => "system",
            Self::User => "user",
        })
    }
}

/// How to reach a systemd manager.
#[derive(Clone, Debug)]
pub struct SystemdOptions {
    pub scope: Scope,
    /// A D-Bus bus address (`unix:path=...`). Default: found from the scope.
    pub address: Option<String>,
    /// The user manager's runtime directory; default `$XDG_RUNTIME_DIR`.
    pub runtime_dir: Option<PathBuf>,
    /// Where the manager's cgroup root is on this host; default the cgroup2 mount.
    pub cgroup_root: Option<PathBuf>,
    pub timeouts: Timeouts,
}

impl SystemdOptions {
    pub fn new(scope: Scope) -> Self {
        Self { scope, address: None, runtime_dir: None, cgroup_root: None, timeouts: Timeouts::default() }
    }
}

/// The address of `scope`'s manager's bus. User scope: `RUNTIME/bus`; system
/// scope: the system bus.
///
/// The managers' private sockets (`systemd/private`, peer-to-peer, no bus daemon)
/// are refused: systemd stamps its messages there with the well-known sender
/// `org.freedesktop.systemd1`, which zbus 5 rejects as an invalid unique name,
/// killing the connection.
pub fn bus_address_for(scope: Scope, runtime_dir: Option<&Path>) -> Result<String, InitError> {
    match scope {
        Scope::User => {
            let Some(runtime) = runtime_dir else {
                return Err(InitError::NoBus { scope, reason: "XDG_RUNTIME_DIR is not set".into() });
            };
            let bus = runtime.join("bus");
            if bus.exists() {
                return Ok(format!("unix:path={}", bus.display()));
            }
            Err(InitError::NoBus {
                scope,
                reason: format!(
                    "{} does not exist (the user manager's dbus.socket is not running; its private socket cannot be used)",
                    bus.display()
                ),
            })
        }
        Scope::System => Ok("unix:path=/run/dbus/system_bus_socket".into()),
    }
}

fn is_private(address: &str) -> bool {
    address.trim_end_matches('/').ends_with("systemd/private")
}

/// The unit for a service name: `nginx` is `nginx.service`.
fn unit_name(service: &ServiceName) -> String {
    const TYPES: &[&str] =
        &["service", "socket", "target", "timer", "mount", "automount", "swap", "path", "slice", "scope", "device"];
    match service.as_str().rsplit_once('.') {
        Some((_, suffix)) if TYPES.contains(&suffix) => service.to_string(),
        _ => format!("{service}.service"),
    }
}

/// How many main pids per unit are remembered (a restart's new pid must not
/// forget the one whose exit is still being settled).
const REMEMBERED_PIDS: usize = 4;

/// How long an exit waits for the unit's signals to say how it ended before the
/// record is also read property by property. systemd reaps within a millisecond
/// or two when it is not busy; the reads are the way when it sends no usable
/// record (or the subscription is gone).
const SIGNAL_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Per unit, recent main pids as (inspeqd's pid, the manager's pid).
type PidMap = Arc<Mutex<HashMap<String, VecDeque<(u32, u32)>>>>;

/// A subscribed unit's record as its signals keep it, with its settings.
#[derive(Clone)]
struct Mirrored {
    record: tokio::sync::watch::Receiver<Option<Record>>,
    settings: Settings,
}

/// Per unit, the mirror of its subscription.
type Mirrors = Arc<Mutex<HashMap<String, Mirrored>>>;

/// A systemd manager over one D-Bus connection.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    cgroup_root: Option<PathBuf>,
    timeouts: Timeouts,
    main_pids: PidMap,
    mirrors: Mirrors,
}

impl Systemd {
    /// Connects to the manager and subscribes to its signals.
    pub async fn connect(options: SystemdOptions) -> Result<Self, InitError> {
        let address = match &options.address {
            Some(address) => address.clone(),
            None => {
                let runtime =
                    options.runtime_dir.clone().or_else(|| std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from));
                bus_address_for(options.scope, runtime.as_deref())?
            }
        };
        if is_private(&address) {
            return Err(InitError::NoBus {
                scope: options.scope,
                reason: format!("{address} is a manager's private socket, which zbus cannot read; use its bus"),
            });
        }
        let connect = async { zbus::connection::Builder::address(address.as_str())?.build().await };
        let conn = tokio::time::timeout(options.timeouts.lookup, connect)
            .await
            .unwrap_or_else(|_| Err(zbus::Error::Failure(format!("no answer within {:?}", options.timeouts.lookup))))
            .map_err(|source| InitError::Connect { address: address.clone(), source: Box::new(source) })?;
        // On the bus the manager sends signals only to subscribers.
        let subscribe = conn.call_method(Some(DESTINATION), MANAGER_PATH, Some(MANAGER), "Subscribe", &());
        tokio::time::timeout(options.timeouts.lookup, subscribe)
            .await
            .unwrap_or_else(|_| {
                Err(zbus::Error::Failure(format!("Subscribe: no answer within {:?}", options.timeouts.lookup)))
            })
            .map_err(|source| InitError::Connect { address: address.clone(), source: Box::new(source) })?;
        Ok(Self {
            conn,
            cgroup_root: options.cgroup_root.or_else(cgroup2_mount),
            timeouts: options.timeouts,
            main_pids: PidMap::default(),
            mirrors: Mirrors::default(),
        })
    }

    async fn call<B, R>(&self, path: &str, interface: &str, method: &str, body: &B) -> zbus::Result<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
    {
        let reply = self.conn.call_method(Some(DESTINATION), path, Some(interface), method, body).await?;
        reply.body().deserialize::<R>()
    }

    async fn property(&self, path: &str, interface: &str, name: &str) -> zbus::Result<OwnedValue> {
        self.call(path, PROPERTIES, "Get", &(interface, name)).await
    }

    async fn string_property(&self, path: &str, interface: &str, name: &str) -> zbus::Result<String> {
        String::try_from(self.property(path, interface, name).await?).map_err(zbus::Error::Variant)
    }

    async fn get<T: TryFrom<OwnedValue, Error = zbus::zvariant::Error>>(
        &self,
        path: &str,
        interface: &str,
        name: &str,
    ) -> zbus::Result<T> {
        T::try_from(self.property(path, interface, name).await?).map_err(zbus::Error::Variant)
    }

    /// The type of the job the unit has queued or running (`stop`, `restart`,
    /// `start`, ...), if any. A job that ended in between reads as none.
    async fn job_type(&self, path: &str) -> Option<String> {
        let (id, job): (u32, OwnedObjectPath) = self.get(path, UNIT, "Job").await.ok()?;
        if id == 0 {
            return None;
        }
        self.string_property(job.as_str(), JOB, "JobType").await.ok()
    }

    /// The unit's object path, loading the unit if the manager had not (a
    /// stopped unit may have been garbage-collected; it is still known).
    async fn unit_path(&self, unit: &str) -> zbus::Result<OwnedObjectPath> {
        self.call(MANAGER_PATH, MANAGER, "LoadUnit", &(unit,)).await
    }

    async fn lookup_now(&self, service: &ServiceName) -> zbus::Result<ServiceStatus> {
        let unit = unit_name(service);
        let path = self.unit_path(&unit).await?;
        let path = path.as_str();
        let load = self.string_property(path, UNIT, "LoadState").await?;
        if load == "not-found" {
            return Ok(ServiceStatus::not_found(format!("{unit}: not found")));
        }
        let active = self.string_property(path, UNIT, "ActiveState").await?;
        let sub = self.string_property(path, UNIT, "SubState").await?;
        let job = self.job_type(path).await;
        let (main_pid, cgroup, result, init_restarts) = if unit.ends_with(".service") {
            let pid: u32 = self.get(path, SERVICE, "MainPID").await?;
            let cgroup = self.host_cgroup(&self.string_property(path, SERVICE, "ControlGroup").await?);
            let result = self.string_property(path, SERVICE, "Result").await?;
            let restarts: u32 = self.get(path, SERVICE, "NRestarts").await?;
            let here = match (pid, &cgroup) {
                (0, _) => None,
                (pid, Some(cgroup)) => {
                    let here = nspid::main_pid_here(pid, &cgroup.path);
                    match here {
                        Some(here) => self.remember(&unit, here, pid),
                        None => tracing::warn!(
                            "init: {unit}: no process of {} is the manager's MainPID {pid} (by /proc/PID/status NSpid); inspeqd must share the manager's pid namespace or an ancestor of it",
                            cgroup.path.display()
                        ),
                    }
                    here
                }
                // Without a cgroup to search, the manager is taken to share inspeqd's namespace.
                (pid, None) => Some(pid),
            };
            (here, cgroup, result, Some(restarts))
        } else {
            (None, None, String::new(), None)
        };
        let mut detail =
            if load == "loaded" { format!("{active} ({sub})") } else { format!("{load}, {active} ({sub})") };
        if let Some(job) = &job {
            detail.push_str(&format!(", {job} job"));
        }
        if active == "failed" && !result.is_empty() {
            detail.push_str(&format!(", result {result}"));
        }
        let state = match active.as_str() {
            "active" | "reloading" => ServiceState::Up,
            "activating" => ServiceState::Starting,
            "deactivating" => ServiceState::Stopping,
            _ => ServiceState::Down,
        };
        Ok(ServiceStatus {
            state,
            main_pid,
            cgroup,
            wrapper: main_pid.and_then(detect_wrapper),
            detail,
            intent: lookup_intent(job.as_deref(), &active, &sub),
            init_restarts,
        })
    }

    /// Records that the manager's main pid `manager` of `unit` is `here` in inspeqd's namespace.
    fn remember(&self, unit: &str, here: u32, manager: u32) {
        let mut map = self.main_pids.lock().unwrap_or_else(PoisonError::into_inner);
        let pids = map.entry(unit.to_owned()).or_default();
        if pids.back() != Some(&(here, manager)) {
            pids.push_back((here, manager));
            if pids.len() > REMEMBERED_PIDS {
                pids.pop_front();
            }
        }
    }

    /// inspeqd's pid `here` of `unit`'s main process in the manager's namespace, as
    /// a lookup found it; `here` itself when no lookup did (the same namespace).
    fn manager_pid(&self, unit: &str, here: u32) -> u32 {
        let map = self.main_pids.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(unit).and_then(|pids| pids.iter().rev().find(|(h, _)| *h == here)).map_or(here, |(_, m)| *m)
    }

    /// `ControlGroup` on this host; `None` when the unit has none (not running)
    /// or it vanished in between.
    fn host_cgroup(&self, control_group: &str) -> Option<ServiceCgroup> {
        let relative = control_group.trim_start_matches('/');
        if relative.is_empty() {
            return None;
        }
        let path = self.cgroup_root.as_ref()?.join(relative);
        let id = std::fs::metadata(&path).ok()?.ino();
        Some(ServiceCgroup { path, id })
    }

    /// The unit's record as property reads give it. One property per call (the
    /// calls pipelined on the connection): if a new main process replaced the
    /// record meanwhile the values are a mix, so `ExecMainPID` is read again
    /// after the rest and the record read again until it agrees.
    async fn read_record(&self, path: &str) -> zbus::Result<Record> {
        loop {
            let (pid, code, status, started, reaped, result, restarts) = tokio::join!(
                self.get::<u32>(path, SERVICE, "ExecMainPID"),
                self.get::<i32>(path, SERVICE, "ExecMainCode"),
                self.get::<i32>(path, SERVICE, "ExecMainStatus"),
                self.get::<u64>(path, SERVICE, "ExecMainStartTimestampMonotonic"),
                self.get::<u64>(path, SERVICE, "ExecMainExitTimestampMonotonic"),
                self.string_property(path, SERVICE, "Result"),
                self.get::<u32>(path, SERVICE, "NRestarts"),
            );
            let (left_active, sub, job) = tokio::join!(
                self.get::<u64>(path, UNIT, "ActiveExitTimestampMonotonic"),
                self.string_property(path, UNIT, "SubState"),
                self.get::<(u32, OwnedObjectPath)>(path, UNIT, "Job"),
            );
            let (id, job) = job?;
            let record = Record {
                service: ServiceHalf {
                    pid: pid?,
                    code: code?,
                    status: status?,
                    started: started?,
                    reaped: reaped?,
                    result: result?,
                    restarts: restarts?,
                },
                unit: UnitHalf { left_active: left_active?, sub: sub?, job: (id, (id != 0).then_some(job)) },
                current: true,
                earlier: Vec::new(),
            };
            if self.get::<u32>(path, SERVICE, "ExecMainPID").await? == record.service.pid {
                return Ok(record);
            }
        }
    }

    /// The unit's settings that say which signals the manager sends it.
    async fn settings(&self, path: &str) -> zbus::Result<Settings> {
        let (restart, kill, restart_kill, watchdog, sighup, exec_stop) = tokio::join!(
            self.string_property(path, SERVICE, "Restart"),
            self.get::<i32>(path, SERVICE, "KillSignal"),
            // Since systemd 244 and 240: an older manager does not have them.
            self.get::<i32>(path, SERVICE, "RestartKillSignal"),
            self.get::<i32>(path, SERVICE, "WatchdogSignal"),
            self.get::<bool>(path, SERVICE, "SendSIGHUP"),
            self.property(path, SERVICE, "ExecStop"),
        );
        let mut own_signals: Vec<i32> = [kill?].into_iter().chain(restart_kill.ok()).chain(watchdog.ok()).collect();
        if sighup? {
            own_signals.push(libc::SIGHUP);
        }
        // Unreadable counts as set: then nothing is settled without the record.
        let exec_stop = exec_stop.map_or(true, |v| !matches!(&*v, zbus::zvariant::Value::Array(a) if a.is_empty()));
        Ok(Settings { restart: restart?, own_signals, exec_stop })
    }

    /// Reads the record until it is about the exit of `pid` (the manager's
    /// `expected`): until the manager has reaped it, or a successor replaced it.
    async fn read_exit(
        &self,
        unit: &str,
        pid: u32,
        expected: u32,
        restarts_before: Option<u32>,
    ) -> zbus::Result<Judged> {
        let path = self.unit_path(unit).await?;
        let path = path.as_str();
        let restart = self.string_property(path, SERVICE, "Restart").await?;
        loop {
            // Two reads while it is not reaped, the whole record once it is.
            let (main, code) = tokio::join!(
                self.get::<u32>(path, SERVICE, "ExecMainPID"),
                self.get::<i32>(path, SERVICE, "ExecMainCode")
            );
            if main? == expected && code? == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            match judge(&self.read_record(path).await?, pid, expected, restarts_before, &restart) {
                Judged::NotYet => continue,
                judged => return Ok(judged),
            }
        }
    }

    /// Starts a job (`RestartUnit`, `ReloadUnit`) and waits for its `JobRemoved`.
    async fn job(&self, service: &ServiceName, method: &'static str, action: &'static str) -> Result<(), InitError> {
        let dbus = |source| InitError::DBus { service: service.to_string(), action, source: Box::new(source) };
        let unit = unit_name(service);
        let limit = self.timeouts.action;
        let run = async {
            let path = self.unit_path(&unit).await.map_err(dbus)?;
            if self.string_property(path.as_str(), UNIT, "LoadState").await.map_err(dbus)? == "not-found" {
                return Err(InitError::NotFound { init: InitKind::Systemd, service: service.to_string(), action });
            }
            // Listen before asking, so a fast job's end cannot be missed.
            let rule = MatchRule::builder()
                .msg_type(MessageType::Signal)
                .interface(MANAGER)
                .and_then(|r| r.member("JobRemoved"))
                .and_then(|r| r.path(MANAGER_PATH))
                .map_err(dbus)?
                .build();
            let mut removed = MessageStream::for_match_rule(rule, &self.conn, Some(256)).await.map_err(dbus)?;
            let job: OwnedObjectPath =
                self.call(MANAGER_PATH, MANAGER, method, &(unit.as_str(), "replace")).await.map_err(dbus)?;
            while let Some(message) = removed.next().await {
                let Ok(message) = message else { continue };
                let Ok((_id, removed_job, _unit, result)) =
                    message.body().deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if removed_job == job {
                    return if result == "done" {
                        Ok(())
                    } else {
                        Err(InitError::JobFailed { service: service.to_string(), action, result })
                    };
                }
            }
            Err(dbus(zbus::Error::Failure("the connection to the manager closed".into())))
        };
        tokio::time::timeout(limit, run).await.unwrap_or(Err(InitError::Timeout {
            init: InitKind::Systemd,
            service: service.to_string(),
            action,
            after: limit,
        }))
    }
}

impl InitSystem for Systemd {
    fn kind(&self) -> InitKind {
        InitKind::Systemd
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        Box::pin(async move {
            let limit = self.timeouts.lookup;
            match tokio::time::timeout(limit, self.lookup_now(service)).await {
                Ok(status) => status.map_err(|source| InitError::DBus {
                    service: service.to_string(),
                    action: "lookup",
                    source: Box::new(source),
                }),
                Err(_) => Err(InitError::Timeout {
                    init: InitKind::Systemd,
                    service: service.to_string(),
                    action: "lookup",
                    after: limit,
                }),
            }
        })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(self.job(service, "RestartUnit", "restart"))
    }

    /// Waits until the manager has reaped `pid` (the kernel reports the exit
    /// before systemd handles its SIGCHLD), within the lookup timeout, and judges
    /// its exit from one moment's record (`record::judge`): from the unit's
    /// signals, which carry it at the reap, or, when they have not said enough
    /// within [`SIGNAL_GRACE`], from property reads.
    fn main_exit<'a>(
        &'a self,
        service: &'a ServiceName,
        pid: u32,
        restarts_before: Option<u32>,
    ) -> InitFuture<'a, Option<MainExit>> {
        Box::pin(async move {
            let limit = self.timeouts.lookup;
            let dbus =
                |source| InitError::DBus { service: service.to_string(), action: "lookup", source: Box::new(source) };
            let unit = unit_name(service);
            // ExecMainPID is the manager's number for what the kernel side reported as `pid`.
            let expected = self.manager_pid(&unit, pid);
            let mirrored = self.mirrors.lock().unwrap_or_else(PoisonError::into_inner).get(&unit).cloned();
            // A subscription that ended leaves its mirror behind, silent.
            let mirrored = mirrored.filter(|m| m.record.has_changed().is_ok());
            let read = async {
                let judged = match mirrored {
                    Some(mirrored) => {
                        let restart = &mirrored.settings.restart;
                        let signalled = signalled(mirrored.record, pid, expected, restarts_before, restart);
                        let read = async {
                            tokio::time::sleep(SIGNAL_GRACE).await;
                            self.read_exit(&unit, pid, expected, restarts_before).await
                        };
                        tokio::select! {
                            Some(judged) = signalled => judged,
                            judged = read => judged.map_err(dbus)?,
                        }
                    }
                    None => self.read_exit(&unit, pid, expected, restarts_before).await.map_err(dbus)?,
                };
                Ok(Some(match judged {
                    Judged::Exit(exit) => exit,
                    Judged::AskedBy(exit, job) => {
                        let restart = self.string_property(job.as_str(), JOB, "JobType").await;
                        // A job that ended in between reads as none: a stop.
                        let intent =
                            if restart.is_ok_and(|t| is_restart_job(&t)) { Intent::Restart } else { Intent::Stop };
                        MainExit { intent, ..exit }
                    }
                    // Both ways wait past it; never taken.
                    Judged::NotYet => return Ok(None),
                }))
            };
            match tokio::time::timeout(limit, read).await {
                Ok(result) => result,
                Err(_) => Err(InitError::Timeout {
                    init: InitKind::Systemd,
                    service: service.to_string(),
                    action: "lookup",
                    after: limit,
                }),
            }
        })
    }

    /// From the unit's mirrored record and settings (`record::known_at_once`):
    /// a kill -9 of a running unit's main process is settled as it arrives.
    fn main_exit_known(&self, service: &ServiceName, pid: u32, status: &ExitStatus) -> Option<MainExit> {
        let unit = unit_name(service);
        let expected = self.manager_pid(&unit, pid);
        let mirrors = self.mirrors.lock().unwrap_or_else(PoisonError::into_inner);
        let mirrored = mirrors.get(&unit).filter(|m| m.record.has_changed().is_ok())?;
        let record = mirrored.record.borrow();
        known_at_once(record.as_ref()?, &mirrored.settings, pid, expected, status)
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(self.job(service, "ReloadUnit", "reload"))
    }

    /// Follows the unit's `PropertiesChanged` signals; after each burst, looks the
    /// service up and pushes the status when state, main pid or cgroup changed.
    fn subscribe<'a>(
        &'a self,
        service: &'a ServiceName,
        changes: tokio::sync::mpsc::Sender<ServiceChange>,
    ) -> InitFuture<'a, Option<ChangeSubscription>> {
        Box::pin(async move {
            let dbus = |source| InitError::DBus {
                service: service.to_string(),
                action: "subscribe",
                source: Box::new(source),
            };
            let path = self.unit_path(&unit_name(service)).await.map_err(dbus)?;
            let rule = MatchRule::builder()
                .msg_type(MessageType::Signal)
                .interface(PROPERTIES)
                .and_then(|r| r.member("PropertiesChanged"))
                .and_then(|r| r.path(path.clone()))
                .map_err(dbus)?
                .build();
            let mut stream = MessageStream::for_match_rule(rule, &self.conn, Some(256)).await.map_err(dbus)?;
            // A stopped unit nobody references is garbage-collected at once, and
            // its `ExecMain*` record and timestamps with it: the record `main_exit`
            // reads to tell an operator's stop from a crash. systemd keeps units
            // a bus client holds a reference to (`Ref`, dropped when we disconnect).
            if let Err(err) = self.call::<_, ()>(path.as_str(), UNIT, "Ref", &()).await {
                tracing::warn!(
                    "systemd: cannot hold {} loaded (Ref): {err}; a stop may read as a crash",
                    unit_name(service)
                );
            }
            let unit = unit_name(service);
            let (mut mirror, record) = Mirror::new();
            let settings = if unit.ends_with(".service") {
                // Signals that came meanwhile wait in the stream, newer than this read.
                if let Ok(now) = self.read_record(path.as_str()).await {
                    mirror.seed(now);
                }
                self.settings(path.as_str()).await.map_err(dbus)?
            } else {
                Settings::default()
            };
            self.mirrors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(unit, Mirrored { record: record.clone(), settings });
            // Signals are taken the moment they come (an exit waits on them); the
            // lookups they prompt go in a task of their own, one per burst.
            let signals = tokio::spawn(async move {
                while let Some(message) = stream.next().await {
                    let Ok(message) = message else { continue };
                    let body = message.body();
                    let Ok((interface, changed, _invalidated)) =
                        body.deserialize::<(String, HashMap<String, OwnedValue>, Vec<String>)>()
                    else {
                        continue;
                    };
                    mirror.signal(&interface, &changed);
                }
            });
            let this = self.clone();
            let service = service.clone();
            let mut last = this.lookup(&service).await.ok().map(|s| key(&s));
            let mut bursts = record;
            let lookups = tokio::spawn(async move {
                while bursts.changed().await.is_ok() {
                    bursts.borrow_and_update();
                    let Ok(mut status) = this.lookup(&service).await else { continue };
                    // A burst during the lookup (a restart is several): its reads may
                    // straddle a transition, so read again after the last one.
                    while bursts.has_changed().unwrap_or(false) {
                        bursts.borrow_and_update();
                        match this.lookup(&service).await {
                            Ok(again) => status = again,
                            Err(_) => break,
                        }
                    }
                    if last.as_ref() == Some(&key(&status)) {
                        continue;
                    }
                    last = Some(key(&status));
                    if changes.send(ServiceChange { service: service.clone(), status }).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Some(ChangeSubscription::new(vec![signals, lookups])))
        })
    }
}

/// Waits until the unit's mirrored record judges the exit of `pid`; `None` when
/// the subscription ended first.
async fn signalled(
    mut record: tokio::sync::watch::Receiver<Option<Record>>,
    pid: u32,
    expected: u32,
    restarts_before: Option<u32>,
    restart: &str,
) -> Option<Judged> {
    loop {
        let judged = record.borrow_and_update().as_ref().map(|r| judge(r, pid, expected, restarts_before, restart));
        match judged {
            Some(Judged::NotYet) | None => {}
            Some(judged) => return Some(judged),
        }
        record.changed().await.ok()?;
    }
}

/// What makes a status change worth announcing.
fn key(status: &ServiceStatus) -> (ServiceState, Option<u32>, Option<u64>, Intent) {
    (status.state, status.main_pid, status.cgroup.as_ref().map(|c| c.id), status.intent)
}

/// The intent a lookup reads: the queued job says what was asked; without
/// one, `auto-restart` is systemd bringing the unit back by itself, and
/// `inactive` a unit stopped on request (a unit that failed is `failed`).
fn lookup_intent(job: Option<&str>, active: &str, sub: &str) -> Intent {
    match job {
        _ if sub == "auto-restart" => Intent::AutoRestart,
        Some("stop") => Intent::Stop,
        Some(job) if is_restart_job(job) => Intent::Restart,
        Some(_) => Intent::Run,
        None if active == "inactive" => Intent::Stop,
        None => Intent::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::{record::exec_main_status, *};

    #[test]
    fn plain_names_are_services_and_unit_names_stay() {
        let name = |s| unit_name(&ServiceName::new(s).unwrap());
        assert_eq!(name("nginx"), "nginx.service");
        assert_eq!(name("sidekiq.2"), "sidekiq.2.service");
        assert_eq!(name("puma@1.service"), "puma@1.service");
        assert_eq!(name("docker.socket"), "docker.socket");
    }

    #[test]
    fn the_user_manager_is_found_through_the_runtime_dir() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        std::fs::create_dir_all(dir.join("systemd")).unwrap();
        std::fs::write(dir.join("systemd/private"), "").unwrap();
        assert!(bus_address_for(Scope::User, Some(dir)).is_err(), "the private socket alone is not usable");
        std::fs::write(dir.join("bus"), "").unwrap();
        assert_eq!(bus_address_for(Scope::User, Some(dir)).unwrap(), format!("unix:path={}/bus", dir.display()));
        assert!(bus_address_for(Scope::User, None).is_err());
    }

    #[test]
    fn exec_main_codes_become_wait_statuses() {
        assert_eq!(exec_main_status(libc::CLD_EXITED, 3), ExitStatus::Code(3));
        assert_eq!(exec_main_status(libc::CLD_KILLED, 9), ExitStatus::Signal { signal: 9, core_dumped: false });
        assert_eq!(exec_main_status(libc::CLD_DUMPED, 11), ExitStatus::Signal { signal: 11, core_dumped: true });
        assert_eq!(exec_main_status(0, 0), ExitStatus::Unknown);
    }

    #[test]
    fn private_sockets_are_recognised() {
        assert!(is_private("unix:path=/run/user/0/systemd/private"));
        assert!(!is_private("unix:path=/run/user/0/bus"));
    }
}
