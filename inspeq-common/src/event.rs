//! Ring-buffer records. Each starts with [`Header`]; the daemon reads the header,
//! checks `size` against the kind's expected size, then reads the whole record.

use core::mem::size_of;

/// The kind of a record, stored in [`Header::kind`]. Numbers are explicit and never
/// reused, so a daemon and an object of different builds disagree loudly.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// [`ProcessExit`]
    Exit = 1,
    /// [`ProcessFork`]
    Fork = 2,
    /// [`RssChange`]
    Rss = 3,
    /// [`RssTotalChange`]
    RssTotal = 4,
    /// [`ListenClosed`]
    ListenClosed = 5,
}

impl EventKind {
    /// The kind for a raw header byte, or `None` for a number this build does not know.
    pub const fn from_u8(kind: u8) -> Option<Self> {
        match kind {
            1 => Some(Self::Exit),
            2 => Some(Self::Fork),
            3 => Some(Self::Rss),
            4 => Some(Self::RssTotal),
            5 => Some(Self::ListenClosed),
            _ => None,
        }
    }
}

/// The common start of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// An [`EventKind`] as `u8`.
    pub kind: u8,
    pub _pad0: u8,
    /// Size of the whole record in bytes, header included.
    pub size: u16,
    /// The watch (cgroup watch or process-tree watch) this record belongs to; the
    /// daemon chose the number when it added the watch.
    pub watch_id: u32,
    /// `bpf_ktime_get_ns()` when the kernel produced the record (CLOCK_MONOTONIC).
    pub ktime_ns: u64,
}

impl Header {
    pub const fn new(kind: EventKind, size: usize, watch_id: u32, ktime_ns: u64) -> Self {
        Self { kind: kind as u8, _pad0: 0, size: size as u16, watch_id, ktime_ns }
    }
}

/// [`ProcessExit::flags`]: the OOM killer chose this process (`oom:mark_victim`).
pub const EXIT_FLAG_OOM_KILLED: u32 = 1 << 0;
/// [`ProcessExit::flags`]: `exit_status` was read from the kernel; when clear the
/// read failed and the status is unknown.
pub const EXIT_FLAG_STATUS_KNOWN: u32 = 1 << 1;
/// [`ProcessExit::flags`]: `rss_bytes` is known: read from the exiting task's mm
/// (6.16+, where the tracepoint fires before `exit_mm`), or the last value the RSS
/// program saw for the process (before 6.16 the mm is gone at the tracepoint).
pub const EXIT_FLAG_RSS_KNOWN: u32 = 1 << 2;

/// A process (thread group) died: emitted once, when its last thread exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessExit {
    pub header: Header,
    /// The process id (thread-group id).
    pub tgid: u32,
    /// The parent's tgid at exit.
    pub ppid: u32,
    /// The wait status as `waitpid` would report it: `(code << 8) | signal`, with
    /// 0x80 set when a core was dumped.
    pub exit_status: u32,
    /// `EXIT_FLAG_*`.
    pub flags: u32,
    /// Resident set size (file + anon + shmem pages) when the process exited.
    pub rss_bytes: u64,
    /// The cgroup v2 id the process exited in.
    pub cgroup_id: u64,
    /// The task's `comm`, NUL-padded.
    pub comm: [u8; 16],
}

/// A watched process created a new process (not a thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessFork {
    pub header: Header,
    pub parent_tgid: u32,
    pub child_tgid: u32,
    pub cgroup_id: u64,
}

/// [`RssChange::direction`]: the RSS rose to or above the watch's threshold.
pub const RSS_CROSSED_UP: u32 = 1;
/// [`RssChange::direction`]: the RSS fell below threshold minus hysteresis.
pub const RSS_CROSSED_DOWN: u32 = 2;
/// [`RssChange::direction`]: the RSS moved by at least the watch's delta since the
/// last record for this process.
pub const RSS_MOVED: u32 = 3;

/// A watched process's resident set crossed its watch's threshold or moved by
/// its delta. Per-page changes never leave the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssChange {
    pub header: Header,
    pub tgid: u32,
    /// `RSS_CROSSED_UP`, `RSS_CROSSED_DOWN` or `RSS_MOVED`.
    pub direction: u32,
    pub rss_bytes: u64,
    /// The threshold in force (0 when the watch has none).
    pub threshold_bytes: u64,
    pub cgroup_id: u64,
}

/// A watch's total resident set (the sum over its processes, kept in the kernel
/// from each process's RSS changes) crossed the watch's total threshold.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RssTotalChange {
    pub header: Header,
    /// `RSS_CROSSED_UP` or `RSS_CROSSED_DOWN`.
    pub direction: u32,
    /// The tgid whose change made the crossing.
    pub tgid: u32,
    pub total_bytes: u64,
    pub threshold_bytes: u64,
}

/// `AF_INET` ([`ListenClosed::family`]): the address is the first 4 bytes of `addr`.
pub const LISTEN_FAMILY_INET: u16 = 2;
/// `AF_INET6` ([`ListenClosed::family`]): `addr` is the whole IPv6 address.
pub const LISTEN_FAMILY_INET6: u16 = 10;

/// A listening TCP socket of a watched process closed (`LISTEN` → `CLOSE`):
/// the process closed it, shut it down, or exited (killed or not) holding the
/// last reference to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenClosed {
    pub header: Header,
    /// The process whose task closed it (the daemon's pid for it).
    pub tgid: u32,
    /// `LISTEN_FAMILY_INET` or `LISTEN_FAMILY_INET6`.
    pub family: u16,
    /// The local port, host byte order.
    pub port: u16,
    /// The local address in network byte order: IPv4 in the first 4 bytes (the
    /// rest zero), IPv6 in all 16.
    pub addr: [u8; 16],
    /// The cgroup v2 id of the task that closed it.
    pub cgroup_id: u64,
}

/// The largest record; the daemon's decoder never reads more than this.
pub const MAX_EVENT_SIZE: usize = size_of::<ProcessExit>();

const _: () = assert!(size_of::<Header>() == 16);
const _: () = assert!(size_of::<ProcessExit>() == 64);
const _: () = assert!(size_of::<ProcessFork>() == 32);
const _: () = assert!(size_of::<RssChange>() == 48);
const _: () = assert!(size_of::<RssTotalChange>() == 40);
const _: () = assert!(size_of::<ListenClosed>() == 48);
const _: () = assert!(align_of::<ListenClosed>() == 8);
// RingBuf::reserve requires alignment that divides 8.
const _: () = assert!(align_of::<ProcessExit>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, no implicit padding (asserted sizes above), every bit
    // pattern valid.
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::ProcessExit {}
    unsafe impl aya::Pod for super::ProcessFork {}
    unsafe impl aya::Pod for super::RssChange {}
    unsafe impl aya::Pod for super::RssTotalChange {}
    unsafe impl aya::Pod for super::ListenClosed {}
}
