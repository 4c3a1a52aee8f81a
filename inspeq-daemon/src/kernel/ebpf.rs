//! The eBPF path: load the embedded object, set its globals from BTF and tracefs,
//! attach the tracepoints, keep the watch maps, and read the ring buffer on tokio.
//!
//! Wakeups follow the reader's state, which it publishes in `READER_STATE` (see
//! `emit.rs` on the kernel side): an idle reader sleeps on the ring's fd with no
//! timer and is woken by the first record; once records flow it switches to
//! polling every [`BUSY_POLL`] and the kernel wakes nobody, so storms pay no
//! wakeups; when a poll finds nothing it goes idle again. Drops are counted per CPU in the kernel and turned into
//! [`Observation::EventsLost`] here.
//!
//! Outside the initial pid namespace the programs report pids of inspeqd's own
//! namespace (`PIDNS_TRANSLATE`, see `pidns.rs` on the kernel side), so the keys
//! written here (`WATCH_TGIDS`, `RSS_STATE`) are the pids /proc and `cgroup.procs`
//! give, as they are everywhere else in the daemon.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::AsRawFd as _,
    path::Path,
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use inspeq_common::{
    CGROUP_WALK_ANCESTOR_IDS, CGROUP_WALK_ANCESTORS, CGROUP_WALK_HELPER, COUNTER_DROPPED, COUNTER_EMITTED, EventKind,
    MAP_COUNTERS, MAP_EVENTS, MAP_READER_STATE, MAP_RSS_STATE, MAP_RSS_TOTALS, MAP_TREE_WATCHES, MAP_WATCH_CGROUPS,
    MAP_WATCH_TGIDS, READER_IDLE, READER_POLLING, RssState, RssTotal, WatchConfig, globals,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    KernelError, KernelStats, Options,
    btf::Btf,
    cgroup, decode, fallback,
    observation::{Observation, RssDirection, WatchId},
    pidns::PidNamespace,
    tracefs,
    watch::{WatchSettings, WatchTarget},
};

/// How often a polling reader drains the ring: the longest a record waits while
/// records flow (tokio's timer has a 1 ms tick).
const BUSY_POLL: Duration = Duration::from_millis(1);

/// This many wakeups within one [`BUSY_POLL`] switch the reader to polling.
const FLOW_WAKEUPS: usize = 4;

/// How often a busy reader reads the drop counters (a few syscalls).
const COUNTER_PERIOD: Duration = Duration::from_millis(100);

/// The object built by build.rs from `inspeq-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/inspeq"));

/// One program of the object and where it attaches.
struct Program {
    name: &'static str,
    /// An empty category means a raw tracepoint.
    category: &'static str,
    tracepoint: &'static str,
    /// What the daemon cannot see without it: `None` for a program the eBPF tier
    /// cannot run without. An optional program that fails to attach costs a
    /// feature, not the daemon, and this goes into the tier's blind spots.
    without: Option<&'static str>,
}

const PROGRAMS: [Program; 5] = [
    Program { name: "inspeq_exit", category: "sched", tracepoint: "sched_process_exit", without: None },
    Program { name: "inspeq_fork", category: "", tracepoint: "task_newtask", without: None },
    Program {
        name: "inspeq_rss",
        category: "",
        tracepoint: "rss_stat",
        without: Some("RSS crossings are seen at the cycle's sample, not the instant"),
    },
    Program {
        name: "inspeq_oom",
        category: "oom",
        tracepoint: "mark_victim",
        without: Some("OOM kills are not flagged (a SIGKILL is reported)"),
    },
    Program {
        name: "inspeq_listen",
        category: "sock",
        tracepoint: "inet_sock_set_state",
        without: Some("a listening socket's close is seen only at the cycle's socket scan"),
    },
];

/// The `inet_sock_set_state` fields the listener program reads, by the global
/// that carries each one's offset.
const LISTEN_FIELDS: [(&str, &str); 7] = [
    (globals::TP_SOCK_OLDSTATE, "oldstate"),
    (globals::TP_SOCK_NEWSTATE, "newstate"),
    (globals::TP_SOCK_SPORT, "sport"),
    (globals::TP_SOCK_FAMILY, "family"),
    (globals::TP_SOCK_PROTOCOL, "protocol"),
    (globals::TP_SOCK_SADDR, "saddr"),
    (globals::TP_SOCK_SADDR_V6, "saddr_v6"),
];

/// Kernel struct offsets and tracepoint field offsets the programs need, and how
/// this kernel lays out what they read (learned from BTF and tracefs, never from
/// the version number).
struct Offsets {
    globals: Vec<(&'static str, u32)>,
    /// Optional programs not to attach, and why: their tracepoint's format lacks
    /// a field they read.
    skip: Vec<(&'static str, String)>,
    layout: Layout,
    /// How to walk a task's cgroups without the ancestor helper
    /// (`CGROUP_WALK_ANCESTOR_IDS` or `CGROUP_WALK_ANCESTORS`), when BTF tells.
    cgroup_walk: Option<u32>,
}

/// How this kernel differs where the programs care, for `status` and `trace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The exit tracepoint has `group_dead` (6.16+); otherwise `signal->live`
    /// decides, and the RSS at exit is the last one the RSS program saw.
    pub exit_group_dead: bool,
    /// `mm_struct.rss_stat` is an array of `percpu_counter` (6.2+); otherwise
    /// `atomic_long_t` counters.
    pub rss_percpu: bool,
    /// Tasks keep split RSS counters of their own (`task_struct.rss_stat`, before 6.2).
    pub rss_split: bool,
    /// How a task's ancestor cgroups are found: `helper`
    /// (`bpf_get_current_ancestor_cgroup_id`, 6.1+), or a walk of
    /// `ancestor_ids` (before 6.0) or `ancestors`.
    pub cgroup_ancestors: &'static str,
    /// Pids are translated into inspeqd's pid namespace in the kernel (it runs
    /// outside the initial one); otherwise they are the kernel's own.
    pub pids_translated: bool,
}

impl Offsets {
    fn resolve(tracefs_root: &Path, pid_ns: &PidNamespace) -> Result<Self, KernelError> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux").map_err(|source| KernelError::NoBtf { source })?;
        let btf = Btf::parse(&data)?;
        drop(data);
        let (rss_count0, rss_stride, rss_percpu) = mm_rss_counters(&btf)?;
        // Split counting: `struct task_rss_stat { int events; int count[NR_MM_COUNTERS]; }`.
        let split = match btf.member("task_struct", "rss_stat") {
            Ok(stat) => {
                let count = btf.member_of(stat.type_id, "count").ok_or_else(|| shape("task_struct.rss_stat"))?;
                if btf.array(count.type_id).and_then(|(elem, _)| btf.type_size(elem)) != Some(4) {
                    return Err(shape("task_rss_stat.count").into());
                }
                Some(stat.offset + count.offset)
            }
            Err(_) => None,
        };
        let field = |cat, name, field| tracefs::field_offset(tracefs_root, cat, name, field);
        let group_dead = match field("sched", "sched_process_exit", "group_dead") {
            Ok(off) => Some(off),
            Err(tracefs::TracefsError::NoField { .. }) => None,
            Err(err) => return Err(err.into()),
        };
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
        let globals = vec![
            (globals::TASK_EXIT_CODE, btf.member_offset("task_struct", "exit_code")?),
            (globals::TASK_SIGNAL, btf.member_offset("task_struct", "signal")?),
            (globals::SIGNAL_FLAGS, btf.member_offset("signal_struct", "flags")?),
            (globals::SIGNAL_GROUP_EXIT_CODE, btf.member_offset("signal_struct", "group_exit_code")?),
            (globals::SIGNAL_LIVE, btf.member_offset("signal_struct", "live")?),
            (globals::TASK_MM, btf.member_offset("task_struct", "mm")?),
            (globals::TASK_REAL_PARENT, btf.member_offset("task_struct", "real_parent")?),
            (globals::TASK_TGID, btf.member_offset("task_struct", "tgid")?),
            (globals::TASK_GROUP_LEADER, btf.member_offset("task_struct", "group_leader")?),
            (globals::TASK_START_TIME, btf.member_offset("task_struct", "start_time")?),
            (globals::MM_RSS_COUNT0, rss_count0),
            (globals::PERCPU_COUNTER_SIZE, rss_stride),
            (globals::TASK_RSS_COUNT0, split.unwrap_or(u32::MAX)),
            (globals::PAGE_SIZE, page_size),
            (globals::TP_EXIT_GROUP_DEAD, group_dead.unwrap_or(u32::MAX)),
            (globals::KEEP_EXIT_RSS, u32::from(group_dead.is_none())),
            (globals::TP_OOM_PID, field("oom", "mark_victim", "pid").unwrap_or(u32::MAX)),
        ];
        let mut globals = globals;
        let mut skip = Vec::new();
        match listen_fields(tracefs_root) {
            Ok(fields) => globals.extend(fields),
            // No such tracepoint, or not the fields the program reads: it stays detached.
            Err(err) => skip.push(("inspeq_listen", super::error_chain(&err))),
        }
        let cgroup_walk = cgroup_walk(&btf, &mut globals);
        let pids_translated = !pid_ns.is_initial();
        if pids_translated {
            globals.extend(pid_translation(&btf, pid_ns)?);
        }
        Ok(Self {
            globals,
            skip,
            layout: Layout {
                exit_group_dead: group_dead.is_some(),
                rss_percpu,
                rss_split: split.is_some(),
                cgroup_ancestors: "helper",
                pids_translated,
            },
            cgroup_walk,
        })
    }
}

/// The offsets of the `sock:inet_sock_set_state` fields the listener program
/// reads, from the tracepoint's `format`.
fn listen_fields(tracefs_root: &Path) -> Result<Vec<(&'static str, u32)>, tracefs::TracefsError> {
    LISTEN_FIELDS
        .iter()
        .map(|(global, name)| Ok((*global, tracefs::field_offset(tracefs_root, "sock", "inet_sock_set_state", name)?)))
        .collect()
}

/// The offsets a walk from a task to its cgroup2 ancestors needs
/// (`task->cgroups->dfl_cgrp`, its `level`, and `ancestor_ids[]` before 6.0 or
/// `ancestors[]` with each one's `kn->id` since), added to `globals`; which walk
/// this kernel's `struct cgroup` allows, or `None` when BTF lacks a piece.
fn cgroup_walk(btf: &Btf, globals: &mut Vec<(&'static str, u32)>) -> Option<u32> {
    let (walk, ancestors) = match btf.member_offset("cgroup", "ancestor_ids") {
        Ok(off) => (CGROUP_WALK_ANCESTOR_IDS, off),
        Err(_) => (CGROUP_WALK_ANCESTORS, btf.member_offset("cgroup", "ancestors").ok()?),
    };
    globals.extend([
        (globals::TASK_CGROUPS, btf.member_offset("task_struct", "cgroups").ok()?),
        (globals::CSS_SET_DFL_CGRP, btf.member_offset("css_set", "dfl_cgrp").ok()?),
        (globals::CGROUP_LEVEL, btf.member_offset("cgroup", "level").ok()?),
        (globals::CGROUP_ANCESTORS, ancestors),
        (globals::CGROUP_KN, btf.member_offset("cgroup", "kn").ok()?),
        (globals::KERNFS_NODE_ID, btf.member_offset("kernfs_node", "id").ok()?),
    ]);
    Some(walk)
}

/// The globals that turn kernel pids into numbers of inspeqd's namespace: the
/// namespace's inode, and where a task's `struct pid` keeps one `upid { nr, ns }`
/// per level (`task->thread_pid->numbers[]`) and a namespace its inode
/// (`pid_namespace.ns.inum`). All present since 4.19.
fn pid_translation(btf: &Btf, pid_ns: &PidNamespace) -> Result<Vec<(&'static str, u32)>, super::BtfError> {
    let numbers = btf.member("pid", "numbers")?;
    let (upid, _) = btf.array(numbers.type_id).ok_or_else(|| shape("pid.numbers"))?;
    let stride = btf.type_size(upid).ok_or_else(|| shape("pid.numbers[]"))?;
    let ns = btf.member("pid_namespace", "ns")?;
    let inum = btf.member_of(ns.type_id, "inum").ok_or_else(|| shape("pid_namespace.ns"))?;
    let inode = u32::try_from(pid_ns.inode).map_err(|_| shape("the pid namespace's inode"))?;
    Ok(vec![
        (globals::PIDNS_TRANSLATE, 1),
        (globals::PIDNS_INUM, inode),
        (globals::TASK_THREAD_PID, btf.member_offset("task_struct", "thread_pid")?),
        (globals::PID_LEVEL, btf.member_offset("pid", "level")?),
        (globals::PID_NUMBERS, numbers.offset),
        (globals::UPID_SIZE, stride),
        (globals::UPID_NR, btf.member_offset("upid", "nr")?),
        (globals::UPID_NS, btf.member_offset("upid", "ns")?),
        (globals::PIDNS_NS_INUM, ns.offset + inum.offset),
    ])
}

fn shape(what: &str) -> super::BtfError {
    super::BtfError::Shape { what: what.to_owned() }
}

/// Where `mm_struct.rss_stat`'s first 64-bit count is, the stride to the next,
/// and whether they are `percpu_counter`s: `struct percpu_counter rss_stat[4]`
/// since 6.2 (the count is the counter's `count`), `struct mm_rss_stat {
/// atomic_long_t count[4]; } rss_stat` before.
fn mm_rss_counters(btf: &Btf) -> Result<(u32, u32, bool), super::BtfError> {
    let stat = btf.member("mm_struct", "rss_stat")?;
    if let Some((elem, _)) = btf.array(stat.type_id) {
        let count = btf.member_of(elem, "count").ok_or_else(|| shape("mm_struct.rss_stat[]"))?;
        let stride = btf.type_size(elem).ok_or_else(|| shape("mm_struct.rss_stat[]"))?;
        return Ok((stat.offset + count.offset, stride, true));
    }
    let count = btf.member_of(stat.type_id, "count").ok_or_else(|| shape("mm_struct.rss_stat"))?;
    let (elem, _) = btf.array(count.type_id).ok_or_else(|| shape("mm_rss_stat.count"))?;
    let stride = btf.type_size(elem).ok_or_else(|| shape("mm_rss_stat.count[]"))?;
    if stride != 8 {
        return Err(shape("mm_rss_stat.count[]"));
    }
    Ok((stat.offset + count.offset, stride, false))
}

/// Loaded programs, their maps and the ring-buffer reader.
pub struct EbpfMonitor {
    // Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    cgroups: HashMap<MapData, u64, WatchConfig>,
    tgids: HashMap<MapData, u32, WatchConfig>,
    rss_state: HashMap<MapData, u32, RssState>,
    rss_totals: HashMap<MapData, u32, RssTotal>,
    tree_watches: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    reader_state: Array<MapData, u32>,
    /// When the reader was last woken by the kernel, the last FLOW_WAKEUPS times.
    wakeups: [Option<Instant>; FLOW_WAKEUPS],
    next_wakeup: usize,
    /// Polling: the last drain found records, so poll again after BUSY_POLL (and
    /// the kernel side, told so, wakes nobody).
    busy: bool,
    /// Last seen totals of the per-CPU counters, to report drops as deltas.
    seen_dropped: [u64; 4],
    last_counter_check: Instant,
    watches: StdHashMap<WatchId, Keys>,
    /// Observations made while arming a watch (a process already above its
    /// threshold), handed out by the next `next_batch`.
    pending: Vec<Observation>,
    stats: KernelStats,
    /// How this kernel lays out what the programs read.
    pub layout: Layout,
    /// For RSS read from /proc when a watch is armed.
    page_size: u64,
    /// Programs that did not attach (optional ones), for `status`.
    pub missing: Vec<String>,
    /// What the daemon cannot see because of them (their `Program::without`).
    pub blind_spots: Vec<&'static str>,
    /// Kernel ids of the attached programs (for `bpftool prog show id N`).
    pub program_ids: Vec<(&'static str, u32)>,
    /// Time from `start` being called to the last program attached.
    pub attach_time: Duration,
}

/// The map keys a watch put in, to take them out again.
enum Keys {
    Cgroup(u64),
    Tree(Vec<u32>),
}

fn map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let raw = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(raw).map_err(|source| KernelError::Map { name, source })
}

impl EbpfMonitor {
    pub fn start(options: &Options, pid_ns: &PidNamespace) -> Result<Self, KernelError> {
        let started = Instant::now();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(KernelError::NotRoot);
        }
        let tracefs_root = tracefs::root()?;
        let offsets = Offsets::resolve(&tracefs_root, pid_ns)?;

        // The helper first; where tracing programs may not call it (before 6.1),
        // the verifier rejects them, and the walk of the task's cgroup takes over.
        let mut layout = offsets.layout;
        let (mut ebpf, missing, program_ids, blind_spots) = match load_and_attach(&offsets, options, CGROUP_WALK_HELPER)
        {
            Ok(loaded) => loaded,
            Err(first) => match offsets.cgroup_walk {
                Some(walk) => {
                    tracing::debug!(
                        "kernel: with bpf_get_current_ancestor_cgroup_id: {first}; walking cgroups instead"
                    );
                    layout.cgroup_ancestors =
                        if walk == CGROUP_WALK_ANCESTOR_IDS { "ancestor_ids" } else { "ancestors" };
                    load_and_attach(&offsets, options, walk)?
                }
                None => return Err(first),
            },
        };

        let ring: RingBuf<MapData> = map(&mut ebpf, MAP_EVENTS)?;
        // SAFETY: the fd stays open as long as `ring`, which AsyncFd owns.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|source| {
            KernelError::Io { what: "registering the ring buffer with tokio", source: source.into() }
        })?;
        let cgroups = map(&mut ebpf, MAP_WATCH_CGROUPS)?;
        let tgids = map(&mut ebpf, MAP_WATCH_TGIDS)?;
        let rss_state = map(&mut ebpf, MAP_RSS_STATE)?;
        let rss_totals = map(&mut ebpf, MAP_RSS_TOTALS)?;
        let tree_watches = map(&mut ebpf, MAP_TREE_WATCHES)?;
        let counters = map(&mut ebpf, MAP_COUNTERS)?;
        let reader_state = map(&mut ebpf, MAP_READER_STATE)?;
        tracing::debug!("kernel: ring buffer fd {}", ring.get_ref().as_raw_fd());
        Ok(Self {
            _ebpf: ebpf,
            ring,
            cgroups,
            tgids,
            rss_state,
            rss_totals,
            tree_watches,
            counters,
            reader_state,
            wakeups: [None; FLOW_WAKEUPS],
            next_wakeup: 0,
            busy: false,
            seen_dropped: [0; 4],
            last_counter_check: Instant::now(),
            watches: StdHashMap::new(),
            pending: Vec::new(),
            stats: KernelStats::default(),
            layout,
            page_size: procfs::page_size(),
            missing,
            blind_spots,
            program_ids,
            attach_time: started.elapsed(),
        })
    }

    /// Arms a watch. Its processes' RSS is seeded first (from /proc), so that a
    /// process already above its threshold is reported now, not at a crossing
    /// that will never come, and the watch's total starts with what they hold.
    /// `known`: the target's members as the caller listed them, for a cgroup
    /// known by id alone (seeded from them).
    pub fn watch(
        &mut self,
        id: WatchId,
        target: &WatchTarget,
        settings: WatchSettings,
        known: &[u32],
    ) -> Result<(), KernelError> {
        let cfg = settings.to_wire(id);
        // Only a watch with an RSS threshold needs its members (and their /proc reads) now.
        let seeds = cfg.rss_threshold != 0 || cfg.total_threshold != 0;
        let (keys, members, cgroup_id) = match target {
            WatchTarget::Cgroup(path) => {
                let dir = cgroup::resolve(path)?;
                let cg = cgroup::id_of(&dir)?;
                (Keys::Cgroup(cg), if seeds { super::cgroup_members(&dir) } else { Vec::new() }, cg)
            }
            WatchTarget::CgroupId(cg) => (Keys::Cgroup(*cg), if seeds { known.to_vec() } else { Vec::new() }, *cg),
            WatchTarget::Tree(pid) => {
                let pids = super::descendants_and_self(*pid);
                if pids.is_empty() {
                    return Err(KernelError::NoProcess(*pid));
                }
                (Keys::Tree(pids.clone()), if seeds { pids } else { Vec::new() }, 0)
            }
        };
        let seeded = if seeds { self.seed(&cfg, &members, cgroup_id)? } else { Vec::new() };
        if matches!(keys, Keys::Tree(_)) {
            // Before the keys: a fork in between must find the count non-zero.
            self.publish_trees(self.trees() + 1);
        }
        match &keys {
            Keys::Cgroup(cg) => self.insert_cgroup(*cg, cfg)?,
            Keys::Tree(pids) => {
                for pid in pids {
                    self.tgids
                        .insert(pid, cfg, 0)
                        .map_err(|source| KernelError::Map { name: MAP_WATCH_TGIDS, source })?;
                }
            }
        }
        self.recheck(&cfg, &seeded, cgroup_id);
        if let Some(old) = self.watches.insert(id, keys) {
            self.remove_keys(old);
        }
        self.publish_trees(self.trees());
        Ok(())
    }

    fn trees(&self) -> u32 {
        self.watches.values().filter(|k| matches!(k, Keys::Tree(_))).count() as u32
    }

    /// Publishes how many tree watches there are (`TREE_WATCHES`): outside the
    /// initial pid namespace the programs translate a task for the `WATCH_TGIDS`
    /// lookup only while there are some.
    fn publish_trees(&mut self, trees: u32) {
        if let Err(err) = self.tree_watches.set(0, trees, 0) {
            // A count left at 0 would hide tree watches outside the initial namespace.
            tracing::warn!("kernel: cannot publish the number of tree watches: {err}");
        }
    }

    /// Writes the RSS state of each member and the watch's total, before the
    /// watch is armed (the programs do not touch them until then). Returns the
    /// members with the RSS they were seeded with.
    fn seed(&mut self, cfg: &WatchConfig, members: &[u32], cgroup_id: u64) -> Result<Vec<(u32, u64)>, KernelError> {
        let mut seeded = Vec::with_capacity(members.len());
        let mut total = 0u64;
        let now = super::monotonic_ns();
        for &pid in members {
            let Some(rss) = fallback::read_rss(pid, self.page_size) else { continue };
            let above = cfg.rss_threshold != 0 && rss >= cfg.rss_threshold;
            let state =
                RssState { last_bytes: rss, now_bytes: rss, above: u32::from(above), total_watch: cfg.watch_id };
            self.rss_state.insert(pid, state, 0).map_err(|source| KernelError::Map { name: MAP_RSS_STATE, source })?;
            if above {
                self.pending.push(crossed_up(cfg, pid, rss, cgroup_id, now));
            }
            total += rss;
            seeded.push((pid, rss));
        }
        if cfg.total_threshold != 0 {
            let above = total >= cfg.total_threshold;
            let entry = RssTotal { bytes: total as i64, above: u32::from(above), _pad: 0 };
            self.rss_totals
                .insert(cfg.watch_id, entry, 0)
                .map_err(|source| KernelError::Map { name: MAP_RSS_TOTALS, source })?;
            if above {
                self.pending.push(Observation::RssTotalCrossed {
                    watch: WatchId(cfg.watch_id),
                    pid: members.first().copied().unwrap_or(0),
                    direction: RssDirection::Up,
                    total_bytes: total,
                    threshold_bytes: cfg.total_threshold,
                    ktime_ns: now,
                });
            }
        }
        Ok(seeded)
    }

    /// A member that grew past its threshold between being seeded and the watch
    /// being armed, and has not touched a page since, would never be reported:
    /// look once more now that the programs see it. A state the kernel changed
    /// meanwhile is the kernel's to report.
    fn recheck(&mut self, cfg: &WatchConfig, seeded: &[(u32, u64)], cgroup_id: u64) {
        if cfg.rss_threshold == 0 {
            return;
        }
        for &(pid, was) in seeded {
            if was >= cfg.rss_threshold {
                continue;
            }
            let Some(rss) = fallback::read_rss(pid, self.page_size) else { continue };
            if rss < cfg.rss_threshold {
                continue;
            }
            let Ok(state) = self.rss_state.get(&pid, 0) else { continue };
            if state.above != 0 || state.now_bytes != was {
                continue;
            }
            let state = RssState { last_bytes: rss, above: 1, ..state };
            if self.rss_state.insert(pid, state, 0).is_ok() {
                self.pending.push(crossed_up(cfg, pid, rss, cgroup_id, super::monotonic_ns()));
            }
        }
    }

    fn insert_cgroup(&mut self, cg: u64, cfg: WatchConfig) -> Result<(), KernelError> {
        self.cgroups.insert(cg, cfg, 0).map_err(|source| KernelError::Map { name: MAP_WATCH_CGROUPS, source })
    }

    /// A watched process's RSS at its last change (`RSS_STATE`), kept while its
    /// watch has an RSS threshold.
    pub fn process_rss(&self, pid: u32) -> Option<u64> {
        let state = self.rss_state.get(&pid, 0).ok()?;
        (state.total_watch != 0).then_some(state.now_bytes)
    }

    /// The watch's RSS total (`RSS_TOTALS`), kept while it has a total threshold.
    pub fn rss_total(&self, id: WatchId) -> Option<u64> {
        let total = self.rss_totals.get(&id.0, 0).ok()?;
        u64::try_from(total.bytes).ok()
    }

    pub fn unwatch(&mut self, id: WatchId) {
        if let Some(keys) = self.watches.remove(&id) {
            self.remove_keys(keys);
        }
        let _ = self.rss_totals.remove(&id.0);
        self.pending.retain(|o| o.watch() != Some(id));
        // Tree members forked since the watch began are only known to the kernel.
        let stale: Vec<u32> =
            self.tgids.iter().flatten().filter(|(_, cfg)| cfg.watch_id == id.0).map(|(pid, _)| pid).collect();
        for pid in stale {
            let _ = self.tgids.remove(&pid);
        }
        self.publish_trees(self.trees());
    }

    fn remove_keys(&mut self, keys: Keys) {
        match keys {
            Keys::Cgroup(cg) => {
                let _ = self.cgroups.remove(&cg);
            }
            Keys::Tree(pids) => {
                for pid in pids {
                    let _ = self.tgids.remove(&pid);
                }
            }
        }
    }

    /// Waits for records and appends their observations to `out`; returns when
    /// `out` is not empty.
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        if !self.pending.is_empty() {
            out.append(&mut self.pending);
            return Ok(());
        }
        loop {
            let before = out.len();
            let poll = async {
                if self.busy {
                    tokio::time::sleep(BUSY_POLL).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            let mut woken = false;
            tokio::select! {
                // A wakeup (idle), or a nudge (see emit.rs): answered at once.
                guard = self.ring.readable_mut() => {
                    let mut guard = guard.map_err(|source| KernelError::Io { what: "waiting on the ring buffer", source })?;
                    // Cleared before draining: a wakeup for a record committed after
                    // the drain must not be cleared with it.
                    guard.clear_ready();
                    drain_ring(guard.get_inner_mut(), out, &mut self.stats);
                    woken = true;
                }
                () = poll => drain_ring(self.ring.get_mut(), out, &mut self.stats),
            }
            let mut found = out.len() > before;
            // FLOW_WAKEUPS wakeups within one poll period mean records are flowing
            // (thousands a second): polling is cheaper from here on. A service that
            // forks and reaps now and then still has each record wake the reader.
            let mut flowing = false;
            if woken {
                let slot = &mut self.wakeups[self.next_wakeup];
                flowing = slot.is_some_and(|at| at.elapsed() < BUSY_POLL);
                *slot = Some(Instant::now());
                self.next_wakeup = (self.next_wakeup + 1) % FLOW_WAKEUPS;
            }
            if found && !self.busy {
                if flowing {
                    self.set_reader_state(READER_POLLING);
                    self.busy = true;
                }
            } else if !found && self.busy {
                self.set_reader_state(READER_IDLE);
                // The flag must be visible before the last look, or a record whose
                // program still saw "polling" could slip past both (emit.rs nudges
                // in that case).
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                drain_ring(self.ring.get_mut(), out, &mut self.stats);
                found = out.len() > before;
                if found {
                    self.set_reader_state(READER_POLLING);
                } else {
                    self.busy = false;
                    // Drops happen only while records flow: read the counters once
                    // when the flow stops.
                    self.check_counters(out);
                }
            }
            // ... and now and then while they flow.
            if found && self.last_counter_check.elapsed() >= COUNTER_PERIOD {
                self.check_counters(out);
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }

    fn set_reader_state(&mut self, state: u32) {
        if let Err(err) = self.reader_state.set(0, state, 0) {
            // Harmless either way: idle costs wakeups, polling costs latency until the next record.
            tracing::warn!("kernel: cannot publish the reader state: {err}");
        }
    }

    fn check_counters(&mut self, out: &mut Vec<Observation>) {
        self.last_counter_check = Instant::now();
        let sum = |slot: u32| -> u64 { self.counters.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0) };
        // Total crossings are counted with the RSS records (see rss.rs).
        let kinds = [
            ("exit", EventKind::Exit),
            ("fork", EventKind::Fork),
            ("rss", EventKind::Rss),
            ("listen", EventKind::ListenClosed),
        ];
        let (mut emitted, mut dropped) = ([0; 4], [0; 4]);
        for (i, (kind, k)) in kinds.into_iter().enumerate() {
            emitted[i] = sum(COUNTER_EMITTED + k as u32);
            dropped[i] = sum(COUNTER_DROPPED + k as u32);
            let new = dropped[i].saturating_sub(self.seen_dropped[i]);
            if new > 0 {
                self.seen_dropped[i] = dropped[i];
                out.push(Observation::EventsLost { kind, count: new });
            }
        }
        self.stats.emitted = [emitted[0], emitted[1], emitted[2]];
        self.stats.dropped = [dropped[0], dropped[1], dropped[2]];
        (self.stats.listen_emitted, self.stats.listen_dropped) = (emitted[3], dropped[3]);
    }

    pub fn stats(&mut self) -> KernelStats {
        let mut ignored = Vec::new();
        let before = self.seen_dropped;
        self.check_counters(&mut ignored);
        // Reading stats must not swallow a drop report the loop has yet to emit.
        self.seen_dropped = before;
        self.stats
    }
}

/// The crossing the kernel would have reported had it seen `pid` grow.
fn crossed_up(cfg: &WatchConfig, pid: u32, rss: u64, cgroup_id: u64, ktime_ns: u64) -> Observation {
    Observation::RssCrossed {
        watch: WatchId(cfg.watch_id),
        pid,
        direction: RssDirection::Up,
        rss_bytes: rss,
        threshold_bytes: cfg.rss_threshold,
        cgroup_id,
        ktime_ns,
    }
}

/// Loaded and attached programs, the optional ones that did not attach, the
/// kernel ids of those that did, and what the missing ones leave unseen.
type Loaded = (Ebpf, Vec<String>, Vec<(&'static str, u32)>, Vec<&'static str>);

/// Loads the object with the offsets and the given way of finding ancestor
/// cgroups, and attaches every program.
fn load_and_attach(offsets: &Offsets, options: &Options, cgroup_walk: u32) -> Result<Loaded, KernelError> {
    let mut loader = EbpfLoader::new();
    // The programs have no CO-RE relocations; skipping aya's parse of the
    // 5 MB kernel BTF saves ~15 MB of RSS and tens of milliseconds.
    loader.btf(None);
    for (name, value) in &offsets.globals {
        loader.override_global(name, value, true);
    }
    loader.override_global(globals::CGROUP_WALK, &cgroup_walk, true);
    if let Some(bytes) = options.ring_bytes {
        loader.map_max_entries(MAP_EVENTS, bytes);
    }
    let mut ebpf = loader.load(OBJECT).map_err(|source| KernelError::Load { source: Box::new(source) })?;

    let mut missing = Vec::new();
    let mut program_ids = Vec::new();
    let mut blind_spots = Vec::new();
    for Program { name: program, category, tracepoint, without } in PROGRAMS {
        let full_name =
            if category.is_empty() { format!("raw:{tracepoint}") } else { format!("{category}:{tracepoint}") };
        if let Some((_, why)) = offsets.skip.iter().find(|(name, _)| *name == program) {
            tracing::warn!("kernel: {full_name} not attached ({why}); that feature is off");
            missing.push(full_name);
            blind_spots.extend(without);
            continue;
        }
        let result = (|| {
            let prog = ebpf.program_mut(program).ok_or(aya::programs::ProgramError::UnexpectedProgramType)?;
            if category.is_empty() {
                let prog: &mut RawTracePoint = prog.try_into()?;
                prog.load()?;
                prog.attach(tracepoint)?;
                prog.info().map(|info| info.id())
            } else {
                let prog: &mut TracePoint = prog.try_into()?;
                prog.load()?;
                prog.attach(category, tracepoint)?;
                prog.info().map(|info| info.id())
            }
        })();
        match (result, without) {
            (Ok(id), _) => program_ids.push((program, id)),
            (Err(source), None) => return Err(KernelError::Attach { program, source: Box::new(source) }),
            (Err(source), Some(unseen)) => {
                tracing::warn!("kernel: {full_name} not attached ({source}); that feature is off");
                missing.push(full_name);
                blind_spots.push(unseen);
            }
        }
    }
    Ok((ebpf, missing, program_ids, blind_spots))
}

fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<Observation>, stats: &mut KernelStats) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(observation) => out.push(observation),
            Err(err) => {
                stats.undecodable += 1;
                if stats.undecodable == 1 {
                    tracing::warn!(
                        "kernel: undecodable record ({err}); the object and daemon may be of different builds"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_program_needs_every_field_it_reads() {
        let root = tempfile::tempdir().unwrap();
        // No such tracepoint: the program stays detached, nothing else fails.
        assert!(matches!(listen_fields(root.path()), Err(tracefs::TracefsError::Read { .. })));
        let dir = root.path().join("events/sock/inet_sock_set_state");
        std::fs::create_dir_all(&dir).unwrap();
        let field = |decl: &str, off: u32| format!("\tfield:{decl};\toffset:{off};\tsize:2;\tsigned:0;\n");
        let mut format: String = [
            ("int oldstate", 16),
            ("int newstate", 20),
            ("__u16 sport", 24),
            ("__u16 family", 28),
            ("__u16 protocol", 30),
            ("__u8 saddr[4]", 32),
        ]
        .iter()
        .map(|(decl, off)| field(decl, *off))
        .collect();
        std::fs::write(dir.join("format"), &format).unwrap();
        assert!(
            matches!(listen_fields(root.path()), Err(tracefs::TracefsError::NoField { field, .. }) if field == "saddr_v6")
        );
        format.push_str(&field("__u8 saddr_v6[16]", 40));
        std::fs::write(dir.join("format"), &format).unwrap();
        let offsets: StdHashMap<&str, u32> = listen_fields(root.path()).unwrap().into_iter().collect();
        assert_eq!(offsets[globals::TP_SOCK_OLDSTATE], 16);
        assert_eq!(offsets[globals::TP_SOCK_SADDR_V6], 40);
        assert_eq!(offsets.len(), LISTEN_FIELDS.len());
    }

    #[test]
    fn the_running_kernel_has_what_pid_translation_reads() {
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!(
                "skipped kernel::ebpf::tests::the_running_kernel_has_what_pid_translation_reads: /sys/kernel/btf/vmlinux is not readable here"
            );
            return;
        };
        let btf = Btf::parse(&data).unwrap();
        let ns = PidNamespace { inode: 4_026_532_179, initial_user: true, proc_is_ours: Some(true) };
        let globals: StdHashMap<&str, u32> = pid_translation(&btf, &ns).unwrap().into_iter().collect();
        assert_eq!(globals[globals::PIDNS_TRANSLATE], 1);
        assert_eq!(globals[globals::PIDNS_INUM], 4_026_532_179);
        // `struct upid { int nr; struct pid_namespace *ns; }` on every 64-bit kernel.
        assert_eq!((globals[globals::UPID_SIZE], globals[globals::UPID_NR], globals[globals::UPID_NS]), (16, 0, 8));
        assert!(globals[globals::PID_NUMBERS] > globals[globals::PID_LEVEL]);
    }
}
