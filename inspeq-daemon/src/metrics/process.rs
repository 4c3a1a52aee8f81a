//! A service's process metrics: `memory:rss` and `cpu:user|system|total` of its
//! main process, and `memory:total_rss` and `cpu:total_user|total_system` summed
//! over all its live processes: the cgroup's, or the process tree's (see
//! `daemon::services::Service::live_members`), never from scanning all of /proc.
//! Raw values: CPU as cumulative seconds, which the engine turns into percent.
//!
//! Only what the check's rules read is read ([`Needs`]): nothing for a service whose rules are all events, and a
//! unit's total CPU from its cgroup's `cpu.stat` (one read, the whole cgroup's CPU, exited processes included)
//! rather than every member's `/proc/PID/stat`.
//!
//! The files read every cycle stay open ([`OpenFiles`], one per service): a
//! sample of a main process is then two `pread`s and a unit's CPU one, where
//! opening each file again cost a path walk through /proc or cgroupfs (about
//! 160 µs of CPU per service and cycle, most of it lookups, measured at 50
//! services; `docs/performance.md`). A unit's `memory:total_rss` comes from
//! the kernel's running total when its eBPF watch keeps one (the caller passes
//! it), not from each member's `statm`.

use std::{fs::File, os::unix::fs::FileExt as _, path::Path};

use super::Value;

/// One process's resident bytes and cumulative CPU seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub user_secs: f64,
    pub system_secs: f64,
}

/// Reads `/proc/PID/stat` and `statm`; `None` when the process is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let rss_pages = process.statm().map(|m| m.resident).unwrap_or(stat.rss);
    Some(Usage {
        rss_bytes: rss_pages * procfs::page_size(),
        user_secs: stat.utime as f64 / ticks,
        system_secs: stat.stime as f64 / ticks,
    })
}

/// The metric values of a service from its main process's and all members' usage
/// (`members` includes the main process).
pub fn values(main: Option<Usage>, members: &[Usage]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Some(main) = main {
        out.push(("memory:rss".into(), main.rss_bytes as f64));
        out.push(("cpu:user".into(), main.user_secs));
        out.push(("cpu:system".into(), main.system_secs));
        out.push(("cpu:total".into(), main.user_secs + main.system_secs));
    }
    if !members.is_empty() {
        out.push(("memory:total_rss".into(), members.iter().map(|u| u.rss_bytes as f64).sum()));
        out.push(("cpu:total_user".into(), members.iter().map(|u| u.user_secs).sum()));
        out.push(("cpu:total_system".into(), members.iter().map(|u| u.system_secs).sum()));
    }
    out
}

/// Samples a service: `main` is its main pid, `members` every pid it has now.
pub fn sample(main: Option<u32>, members: impl IntoIterator<Item = u32>) -> Vec<Value> {
    let main_usage = main.and_then(usage);
    let members: Vec<Usage> = members.into_iter().filter_map(usage).collect();
    values(main_usage, &members)
}

/// Which of a service's process metrics its rules read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `memory:rss`: the main process's `statm`, or the kernel's figure.
    pub main_rss: bool,
    /// `cpu:user`, `cpu:system`, `cpu:total`: the main process's `stat`.
    pub main_cpu: bool,
    /// `memory:total_rss`: every member's statm.
    pub total_rss: bool,
    /// `cpu:total_user`, `cpu:total_system`: the cgroup's `cpu.stat`, else every member's stat.
    pub total_cpu: bool,
}

impl Needs {
    /// What reading `metric` (`family:name`) takes.
    #[must_use]
    pub fn of(metric: &str) -> Self {
        match metric {
            "memory:rss" => Needs { main_rss: true, ..Needs::default() },
            "cpu:user" | "cpu:system" | "cpu:total" => Needs { main_cpu: true, ..Needs::default() },
            "memory:total_rss" => Needs { total_rss: true, ..Needs::default() },
            "cpu:total_user" | "cpu:total_system" => Needs { total_cpu: true, ..Needs::default() },
            _ => Needs::default(),
        }
    }

    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Needs {
            main_rss: self.main_rss || other.main_rss,
            main_cpu: self.main_cpu || other.main_cpu,
            total_rss: self.total_rss || other.total_rss,
            total_cpu: self.total_cpu || other.total_cpu,
        }
    }

    #[must_use]
    pub fn nothing(self) -> bool {
        self == Needs::default()
    }
}

/// The files a service's samples are read from, kept open between cycles and
/// opened again when the main pid or the cgroup changes.
#[derive(Debug, Default)]
pub struct OpenFiles {
    /// The main process's `stat` and `statm`.
    main: Option<(u32, File, File)>,
    /// The cgroup directory and its `cpu.stat`.
    cpu_stat: Option<(std::path::PathBuf, File)>,
}

/// Reads the whole of a small kernel file from its start; `None` on an error
/// (a process that ended answers ESRCH).
fn read_from_start<'b>(file: &File, buf: &'b mut [u8]) -> Option<&'b str> {
    let n = file.read_at(buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()
}

impl OpenFiles {
    /// The main process's usage, as [`usage`] reads it.
    fn main_usage(&mut self, pid: u32) -> Option<Usage> {
        if self.main.as_ref().is_none_or(|(p, _, _)| *p != pid) {
            let dir = format!("/proc/{pid}");
            self.main = Some((pid, File::open(format!("{dir}/stat")).ok()?, File::open(format!("{dir}/statm")).ok()?));
        }
        let (_, stat, statm) = self.main.as_ref()?;
        let mut buf = [0u8; 1024];
        let usage = read_from_start(stat, &mut buf).and_then(parse_stat).and_then(|(user, system)| {
            let mut buf = [0u8; 256];
            let resident = read_from_start(statm, &mut buf)?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
            Some(Usage { rss_bytes: resident * procfs::page_size(), user_secs: user, system_secs: system })
        });
        if usage.is_none() {
            // Ended (or replaced): opened again for the next pid.
            self.main = None;
        }
        usage
    }

    /// A cgroup's CPU, as [`cgroup_cpu_secs`] reads it.
    fn cgroup_cpu(&mut self, dir: &Path) -> Option<(f64, f64)> {
        if self.cpu_stat.as_ref().is_none_or(|(d, _)| d != dir) {
            self.cpu_stat = Some((dir.to_owned(), File::open(dir.join("cpu.stat")).ok()?));
        }
        let (_, file) = self.cpu_stat.as_ref()?;
        let mut buf = [0u8; 2048];
        let cpu = read_from_start(file, &mut buf).and_then(parse_cpu_stat);
        if cpu.is_none() {
            self.cpu_stat = None;
        }
        cpu
    }
}

/// User and system CPU seconds from a `/proc/PID/stat` line: fields 14 and 15,
/// counted after the command name's closing parenthesis (the name may hold
/// spaces and parentheses itself).
fn parse_stat(text: &str) -> Option<(f64, f64)> {
    let (_, after) = text.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let ticks = procfs::ticks_per_second() as f64;
    let user = fields.next()?.parse::<u64>().ok()? as f64 / ticks;
    let system = fields.next()?.parse::<u64>().ok()? as f64 / ticks;
    Some((user, system))
}

/// What the kernel side keeps of a service's RSS (eBPF, for watches with an RSS
/// threshold): its main process's and its total, each at its last change.
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelRss {
    pub main: Option<u64>,
    pub total: Option<u64>,
}

/// Samples what `needs` asks of a service: `main` is its main pid, `members` lists every pid it has now (read only
/// when a total needs them), `cgroup` its own cgroup's directory when it has one, `kernel` what the kernel keeps of
/// its RSS, `files` the service's open files.
pub fn sample_needed(
    needs: Needs,
    main: u32,
    members: impl FnOnce() -> Vec<u32>,
    cgroup: Option<&Path>,
    kernel: KernelRss,
    files: &mut OpenFiles,
) -> Vec<Value> {
    let mut out = Vec::new();
    #[expect(clippy::cast_precision_loss, reason = "bytes of RSS stay far below 2^52")]
    let kernel_main = kernel.main.filter(|_| needs.main_rss && !needs.main_cpu).map(|bytes| bytes as f64);
    if let Some(rss) = kernel_main {
        out.push(("memory:rss".into(), rss));
    } else if (needs.main_rss || needs.main_cpu)
        && let Some(main) = files.main_usage(main)
    {
        // Read anyway: all four values, for `show`.
        out.extend(values(Some(main), &[]));
    }
    let kernel_total_rss = kernel.total;
    let cgroup_cpu = if needs.total_cpu { cgroup.and_then(|dir| files.cgroup_cpu(dir)) } else { None };
    if let Some((user, system)) = cgroup_cpu {
        out.push(("cpu:total_user".into(), user));
        out.push(("cpu:total_system".into(), system));
    }
    #[expect(clippy::cast_precision_loss, reason = "bytes of RSS stay far below 2^52")]
    let kernel_total = kernel_total_rss.filter(|_| needs.total_rss).map(|bytes| bytes as f64);
    if let Some(total) = kernel_total {
        out.push(("memory:total_rss".into(), total));
    }
    let total_rss = needs.total_rss && kernel_total.is_none();
    if total_rss || (needs.total_cpu && cgroup_cpu.is_none()) {
        let members: Vec<Usage> = members().into_iter().filter_map(usage).collect();
        for (metric, value) in values(None, &members) {
            let cpu = metric.starts_with("cpu:");
            if (cpu && cgroup_cpu.is_none() && needs.total_cpu) || (!cpu && total_rss) {
                out.push((metric, value));
            }
        }
    }
    out
}

/// A cgroup's user and system CPU seconds, from `cpu.stat`'s `user_usec` and `system_usec`, which cgroup v2 keeps
/// with or without the cpu controller.
fn parse_cpu_stat(text: &str) -> Option<(f64, f64)> {
    let field =
        |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse::<u64>().ok());
    #[expect(clippy::cast_precision_loss, reason = "microseconds of CPU stay far below 2^52")]
    let secs = |usec: u64| usec as f64 / 1e6;
    Some((secs(field("user_usec")?), secs(field("system_usec")?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_members_and_main_stands_alone() {
        let main = Usage { rss_bytes: 100, user_secs: 1.0, system_secs: 0.5 };
        let child = Usage { rss_bytes: 50, user_secs: 2.0, system_secs: 0.25 };
        let v = values(Some(main), &[main, child]);
        let get = |n: &str| v.iter().find(|(k, _)| k == n).unwrap().1;
        assert_eq!(get("memory:rss"), 100.0);
        assert_eq!(get("memory:total_rss"), 150.0);
        assert_eq!(get("cpu:total"), 1.5);
        assert_eq!(get("cpu:total_user"), 3.0);
        assert_eq!(get("cpu:total_system"), 0.75);
    }

    #[test]
    fn a_cgroups_cpu_is_its_cpu_stat_in_seconds() {
        let text = "usage_usec 3500000\nuser_usec 2500000\nsystem_usec 1000000\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat(text), Some((2.5, 1.0)));
        assert_eq!(parse_cpu_stat("usage_usec 1\n"), None);
    }

    #[test]
    fn only_what_is_needed_is_sampled() {
        let me = std::process::id();
        let mut files = OpenFiles::default();
        let mut names = |needs, cgroup: Option<&Path>| -> Vec<String> {
            sample_needed(needs, me, || vec![me], cgroup, KernelRss::default(), &mut files)
                .into_iter()
                .map(|(m, _)| m)
                .collect()
        };
        assert!(names(Needs::default(), None).is_empty());
        assert_eq!(names(Needs::of("memory:rss"), None), ["memory:rss", "cpu:user", "cpu:system", "cpu:total"]);
        assert_eq!(names(Needs::of("memory:total_rss"), None), ["memory:total_rss"]);
        assert_eq!(names(Needs::of("cpu:total_user"), None), ["cpu:total_user", "cpu:total_system"]);
        assert_eq!(names(Needs::of("cpu:user"), None), ["memory:rss", "cpu:user", "cpu:system", "cpu:total"]);
        // The kernel's figures stand for the files: no member read, no main process read.
        let kernel = KernelRss { main: Some(8192), total: Some(4096) };
        let total =
            sample_needed(Needs::of("memory:total_rss"), me, || panic!("no member read"), None, kernel, &mut files);
        assert_eq!(total, [("memory:total_rss".to_owned(), 4096.0)]);
        let main = sample_needed(Needs::of("memory:rss"), u32::MAX, Vec::new, None, kernel, &mut files);
        assert_eq!(main, [("memory:rss".to_owned(), 8192.0)]);
        let both = Needs::of("memory:rss").and(Needs::of("cpu:total"));
        assert_eq!(sample_needed(both, me, Vec::new, None, kernel, &mut files).len(), 4, "CPU needs the file anyway");
    }

    /// The open files read what opening them afresh reads, and follow a new pid.
    #[test]
    fn open_files_read_what_a_fresh_read_does() {
        let me = std::process::id();
        let mut files = OpenFiles::default();
        let kept = files.main_usage(me).unwrap();
        let fresh = usage(me).unwrap();
        assert!(kept.user_secs <= fresh.user_secs && kept.rss_bytes > 0);
        let again = files.main_usage(me).unwrap();
        assert!(again.user_secs >= kept.user_secs, "read again from the start, not from where the last read ended");
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        assert!(files.main_usage(child.id()).is_some(), "a new main pid is opened");
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(files.main_usage(child.id()), None, "an ended process reads as gone");
        assert_eq!(parse_stat("1 (a) b) S 0 0 0 0 0 0 0 0 0 0 250 100 0 0"), Some((2.5, 1.0)));
    }

    #[test]
    fn this_process_has_usage() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert_eq!(usage(u32::MAX), None);
    }
}
