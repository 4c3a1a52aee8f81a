//! Host metrics: CPU time per state (cumulative seconds, summed over cores, with
//! the core count for normalising), load averages, memory, swap and disk use.

use std::path::Path;

use super::Value;

/// The online CPU count, for normalising host CPU percentages.
pub fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds per state from the first (all-CPU) line of `/proc/stat` text.
pub fn cpu_from_stat(stat: &str, ticks_per_sec: f64) -> Vec<Value> {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    let fields: Vec<f64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let get = |i: usize| fields.get(i).copied().unwrap_or(0.0) / ticks_per_sec;
    let (user, nice, system, _idle, iowait, irq, softirq, steal) =
        (get(0), get(1), get(2), get(3), get(4), get(5), get(6), get(7));
    // Busy time: what was not idle or waiting for I/O.
    let total = user + nice + system + irq + softirq + steal;
    vec![
        ("cpu".into(), total),
        ("cpu:total".into(), total),
        ("cpu:user".into(), user),
        ("cpu:nice".into(), nice),
        ("cpu:system".into(), system),
        ("cpu:iowait".into(), iowait),
        ("cpu:irq".into(), irq),
        ("cpu:softirq".into(), softirq),
        ("cpu:steal".into(), steal),
    ]
}

/// Busy CPU seconds per core (`cpu:core0`, `cpu:core1`, ...) from the `cpuN`
/// lines of `/proc/stat` text: for `show` and export, beside the normalised total.
pub fn cores_from_stat(stat: &str, ticks_per_sec: f64) -> Vec<Value> {
    stat.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let core: u32 = fields.next()?.strip_prefix("cpu")?.parse().ok()?;
            let v: Vec<f64> = fields.filter_map(|f| f.parse().ok()).collect();
            let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| v.get(i).copied().unwrap_or(0.0)).sum::<f64>();
            Some((format!("cpu:core{core}"), busy / ticks_per_sec))
        })
        .collect()
}

/// Whether a sampled value is a per-core figure, which rules do not name.
pub fn is_per_core(metric: &str) -> bool {
    metric.starts_with("cpu:core")
}

/// `load:1`, `load:5`, `load:15` from `/proc/loadavg` text.
pub fn load_from_loadavg(text: &str) -> Vec<Value> {
    text.split_whitespace()
        .take(3)
        .zip(["load:1", "load:5", "load:15"])
        .filter_map(|(v, name)| Some((name.to_owned(), v.parse().ok()?)))
        .collect()
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().trim_end_matches("kB").trim().parse().ok())
}

/// `memory:used` (percent), `memory:available` (bytes) and `swap` (percent used;
/// 0 on a host without swap, not Inspeqtor's 100 %) from `/proc/meminfo` text.
pub fn memory_from_meminfo(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    if let (Some(total), Some(available)) = (meminfo_kib(text, "MemTotal"), meminfo_kib(text, "MemAvailable"))
        && total > 0
    {
        out.push(("memory:used".into(), (total.saturating_sub(available)) as f64 * 100.0 / total as f64));
        out.push(("memory:available".into(), available as f64 * 1024.0));
    }
    if let (Some(total), Some(free)) = (meminfo_kib(text, "SwapTotal"), meminfo_kib(text, "SwapFree")) {
        let used = if total == 0 { 0.0 } else { total.saturating_sub(free) as f64 * 100.0 / total as f64 };
        out.push(("swap".into(), used));
    }
    out
}

/// Percent of the file system at `mount` in use, as `df` reports it (blocks
/// reserved for root count as unavailable).
pub fn disk_used_percent(mount: &Path) -> Option<f64> {
    let path = std::ffi::CString::new(mount.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs fills the zeroed struct; path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let used = st.f_blocks.saturating_sub(st.f_bfree) as f64;
    let usable = used + st.f_bavail as f64;
    Some(if usable > 0.0 { used * 100.0 / usable } else { 0.0 })
}

/// Samples the host: CPU, load, memory, swap, and `disk:<mount>` for each of `mounts`.
pub fn sample(mounts: &[&Path]) -> Vec<Value> {
    let mut out = Vec::new();
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        out.extend(cpu_from_stat(&stat, clock_ticks()));
        out.extend(cores_from_stat(&stat, clock_ticks()));
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        out.extend(load_from_loadavg(&load));
    }
    if let Ok(mem) = std::fs::read_to_string("/proc/meminfo") {
        out.extend(memory_from_meminfo(&mem));
    }
    for mount in mounts {
        if let Some(percent) = disk_used_percent(mount) {
            out.push((format!("disk:{}", mount.display()), percent));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(values: &[Value], name: &str) -> f64 {
        values.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn cpu_seconds_per_state() {
        let stat = "cpu  100 20 50 1000 30 5 5 10 0 0\ncpu0 50 10 25 500 15 2 3 5 0 0\n";
        let v = cpu_from_stat(stat, 100.0);
        assert_eq!(get(&v, "cpu:user"), 1.0);
        assert_eq!(get(&v, "cpu:system"), 0.5);
        assert_eq!(get(&v, "cpu:iowait"), 0.3);
        assert_eq!(get(&v, "cpu:steal"), 0.1);
        assert!((get(&v, "cpu") - 1.9).abs() < 1e-9);
    }

    #[test]
    fn busy_seconds_per_core() {
        let stat = "cpu  100 20 50 1000 30 5 5 10 0 0\ncpu0 50 10 25 500 15 2 3 5 0 0\ncpu1 50 10 25 500 15 3 2 5 0 0\nintr 1\n";
        let v = cores_from_stat(stat, 100.0);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0, "cpu:core0");
        assert!((v[0].1 - 0.95).abs() < 1e-9);
        assert!(is_per_core(&v[1].0) && !is_per_core("cpu:user"));
    }

    #[test]
    fn load_averages() {
        let v = load_from_loadavg("0.52 0.58 0.59 2/345 12345\n");
        assert_eq!(v, vec![("load:1".into(), 0.52), ("load:5".into(), 0.58), ("load:15".into(), 0.59)]);
    }

    #[test]
    fn memory_and_swap() {
        let v = memory_from_meminfo(
            "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n",
        );
        assert_eq!(get(&v, "memory:used"), 75.0);
        assert_eq!(get(&v, "memory:available"), 256_000.0);
        assert_eq!(get(&v, "swap"), 0.0, "no swap is 0 % used");
        let v = memory_from_meminfo("SwapTotal: 200 kB\nSwapFree: 50 kB\n");
        assert_eq!(get(&v, "swap"), 75.0);
    }

    #[test]
    fn the_root_file_system_has_a_usage() {
        let p = disk_used_percent(Path::new("/")).unwrap();
        assert!((0.0..=100.0).contains(&p));
        assert_eq!(disk_used_percent(Path::new("/no/such/mount")), None);
    }
}
