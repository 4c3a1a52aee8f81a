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
/// Map `RSS_TOTALS`: watch id → [`RssTotal`], the watch's summed RSS.
pub const MAP_RSS_TOTALS: &str = "RSS_TOTALS";
/// Map `OOM_VICTIMS`: pid → 1 for tasks marked by the OOM killer.
pub const MAP_OOM_VICTIMS: &str = "OOM_VICTIMS";
/// Per-CPU array `COUNTERS`, indexed by `COUNTER_*`.
pub const MAP_COUNTERS: &str = "COUNTERS";
/// The ring buffer.
pub const MAP_EVENTS: &str = "EVENTS";
/// Array `READER_STATE`, one `u32`: `READER_IDLE` or `READER_POLLING`, written by
/// the daemon, read by every program before it submits a record.
pub const MAP_READER_STATE: &str = "READER_STATE";

/// Array `TREE_WATCHES`, one `u32`: how many process-tree watches the daemon
/// holds. Read when pids are translated into the daemon's pid namespace
/// (`globals::PIDNS_TRANSLATE`): with none, a task need not be translated to look
/// it up in `WATCH_TGIDS`, which spares every page fault of the host a walk of its
/// `struct pid`. The listener program reads it too: with none, no exited tree
/// member can be in `LISTEN_EXITED`.
pub const MAP_TREE_WATCHES: &str = "TREE_WATCHES";

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
    /// Byte offset of `task_struct.rss_stat.count[0]` (the per-task split RSS
    /// counters of kernels before 6.2), or `u32::MAX` where there are none.
    pub const TASK_RSS_COUNT0: &str = "TASK_RSS_COUNT0_OFF";
    /// `task_struct.group_leader` byte offset.
    pub const TASK_GROUP_LEADER: &str = "TASK_GROUP_LEADER_OFF";
    /// `task_struct.start_time` byte offset.
    pub const TASK_START_TIME: &str = "TASK_START_TIME_OFF";
    /// `signal_struct.live` byte offset (threads of the group not yet exiting).
    pub const SIGNAL_LIVE: &str = "SIGNAL_LIVE_OFF";
    /// `sched_process_exit` tracepoint: offset of `group_dead` (6.16+), or
    /// `u32::MAX` where the field does not exist: then `signal_struct.live` decides.
    pub const TP_EXIT_GROUP_DEAD: &str = "TP_EXIT_GROUP_DEAD_OFF";
    /// 1 when the exit tracepoint fires after `exit_mm` (no `group_dead`): the RSS
    /// program then keeps every watched process's RSS for its exit record.
    pub const KEEP_EXIT_RSS: &str = "KEEP_EXIT_RSS";
    /// How the programs find a task's ancestor cgroups: 0 through
    /// `bpf_get_current_ancestor_cgroup_id`, 1 through `cgroup.ancestor_ids[]`,
    /// 2 through `cgroup.ancestors[]` (see `CGROUP_WALK_*`).
    pub const CGROUP_WALK: &str = "CGROUP_WALK";
    /// `task_struct.cgroups` byte offset.
    pub const TASK_CGROUPS: &str = "TASK_CGROUPS_OFF";
    /// `css_set.dfl_cgrp` byte offset.
    pub const CSS_SET_DFL_CGRP: &str = "CSS_SET_DFL_CGRP_OFF";
    /// `cgroup.level` byte offset.
    pub const CGROUP_LEVEL: &str = "CGROUP_LEVEL_OFF";
    /// `cgroup.ancestor_ids` or `cgroup.ancestors` byte offset.
    pub const CGROUP_ANCESTORS: &str = "CGROUP_ANCESTORS_OFF";
    /// `cgroup.kn` byte offset.
    pub const CGROUP_KN: &str = "CGROUP_KN_OFF";
    /// `kernfs_node.id` byte offset.
    pub const KERNFS_NODE_ID: &str = "KERNFS_NODE_ID_OFF";
    /// 1 when the daemon runs outside the initial pid namespace: every pid the
    /// programs report, and every `WATCH_TGIDS`/`RSS_STATE` key, is then the
    /// task's number in the daemon's namespace, read from its `struct pid`.
    pub const PIDNS_TRANSLATE: &str = "PIDNS_TRANSLATE";
    /// The inode number of the daemon's pid namespace (`/proc/self/ns/pid`),
    /// which is its `pid_namespace.ns.inum`.
    pub const PIDNS_INUM: &str = "PIDNS_INUM";
    /// `task_struct.thread_pid` byte offset (`struct pid *`).
    pub const TASK_THREAD_PID: &str = "TASK_THREAD_PID_OFF";
    /// `pid.level` byte offset: the depth of the task's own pid namespace.
    pub const PID_LEVEL: &str = "PID_LEVEL_OFF";
    /// `pid.numbers` byte offset (`struct upid numbers[]`, one per level).
    pub const PID_NUMBERS: &str = "PID_NUMBERS_OFF";
    /// Size of `struct upid` (the stride of `pid.numbers`).
    pub const UPID_SIZE: &str = "UPID_SIZE";
    /// `upid.nr` byte offset.
    pub const UPID_NR: &str = "UPID_NR_OFF";
    /// `upid.ns` byte offset (`struct pid_namespace *`).
    pub const UPID_NS: &str = "UPID_NS_OFF";
    /// Byte offset of `pid_namespace.ns.inum`.
    pub const PIDNS_NS_INUM: &str = "PIDNS_NS_INUM_OFF";
    /// `mark_victim` tracepoint: offset of `pid`.
    pub const TP_OOM_PID: &str = "TP_OOM_PID_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `oldstate` (int).
    pub const TP_SOCK_OLDSTATE: &str = "TP_SOCK_OLDSTATE_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `newstate` (int).
    pub const TP_SOCK_NEWSTATE: &str = "TP_SOCK_NEWSTATE_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `sport` (`__u16`, host order).
    pub const TP_SOCK_SPORT: &str = "TP_SOCK_SPORT_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `family` (`__u16`).
    pub const TP_SOCK_FAMILY: &str = "TP_SOCK_FAMILY_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `protocol` (`__u16`).
    pub const TP_SOCK_PROTOCOL: &str = "TP_SOCK_PROTOCOL_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `saddr` (`__u8[4]`).
    pub const TP_SOCK_SADDR: &str = "TP_SOCK_SADDR_OFF";
    /// `inet_sock_set_state` tracepoint: offset of `saddr_v6` (`__u8[16]`).
    pub const TP_SOCK_SADDR_V6: &str = "TP_SOCK_SADDR_V6_OFF";
    /// The page size, to turn `rss_stat` page counts into bytes.
    pub const PAGE_SIZE: &str = "PAGE_SIZE";
}

/// [`globals::CGROUP_WALK`]: the helper.
pub const CGROUP_WALK_HELPER: u32 = 0;
/// [`globals::CGROUP_WALK`]: `cgroup.ancestor_ids[]` holds the ids (before 6.0).
pub const CGROUP_WALK_ANCESTOR_IDS: u32 = 1;
/// [`globals::CGROUP_WALK`]: `cgroup.ancestors[]` holds pointers (6.0+).
pub const CGROUP_WALK_ANCESTORS: u32 = 2;

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
    /// Emit an [`RssTotalChange`](crate::RssTotalChange) when the watch's total
    /// RSS reaches this (0: no total threshold).
    pub total_threshold: u64,
    /// ... and when it falls below `total_threshold - total_hysteresis`.
    pub total_hysteresis: u64,
}

/// [`WatchConfig::flags`]: report forks of watched processes.
pub const WATCH_FLAG_FORKS: u32 = 1 << 0;
/// [`WatchConfig::flags`]: track RSS (thresholds and deltas).
pub const WATCH_FLAG_RSS: u32 = 1 << 1;
/// [`WatchConfig::flags`]: report when a listening TCP socket of a watched
/// process closes ([`ListenClosed`](crate::ListenClosed)).
pub const WATCH_FLAG_LISTEN: u32 = 1 << 2;

/// Kernel-side RSS state of one watched process. The daemon seeds it for the
/// processes a watch already has when it starts (their RSS from /proc), so a
/// process above its threshold is known to be, and the watch's total counts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RssState {
    /// RSS in the last record emitted (or when first seen).
    pub last_bytes: u64,
    /// RSS at the last change seen: what this process adds to its watch's total,
    /// and its RSS at exit on kernels whose exit tracepoint fires after `exit_mm`.
    pub now_bytes: u64,
    /// 1 while above the threshold.
    pub above: u32,
    /// The watch whose total counts `now_bytes` (0: none yet).
    pub total_watch: u32,
}

/// Kernel-side RSS total of one watch: the sum of its processes' `now_bytes`.
/// The programs change `bytes` only by atomic adds; the daemon writes the entry
/// once, before the watch is armed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RssTotal {
    pub bytes: i64,
    /// 1 while above the watch's total threshold.
    pub above: u32,
    pub _pad: u32,
}

/// Map `EXITS_SEEN` key: a process by tgid and its leader's start time. Before
/// 6.16 the exit tracepoint has no `group_dead`, and several threads of a group
/// killed at once can all see `signal->live == 0`; the first to insert this key
/// reports the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ExitKey {
    pub tgid: u32,
    pub _pad: u32,
    pub start_time: u64,
}

/// Per-CPU counter slots: emitted records per kind, then failed reservations
/// (drops) per kind. Index = `COUNTER_EMITTED + kind` or `COUNTER_DROPPED + kind`;
/// kinds are 1..=7 at most before the two ranges would overlap.
pub const COUNTER_EMITTED: u32 = 0;
pub const COUNTER_DROPPED: u32 = 8;
/// Number of slots in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = 16;

const _: () = assert!(crate::EventKind::ListenClosed as u32 + COUNTER_EMITTED < COUNTER_DROPPED);
const _: () = assert!(crate::EventKind::ListenClosed as u32 + COUNTER_DROPPED < COUNTER_SLOTS);

const _: () = assert!(size_of::<WatchConfig>() == 48);
const _: () = assert!(size_of::<RssState>() == 24);
const _: () = assert!(size_of::<RssTotal>() == 16);
const _: () = assert!(size_of::<ExitKey>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (asserted sizes above).
    unsafe impl aya::Pod for super::WatchConfig {}
    unsafe impl aya::Pod for super::RssState {}
    unsafe impl aya::Pod for super::RssTotal {}
    unsafe impl aya::Pod for super::ExitKey {}
}
