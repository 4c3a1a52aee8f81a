//! The kernel side as the daemon sees it: start it, tell it what to watch, and
//! receive [`Observation`]s.
//!
//! [`Monitor::start`] loads the eBPF programs when it can; when it cannot (not
//! root, no BTF, no ring buffer) it logs one warning and falls back to polling
//! /proc once per cycle, which yields the same observations, coarser.
//!
//! - `ebpf`: load, configure, attach, watch maps, ring-buffer reader.
//! - `fallback`: the /proc polling monitor.
//! - `decode`: raw records → observations (pure).
//! - `btf`, `tracefs`: offsets of kernel struct members and tracepoint fields.
//! - `cgroup`: cgroup v2 paths and ids.

mod btf;
pub(crate) mod cgroup;
mod decode;
mod ebpf;
mod fallback;
mod observation;
mod tracefs;
mod watch;

use std::time::Duration;

pub use decode::{DecodeError, decode};
pub use ebpf::Layout;
pub use observation::{ExitStatus, Observation, ProcessExited, RssDirection, WatchId};
pub use watch::{RssLimits, WatchSettings, WatchTarget};

pub use self::{btf::BtfError, cgroup::CgroupError, tracefs::TracefsError};

/// Why the kernel side could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("loading eBPF programs needs root (or CAP_BPF and CAP_PERFMON)")]
    NotRoot,
    #[error("kernel BTF (/sys/kernel/btf/vmlinux) is not readable")]
    NoBtf {
        #[source]
        source: std::io::Error,
    },
    #[error("reading kernel BTF")]
    Btf(#[from] BtfError),
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("loading the eBPF object")]
    Load {
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("attaching eBPF program `{program}`")]
    Attach {
        program: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("the eBPF object has no map `{0}`")]
    MissingMap(&'static str),
    #[error("eBPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no process with pid {0}")]
    NoProcess(u32),
    #[error("no cgroup with id {0}")]
    NoCgroupId(u64),
}

/// How the kernel side runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Never try eBPF; poll /proc.
    pub force_fallback: bool,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: Option<u32>,
    /// The /proc fallback's polling period.
    pub cycle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            force_fallback: false,
            ring_bytes: None,
            cycle: Duration::from_secs(15),
        }
    }
}

/// Which path delivers observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Ebpf,
    /// Polling /proc, with the reason eBPF is not used.
    Fallback { reason: String },
}

/// Counters of the kernel path, per record kind (exit, fork, rss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub emitted: [u64; 3],
    pub dropped: [u64; 3],
    pub undecodable: u64,
}

enum Backend {
    Ebpf(Box<ebpf::EbpfMonitor>),
    Proc(fallback::ProcMonitor),
}

/// The kernel side: eBPF or /proc, behind one API.
pub struct Monitor {
    backend: Backend,
    mode: Mode,
    next_id: u32,
}

impl Monitor {
    /// Starts the eBPF path, or the /proc fallback (with one warning) when eBPF
    /// cannot be used. Must be called inside a tokio runtime.
    pub fn start(options: &Options) -> Self {
        let fallback = |reason: String| Self {
            backend: Backend::Proc(fallback::ProcMonitor::new(options)),
            mode: Mode::Fallback { reason },
            next_id: 1,
        };
        if options.force_fallback {
            return fallback("eBPF turned off by configuration".into());
        }
        match ebpf::EbpfMonitor::start(options) {
            Ok(monitor) => Self { backend: Backend::Ebpf(Box::new(monitor)), mode: Mode::Ebpf, next_id: 1 },
            Err(err) => {
                let reason = error_chain(&err);
                tracing::warn!(
                    "kernel: eBPF unavailable ({reason}); polling /proc every {:?} instead: exit statuses and short-lived processes may be missed",
                    options.cycle
                );
                fallback(reason)
            }
        }
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Time from start to the last program attached (eBPF path only).
    pub fn attach_time(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Ebpf(m) => Some(m.attach_time),
            Backend::Proc(_) => None,
        }
    }

    /// How the kernel lays out what the programs read (eBPF path only).
    pub fn layout(&self) -> Option<Layout> {
        match &self.backend {
            Backend::Ebpf(m) => Some(m.layout),
            Backend::Proc(_) => None,
        }
    }

    /// Tracepoints that could not be attached (their features are off).
    pub fn missing_tracepoints(&self) -> &[String] {
        match &self.backend {
            Backend::Ebpf(m) => &m.missing,
            Backend::Proc(_) => &[],
        }
    }

    /// Kernel ids of the attached programs, by program name (eBPF path only).
    pub fn program_ids(&self) -> &[(&'static str, u32)] {
        match &self.backend {
            Backend::Ebpf(m) => &m.program_ids,
            Backend::Proc(_) => &[],
        }
    }

    /// Starts watching `target`; observations about it carry the returned id.
    pub fn watch(&mut self, target: &WatchTarget, settings: WatchSettings) -> Result<WatchId, KernelError> {
        let id = WatchId(self.next_id);
        match &mut self.backend {
            Backend::Ebpf(m) => m.watch(id, target, settings)?,
            Backend::Proc(m) => m.watch(id, target, settings)?,
        }
        self.next_id += 1;
        Ok(id)
    }

    /// Stops a watch; the kernel side forgets its processes.
    pub fn unwatch(&mut self, id: WatchId) {
        match &mut self.backend {
            Backend::Ebpf(m) => m.unwatch(id),
            Backend::Proc(m) => m.unwatch(id),
        }
    }

    /// Waits for observations and appends them to `out` (at least one).
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        match &mut self.backend {
            Backend::Ebpf(m) => m.next_batch(out).await,
            Backend::Proc(m) => m.next_batch(out).await,
        }
    }

    pub fn stats(&mut self) -> KernelStats {
        match &mut self.backend {
            Backend::Ebpf(m) => m.stats(),
            Backend::Proc(m) => m.stats(),
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `pid` and all its live descendants, through `/proc/PID/task/TID/children`.
/// Empty when `pid` does not exist.
pub(crate) fn descendants_and_self(pid: u32) -> Vec<u32> {
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Vec::new();
    }
    let mut out = vec![pid];
    let mut i = 0;
    // Bounded against pid reuse creating a cycle.
    while i < out.len() && out.len() < 100_000 {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for task in tasks.flatten() {
                if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                    out.extend(text.split_whitespace().filter_map(|c| c.parse::<u32>().ok()).filter(|c| !out.contains(c)).collect::<Vec<_>>());
                }
            }
        }
        i += 1;
    }
    out
}

/// A process and its live descendants, for a tree watch's starting members.
pub fn tree_members(pid: u32) -> Vec<u32> {
    descendants_and_self(pid)
}

/// The processes in the cgroup directory `dir` and below it (`cgroup.procs`).
pub fn cgroup_members(dir: &std::path::Path) -> Vec<u32> {
    let mut out = Vec::new();
    cgroup::procs_recursive(dir, &mut out);
    out
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
