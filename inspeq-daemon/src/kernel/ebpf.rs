//! The eBPF path: load the embedded object, set its globals from BTF and tracefs,
//! attach the tracepoints, keep the watch maps, and read the ring buffer on tokio.
//!
//! Wakeups follow the reader's state, which it publishes in `READER_STATE` (see
//! `emit.rs` on the kernel side): an idle reader sleeps on the ring's fd with no
//! timer and is woken by the first record; once records flow it switches to
//! polling every [`BUSY_POLL`] and the kernel wakes nobody, so storms pay no
//! wakeups; when a poll finds nothing it goes idle again. Drops are counted per CPU in the kernel and turned into
//! [`Observation::EventsLost`] here.

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
    COUNTER_DROPPED, COUNTER_EMITTED, MAP_COUNTERS, MAP_READER_STATE, READER_IDLE, READER_POLLING, MAP_EVENTS, MAP_WATCH_CGROUPS,
    MAP_WATCH_TGIDS, WatchConfig, globals,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    KernelError, KernelStats, Options,
    btf::Btf,
    cgroup, decode,
    observation::{Observation, WatchId},
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

/// (program, category, tracepoint, required): an optional program that fails to
/// attach costs a feature, not the daemon. An empty category means a raw
/// tracepoint.
const PROGRAMS: [(&str, &str, &str, bool); 4] = [
    ("inspeq_exit", "sched", "sched_process_exit", true),
    ("inspeq_fork", "task", "task_newtask", true),
    ("inspeq_rss", "", "rss_stat", false),
    ("inspeq_oom", "oom", "mark_victim", false),
];

/// Kernel struct offsets and tracepoint field offsets the programs need.
struct Offsets(Vec<(&'static str, u32)>);

impl Offsets {
    fn resolve(tracefs_root: &Path) -> Result<Self, KernelError> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|source| KernelError::NoBtf { source })?;
        let btf = Btf::parse(&data)?;
        drop(data);
        let rss_stat = btf.member_offset("mm_struct", "rss_stat")?;
        let count = btf.member_offset("percpu_counter", "count")?;
        let field = |cat, name, field| tracefs::field_offset(tracefs_root, cat, name, field);
        // SAFETY: sysconf has no preconditions.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
        Ok(Self(vec![
            (globals::TASK_EXIT_CODE, btf.member_offset("task_struct", "exit_code")?),
            (globals::TASK_SIGNAL, btf.member_offset("task_struct", "signal")?),
            (globals::SIGNAL_FLAGS, btf.member_offset("signal_struct", "flags")?),
            (globals::SIGNAL_GROUP_EXIT_CODE, btf.member_offset("signal_struct", "group_exit_code")?),
            (globals::TASK_MM, btf.member_offset("task_struct", "mm")?),
            (globals::TASK_REAL_PARENT, btf.member_offset("task_struct", "real_parent")?),
            (globals::TASK_TGID, btf.member_offset("task_struct", "tgid")?),
            (globals::MM_RSS_COUNT0, rss_stat + count),
            (globals::PERCPU_COUNTER_SIZE, btf.struct_size("percpu_counter")?),
            (globals::PAGE_SIZE, page_size),
            (globals::TP_EXIT_GROUP_DEAD, field("sched", "sched_process_exit", "group_dead")?),
            (globals::TP_NEWTASK_PID, field("task", "task_newtask", "pid")?),
            (globals::TP_NEWTASK_CLONE_FLAGS, field("task", "task_newtask", "clone_flags")?),
            (globals::TP_OOM_PID, field("oom", "mark_victim", "pid").unwrap_or(u32::MAX)),
        ]))
    }
}

/// Loaded programs, their maps and the ring-buffer reader.
pub struct EbpfMonitor {
    // Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    cgroups: HashMap<MapData, u64, WatchConfig>,
    tgids: HashMap<MapData, u32, WatchConfig>,
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
    stats: KernelStats,
    /// Programs that did not attach (optional ones), for `status`.
    pub missing: Vec<String>,
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
    pub fn start(options: &Options) -> Result<Self, KernelError> {
        let started = Instant::now();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(KernelError::NotRoot);
        }
        let tracefs_root = tracefs::root()?;
        let offsets = Offsets::resolve(&tracefs_root)?;

        let mut loader = EbpfLoader::new();
        // The programs have no CO-RE relocations; skipping aya's parse of the
        // 5 MB kernel BTF saves ~15 MB of RSS and tens of milliseconds.
        loader.btf(None);
        for (name, value) in &offsets.0 {
            loader.override_global(name, value, true);
        }
        if let Some(bytes) = options.ring_bytes {
            loader.map_max_entries(MAP_EVENTS, bytes);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|source| KernelError::Load { source: Box::new(source) })?;

        let mut missing = Vec::new();
        let mut program_ids = Vec::new();
        for (program, category, tracepoint, required) in PROGRAMS {
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
            match result {
                Ok(id) => program_ids.push((program, id)),
                Err(source) => {
                if required {
                    return Err(KernelError::Attach { program, source: Box::new(source) });
                }
                    let name = if category.is_empty() { format!("raw:{tracepoint}") } else { format!("{category}:{tracepoint}") };
                    tracing::warn!("kernel: {name} not attached ({source}); that feature is off");
                    missing.push(name);
                }
            }
        }

        let ring: RingBuf<MapData> = map(&mut ebpf, MAP_EVENTS)?;
        // SAFETY: the fd stays open as long as `ring`, which AsyncFd owns.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|source| KernelError::Io { what: "registering the ring buffer with tokio", source: source.into() })?;
        let cgroups = map(&mut ebpf, MAP_WATCH_CGROUPS)?;
        let tgids = map(&mut ebpf, MAP_WATCH_TGIDS)?;
        let counters = map(&mut ebpf, MAP_COUNTERS)?;
        let reader_state = map(&mut ebpf, MAP_READER_STATE)?;
        tracing::debug!("kernel: ring buffer fd {}", ring.get_ref().as_raw_fd());
        Ok(Self {
            _ebpf: ebpf,
            ring,
            cgroups,
            tgids,
            counters,
            reader_state,
            wakeups: [None; FLOW_WAKEUPS],
            next_wakeup: 0,
            busy: false,
            seen_dropped: [0; 4],
            last_counter_check: Instant::now(),
            watches: StdHashMap::new(),
            stats: KernelStats::default(),
            missing,
            program_ids,
            attach_time: started.elapsed(),
        })
    }

    pub fn watch(&mut self, id: WatchId, target: &WatchTarget, settings: WatchSettings) -> Result<(), KernelError> {
        let cfg = settings.to_wire(id);
        let keys = match target {
            WatchTarget::Cgroup(path) => {
                let dir = cgroup::resolve(path)?;
                let cg = cgroup::id_of(&dir)?;
                self.insert_cgroup(cg, cfg)?;
                Keys::Cgroup(cg)
            }
            WatchTarget::CgroupId(cg) => {
                self.insert_cgroup(*cg, cfg)?;
                Keys::Cgroup(*cg)
            }
            WatchTarget::Tree(pid) => {
                let pids = super::descendants_and_self(*pid);
                if pids.is_empty() {
                    return Err(KernelError::NoProcess(*pid));
                }
                for pid in &pids {
                    self.tgids
                        .insert(pid, cfg, 0)
                        .map_err(|source| KernelError::Map { name: MAP_WATCH_TGIDS, source })?;
                }
                Keys::Tree(pids)
            }
        };
        if let Some(old) = self.watches.insert(id, keys) {
            self.remove_keys(old);
        }
        Ok(())
    }

    fn insert_cgroup(&mut self, cg: u64, cfg: WatchConfig) -> Result<(), KernelError> {
        self.cgroups.insert(cg, cfg, 0).map_err(|source| KernelError::Map { name: MAP_WATCH_CGROUPS, source })
    }

    pub fn unwatch(&mut self, id: WatchId) {
        if let Some(keys) = self.watches.remove(&id) {
            self.remove_keys(keys);
        }
        // Tree members forked since the watch began are only known to the kernel.
        let stale: Vec<u32> =
            self.tgids.iter().flatten().filter(|(_, cfg)| cfg.watch_id == id.0).map(|(pid, _)| pid).collect();
        for pid in stale {
            let _ = self.tgids.remove(&pid);
        }
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
        for (i, kind) in ["exit", "fork", "rss"].into_iter().enumerate() {
            let k = i as u32 + 1;
            let dropped = sum(COUNTER_DROPPED + k);
            self.stats.emitted[i] = sum(COUNTER_EMITTED + k);
            self.stats.dropped[i] = dropped;
            let new = dropped.saturating_sub(self.seen_dropped[i]);
            if new > 0 {
                self.seen_dropped[i] = dropped;
                out.push(Observation::EventsLost { kind, count: new });
            }
        }
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

fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Vec<Observation>, stats: &mut KernelStats) {
    while let Some(item) = ring.next() {
        match decode::decode(&item) {
            Ok(observation) => out.push(observation),
            Err(err) => {
                stats.undecodable += 1;
                if stats.undecodable == 1 {
                    tracing::warn!("kernel: undecodable record ({err}); the object and daemon may be of different builds");
                }
            }
        }
    }
}
