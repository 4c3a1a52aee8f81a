//! A service's process metrics: `memory:rss` and `cpu:user|system|total` of its
//! main process, and `memory:total_rss` and `cpu:total_user|total_system` summed
//! over all its live processes: the cgroup's, or the process tree's (see
//! `daemon::services::Service::live_members`), never from scanning all of /proc.
//! Raw values: CPU as cumulative seconds, which the engine turns into percent.

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
    fn this_process_has_usage() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert_eq!(usage(u32::MAX), None);
    }
}
