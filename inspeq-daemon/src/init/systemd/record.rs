//! systemd's record of a unit's main process, and the judgement of an exit from
//! it: who asked for the exit (an operator's stop or restart, or nobody), and
//! whether systemd brings the unit back by itself.
//!
//! The record comes from one of two places, judged the same way: the unit's
//! `PropertiesChanged` signals ([`Mirror`]), which systemd sends at the reap
//! itself, so an exit is judged the moment the manager has handled it with no
//! call made; or, when no signal has said enough, property reads (`systemd.rs`).
//!
//! systemd sends a unit's change as two signals in one burst, the type's
//! interface first (`org.freedesktop.systemd1.Service`, which holds `ExecMain*`,
//! `Result`, `NRestarts`), then `org.freedesktop.systemd1.Unit` (`SubState`,
//! `ActiveExitTimestampMonotonic`, `Job`), "so that clients may rely on this
//! order to get atomic behaviour" (its `send_changed_signal`). Each carries every
//! property of its interface that emits changes, not just the changed ones: a
//! pair is a whole snapshot. The mirror keeps the service half until the unit
//! half arrives and only then publishes, so a judgement never mixes bursts.

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use crate::{
    exit::ExitStatus,
    init::{Intent, MainExit},
};

/// The `org.freedesktop.systemd1.Service` half: the main process's record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceHalf {
    /// `ExecMainPID`, in the manager's pid namespace; 0 when the record is gone.
    pub pid: u32,
    /// `ExecMainCode`: a `CLD_*` code once reaped, 0 before.
    pub code: i32,
    pub status: i32,
    pub started: u64,
    pub reaped: u64,
    pub result: String,
    pub restarts: u32,
}

/// The `org.freedesktop.systemd1.Unit` half.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitHalf {
    /// `ActiveExitTimestampMonotonic`: when the unit last left `active`.
    pub left_active: u64,
    pub sub: String,
    /// The queued or running job's id (0: none) and object path.
    pub job: (u32, Option<OwnedObjectPath>),
}

/// One moment's record of a unit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    pub service: ServiceHalf,
    pub unit: UnitHalf,
    /// Read from the manager after the exit was seen: its main process is the
    /// current one. A mirrored record may lag behind a start systemd has not
    /// announced yet, so there another pid than the exited one means a
    /// successor only if the exited one was announced before it ([`Self::earlier`]).
    pub current: bool,
    /// The main pids the signals announced before this record's, oldest first.
    pub earlier: Vec<u32>,
}

/// How many earlier main pids a mirror remembers.
const EARLIER: usize = 4;

fn value<T: TryFrom<OwnedValue>>(changed: &HashMap<String, OwnedValue>, name: &str) -> Option<T> {
    changed.get(name).and_then(|v| v.try_clone().ok()).and_then(|v| T::try_from(v).ok())
}

impl ServiceHalf {
    /// From a `PropertiesChanged` body of the Service interface; `None` when it
    /// lacks a property the judgement reads (a manager that does not send them).
    pub fn from_changed(changed: &HashMap<String, OwnedValue>) -> Option<Self> {
        Some(Self {
            pid: value(changed, "ExecMainPID")?,
            code: value(changed, "ExecMainCode")?,
            status: value(changed, "ExecMainStatus")?,
            started: value(changed, "ExecMainStartTimestampMonotonic")?,
            reaped: value(changed, "ExecMainExitTimestampMonotonic")?,
            result: value(changed, "Result")?,
            restarts: value(changed, "NRestarts")?,
        })
    }
}

impl UnitHalf {
    /// From a `PropertiesChanged` body of the Unit interface.
    pub fn from_changed(changed: &HashMap<String, OwnedValue>) -> Option<Self> {
        let (id, path): (u32, OwnedObjectPath) = value(changed, "Job")?;
        Some(Self {
            left_active: value(changed, "ActiveExitTimestampMonotonic")?,
            sub: value(changed, "SubState")?,
            job: (id, (id != 0).then_some(path)),
        })
    }
}

/// A judgement of the exit of main process `pid` (the manager's number `expected`).
#[derive(Debug, PartialEq, Eq)]
pub enum Judged {
    /// The record is not about this exit yet: the manager has not reaped it.
    NotYet,
    /// Decided.
    Exit(MainExit),
    /// Asked for, by the job at this path: a restart job makes it a restart, any
    /// other (or none found) a stop. The caller reads the job's type.
    AskedBy(MainExit, OwnedObjectPath),
}

/// Judges the exit of `pid` from `record`. `restart` is the unit's `Restart=`
/// setting, `restarts_before` its `NRestarts` when the main process started.
///
/// Whether the exit was asked for follows from the order of events, which
/// systemd's own timestamps keep: a stop or restart job makes the unit leave
/// `active` *before* it signals the main process, so `ActiveExit < ExecMainExit`;
/// a process that dies on its own is reaped first and the unit leaves `active`
/// afterwards (`ActiveExit >= ExecMainExit`). No signal has to win a race with
/// the kernel's report. When a new main process already replaced the record,
/// `NRestarts` tells a restart systemd did by itself (counted) from an
/// operator's (not counted).
pub fn judge(record: &Record, pid: u32, expected: u32, restarts_before: Option<u32>, restart: &str) -> Judged {
    let Record { service, unit, current, earlier } = record;
    let successor = *current || earlier.contains(&expected);
    if service.pid == 0 && !current {
        return Judged::NotYet;
    }
    if service.pid != expected && !successor {
        // Not announced yet: this record is about a process before it.
        return Judged::NotYet;
    }
    if service.pid == 0 {
        // The record is gone with the unit: systemd unloads a unit that ended
        // `inactive` (stopped) and that nobody references (the subscription's
        // `Ref` normally prevents it); a failed one it keeps.
        return Judged::Exit(MainExit { pid, status: ExitStatus::Unknown, clean: true, intent: Intent::Stop });
    }
    if service.pid != expected {
        let intent = match restarts_before {
            Some(before) if service.restarts > before => Intent::AutoRestart,
            Some(_) => Intent::Restart,
            None => Intent::Run,
        };
        return Judged::Exit(MainExit { pid, status: ExitStatus::Unknown, clean: false, intent });
    }
    if service.code == 0 {
        return Judged::NotYet;
    }
    let status = exec_main_status(service.code, service.status);
    let clean = service.result == "success";
    let asked = service.started < unit.left_active && unit.left_active < service.reaped && service.result != "watchdog";
    if asked {
        let exit = MainExit { pid, status, clean, intent: Intent::Stop };
        return match &unit.job.1 {
            Some(job) => Judged::AskedBy(exit, job.clone()),
            None => Judged::Exit(exit),
        };
    }
    let intent = if unit.sub == "auto-restart" || restarts_by_itself(restart, &service.result) {
        Intent::AutoRestart
    } else {
        Intent::Run
    };
    Judged::Exit(MainExit { pid, status, clean, intent })
}

/// What a unit's settings say about the signals the manager itself sends its
/// main process, read when the subscription starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// `Restart=`.
    pub restart: String,
    /// `KillSignal=`, `RestartKillSignal=`, `WatchdogSignal=` (those the manager
    /// has), and SIGHUP with `SendSIGHUP=yes`.
    pub own_signals: Vec<i32>,
    /// `ExecStop=` is set: a stop runs it, and it may send any signal.
    pub exec_stop: bool,
}

/// Signals a stop or the manager's own handling may send, whatever the settings
/// say: the defaults of the settings above, and the usual stop signals of
/// `ExecStop=`-less units' wrappers.
const STOP_SIGNALS: &[i32] = &[libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGABRT, libc::SIGCONT];

/// The exit of main process `pid` (the manager's `expected`) by `status`,
/// judged as it arrives from the unit's last announced record, without asking.
///
/// A stop or restart job makes systemd announce the job and leave `running`
/// before it signals the main process, but the announcement can reach us after
/// the process is dead, so the record's silence proves nothing for a signal the
/// stop sends. It does for any other: a main process killed by a signal systemd
/// never sends it (here: neither its `KillSignal=`, `RestartKillSignal=`,
/// `WatchdogSignal=` nor SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGABRT, SIGCONT; no
/// `ExecStop=`, which could send anything) while the unit was `running` with no
/// job was killed by someone else: a crash as systemd will record it (`Result`
/// `signal` or `core-dump`), restarted by itself as its `Restart=` says. A kill
/// -9, an OOM kill, a SIGSEGV. SIGKILL is also the stop's last resort
/// (`FinalKillSignal=`), but only after `TimeoutStopSec=`, long after the job
/// was announced. Everything else waits for systemd's record (`judge`).
pub fn known_at_once(
    record: &Record,
    settings: &Settings,
    pid: u32,
    expected: u32,
    status: &ExitStatus,
) -> Option<MainExit> {
    let ExitStatus::Signal { signal, core_dumped } = *status else { return None };
    if settings.exec_stop || settings.own_signals.contains(&signal) || STOP_SIGNALS.contains(&signal) {
        return None;
    }
    let (service, unit) = (&record.service, &record.unit);
    // Running under this pid, not reaped, no job: as the manager last announced it.
    if service.pid != expected || service.code != 0 || unit.job.0 != 0 || unit.sub != "running" {
        return None;
    }
    let result = if core_dumped { "core-dump" } else { "signal" };
    let intent = if restarts_by_itself(&settings.restart, result) { Intent::AutoRestart } else { Intent::Run };
    Some(MainExit { pid, status: *status, clean: false, intent })
}

/// `ExecMainCode` (a `CLD_*` code from waitid) and `ExecMainStatus` as an exit
/// status: `CLD_EXITED` carries the exit code, `CLD_KILLED`/`CLD_DUMPED` the signal;
/// any other code says nothing (never a code 0 it did not record).
pub fn exec_main_status(code: i32, status: i32) -> ExitStatus {
    match code {
        libc::CLD_EXITED => ExitStatus::Code(status),
        libc::CLD_KILLED => ExitStatus::Signal { signal: status, core_dumped: false },
        libc::CLD_DUMPED => ExitStatus::Signal { signal: status, core_dumped: true },
        _ => ExitStatus::Unknown,
    }
}

/// Job types that stop the unit and start it again.
pub fn is_restart_job(job: &str) -> bool {
    matches!(job, "restart" | "try-restart" | "reload-or-restart" | "try-reload-or-restart")
}

/// Whether systemd restarts the unit by itself after a main process that
/// ended with `result`, under its `Restart=` setting (systemd.service(5)'s
/// table; `RestartPreventExitStatus=` and the start limit are left to the
/// lookups that follow: a unit systemd gives up on ends `failed`).
pub fn restarts_by_itself(restart: &str, result: &str) -> bool {
    let signal = matches!(result, "signal" | "core-dump");
    match restart {
        "always" => true,
        "on-success" => result == "success",
        "on-failure" => result != "success",
        "on-abnormal" => signal || matches!(result, "watchdog" | "timeout"),
        "on-watchdog" => result == "watchdog",
        "on-abort" => signal,
        _ => false,
    }
}

/// A unit's record as its signals said it, kept by the subscription's task.
pub struct Mirror {
    /// The service half of the burst under way, until its unit half arrives.
    pending: Option<ServiceHalf>,
    /// The last whole record; `None` until a burst brought both halves (or
    /// after a burst whose service half lacked what the judgement reads).
    published: tokio::sync::watch::Sender<Option<Record>>,
}

impl Mirror {
    pub fn new() -> (Self, tokio::sync::watch::Receiver<Option<Record>>) {
        let (published, rx) = tokio::sync::watch::channel(None);
        (Self { pending: None, published }, rx)
    }

    /// Starts from a record read when the subscription began, unless a burst
    /// already brought a newer one.
    pub fn seed(&self, record: Record) {
        self.published.send_if_modified(|published| {
            if published.is_some() {
                return false;
            }
            *published = Some(Record { current: false, ..record });
            true
        });
    }

    /// Takes one `PropertiesChanged` signal of the unit.
    pub fn signal(&mut self, interface: &str, changed: &HashMap<String, OwnedValue>) {
        match interface {
            super::SERVICE => {
                self.pending = ServiceHalf::from_changed(changed);
                if self.pending.is_none() {
                    // Not a whole record: judge by reading the properties instead.
                    self.published.send_replace(None);
                }
            }
            super::UNIT => {
                let unit = UnitHalf::from_changed(changed);
                let service = self.pending.take();
                self.published.send_modify(|record| {
                    let before = record.take();
                    let mut earlier = before.as_ref().map(|r| r.earlier.clone()).unwrap_or_default();
                    if let (Some(before), Some(now)) = (&before, &service)
                        && before.service.pid != now.pid
                        && before.service.pid != 0
                    {
                        earlier.push(before.service.pid);
                        if earlier.len() > EARLIER {
                            earlier.remove(0);
                        }
                    }
                    *record = match (service, unit, before) {
                        (Some(service), Some(unit), _) => Some(Record { service, unit, current: false, earlier }),
                        // A burst of the unit alone (a job queued): the service's record stands.
                        (None, Some(unit), Some(before)) => Some(Record { unit, ..before }),
                        _ => None,
                    };
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use zbus::zvariant::Value;

    use super::*;

    const KILLED: i32 = libc::CLD_KILLED;

    fn service(pid: u32, code: i32, started: u64, reaped: u64, result: &str, restarts: u32) -> ServiceHalf {
        ServiceHalf { pid, code, status: 9, started, reaped, result: result.into(), restarts }
    }

    fn unit(left_active: u64, sub: &str, job: Option<&str>) -> UnitHalf {
        let job = job.map(|p| OwnedObjectPath::try_from(p).unwrap());
        UnitHalf { left_active, sub: sub.into(), job: (u32::from(job.is_some()), job) }
    }

    /// A record read from the manager just now.
    fn rec(service: ServiceHalf, unit: UnitHalf) -> Record {
        Record { service, unit, current: true, earlier: Vec::new() }
    }

    fn intent(judged: &Judged) -> Option<Intent> {
        match judged {
            Judged::NotYet => None,
            Judged::Exit(exit) | Judged::AskedBy(exit, _) => Some(exit.intent),
        }
    }

    /// Scenario table: the record systemd leaves, and what the exit of pid 100 was.
    #[test]
    fn the_order_of_systemds_timestamps_tells_a_stop_from_a_crash() {
        const JOB: &str = "/org/freedesktop/systemd1/job/7";
        let job = Some(JOB);
        let cases: &[(&str, Record, &str, Option<Intent>)] = &[
            ("not reaped yet", rec(service(100, 0, 10, 0, "success", 0), unit(5, "running", None)), "no", None),
            (
                "kill -9, Restart=always",
                rec(service(100, KILLED, 10, 30, "signal", 0), unit(31, "auto-restart", None)),
                "always",
                Some(Intent::AutoRestart),
            ),
            (
                "kill -9, Restart=no",
                rec(service(100, KILLED, 10, 30, "signal", 0), unit(31, "failed", None)),
                "no",
                Some(Intent::Run),
            ),
            (
                "kill -9, Restart=on-failure, record read before the state moved",
                rec(service(100, KILLED, 10, 30, "signal", 0), unit(5, "running", None)),
                "on-failure",
                Some(Intent::AutoRestart),
            ),
            (
                "systemctl stop (no job left)",
                rec(service(100, KILLED, 10, 30, "signal", 0), unit(20, "dead", None)),
                "always",
                Some(Intent::Stop),
            ),
            (
                "systemctl stop or restart (job queued)",
                rec(service(100, KILLED, 10, 30, "signal", 0), unit(20, "stop-sigterm", job)),
                "always",
                Some(Intent::Stop),
            ),
            (
                "watchdog kill: systemd's own",
                rec(service(100, KILLED, 10, 30, "watchdog", 0), unit(20, "auto-restart", None)),
                "on-watchdog",
                Some(Intent::AutoRestart),
            ),
            (
                "restarted by itself already",
                rec(service(101, 0, 40, 0, "success", 1), unit(31, "running", None)),
                "always",
                Some(Intent::AutoRestart),
            ),
            (
                "restarted by an operator already",
                rec(service(101, 0, 40, 0, "success", 0), unit(20, "running", None)),
                "always",
                Some(Intent::Restart),
            ),
            (
                "record gone with the unit",
                rec(service(0, 0, 0, 0, "success", 0), unit(0, "dead", None)),
                "no",
                Some(Intent::Stop),
            ),
        ];
        for (what, record, restart, expected) in cases {
            assert_eq!(intent(&judge(record, 100, 100, Some(0), restart)), *expected, "{what}");
        }
        let read = |i: usize| cases[i].1.clone();
        let asked = judge(&read(5), 100, 100, Some(0), "always");
        assert!(matches!(asked, Judged::AskedBy(_, ref path) if path.as_str() == JOB), "{asked:?}");
        let Judged::Exit(crash) = judge(&read(1), 100, 100, Some(0), "always") else { panic!() };
        assert_eq!((crash.status, crash.clean), (ExitStatus::Signal { signal: 9, core_dumped: false }, false));
    }

    /// systemd announces a start lazily: a process that dies at once may be reaped
    /// before its start was announced, so the mirror still shows the one before.
    #[test]
    fn a_mirrored_record_of_another_pid_is_a_successor_only_if_the_exited_pid_came_first() {
        let lagging = Record {
            service: service(99, KILLED, 1, 2, "signal", 0),
            unit: unit(3, "auto-restart", None),
            current: false,
            earlier: vec![98],
        };
        assert_eq!(judge(&lagging, 100, 100, Some(0), "always"), Judged::NotYet, "100 was never announced");
        let successor =
            Record { service: service(101, 0, 40, 0, "success", 1), earlier: vec![99, 100], ..lagging.clone() };
        assert_eq!(intent(&judge(&successor, 100, 100, Some(0), "always")), Some(Intent::AutoRestart));
        let gone = Record { service: service(0, 0, 0, 0, "success", 0), ..lagging };
        assert_eq!(judge(&gone, 100, 100, Some(0), "no"), Judged::NotYet, "a mirror's empty record waits for a read");
    }

    /// What it shows, the signal, the record's sub-state and job, the settings, the intent settled at once.
    type Case<'a> = (&'a str, i32, &'a str, Option<&'a str>, &'a Settings, Option<Intent>);

    /// Scenario table: a main process killed by `signal` while the record says
    /// `sub` with or without a job; is that settled at once, and how?
    #[test]
    fn only_a_signal_no_stop_sends_settles_an_exit_at_once() {
        let settings = Settings { restart: "on-failure".into(), own_signals: vec![libc::SIGUSR2], exec_stop: false };
        let job = Some("/org/freedesktop/systemd1/job/9");
        let killed = |signal| ExitStatus::Signal { signal, core_dumped: false };
        let cases: &[Case<'_>] = &[
            ("kill -9 while running", libc::SIGKILL, "running", None, &settings, Some(Intent::AutoRestart)),
            ("SIGSEGV while running", libc::SIGSEGV, "running", None, &settings, Some(Intent::AutoRestart)),
            ("SIGTERM: a stop's signal", libc::SIGTERM, "running", None, &settings, None),
            ("the unit's own KillSignal", libc::SIGUSR2, "running", None, &settings, None),
            ("SIGABRT: the watchdog's default", libc::SIGABRT, "running", None, &settings, None),
            ("kill -9 with a job queued", libc::SIGKILL, "running", job, &settings, None),
            ("kill -9 while stopping", libc::SIGKILL, "stop-sigterm", None, &settings, None),
            (
                "kill -9, ExecStop= set",
                libc::SIGKILL,
                "running",
                None,
                &Settings { exec_stop: true, ..settings.clone() },
                None,
            ),
            (
                "kill -9, Restart=no",
                libc::SIGKILL,
                "running",
                None,
                &Settings { restart: "no".into(), ..settings.clone() },
                Some(Intent::Run),
            ),
        ];
        for (what, signal, sub, job, settings, expected) in cases {
            let record = Record {
                service: service(100, 0, 10, 0, "success", 0),
                unit: unit(5, sub, *job),
                current: false,
                earlier: vec![],
            };
            let known = known_at_once(&record, settings, 100, 100, &killed(*signal));
            assert_eq!(known.map(|k| k.intent), *expected, "{what}");
        }
        let record = Record {
            service: service(100, 0, 10, 0, "success", 0),
            unit: unit(5, "running", None),
            ..Record::default()
        };
        assert_eq!(known_at_once(&record, &settings, 100, 100, &ExitStatus::Code(0)), None, "an exit code waits");
        assert_eq!(known_at_once(&record, &settings, 100, 99, &killed(9)), None, "another main pid waits");
        let reaped = Record { service: service(100, KILLED, 10, 30, "signal", 0), ..record };
        assert_eq!(known_at_once(&reaped, &settings, 100, 100, &killed(9)), None, "reaped: the record says it all");
    }

    #[test]
    fn a_seed_never_replaces_what_a_burst_brought() {
        let (mut mirror, rx) = Mirror::new();
        mirror.signal(super::super::SERVICE, &service_signal(100, KILLED));
        mirror.signal(super::super::UNIT, &unit_signal("auto-restart"));
        mirror.seed(Record { service: service(99, 0, 1, 0, "success", 0), ..Record::default() });
        assert_eq!(rx.borrow().as_ref().map(|r| r.service.pid), Some(100));
        let (fresh, rx) = Mirror::new();
        fresh.seed(Record { service: service(99, 0, 1, 0, "success", 0), current: true, ..Record::default() });
        assert_eq!(rx.borrow().as_ref().map(|r| (r.service.pid, r.current)), Some((99, false)));
    }

    fn changed(pairs: &[(&str, Value<'_>)]) -> HashMap<String, OwnedValue> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), OwnedValue::try_from(v.try_clone().unwrap()).unwrap())).collect()
    }

    fn service_signal(pid: u32, code: i32) -> HashMap<String, OwnedValue> {
        changed(&[
            ("ExecMainPID", Value::U32(pid)),
            ("ExecMainCode", Value::I32(code)),
            ("ExecMainStatus", Value::I32(9)),
            ("ExecMainStartTimestampMonotonic", Value::U64(10)),
            ("ExecMainExitTimestampMonotonic", Value::U64(30)),
            ("Result", Value::from("signal")),
            ("NRestarts", Value::U32(0)),
            ("MainPID", Value::U32(0)),
        ])
    }

    fn unit_signal(sub: &str) -> HashMap<String, OwnedValue> {
        let none = OwnedObjectPath::try_from("/").unwrap();
        changed(&[
            ("ActiveExitTimestampMonotonic", Value::U64(31)),
            ("SubState", Value::from(sub)),
            ("Job", Value::from((0u32, none))),
            ("ActiveState", Value::from("activating")),
        ])
    }

    #[test]
    fn a_record_is_published_only_when_both_halves_of_a_burst_are_in() {
        let (mut mirror, rx) = Mirror::new();
        mirror.signal(super::super::SERVICE, &service_signal(100, KILLED));
        assert_eq!(*rx.borrow(), None, "the service half alone is not a record");
        mirror.signal(super::super::UNIT, &unit_signal("auto-restart"));
        let record = rx.borrow().clone().expect("published");
        assert_eq!((record.service.pid, record.service.code, record.unit.sub.as_str()), (100, KILLED, "auto-restart"));
        // The next start is announced: the record remembers the pid before it.
        mirror.signal(super::super::SERVICE, &service_signal(101, 0));
        mirror.signal(super::super::UNIT, &unit_signal("running"));
        assert_eq!(rx.borrow().as_ref().map(|r| (r.service.pid, r.earlier.clone())), Some((101, vec![100])));
        // A burst of the unit alone keeps the service's record.
        mirror.signal(super::super::UNIT, &unit_signal("failed"));
        assert_eq!(rx.borrow().as_ref().map(|r| (r.service.pid, r.unit.sub.clone())), Some((101, "failed".into())));
        // A service half without the record's properties withdraws it: the caller reads instead.
        mirror.signal(super::super::SERVICE, &changed(&[("MainPID", Value::U32(5))]));
        assert_eq!(*rx.borrow(), None);
    }
}
