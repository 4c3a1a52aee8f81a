//! What the kernel side tells the daemon, as typed values. Both the eBPF path and
//! the /proc fallback produce these, so nothing above this module knows which one
//! is running.

use std::fmt;

/// The daemon's number for a watch; every observation names the watch it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchId(pub u32);

/// How a process ended, as `waitpid` would say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled { signal: i32, core_dumped: bool },
    /// The status could not be learned (the /proc fallback saw the process vanish).
    Unknown,
}

impl ExitStatus {
    /// Decodes a raw wait status (`(code << 8) | signal | 0x80 core`).
    pub fn from_wait_status(status: u32) -> Self {
        let signal = (status & 0x7f) as i32;
        if signal == 0 {
            Self::Exited(((status >> 8) & 0xff) as i32)
        } else {
            Self::Signaled { signal, core_dumped: status & 0x80 != 0 }
        }
    }

    pub fn exit_code(self) -> Option<i32> {
        match self {
            Self::Exited(code) => Some(code),
            _ => None,
        }
    }

    pub fn signal(self) -> Option<i32> {
        match self {
            Self::Signaled { signal, .. } => Some(signal),
            _ => None,
        }
    }

    pub fn core_dumped(self) -> bool {
        matches!(self, Self::Signaled { core_dumped: true, .. })
    }
}

/// A watched process (thread group) died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessExited {
    pub watch: WatchId,
    pub pid: u32,
    pub ppid: u32,
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
            | Self::RssTotalCrossed { watch, .. } => Some(*watch),
            Self::EventsLost { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn decodes_wait_statuses() {
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Exited(0));
        assert_eq!(ExitStatus::from_wait_status(3 << 8), ExitStatus::Exited(3));
        assert_eq!(ExitStatus::from_wait_status(255 << 8), ExitStatus::Exited(255));
        assert_eq!(ExitStatus::from_wait_status(9), ExitStatus::Signaled { signal: 9, core_dumped: false });
        assert_eq!(ExitStatus::from_wait_status(0x80 | 11), ExitStatus::Signaled { signal: 11, core_dumped: true });
    }
}
