//! What the kernel side tells the daemon, as typed values. Every tier (eBPF, the
//! process connector, pidfds, /proc polling) produces these, so nothing above this
//! module knows which one is running. An exit's status is [`ExitStatus`], the one
//! type the engine and the alerts carry on (`crate::exit`).

use std::{fmt, net::SocketAddr};

use crate::exit::Exit;
pub use crate::exit::ExitStatus;

/// The daemon's number for a watch; every observation names the watch it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u32);

/// A watched process (thread group) died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExited {
    pub watch: WatchId,
    pub pid: u32,
    pub ppid: u32,
    /// Built here, at the kernel side, and carried as it is to the alert.
    pub status: ExitStatus,
    /// The OOM killer chose it.
    pub oom_killed: bool,
    /// Resident bytes at exit, when known.
    pub rss_bytes: Option<u64>,
    pub cgroup_id: u64,
    pub comm: String,
    /// CLOCK_MONOTONIC nanoseconds when the kernel saw the exit.
    pub ktime_ns: u64,
}

impl ProcessExited {
    /// The exit as the layers above carry it: the record without its kernel-side identity (watch, parent,
    /// cgroup, comm, time).
    #[must_use]
    pub fn exit(&self) -> Exit {
        Exit { pid: self.pid, status: self.status, oom_killed: self.oom_killed, rss_bytes: self.rss_bytes }
    }
}

/// Which way an RSS record went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RssDirection {
    /// Reached the threshold.
    Up,
    /// Fell below threshold minus hysteresis.
    Down,
    /// Moved by the watch's delta.
    Moved,
}

impl fmt::Display for RssDirection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Moved => "moved",
        })
    }
}

/// One observation from the kernel side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    ProcessExited(ProcessExited),
    ProcessForked {
        watch: WatchId,
        parent: u32,
        child: u32,
        cgroup_id: u64,
        ktime_ns: u64,
    },
    RssCrossed {
        watch: WatchId,
        pid: u32,
        direction: RssDirection,
        rss_bytes: u64,
        threshold_bytes: u64,
        cgroup_id: u64,
        ktime_ns: u64,
    },
    /// The watch's total RSS (all its processes) crossed its total threshold;
    /// `pid` is the process whose change made it cross.
    RssTotalCrossed {
        watch: WatchId,
        pid: u32,
        direction: RssDirection,
        total_bytes: u64,
        threshold_bytes: u64,
        ktime_ns: u64,
    },
    /// A listening TCP socket of a watched process closed: it called `close` or
    /// `shutdown` on it, or exited (killed or not) holding it. `pid` is the
    /// process whose task closed it, `addr` the address and port it listened on
    /// (`0.0.0.0`/`::` for all addresses), `cgroup_id` that task's cgroup. Only
    /// the eBPF tier sees it happen, and only for watches with
    /// [`WatchSettings::listeners`](super::WatchSettings::listeners).
    ListenerClosed {
        watch: WatchId,
        pid: u32,
        addr: SocketAddr,
        cgroup_id: u64,
        ktime_ns: u64,
    },
    /// The kernel could not hand over `count` records (the ring buffer was full);
    /// `kind` names the record kind that was lost.
    EventsLost {
        kind: &'static str,
        count: u64,
    },
}

impl Observation {
    /// The watch this observation is about (`None` for lost records).
    pub fn watch(&self) -> Option<WatchId> {
        match self {
            Self::ProcessExited(e) => Some(e.watch),
            Self::ProcessForked { watch, .. }
            | Self::RssCrossed { watch, .. }
            | Self::RssTotalCrossed { watch, .. }
            | Self::ListenerClosed { watch, .. } => Some(*watch),
            Self::EventsLost { .. } => None,
        }
    }
}
