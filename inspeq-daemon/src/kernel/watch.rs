//! What the daemon asks the kernel side to watch: targets and per-watch settings,
//! and their translation into the wire format's [`WatchConfig`].

use std::path::PathBuf;

use inspeq_common::{WATCH_FLAG_FORKS, WATCH_FLAG_LISTEN, WATCH_FLAG_RSS, WatchConfig};

use super::observation::WatchId;

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchTarget {
    /// A cgroup v2 directory (absolute, or relative to the cgroup2 mount) and every
    /// cgroup below it.
    Cgroup(PathBuf),
    /// A cgroup v2 id (its directory's inode), with descendants.
    CgroupId(u64),
    /// A process and every process it forks from now on; descendants it already
    /// has are added when the watch starts.
    Tree(u32),
}

/// RSS limits of a watch, per process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RssLimits {
    /// Report when a process's RSS reaches this many bytes (0: never).
    pub threshold: u64,
    /// Report the way back down when it falls below `threshold - hysteresis`.
    pub hysteresis: u64,
    /// Report whenever RSS moved this many bytes since the last report (0: never).
    pub delta: u64,
}

impl RssLimits {
    /// A threshold with the default hysteresis of one eighth of it, so a process
    /// hovering at the line does not flap.
    pub fn threshold(bytes: u64) -> Self {
        Self { threshold: bytes, hysteresis: bytes / 8, delta: 0 }
    }
}

/// How to watch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchSettings {
    /// Report forks (process-tree tracking happens either way).
    pub forks: bool,
    /// Track RSS with these limits, per process.
    pub rss: Option<RssLimits>,
    /// Report when the watch's total RSS (the sum over its processes, kept in the
    /// kernel) reaches this many bytes, and when it falls below seven eighths of it.
    pub total_rss: Option<u64>,
    /// Report when a listening TCP socket of a watched process closes
    /// ([`Observation::ListenerClosed`](super::Observation::ListenerClosed); eBPF
    /// only: the other tiers learn it from the cycle's socket scan).
    pub listeners: bool,
}

impl WatchSettings {
    pub(crate) fn to_wire(self, id: WatchId) -> WatchConfig {
        let rss = self.rss.unwrap_or_default();
        let mut flags = 0;
        if self.forks {
            flags |= WATCH_FLAG_FORKS;
        }
        if self.rss.is_some() || self.total_rss.is_some() {
            flags |= WATCH_FLAG_RSS;
        }
        if self.listeners {
            flags |= WATCH_FLAG_LISTEN;
        }
        let total = self.total_rss.unwrap_or(0);
        WatchConfig {
            watch_id: id.0,
            flags,
            rss_threshold: rss.threshold,
            rss_hysteresis: rss.hysteresis,
            rss_delta: rss.delta,
            total_threshold: total,
            total_hysteresis: total / 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_its_flag() {
        let flags = |settings: WatchSettings| settings.to_wire(WatchId(4)).flags;
        assert_eq!(flags(WatchSettings::default()), 0);
        assert_eq!(flags(WatchSettings { forks: true, ..Default::default() }), WATCH_FLAG_FORKS);
        assert_eq!(flags(WatchSettings { total_rss: Some(1 << 30), ..Default::default() }), WATCH_FLAG_RSS);
        assert_eq!(flags(WatchSettings { listeners: true, ..Default::default() }), WATCH_FLAG_LISTEN);
        assert_eq!(WatchSettings { listeners: true, ..Default::default() }.to_wire(WatchId(4)).watch_id, 4);
    }
}
