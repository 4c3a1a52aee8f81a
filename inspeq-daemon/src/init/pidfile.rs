//! Processes outside any init system: `check process NAME with pidfile PATH` or
//! `matching REGEX`. inspeq watches them as a process tree; `restart` runs the
//! configured `restart_command` (an argv), `reload` signals the process.
//!
//! Pidfiles are also how init.d services are found, so reading one — and telling
//! a stale one from a live one — lives here.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use regex::Regex;

use super::{
    Argv, InitError, InitFuture, InitKind, InitSystem, ReloadSignal, ServiceName, ServiceStatus, Timeouts,
    process_alive,
};

/// What a pidfile says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PidfileState {
    /// No such file.
    Missing,
    /// The file holds no pid.
    Empty,
    /// It names a live process that started before the file was written.
    Live(u32),
    /// It names a process that is gone, or a newer process that reused the pid.
    Stale(u32),
}

/// Reads a pidfile and checks its pid. A pid reused after the service died is
/// seen by the process having started after the pidfile was last written.
pub(crate) fn read_pidfile(path: &Path) -> PidfileState {
    let (text, written) = match std::fs::read_to_string(path) {
        Ok(text) => (text, std::fs::metadata(path).and_then(|m| m.modified()).ok()),
        Err(_) => return PidfileState::Missing,
    };
    let Some(pid) = text.split_whitespace().next().and_then(|t| t.parse::<u32>().ok()).filter(|p| *p > 0) else {
        return PidfileState::Empty;
    };
    if !process_alive(pid) {
        return PidfileState::Stale(pid);
    }
    match (written, process_start(pid)) {
        // A little slack: the file's mtime and the start time have different clocks' granularity.
        (Some(written), Some(started)) if started > written + Duration::from_secs(2) => PidfileState::Stale(pid),
        _ => PidfileState::Live(pid),
    }
}

/// When a process started, from `/proc/PID/stat` (clock ticks after boot) and
/// the boot time in `/proc/stat`.
fn process_start(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22, counted after the parenthesised comm (field 2), which may hold spaces.
    let ticks: u64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|h| *h > 0)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boot) + Duration::from_millis(ticks * 1000 / hz))
}

/// How a `check process` finds its process.
#[derive(Clone, Debug)]
pub enum ProcessLocator {
    /// `with pidfile PATH`
    Pidfile(PathBuf),
    /// `matching REGEX`, against the command line (arguments joined by spaces).
    Matching(Regex),
}

impl ProcessLocator {
    /// `matching REGEX`, compiled by the same function (and size limit) `inspeqctl check` accepted it with.
    pub fn matching(pattern: &str) -> Result<Self, regex::Error> {
        crate::config::names::process_pattern(pattern).map(Self::Matching)
    }
}

/// A `check process` service's settings.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    pub locator: ProcessLocator,
    /// What `restart` runs; without it `restart` is an error (the configuration
    /// check reports it against the rule's line).
    pub restart_command: Option<Argv>,
    /// What `reload` sends to the process.
    pub reload_signal: ReloadSignal,
    pub timeouts: Timeouts,
}

/// One `check process` service. Each has its own locator, so each is its own
/// [`InitSystem`] and the service name passed in is only a label.
pub struct ProcessService {
    options: ProcessOptions,
}

impl ProcessService {
    pub fn new(options: ProcessOptions) -> Self {
        Self { options }
    }

    fn find(&self) -> ServiceStatus {
        match &self.options.locator {
            ProcessLocator::Pidfile(path) => match read_pidfile(path) {
                PidfileState::Live(pid) => ServiceStatus::up(pid, format!("pid {pid} from {}", path.display())),
                PidfileState::Missing => ServiceStatus::down(format!("no pidfile {}", path.display())),
                PidfileState::Empty => ServiceStatus::down(format!("empty pidfile {}", path.display())),
                PidfileState::Stale(pid) => {
                    ServiceStatus::down(format!("stale pidfile {} (pid {pid} is not its process)", path.display()))
                }
            },
            ProcessLocator::Matching(regex) => match oldest_match(regex) {
                Some(pid) => ServiceStatus::up(pid, format!("pid {pid} matching /{}/", regex.as_str())),
                None => ServiceStatus::down(format!("no process matching /{}/", regex.as_str())),
            },
        }
    }
}

/// The process whose command line matches, preferring one whose parent does not
/// match (the root of a forking server), then the oldest. inspeq itself, whose
/// own arguments may contain the pattern, never counts.
fn oldest_match(regex: &Regex) -> Option<u32> {
    let me = std::process::id();
    let mut found: Vec<(u32, u32, u64)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if raw.is_empty() {
            continue; // kernel threads and zombies
        }
        let cmdline = String::from_utf8_lossy(&raw).trim_end_matches('\0').replace('\0', " ");
        if !regex.is_match(&cmdline) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let ppid = fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let start = fields.get(19).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
        found.push((pid, ppid, start));
    }
    let pids: Vec<u32> = found.iter().map(|f| f.0).collect();
    found.iter().min_by_key(|(_, ppid, start)| (pids.contains(ppid), *start)).map(|f| f.0)
}

impl InitSystem for ProcessService {
    fn kind(&self) -> InitKind {
        InitKind::Process
    }

    fn lookup<'a>(&'a self, _service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        Box::pin(async move { Ok(self.find()) })
    }

    fn restart<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            let Some(argv) = &self.options.restart_command else {
                return Err(InitError::NoRestartCommand { service: service.to_string() });
            };
            let out = argv.run(self.options.timeouts.action).await.map_err(|source| InitError::Command {
                init: InitKind::Process,
                service: service.to_string(),
                action: "restart",
                source,
            })?;
            if !out.success() {
                return Err(InitError::Failed {
                    init: InitKind::Process,
                    service: service.to_string(),
                    action: "restart",
                    message: format!("`{argv}` exited with {:?}: {}", out.code, out.message()),
                });
            }
            Ok(())
        })
    }

    fn reload<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async move {
            let status = self.find();
            let Some(pid) = status.main_pid else {
                return Err(InitError::Signal { service: service.to_string(), reason: status.detail });
            };
            signal(pid, self.options.reload_signal.number())
                .map_err(|e| InitError::Signal { service: service.to_string(), reason: format!("kill {pid}: {e}") })
        })
    }
}

pub(crate) fn signal(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill(2) has no memory preconditions; pid > 0 addresses one process.
    if pid <= 0 || unsafe { libc::kill(pid, signal) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// A pidfile path in a scratch directory that goes with the returned guard.
    fn temp(name: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.pid"));
        (dir, path)
    }

    #[test]
    fn a_pidfile_naming_a_live_process_is_live() {
        let (_dir, path) = temp("live");
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(read_pidfile(&path), PidfileState::Live(std::process::id()));
    }

    #[test]
    fn a_pidfile_naming_a_dead_process_is_stale() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let (_dir, path) = temp("dead");
        std::fs::write(&path, pid.to_string()).unwrap();
        assert_eq!(read_pidfile(&path), PidfileState::Stale(pid));
    }

    #[test]
    fn a_pidfile_older_than_its_process_is_stale() {
        let (_dir, path) = temp("reused");
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        std::fs::write(&path, child.id().to_string()).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert_eq!(read_pidfile(&path), PidfileState::Stale(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn missing_and_empty_pidfiles() {
        let (_dir, path) = temp("empty");
        assert_eq!(read_pidfile(&path), PidfileState::Missing);
        std::fs::write(&path, "\n").unwrap();
        assert_eq!(read_pidfile(&path), PidfileState::Empty);
    }

    #[test]
    fn matching_finds_the_process_by_command_line_but_never_inspeq_itself() {
        let mut child = Command::new("sleep").arg("7.25").spawn().unwrap();
        let regex = Regex::new(r"^sleep 7\.25$").unwrap();
        // Under load the child may not have exec'd yet when spawn returns.
        let found = (0..100).find_map(|_| {
            oldest_match(&regex).or_else(|| {
                std::thread::sleep(Duration::from_millis(10));
                None
            })
        });
        assert_eq!(found, Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        // This test binary's own command line holds the test name, not the pattern;
        // a pattern matching everything still never picks this process.
        let any = Regex::new(".").unwrap();
        assert_ne!(oldest_match(&any), Some(std::process::id()));
    }
}
