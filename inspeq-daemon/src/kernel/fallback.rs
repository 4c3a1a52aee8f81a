//! The /proc polling fallback, for hosts where eBPF cannot be used (not root, no
//! BTF, no ring buffer). Once per cycle it lists the watched cgroups' and process
//! trees' pids and reports what changed as the same [`Observation`]s the eBPF path
//! yields: new pids as forks, vanished pids as exits, RSS crossings from `statm`.
//!
//! What it cannot know: the exit status of a process reaped before the poll
//! (`ExitStatus::Unknown`), processes that lived less than a cycle, and the OOM
//! killer's choice. A process still a zombie at the poll gives its real status.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::PathBuf,
};

use super::{
    KernelError, KernelStats, Options, cgroup, descendants_and_self, monotonic_ns,
    observation::{ExitStatus, Observation, ProcessExited, RssDirection, WatchId},
    watch::{WatchSettings, WatchTarget},
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
    above: bool,
    last_rss: u64,
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
    exit_status: Option<u32>,
}

fn look(pid: u32, page_size: u64) -> Option<Seen> {
    let process = procfs::process::Process::new(pid as i32).ok()?;
    let stat = process.stat().ok()?;
    let zombie = stat.state == 'Z' || stat.state == 'X';
    let rss = if zombie { 0 } else { process.statm().map(|m| m.resident * page_size).unwrap_or(0) };
    Some(Seen {
        ppid: stat.ppid as u32,
        comm: stat.comm,
        rss,
        exit_status: if zombie { stat.exit_code.map(|c| c as u32) } else { None },
    })
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
                self.known.insert(*pid, Known { watch: id, ppid: 0, comm: String::new(), above: false, last_rss: 0 });
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
            self.interval.tick().await;
            self.poll(out, None);
            if !out.is_empty() {
                return Ok(());
            }
        }
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
                    out.push(exited(pid, &known, ExitStatus::from_wait_status(status), now));
                }
                continue;
            }
            alive.insert(pid);
            let rss_limits = watch.settings.rss;
            let forks = watch.settings.forks;
            let known = self.known.entry(pid).or_insert_with(|| {
                if forks && seed != Some(id) {
                    out.push(Observation::ProcessForked { watch: id, parent: seen.ppid, child: pid, cgroup_id: 0, ktime_ns: now });
                }
                Known { watch: id, ppid: seen.ppid, comm: seen.comm.clone(), above: false, last_rss: seen.rss }
            });
            known.ppid = seen.ppid;
            known.comm = seen.comm;
            if let Some(limits) = rss_limits {
                let direction = if limits.threshold != 0 && !known.above && seen.rss >= limits.threshold {
                    known.above = true;
                    Some(RssDirection::Up)
                } else if limits.threshold != 0 && known.above && seen.rss < limits.threshold.saturating_sub(limits.hysteresis) {
                    known.above = false;
                    Some(RssDirection::Down)
                } else if limits.delta != 0 && seen.rss.abs_diff(known.last_rss) >= limits.delta {
                    Some(RssDirection::Moved)
                } else {
                    None
                };
                if let Some(direction) = direction {
                    known.last_rss = seen.rss;
                    out.push(Observation::RssCrossed {
                        watch: id,
                        pid,
                        direction,
                        rss_bytes: seen.rss,
                        threshold_bytes: limits.threshold,
                        cgroup_id: 0,
                        ktime_ns: now,
                    });
                }
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
                Observation::EventsLost { .. } => {}
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
