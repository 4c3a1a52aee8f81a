//! A service's process metrics: `memory:rss` and `cpu:user|system|total` of its
//! main process, and `memory:total_rss` and `cpu:total_user|total_system` summed
//! over all its live processes: the cgroup's, or the process tree's (see
//! `daemon::services::Service::live_members`), never from scanning all of /proc.
//! Raw values: CPU as cumulative seconds, which the engine turns into percent.
//!
//! Only what the check's rules read is read ([`Needs`]): nothing for a service whose rules are all events, and a
//! unit's total CPU from its cgroup's `cpu.stat` (one read, the whole cgroup's CPU, exited processes included)
//! rather than every member's `/proc/PID/stat`.

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
    /// `memory:rss`, `cpu:user`, `cpu:system`, `cpu:total`: the main process's.
    pub main: bool,
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
            "memory:rss" | "cpu:user" | "cpu:system" | "cpu:total" => Needs { main: true, ..Needs::default() },
            "memory:total_rss" => Needs { total_rss: true, ..Needs::default() },
            "cpu:total_user" | "cpu:total_system" => Needs { total_cpu: true, ..Needs::default() },
            _ => Needs::default(),
        }
    }

    #[must_use]
    pub fn and(self, other: Self) -> Self {
        Needs {
            main: self.main || other.main,
            total_rss: self.total_rss || other.total_rss,
            total_cpu: self.total_cpu || other.total_cpu,
        }
    }

    #[must_use]
    pub fn nothing(self) -> bool {
        self == Needs::default()
    }
}

/// Samples what `needs` asks of a service: `main` is its main pid, `members` lists every pid it has now (read only
/// when a total needs them), `cgroup` its own cgroup's directory when it has one.
pub fn sample_needed(
    needs: Needs,
    main: u32,
    members: impl FnOnce() -> Vec<u32>,
    cgroup: Option<&std::path::Path>,
) -> Vec<Value> {
    let mut out = Vec::new();
    if needs.main
        && let Some(main) = usage(main)
    {
        out.extend(values(Some(main), &[]));
    }
    let cgroup_cpu = if needs.total_cpu { cgroup.and_then(cgroup_cpu_secs) } else { None };
    if let Some((user, system)) = cgroup_cpu {
        out.push(("cpu:total_user".into(), user));
        out.push(("cpu:total_system".into(), system));
    }
    if needs.total_rss || (needs.total_cpu && cgroup_cpu.is_none()) {
        let members: Vec<Usage> = members().into_iter().filter_map(usage).collect();
        for (metric, value) in values(None, &members) {
            let cpu = metric.starts_with("cpu:");
            if (cpu && cgroup_cpu.is_none() && needs.total_cpu) || (!cpu && needs.total_rss) {
                out.push((metric, value));
            }
        }
    }
    out
}

/// A cgroup's user and system CPU seconds (`cpu.stat`'s `user_usec` and `system_usec`, which cgroup v2 keeps with
/// or without the cpu controller).
fn cgroup_cpu_secs(dir: &std::path::Path) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
    parse_cpu_stat(&text)
}

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
        let names = |needs, cgroup: Option<&std::path::Path>| -> Vec<String> {
            sample_needed(needs, me, || vec![me], cgroup).into_iter().map(|(m, _)| m).collect()
        };
        assert!(names(Needs::default(), None).is_empty());
        assert_eq!(names(Needs::of("memory:rss"), None), ["memory:rss", "cpu:user", "cpu:system", "cpu:total"]);
        assert_eq!(names(Needs::of("memory:total_rss"), None), ["memory:total_rss"]);
        assert_eq!(names(Needs::of("cpu:total_user"), None), ["cpu:total_user", "cpu:total_system"]);
    }

    #[test]
    fn this_process_has_usage() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert_eq!(usage(u32::MAX), None);
    }
}
