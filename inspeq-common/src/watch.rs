//! Watch-map entries, per-CPU counter indices, and the names the daemon uses to
//! find maps and loader-set globals in the object.

use core::mem::size_of;

/// Map `WATCH_CGROUPS`: cgroup v2 id → [`WatchConfig`]. A task is watched when its
/// cgroup or any ancestor cgroup is in the map.
pub const MAP_WATCH_CGROUPS: &str = "WATCH_CGROUPS";
/// Map `WATCH_TGIDS`: tgid → [`WatchConfig`]. Children inherit their parent's entry
/// at fork, so a whole process tree is watched without a cgroup of its own.
pub const MAP_WATCH_TGIDS: &str = "WATCH_TGIDS";
/// Map `RSS_STATE`: tgid → [`RssState`], kept by the kernel side.
pub const MAP_RSS_STATE: &str = "RSS_STATE";
/// Map `OOM_VICTIMS`: pid → 1 for tasks marked by the OOM killer.
pub const MAP_OOM_VICTIMS: &str = "OOM_VICTIMS";
/// Per-CPU array `COUNTERS`, indexed by `COUNTER_*`.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// The ring buffer.
pub const MAP_EVENTS: &str = "EVENTS";
/// Array `READER_STATE`, one `u32`: `READER_IDLE` or `READER_POLLING`, written by
/// the daemon, read by every program before it submits a record.
pub const MAP_READER_STATE: &str = "READER_STATE";

/// The reader sleeps until woken: records use the kernel's adaptive notification.
pub const READER_IDLE: u32 = 0;
/// The reader drains the ring by itself every millisecond: records wake nobody.
pub const READER_POLLING: u32 = 1;

/// The ring buffer's default size in bytes (a power of two, a multiple of the page
/// size). 256 KiB hold about 3,000 exit records.
pub const DEFAULT_RING_BYTES: u32 = 256 * 1024;

/// Loader-set globals (`EbpfLoader::override_global`), all `u32`.
pub mod globals {
    /// `task_struct.exit_code` byte offset (from BTF).
    pub const TASK_EXIT_CODE: &str = "TASK_EXIT_CODE_OFF";
    /// `task_struct.signal` byte offset.
    pub const TASK_SIGNAL: &str = "TASK_SIGNAL_OFF";
    /// `signal_struct.flags` byte offset.
    pub const SIGNAL_FLAGS: &str = "SIGNAL_FLAGS_OFF";
    /// `signal_struct.group_exit_code` byte offset.
    pub const SIGNAL_GROUP_EXIT_CODE: &str = "SIGNAL_GROUP_EXIT_CODE_OFF";
    /// `task_struct.mm` byte offset.
    pub const TASK_MM: &str = "TASK_MM_OFF";
    /// `task_struct.real_parent` byte offset.
    pub const TASK_REAL_PARENT: &str = "TASK_REAL_PARENT_OFF";
    /// `task_struct.tgid` byte offset.
    pub const TASK_TGID: &str = "TASK_TGID_OFF";
    /// Byte offset of `mm_struct.rss_stat[0].count`.
    pub const MM_RSS_COUNT0: &str = "MM_RSS_COUNT0_OFF";
    /// Size of one `struct percpu_counter` (the stride of `mm_struct.rss_stat`).
    pub const PERCPU_COUNTER_SIZE: &str = "PERCPU_COUNTER_SIZE";
    /// `sched_process_exit` tracepoint: offset of `group_dead`.
    pub const TP_EXIT_GROUP_DEAD: &str = "TP_EXIT_GROUP_DEAD_OFF";
    /// `task_newtask` tracepoint: offset of `pid`.
    pub const TP_NEWTASK_PID: &str = "TP_NEWTASK_PID_OFF";
    /// `task_newtask` tracepoint: offset of `clone_flags`.
    pub const TP_NEWTASK_CLONE_FLAGS: &str = "TP_NEWTASK_CLONE_FLAGS_OFF";
    /// `mark_victim` tracepoint: offset of `pid`.
    pub const TP_OOM_PID: &str = "TP_OOM_PID_OFF";
    /// The page size, to turn `rss_stat` page counts into bytes.
    pub const PAGE_SIZE: &str = "PAGE_SIZE";
}

/// `mm_struct.rss_stat` members counted as resident: MM_FILEPAGES, MM_ANONPAGES,
/// MM_SHMEMPAGES (MM_SWAPENTS, index 2, is not resident).
pub const RSS_MEMBERS: [u32; 3] = [0, 1, 3];

/// What to watch and how, per watch.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WatchConfig {
    /// The daemon's number for this watch, copied into every record's header.
    pub watch_id: u32,
    /// `WATCH_FLAG_*`.
    pub flags: u32,
    /// Emit `RSS_CROSSED_UP` when a process's RSS reaches this (0: no threshold).
    pub rss_threshold: u64,
    /// Emit `RSS_CROSSED_DOWN` when it falls below `rss_threshold - rss_hysteresis`.
    pub rss_hysteresis: u64,
    /// Emit `RSS_MOVED` when RSS moved this much since the last record (0: never).
    pub rss_delta: u64,
}

/// [`WatchConfig::flags`]: report forks of watched processes.
pub const WATCH_FLAG_FORKS: u32 = 1 << 0;
/// [`WatchConfig::flags`]: track RSS (thresholds and deltas).
pub const WATCH_FLAG_RSS: u32 = 1 << 1;

/// Kernel-side RSS state of one watched process.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RssState {
    /// RSS in the last record emitted (or when first seen).
    pub last_bytes: u64,
    /// 1 while above the threshold.
    pub above: u32,
    pub _pad: u32,
}

/// Per-CPU counter slots: emitted records per kind, then failed reservations
/// (drops) per kind. Index = `COUNTER_EMITTED + kind` or `COUNTER_DROPPED + kind`.
pub const COUNTER_EMITTED: u32 = 0;
pub const COUNTER_DROPPED: u32 = 4;
/// Number of slots in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = 8;

const _: () = assert!(size_of::<WatchConfig>() == 32);
const _: () = assert!(size_of::<RssState>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (asserted sizes above).
    unsafe impl aya::Pod for super::WatchConfig {}
    unsafe impl aya::Pod for super::RssState {}
}
