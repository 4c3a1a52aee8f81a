//! The kernel side as the daemon sees it: start it, tell it what to watch, and
//! receive [`Observation`]s.
//!
//! [`Monitor::start`] picks the first tier that works, and logs one warning when
//! it is not eBPF:
//!
//! 1. eBPF (`ebpf`): everything, filtered in the kernel.
//! 2. the netlink process connector (`proc_connector`): every exit with its wait
//!    status and every fork, filtered here; CAP_NET_ADMIN on older kernels.
//! 3. pidfds (`pidfd`): exits of the processes a /proc scan found, the moment
//!    they happen, mostly without a status; Linux 5.3.
//! 4. /proc polling once per cycle (`fallback`).
//!
//! All four yield the same [`Observation`]s; [`Mode`] says which runs and
//! [`Mode::blind_spots`] what it cannot see. [`Options`] can rule tiers out.
//!
//! - `ebpf`: load, configure, attach, watch maps, ring-buffer reader.
//! - `proc_connector`, `pidfd`, `fallback`: the tiers without eBPF.
//! - `decode`: raw records → observations (pure).
//! - `btf`, `tracefs`: offsets of kernel struct members and tracepoint fields.
//! - `cgroup`: cgroup v2 paths and ids.
//! - `sock_diag`: the host's listening TCP sockets (`NETLINK_SOCK_DIAG`), with
//!   each one's accept queue and cgroup, for the cycle's socket scan.
//! - `pidns`: inspeqd's pid namespace, which decides how pids are read (eBPF
//!   translates outside the initial one) and which tiers can serve.

mod btf;
pub(crate) mod cgroup;
mod decode;
mod ebpf;
mod fallback;
mod observation;
mod pidfd;
mod pidns;
mod proc_connector;
pub mod sock_diag;
mod tracefs;
mod watch;

use std::time::Duration;

pub use decode::{DecodeError, decode};
pub use ebpf::Layout;
pub use observation::{ExitStatus, Observation, ProcessExited, RssDirection, WatchId};
pub use pidns::PidNamespace;
pub use sock_diag::{Listener, SockDiagError, listeners};
pub use watch::{RssLimits, WatchSettings, WatchTarget};

pub use self::{
    btf::BtfError, cgroup::CgroupError, pidfd::PidfdError, proc_connector::ProcConnectorError, tracefs::TracefsError,
};

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
    #[error("process connector")]
    ProcConnector(#[source] ProcConnectorError),
    #[error(transparent)]
    Pidfd(PidfdError),
    #[error("no process with pid {0}")]
    NoProcess(u32),
    #[error("no cgroup with id {0}")]
    NoCgroupId(u64),
}

/// How the kernel side runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Never try eBPF (`--no-ebpf`).
    pub force_fallback: bool,
    /// Never try the process connector (`--no-proc-connector`).
    pub no_proc_connector: bool,
    /// Never try pidfds (`--no-pidfd`): with all three off, /proc polling runs.
    pub no_pidfd: bool,
    /// Ring-buffer size in bytes (a power of two, multiple of the page size).
    pub ring_bytes: Option<u32>,
    /// The period of the /proc scans (the /proc and pidfd tiers' membership, the
    /// process connector's resync and RSS samples).
    pub cycle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            force_fallback: false,
            no_proc_connector: false,
            no_pidfd: false,
            ring_bytes: None,
            cycle: Duration::from_secs(15),
        }
    }
}

/// The tiers without eBPF produce no [`Observation::ListenerClosed`]: a listener
/// that went away is found by the cycle's socket scan ([`sock_diag::listeners`]).
const LISTENERS_PER_CYCLE: &str = "a listening socket's close is seen only at the cycle's socket scan";

/// Which path delivers observations. `reason` says why the tiers above it are
/// not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Ebpf,
    /// The netlink process connector.
    ProcConnector {
        reason: String,
    },
    /// pidfds for known processes, /proc scans for membership.
    Pidfd {
        reason: String,
    },
    /// Polling /proc once per cycle.
    Fallback {
        reason: String,
    },
}

impl Mode {
    /// The tier's name in `status` and `inspeqd trace`'s `ready` line.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::ProcConnector { .. } => "proc_connector",
            Self::Pidfd { .. } => "pidfd",
            Self::Fallback { .. } => "proc",
        }
    }

    /// Why eBPF (and the tiers between) are not running; `None` for eBPF.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Ebpf => None,
            Self::ProcConnector { reason } | Self::Pidfd { reason } | Self::Fallback { reason } => Some(reason),
        }
    }

    /// What this tier cannot see, for operators (`inspeqctl status`).
    pub fn blind_spots(&self) -> &'static [&'static str] {
        match self {
            Self::Ebpf => &[],
            Self::ProcConnector { .. } => &[
                "RSS crossings are seen at the cycle's sample, not the instant",
                "OOM kills are not flagged (a SIGKILL is reported)",
                "RSS at exit",
                LISTENERS_PER_CYCLE,
            ],
            Self::Pidfd { .. } => &[
                "exit statuses (unless the process is still a zombie; the init system may supply them)",
                "processes that live less than a cycle",
                "processes beyond the first 256 are seen exiting only at the next scan",
                "RSS crossings between samples, OOM kills",
                LISTENERS_PER_CYCLE,
            ],
            Self::Fallback { .. } => &[
                "exits until the next cycle's poll",
                "exit statuses of processes already reaped (the init system may supply them)",
                "processes that live less than a cycle",
                "RSS crossings between polls, OOM kills",
                LISTENERS_PER_CYCLE,
            ],
        }
    }
}

/// Counters of the kernel path, per record kind (exit, fork, rss), and of
/// listener closes apart (eBPF only; not yet in `status` or the Prometheus page,
/// whose per-kind arrays are part of the control protocol).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub emitted: [u64; 3],
    pub dropped: [u64; 3],
    pub listen_emitted: u64,
    pub listen_dropped: u64,
    pub undecodable: u64,
}

enum Backend {
    Ebpf(Box<ebpf::EbpfMonitor>),
    ProcConnector(proc_connector::ProcConnectorMonitor),
    Pidfd(pidfd::PidfdMonitor),
    Proc(fallback::ProcMonitor),
}

/// The kernel side: eBPF or /proc, behind one API.
pub struct Monitor {
    backend: Backend,
    mode: Mode,
    next_id: u32,
}

impl Monitor {
    /// Starts the first tier that works and `options` allows: eBPF, the process
    /// connector, pidfds, /proc polling (which always starts). A tier other than
    /// eBPF is announced with one warning saying why and what it cannot see.
    /// Must be called inside a tokio runtime.
    pub fn start(options: &Options) -> Self {
        let mut reasons: Vec<String> = Vec::new();
        let monitor = |backend, mode| Self { backend, mode, next_id: 1 };
        let pid_ns = PidNamespace::current();
        // eBPF's own records are right either way; what it reads from /proc (a
        // tree's members, RSS seeds) is not.
        let foreign_proc = pid_ns.proc_refusal();
        if let Some(why) = &foreign_proc {
            tracing::warn!("kernel: {why}; process trees and RSS seeds read from it will be wrong");
        }
        'ebpf: {
            if options.force_fallback {
                reasons.push("eBPF turned off by configuration".into());
                break 'ebpf;
            }
            match ebpf::EbpfMonitor::start(options, &pid_ns) {
                Ok(m) => return monitor(Backend::Ebpf(Box::new(m)), Mode::Ebpf),
                Err(err) => reasons.push(format!("eBPF unavailable: {}", error_chain(&err))),
            }
        }
        let (backend, mode) = 'tiers: {
            if options.no_proc_connector {
                reasons.push("process connector turned off by configuration".into());
            } else {
                match proc_connector::ProcConnectorMonitor::start(options, &pid_ns) {
                    Ok(m) => {
                        break 'tiers (Backend::ProcConnector(m), Mode::ProcConnector { reason: reasons.join("; ") });
                    }
                    Err(err) => reasons.push(format!("process connector unavailable: {}", error_chain(&err))),
                }
            }
            if options.no_pidfd {
                reasons.push("pidfd turned off by configuration".into());
            } else {
                match pidfd::PidfdMonitor::start(options, &pid_ns) {
                    Ok(m) => break 'tiers (Backend::Pidfd(m), Mode::Pidfd { reason: reasons.join("; ") }),
                    Err(err) => reasons.push(format!("pidfd unavailable: {}", error_chain(&err))),
                }
            }
            // The last resort starts whatever /proc is; its reason says when its pids are not inspeqd's.
            if let Some(why) = foreign_proc {
                reasons.push(format!("/proc polling reports /proc's pids: {why}"));
            }
            (Backend::Proc(fallback::ProcMonitor::new(options)), Mode::Fallback { reason: reasons.join("; ") })
        };
        tracing::warn!(
            "kernel: {}; using the {} tier (/proc scans every {:?}); it cannot see: {}",
            mode.reason().unwrap_or_default(),
            mode.name(),
            options.cycle,
            mode.blind_spots().join("; ")
        );
        monitor(backend, mode)
    }

    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Time from start to the last program attached (eBPF path only).
    pub fn attach_time(&self) -> Option<Duration> {
        match &self.backend {
            Backend::Ebpf(m) => Some(m.attach_time),
            _ => None,
        }
    }

    /// How the kernel lays out what the programs read (eBPF path only).
    pub fn layout(&self) -> Option<Layout> {
        match &self.backend {
            Backend::Ebpf(m) => Some(m.layout),
            _ => None,
        }
    }

    /// Tracepoints that could not be attached (their features are off).
    pub fn missing_tracepoints(&self) -> &[String] {
        match &self.backend {
            Backend::Ebpf(m) => &m.missing,
            _ => &[],
        }
    }

    /// What the running tier cannot see: [`Mode::blind_spots`], and on the eBPF
    /// tier what its programs that did not attach would have seen (a kernel
    /// without `sock:inet_sock_set_state` sees listener closes only per cycle).
    pub fn blind_spots(&self) -> Vec<&'static str> {
        match &self.backend {
            Backend::Ebpf(m) => m.blind_spots.clone(),
            _ => self.mode.blind_spots().to_vec(),
        }
    }

    /// Kernel ids of the attached programs, by program name (eBPF path only).
    pub fn program_ids(&self) -> &[(&'static str, u32)] {
        match &self.backend {
            Backend::Ebpf(m) => &m.program_ids,
            _ => &[],
        }
    }

    /// Starts watching `target`; observations about it carry the returned id.
    pub fn watch(&mut self, target: &WatchTarget, settings: WatchSettings) -> Result<WatchId, KernelError> {
        self.watch_with(target, settings, &[])
    }

    /// [`Self::watch`], with `members`, the target's processes as the caller has
    /// just listed them: a cgroup known by its id alone cannot be listed here
    /// without a search of the whole cgroup tree, and the eBPF side seeds its
    /// RSS figures (each member's, and the total `memory:total_rss` rules read)
    /// from them.
    pub fn watch_with(
        &mut self,
        target: &WatchTarget,
        settings: WatchSettings,
        members: &[u32],
    ) -> Result<WatchId, KernelError> {
        let id = WatchId(self.next_id);
        match &mut self.backend {
            Backend::Ebpf(m) => m.watch(id, target, settings, members)?,
            Backend::ProcConnector(m) => m.watch(id, target, settings)?,
            Backend::Pidfd(m) => m.watch(id, target, settings)?,
            Backend::Proc(m) => m.watch(id, target, settings)?,
        }
        self.next_id += 1;
        Ok(id)
    }

    /// A watched process's RSS as the kernel keeps it, when it does: with eBPF,
    /// for a process of a watch with an RSS threshold (`memory:rss` rules).
    pub fn process_rss(&self, pid: u32) -> Option<u64> {
        match &self.backend {
            Backend::Ebpf(m) => m.process_rss(pid),
            _ => None,
        }
    }

    /// The watch's total RSS as the kernel keeps it, when it does: with eBPF,
    /// for a watch with a total threshold (`memory:total_rss` rules).
    pub fn rss_total(&self, id: WatchId) -> Option<u64> {
        match &self.backend {
            Backend::Ebpf(m) => m.rss_total(id),
            _ => None,
        }
    }

    /// Stops a watch; the kernel side forgets its processes.
    pub fn unwatch(&mut self, id: WatchId) {
        match &mut self.backend {
            Backend::Ebpf(m) => m.unwatch(id),
            Backend::ProcConnector(m) => m.unwatch(id),
            Backend::Pidfd(m) => m.unwatch(id),
            Backend::Proc(m) => m.unwatch(id),
        }
    }

    /// Waits for observations and appends them to `out` (at least one).
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        match &mut self.backend {
            Backend::Ebpf(m) => m.next_batch(out).await,
            Backend::ProcConnector(m) => m.next_batch(out).await,
            Backend::Pidfd(m) => m.next_batch(out).await,
            Backend::Proc(m) => m.next_batch(out).await,
        }
    }

    pub fn stats(&mut self) -> KernelStats {
        match &mut self.backend {
            Backend::Ebpf(m) => m.stats(),
            Backend::ProcConnector(m) => m.stats(),
            Backend::Pidfd(m) => m.stats(),
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
                    out.extend(
                        text.split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok())
                            .filter(|c| !out.contains(c))
                            .collect::<Vec<_>>(),
                    );
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
