//! The /proc polling fallback, for hosts where eBPF cannot be used (not root, no
//! BTF, no ring buffer). Once per cycle it lists the watched cgroups' and process
//! trees' pids and reports what changed as the same [`Observation`]s the eBPF path
//! yields: new pids as forks, vanished pids as exits, RSS crossings from `statm`.
//!
//! What it cannot know: the exit status of a process reaped before the poll
//! (`ExitStatus::Unknown`), processes that lived less than a cycle, and the OOM
//! killer's choice. A process still a zombie at the poll gives its real status,
//! if inspeq may read it (else the kernel shows a `0` that is not the process's:
//! [`readable_status`]).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
};

use super::{
    KernelError, KernelStats, Options, cgroup, descendants_and_self, monotonic_ns,
    observation::{ExitStatus, Observation, ProcessExited, RssDirection, WatchId},
    watch::{RssLimits, WatchSettings, WatchTarget},
};

enum Target {
    Cgroup(PathBuf),
    Tree,
}

struct Watch {
    target: Target,
    settings: WatchSettings,
}

/// What the last poll knew about a pid.
struct Known {
    watch: WatchId,
    ppid: u32,
    comm: String,
    rss: RssState,
}

/// A process's RSS as last reported against its watch's limits: above the
/// threshold or not, and the size at the last report (for `delta`). Shared by the
/// tiers that sample RSS from /proc rather than from the kernel's events.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RssState {
    above: bool,
    last: u64,
}

impl RssState {
    pub(super) fn starting_at(rss: u64) -> Self {
        Self { above: false, last: rss }
    }

    /// Compares a new sample with the limits: the crossing to report, if any.
    pub(super) fn observe(
        &mut self,
        watch: WatchId,
        pid: u32,
        rss: u64,
        limits: RssLimits,
        now: u64,
    ) -> Option<Observation> {
        let direction = if limits.threshold != 0 && !self.above && rss >= limits.threshold {
            self.above = true;
            RssDirection::Up
        } else if limits.threshold != 0 && self.above && rss < limits.threshold.saturating_sub(limits.hysteresis) {
            self.above = false;
            RssDirection::Down
        } else if limits.delta != 0 && rss.abs_diff(self.last) >= limits.delta {
            RssDirection::Moved
        } else {
            return None;
        };
        self.last = rss;
        Some(Observation::RssCrossed {
            watch,
            pid,
            direction,
            rss_bytes: rss,
            threshold_bytes: limits.threshold,
            cgroup_id: 0,
            ktime_ns: now,
        })
    }
}

/// `/proc/PID/comm`, empty when the process is gone.
pub(super) fn read_comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim_end().to_owned()).unwrap_or_default()
}

/// Resident bytes from `/proc/PID/statm`.
pub(super) fn read_rss(pid: u32, page_size: u64) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let resident: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * page_size)
}

/// How `pid` ended if it is a zombie (its parent has not reaped it yet); `None` while it runs or once it is gone.
pub(super) fn zombie_status(pid: u32) -> Option<ExitStatus> {
    let stat = procfs::process::Process::new(pid as i32).ok()?.stat().ok()?;
    zombie_exit(pid, &stat)
}

/// A zombie's status from its `stat`, `None` for a process that is not one.
fn zombie_exit(pid: u32, stat: &procfs::process::Stat) -> Option<ExitStatus> {
    if stat.state != 'Z' && stat.state != 'X' {
        return None;
    }
    // No `exit_code` field (before Linux 3.5): nothing to read.
    Some(stat.exit_code.map_or(ExitStatus::Unknown, |raw| readable_status(raw as u32, || may_trace(pid))))
}

/// A zombie's wait status as `/proc/PID/stat` shows it, `raw`. The kernel shows `exit_code` only to a reader
/// that may trace the process (`ptrace_may_access`, `PTRACE_MODE_READ_FSCREDS`, in fs/proc/array.c) and `0` to
/// anyone else: a non-root inspeq reading another user's zombie would take that for a clean exit. A non-zero value
/// is never masked; a zero is the process's own only when `may_trace` says so, and unknown otherwise.
fn readable_status(raw: u32, may_trace: impl FnOnce() -> bool) -> ExitStatus {
    if raw == 0 && !may_trace() { ExitStatus::Unknown } else { ExitStatus::from_wait_status(raw) }
}

/// Whether the kernel lets inspeq read `pid`'s exit code: what `ptrace_may_access` asks of a zombie (it has no mm
/// left, so dumpability does not count): `CAP_SYS_PTRACE`, or inspeq's file-system ids equal to the process's
/// real, effective and saved ids. Not modelled, so a yes here can still be a no there: a Linux security module's
/// refusal, and a process in a user namespace above inspeq's, where its capability does not reach. A status that
/// cannot be read (the process was reaped meanwhile) says no.
fn may_trace(pid: u32) -> bool {
    const CAP_SYS_PTRACE: u32 = 19;
    let me = procfs::process::Process::myself().and_then(|p| p.status());
    let it = procfs::process::Process::new(pid as i32).and_then(|p| p.status());
    let (Ok(me), Ok(it)) = (me, it) else { return false };
    me.capeff & (1 << CAP_SYS_PTRACE) != 0
        || ([it.ruid, it.euid, it.suid] == [me.fuid; 3] && [it.rgid, it.egid, it.sgid] == [me.fgid; 3])
}

pub struct ProcMonitor {
    watches: BTreeMap<WatchId, Watch>,
    known: HashMap<u32, Known>,
    interval: tokio::time::Interval,
    page_size: u64,
    stats: KernelStats,
}

struct Seen {
    ppid: u32,
    comm: String,
    rss: u64,
    /// Set for a zombie: how it ended, as far as inspeq may read it.
    exit_status: Option<ExitStatus>,
}

fn look(pid: u32, page_size: u64) -> Option<Seen> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    let exit_status = zombie_exit(pid, &stat);
    let rss = if exit_status.is_some() { 0 } else { process.statm().map(|m| m.resident * page_size).unwrap_or(0) };
    Some(Seen { ppid: stat.ppid as u32, comm: stat.comm, rss, exit_status })
}

impl ProcMonitor {
    pub fn new(options: &Options) -> Self {
        let mut interval = tokio::time::interval(options.cycle);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            watches: BTreeMap::new(),
            known: HashMap::new(),
            interval,
            page_size: procfs::page_size(),
            stats: KernelStats::default(),
        }
    }

    pub fn watch(&mut self, id: WatchId, target: &WatchTarget, settings: WatchSettings) -> Result<(), KernelError> {
        let target = match target {
            WatchTarget::Cgroup(path) => {
                let dir = cgroup::resolve(path)?;
                cgroup::id_of(&dir)?;
                Target::Cgroup(dir)
            }
            WatchTarget::CgroupId(cg) => Target::Cgroup(cgroup::path_of(*cg).ok_or(KernelError::NoCgroupId(*cg))?),
            WatchTarget::Tree(pid) => {
                if descendants_and_self(*pid).is_empty() {
                    return Err(KernelError::NoProcess(*pid));
                }
                // Seeded so the tree has a root to grow from.
                self.known.insert(*pid, Known { watch: id, ppid: 0, comm: String::new(), rss: RssState::default() });
                Target::Tree
            }
        };
        self.watches.insert(id, Watch { target, settings });
        // Processes already there are the starting population, not forks.
        let mut ignored = Vec::new();
        self.poll(&mut ignored, Some(id));
        Ok(())
    }

    pub fn unwatch(&mut self, id: WatchId) {
        self.watches.remove(&id);
        self.known.retain(|_, k| k.watch != id);
    }

    /// Waits for the next cycle and appends what changed to `out`; returns when
    /// `out` is not empty.
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        loop {
            self.tick(out).await;
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    /// Waits for the next cycle and polls once (the pidfd tier's scan).
    pub(super) async fn tick(&mut self, out: &mut Vec<Observation>) {
        self.interval.tick().await;
        self.poll(out, None);
    }

    /// The pids the last poll found, with their watches.
    pub(super) fn known(&self) -> impl Iterator<Item = (u32, WatchId)> + '_ {
        self.known.iter().map(|(pid, k)| (*pid, k.watch))
    }

    /// Takes `pid` out of the known set, as an exit with `status` detected now
    /// (the pidfd tier learned of it first, so no poll reports it again).
    pub(super) fn exited(&mut self, pid: u32, status: ExitStatus) -> Option<Observation> {
        let known = self.known.remove(&pid)?;
        self.stats.emitted[0] += 1;
        Some(exited(pid, &known, status, monotonic_ns()))
    }

    /// The pids each watch covers now.
    fn members(&self) -> Vec<(u32, WatchId)> {
        let mut members = Vec::new();
        for (id, watch) in &self.watches {
            match &watch.target {
                Target::Cgroup(dir) => {
                    let mut pids = Vec::new();
                    cgroup::procs_recursive(dir, &mut pids);
                    members.extend(pids.into_iter().map(|p| (p, *id)));
                }
                Target::Tree => {
                    // Known members still alive and everything below them: a tree
                    // outlives its root when the children are reparented.
                    let mut seen = HashSet::new();
                    for (&pid, known) in &self.known {
                        if known.watch == *id {
                            for p in descendants_and_self(pid) {
                                if seen.insert(p) {
                                    members.push((p, *id));
                                }
                            }
                        }
                    }
                }
            }
        }
        members
    }

    /// One poll. `seed` marks a poll that only learns a new watch's population.
    fn poll(&mut self, out: &mut Vec<Observation>, seed: Option<WatchId>) {
        let now = monotonic_ns();
        let members = self.members();
        let mut alive = HashSet::new();
        for (pid, id) in members {
            let Some(watch) = self.watches.get(&id) else { continue };
            let Some(seen) = look(pid, self.page_size) else { continue };
            if let Some(status) = seen.exit_status {
                // A zombie: its status is readable until the parent reaps it.
                if let Some(known) = self.known.remove(&pid) {
                    out.push(exited(pid, &known, status, now));
                }
                continue;
            }
            alive.insert(pid);
            let rss_limits = watch.settings.rss;
            let forks = watch.settings.forks;
            let known = self.known.entry(pid).or_insert_with(|| {
                if forks && seed != Some(id) {
                    out.push(Observation::ProcessForked {
                        watch: id,
                        parent: seen.ppid,
                        child: pid,
                        cgroup_id: 0,
                        ktime_ns: now,
                    });
                }
                Known { watch: id, ppid: seen.ppid, comm: seen.comm.clone(), rss: RssState::starting_at(seen.rss) }
            });
            known.ppid = seen.ppid;
            known.comm = seen.comm;
            if let Some(limits) = rss_limits
                && let Some(crossed) = known.rss.observe(id, pid, seen.rss, limits, now)
            {
                out.push(crossed);
            }
        }
        let gone: Vec<u32> = self
            .known
            .iter()
            .filter(|(pid, k)| !alive.contains(pid) && seed.is_none_or(|s| s == k.watch))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in gone {
            if let Some(known) = self.known.remove(&pid)
                && seed.is_none()
            {
                out.push(exited(pid, &known, ExitStatus::Unknown, now));
            }
        }
        for o in out.iter() {
            match o {
                Observation::ProcessExited(_) => self.stats.emitted[0] += 1,
                Observation::ProcessForked { .. } => self.stats.emitted[1] += 1,
                Observation::RssCrossed { .. } | Observation::RssTotalCrossed { .. } => self.stats.emitted[2] += 1,
                // This tier never sees a listener close.
                Observation::ListenerClosed { .. } | Observation::EventsLost { .. } => {}
            }
        }
    }

    pub fn stats(&self) -> KernelStats {
        self.stats
    }
}

fn exited(pid: u32, known: &Known, status: ExitStatus, now: u64) -> Observation {
    Observation::ProcessExited(ProcessExited {
        watch: known.watch,
        pid,
        ppid: known.ppid,
        status,
        oom_killed: false,
        rss_bytes: None,
        cgroup_id: 0,
        comm: known.comm.clone(),
        ktime_ns: now,
    })
}

#[cfg(test)]
mod tests {
    use super::{ExitStatus, may_trace, readable_status};

    #[test]
    fn a_zero_from_a_zombie_inspeq_may_not_trace_is_unknown_not_a_clean_exit() {
        assert_eq!(readable_status(0, || false), ExitStatus::Unknown);
        assert_eq!(readable_status(0, || true), ExitStatus::Code(0));
        // The kernel never masks a non-zero status, so nobody is asked.
        assert_eq!(readable_status(3 << 8, || unreachable!()), ExitStatus::Code(3));
        assert_eq!(readable_status(9, || unreachable!()), ExitStatus::Signal { signal: 9, core_dumped: false });
    }

    #[test]
    fn inspeq_may_trace_itself_and_not_a_pid_that_is_gone() {
        assert!(may_trace(std::process::id()));
        // Above the kernel's pid limit (4194304): no such process, no status to read.
        assert!(!may_trace(u32::MAX >> 1));
    }
}
