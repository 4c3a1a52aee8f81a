//! The netlink process connector tier, for hosts where eBPF cannot load but
//! `CONFIG_PROC_EVENTS` is on (every kernel inspeq supports has it). Older
//! kernels want CAP_NET_ADMIN to listen; newer ones (the reference VM's 6.18)
//! let any user. `start` waits for the kernel's answer to the listen request,
//! so either way a refusal is found at start, not as a silent host.
//!
//! A `NETLINK_CONNECTOR` socket bound to the `CN_IDX_PROC` group, after
//! `PROC_CN_MCAST_LISTEN`, receives one message per fork, exec and exit of every
//! process on the host. The kernel sends `PROC_EVENT_EXIT` from `do_exit` after
//! `exit_notify`, with the task's `exit_code` — the wait status `waitpid` would
//! return — so an exit is reported with its real status even when the parent
//! reaps the process at once (every service under systemd).
//!
//! The kernel does not filter: this module does. It keeps the set of pids each
//! watch covers, because an exiting process's cgroup can no longer be read from
//! /proc when its exit arrives. The set is seeded from `cgroup.procs` (cgroup
//! watches) or the process's descendants (tree watches) and grows with fork
//! events: a child of a member inherits its watch; a child of a non-member whose
//! /proc/PID/cgroup is inside a watched cgroup (a service's main process, forked
//! by its manager) joins that watch, and so does a process found inside one at
//! its exec (moved in between fork and exec). That costs one read of
//! /proc/PID/cgroup per fork of a non-member and per exec on the host, and only
//! while a cgroup is watched. Once per cycle the cgroup sets are re-read
//! (processes migrated into a cgroup by someone else, a fork missed) and RSS is
//! sampled from `statm`, so crossings come at the cycle, not at the instant. A
//! process moved into a watched cgroup after its exec, by another process, that
//! exits before the next cycle is the one exit this tier misses. Only exits with
//! `pid == tgid` are process exits; the others are threads.
//!
//! An overrun of the socket's receive buffer (`ENOBUFS`) loses messages: it is
//! reported as [`Observation::EventsLost`] (`kind` "overrun"), the sets are
//! re-read, and members that vanished meanwhile are reported as exits with
//! [`ExitStatus::Unknown`] rather than forgotten.
//!
//! The wire structs (`struct nlmsghdr`, `struct cn_msg` from linux/connector.h,
//! `struct proc_event` from linux/cn_proc.h) are laid out by hand below with their
//! byte offsets; libc has the netlink constants but not these structs.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use tokio::io::{Interest, unix::AsyncFd};

use super::{
    KernelError, KernelStats, Options, cgroup, descendants_and_self,
    fallback::{RssState, read_comm, read_rss},
    monotonic_ns,
    observation::{ExitStatus, Observation, ProcessExited, WatchId},
    pidns::PidNamespace,
    watch::{WatchSettings, WatchTarget},
};

/// Why the process connector could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProcConnectorError {
    #[error("opening a NETLINK_CONNECTOR socket")]
    Socket(#[source] io::Error),
    #[error("joining the process connector's multicast group (needs CAP_NET_ADMIN)")]
    Bind(#[source] io::Error),
    #[error("sending PROC_CN_MCAST_LISTEN")]
    Listen(#[source] io::Error),
    #[error("the kernel refused PROC_CN_MCAST_LISTEN (errno {0}; CAP_NET_ADMIN in the initial namespaces is needed)")]
    Refused(u32),
    #[error("the kernel did not acknowledge PROC_CN_MCAST_LISTEN within {0} ms (CONFIG_PROC_EVENTS off?)")]
    NoAck(u64),
    /// Outside the initial namespaces the kernel ignores the listen request, and
    /// the events would carry the initial namespace's pids anyway.
    #[error("{0}")]
    Namespace(String),
}

/// The byte layout of the messages, from the kernel's uapi headers.
pub(super) mod wire {
    /// `struct nlmsghdr`: len u32 @0, type u16 @4, flags u16 @6, seq u32 @8, pid u32 @12.
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLMSG_DONE: u16 = 3;
    /// `struct cn_msg`: id.idx u32 @0, id.val u32 @4, seq u32 @8, ack u32 @12,
    /// len u16 @16, flags u16 @18, data @20.
    pub const CN_MSG_LEN: usize = 20;
    pub const CN_IDX_PROC: u32 = 1;
    pub const CN_VAL_PROC: u32 = 1;
    /// `enum proc_cn_mcast_op`.
    pub const PROC_CN_MCAST_LISTEN: u32 = 1;
    pub const PROC_CN_MCAST_IGNORE: u32 = 2;
    /// `struct proc_event`: what u32 @0, cpu u32 @4, timestamp_ns u64 @8 (aligned 8),
    /// event_data @16. The union's members, from @16:
    /// - ack: err u32
    /// - fork: parent_pid, parent_tgid, child_pid, child_tgid (u32 each)
    /// - exec: process_pid, process_tgid
    /// - exit: process_pid, process_tgid, exit_code, exit_signal, parent_pid, parent_tgid
    ///   (the parent fields since Linux 4.18)
    pub const EVENT_DATA: usize = 16;
    pub const PROC_EVENT_NONE: u32 = 0;
    pub const PROC_EVENT_FORK: u32 = 1;
    pub const PROC_EVENT_EXEC: u32 = 2;
    pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;

    /// One process-connector event.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ProcEvent {
        /// The answer to a `PROC_CN_MCAST_*` request; `err` is an errno, 0 when it worked.
        Ack {
            err: u32,
        },
        Fork {
            parent_tgid: u32,
            child_pid: u32,
            child_tgid: u32,
            ktime_ns: u64,
        },
        Exec {
            pid: u32,
            tgid: u32,
        },
        /// `exit_code` is the wait status; `exit_signal` the signal the parent is sent
        /// (SIGCHLD, or -1 for a thread), not the one that killed the process.
        Exit {
            pid: u32,
            tgid: u32,
            exit_code: u32,
            exit_signal: u32,
            parent_tgid: u32,
            ktime_ns: u64,
        },
        /// An event kind inspeq does not use (uid, gid, sid, ptrace, comm, coredump).
        Other,
    }

    /// What did not parse.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
    pub enum ParseError {
        #[error("netlink message of {len} bytes at offset {at} runs past the datagram's {size}")]
        Truncated { at: usize, len: usize, size: usize },
        #[error("proc_event of {0} bytes is too short for its kind")]
        ShortEvent(usize),
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
    }

    /// The `PROC_CN_MCAST_*` request: nlmsghdr + cn_msg + the op.
    pub fn mcast_request(op: u32, port: u32) -> Vec<u8> {
        let len = NLMSG_HDRLEN + CN_MSG_LEN + 4;
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes()); // flags
        m.extend_from_slice(&0u32.to_ne_bytes()); // seq
        m.extend_from_slice(&port.to_ne_bytes());
        m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // seq
        m.extend_from_slice(&0u32.to_ne_bytes()); // ack
        m.extend_from_slice(&4u16.to_ne_bytes()); // len of data
        m.extend_from_slice(&0u16.to_ne_bytes()); // flags
        m.extend_from_slice(&op.to_ne_bytes());
        m
    }

    /// Parses one received datagram (one or more netlink messages) into events.
    /// Messages of other connector ids and netlink control messages are skipped.
    pub fn parse(datagram: &[u8], out: &mut Vec<ProcEvent>) -> Result<(), ParseError> {
        let mut at = 0;
        while at + NLMSG_HDRLEN <= datagram.len() {
            let len = u32_at(datagram, at) as usize;
            if len < NLMSG_HDRLEN || at + len > datagram.len() {
                return Err(ParseError::Truncated { at, len, size: datagram.len() });
            }
            let kind = u16_at(datagram, at + 4);
            let payload = &datagram[at + NLMSG_HDRLEN..at + len];
            // Connector messages travel as NLMSG_DONE; NOOP, ERROR and OVERRUN are
            // netlink's own.
            if kind == NLMSG_DONE && payload.len() >= CN_MSG_LEN {
                let (idx, val) = (u32_at(payload, 0), u32_at(payload, 4));
                let data_len = usize::from(u16_at(payload, 16));
                let data = &payload[CN_MSG_LEN..];
                if idx == CN_IDX_PROC && val == CN_VAL_PROC {
                    out.push(event(&data[..data_len.min(data.len())])?);
                }
            }
            // NLMSG_ALIGN: messages start on 4-byte boundaries.
            at += (len + 3) & !3;
        }
        Ok(())
    }

    fn event(data: &[u8]) -> Result<ProcEvent, ParseError> {
        let need = |n: usize| {
            if data.len() >= EVENT_DATA + n { Ok(()) } else { Err(ParseError::ShortEvent(data.len())) }
        };
        need(0)?;
        let what = u32_at(data, 0);
        let ktime_ns = u64_at(data, 8);
        let d = |i: usize| u32_at(data, EVENT_DATA + 4 * i);
        Ok(match what {
            PROC_EVENT_NONE => {
                need(4)?;
                ProcEvent::Ack { err: d(0) }
            }
            PROC_EVENT_FORK => {
                need(16)?;
                ProcEvent::Fork { parent_tgid: d(1), child_pid: d(2), child_tgid: d(3), ktime_ns }
            }
            PROC_EVENT_EXEC => {
                need(8)?;
                ProcEvent::Exec { pid: d(0), tgid: d(1) }
            }
            PROC_EVENT_EXIT => {
                need(16)?;
                // Kernels before 4.18 send no parent fields.
                let parent_tgid = if data.len() >= EVENT_DATA + 24 { d(5) } else { 0 };
                ProcEvent::Exit { pid: d(0), tgid: d(1), exit_code: d(2), exit_signal: d(3), parent_tgid, ktime_ns }
            }
            _ => ProcEvent::Other,
        })
    }
}

use wire::ProcEvent;

/// Datagrams read per wakeup at most (each is one event of about 76 bytes).
const DRAIN_BATCH: usize = 4096;

/// While messages flow, the reader drains this often instead of being woken.
const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// This many wakeups within one [`BUSY_POLL`] mean messages are flowing.
const FLOW_WAKEUPS: usize = 4;

/// How long `start` waits for the kernel's answer to the listen request.
const ACK_WAIT_MS: u64 = 1000;

/// The receive buffer asked for: a fork storm sends ~2 messages per process
/// (about 1 KiB of buffer each); the default (~200 KiB) overruns after a few hundred.
const RCVBUF_BYTES: libc::c_int = 16 << 20;

enum Target {
    /// The cgroup's directory and its path relative to the cgroup2 mount, as
    /// /proc/PID/cgroup writes it (`/system.slice/x.service`).
    Cgroup {
        dir: PathBuf,
        relative: String,
    },
    Tree,
}

struct Watch {
    target: Target,
    settings: WatchSettings,
}

/// A process a watch covers.
struct Member {
    watch: WatchId,
    ppid: u32,
    comm: String,
    rss: RssState,
}

/// The socket, registered with tokio while idle (each message wakes the
/// reader) and taken out of its epoll set while messages flow (the reader
/// drains on a timer; a registered socket would wake it for every message).
enum Socket {
    Woken(AsyncFd<OwnedFd>),
    Polled(OwnedFd),
    /// Only while switching.
    Moving,
}

impl Socket {
    fn fd(&self) -> Option<&OwnedFd> {
        match self {
            Self::Woken(fd) => Some(fd.get_ref()),
            Self::Polled(fd) => Some(fd),
            Self::Moving => None,
        }
    }
}

fn register(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, KernelError> {
    // SAFETY: the AsyncFd owns the descriptor, which stays open as long as it.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|source| KernelError::Io {
        what: "registering the process connector socket with tokio",
        source: source.into(),
    })
}

pub struct ProcConnectorMonitor {
    socket: Socket,
    buf: Vec<u8>,
    tracker: Tracker,
    /// The last FLOW_WAKEUPS wakeups, to tell a flow from the odd message.
    wakeups: [Option<std::time::Instant>; FLOW_WAKEUPS],
    next_wakeup: usize,
}

/// The watches and their members: everything but the socket, so the reader can
/// hold the socket's readiness guard while it updates them.
struct Tracker {
    watches: BTreeMap<WatchId, Watch>,
    members: HashMap<u32, Member>,
    /// The cgroup2 mount, to turn /proc/PID/cgroup lines into directories.
    cgroup_root: PathBuf,
    /// Re-reads the cgroup sets and samples RSS once per cycle.
    resync: tokio::time::Interval,
    page_size: u64,
    events: Vec<ProcEvent>,
    stats: KernelStats,
    /// An overrun was reported; reconcile once the queue is drained.
    overran: bool,
}

fn socket() -> Result<OwnedFd, ProcConnectorError> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(ProcConnectorError::Socket(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // A large buffer makes overruns rare; FORCE (root) goes past rmem_max. Either
    // failing is harmless: overruns are still detected and reported.
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the option value is a c_int that outlives the call.
        let ok = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&RCVBUF_BYTES as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if ok {
            break;
        }
    }
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // Port 0: the kernel picks one, so a daemon and a trace in one process (or
    // two monitors, as in tests) do not collide.
    addr.nl_pid = 0;
    addr.nl_groups = wire::CN_IDX_PROC;
    // SAFETY: addr is a valid sockaddr_nl of the given size.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(ProcConnectorError::Bind(io::Error::last_os_error()));
    }
    Ok(fd)
}

fn send(fd: &OwnedFd, op: u32) -> io::Result<()> {
    // The port the kernel assigned at bind, for the request's nlmsg_pid.
    // SAFETY: as in `socket`.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: addr and len are valid for writing.
    unsafe { libc::getsockname(fd.as_raw_fd(), (&mut addr as *mut libc::sockaddr_nl).cast(), &mut len) };
    let msg = wire::mcast_request(op, addr.nl_pid);
    // SAFETY: msg is valid for its length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if sent < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// One non-blocking receive: `Ok(None)` when nothing is queued.
fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: buf is valid for writing its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(err) }
}

/// Waits (blocking, at start only) for the kernel's ack of the listen request:
/// without it, a kernel without CONFIG_PROC_EVENTS or a refused request would
/// look like a quiet host.
fn wait_for_ack(fd: &OwnedFd) -> Result<(), ProcConnectorError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(ACK_WAIT_MS);
    let mut buf = vec![0u8; 8192];
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ProcConnectorError::NoAck(ACK_WAIT_MS));
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as libc::c_int) };
        // ENOBUFS here means events were already flowing: the listen worked.
        match recv(fd, &mut buf) {
            Ok(Some(n)) => {
                events.clear();
                let _ = wire::parse(&buf[..n], &mut events);
                match events.first() {
                    Some(ProcEvent::Ack { err: 0 }) => return Ok(()),
                    Some(ProcEvent::Ack { err }) => return Err(ProcConnectorError::Refused(*err)),
                    // Events of other processes mean the group is delivering.
                    Some(_) => return Ok(()),
                    None => {}
                }
            }
            Ok(None) => {}
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => return Ok(()),
            Err(err) => return Err(ProcConnectorError::Listen(err)),
        }
    }
}

/// The cgroup path of `pid` in the cgroup2 hierarchy (the `0::` line), as
/// /proc/PID/cgroup writes it.
fn cgroup_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("0::")).map(str::to_owned)
}

/// `path` is `dir` or below it (`/a/b` is inside `/a`, `/ab` is not).
fn inside(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

impl ProcConnectorMonitor {
    pub fn start(options: &Options, pid_ns: &PidNamespace) -> Result<Self, KernelError> {
        if let Some(why) = pid_ns.proc_connector_refusal() {
            return Err(KernelError::ProcConnector(ProcConnectorError::Namespace(why)));
        }
        let fd = socket()?;
        send(&fd, wire::PROC_CN_MCAST_LISTEN).map_err(ProcConnectorError::Listen)?;
        wait_for_ack(&fd)?;
        let cgroup_root = cgroup::cgroup2_root()?;
        let socket = Socket::Woken(register(fd)?);
        let mut resync = tokio::time::interval(options.cycle);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let tracker = Tracker {
            watches: BTreeMap::new(),
            members: HashMap::new(),
            cgroup_root,
            resync,
            page_size: procfs::page_size(),
            events: Vec::new(),
            stats: KernelStats::default(),
            overran: false,
        };
        Ok(Self { socket, buf: vec![0u8; 64 << 10], tracker, wakeups: [None; FLOW_WAKEUPS], next_wakeup: 0 })
    }

    pub fn watch(&mut self, id: WatchId, target: &WatchTarget, settings: WatchSettings) -> Result<(), KernelError> {
        self.tracker.watch(id, target, settings)
    }

    pub fn unwatch(&mut self, id: WatchId) {
        self.tracker.unwatch(id);
    }

    pub fn stats(&self) -> KernelStats {
        self.tracker.stats
    }

    /// Waits for events and appends their observations to `out`; returns when
    /// `out` is not empty.
    ///
    /// Every process on the host sends messages, so wakeups follow the flow as
    /// the eBPF reader's do: idle, each datagram wakes the reader at once; after
    /// [`FLOW_WAKEUPS`] wakeups within [`BUSY_POLL`], it drains every
    /// `BUSY_POLL` instead (a fork storm elsewhere costs one drain a
    /// millisecond, not three syscalls a message), until a drain finds nothing.
    pub async fn next_batch(&mut self, out: &mut Vec<Observation>) -> Result<(), KernelError> {
        loop {
            let mut switch = false;
            match &mut self.socket {
                Socket::Woken(socket) => tokio::select! {
                    guard = socket.readable() => {
                        let mut guard = guard.map_err(|source| KernelError::Io { what: "waiting on the process connector", source })?;
                        let (_, drained) = drain(guard.get_inner(), &mut self.buf, &mut self.tracker, out)?;
                        // Cleared only on EAGAIN, so nothing that arrived meanwhile
                        // is left unread.
                        if drained {
                            guard.clear_ready();
                        }
                        let slot = &mut self.wakeups[self.next_wakeup];
                        switch = slot.is_some_and(|at| at.elapsed() < BUSY_POLL);
                        *slot = Some(std::time::Instant::now());
                        self.next_wakeup = (self.next_wakeup + 1) % FLOW_WAKEUPS;
                    }
                    _ = self.tracker.resync.tick() => self.tracker.cycle(out),
                },
                Socket::Polled(socket) => tokio::select! {
                    () = tokio::time::sleep(BUSY_POLL) => {
                        let (n, _) = drain(socket, &mut self.buf, &mut self.tracker, out)?;
                        // A quiet millisecond: back to being woken.
                        switch = n == 0;
                    }
                    _ = self.tracker.resync.tick() => self.tracker.cycle(out),
                },
                // Only after registering it again failed.
                Socket::Moving => {
                    return Err(KernelError::Io {
                        what: "the process connector socket could not be registered with tokio again",
                        source: io::Error::other("lost"),
                    });
                }
            }
            if switch {
                self.socket = match std::mem::replace(&mut self.socket, Socket::Moving) {
                    Socket::Woken(socket) => Socket::Polled(socket.into_inner()),
                    // Registering reports a message that arrived since the last
                    // drain at once: epoll checks readiness when a file is added.
                    Socket::Polled(fd) => Socket::Woken(register(fd)?),
                    Socket::Moving => Socket::Moving,
                };
            }
            if !out.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Reads up to [`DRAIN_BATCH`] datagrams into `tracker`: how many, and whether
/// the queue ran dry (EAGAIN). At most that many per call: the host's events
/// must not keep the daemon from what was found so far.
fn drain(
    fd: &OwnedFd,
    buf: &mut [u8],
    tracker: &mut Tracker,
    out: &mut Vec<Observation>,
) -> Result<(usize, bool), KernelError> {
    for n in 0..DRAIN_BATCH {
        match recv(fd, buf) {
            Ok(Some(len)) => tracker.datagram(&buf[..len], out),
            Ok(None) => {
                // After an overrun, what survived in the queue is applied first;
                // then the sets are re-read.
                if std::mem::take(&mut tracker.overran) {
                    tracker.reconcile(out);
                }
                return Ok((n, true));
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => tracker.overrun(out),
            Err(source) => {
                return Err(KernelError::Io { what: "reading the process connector", source });
            }
        }
    }
    Ok((DRAIN_BATCH, false))
}

impl Tracker {
    fn watch(&mut self, id: WatchId, target: &WatchTarget, settings: WatchSettings) -> Result<(), KernelError> {
        let dir = match target {
            WatchTarget::Cgroup(path) => {
                let dir = cgroup::resolve(path)?;
                cgroup::id_of(&dir)?;
                Some(dir)
            }
            WatchTarget::CgroupId(cg) => Some(cgroup::path_of(*cg).ok_or(KernelError::NoCgroupId(*cg))?),
            WatchTarget::Tree(pid) => {
                let pids = descendants_and_self(*pid);
                if pids.is_empty() {
                    return Err(KernelError::NoProcess(*pid));
                }
                for p in pids {
                    self.join(p, id, 0, None);
                }
                None
            }
        };
        let target = match dir {
            Some(dir) => {
                let relative =
                    dir.strip_prefix(&self.cgroup_root).map(|r| format!("/{}", r.display())).unwrap_or_default();
                let relative = if relative == "/" { relative } else { relative.trim_end_matches('/').to_owned() };
                Target::Cgroup { dir, relative }
            }
            None => Target::Tree,
        };
        self.watches.insert(id, Watch { target, settings });
        self.seed(id);
        Ok(())
    }

    fn unwatch(&mut self, id: WatchId) {
        self.watches.remove(&id);
        self.members.retain(|_, m| m.watch != id);
    }

    /// Adds `pid` to watch `id` unless a watch has it already.
    fn join(&mut self, pid: u32, id: WatchId, ppid: u32, comm: Option<String>) -> bool {
        if self.members.contains_key(&pid) {
            return false;
        }
        let comm = comm.unwrap_or_else(|| read_comm(pid));
        self.members.insert(pid, Member { watch: id, ppid, comm, rss: RssState::default() });
        true
    }

    /// Reads a cgroup watch's processes from `cgroup.procs` into its set.
    fn seed(&mut self, id: WatchId) {
        let Some(Watch { target: Target::Cgroup { dir, .. }, .. }) = self.watches.get(&id) else {
            return;
        };
        let mut pids = Vec::new();
        cgroup::procs_recursive(dir, &mut pids);
        for pid in pids {
            self.join(pid, id, 0, None);
        }
    }

    /// The cgroup watch whose cgroup holds `pid` now, if any.
    fn cgroup_watch_of(&self, pid: u32) -> Option<WatchId> {
        if !self.watches.values().any(|w| matches!(w.target, Target::Cgroup { .. })) {
            return None;
        }
        let path = cgroup_of(pid)?;
        // The deepest watched cgroup wins, as the kernel side's ancestor walk does.
        self.watches
            .iter()
            .filter_map(|(id, w)| match &w.target {
                Target::Cgroup { relative, .. } if inside(&path, relative) => Some((relative.len(), *id)),
                _ => None,
            })
            .max()
            .map(|(_, id)| id)
    }

    fn datagram(&mut self, datagram: &[u8], out: &mut Vec<Observation>) {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        if let Err(err) = wire::parse(datagram, &mut events) {
            self.stats.undecodable += 1;
            if self.stats.undecodable == 1 {
                tracing::warn!("kernel: undecodable process connector message ({err})");
            }
        }
        for event in &events {
            self.event(*event, out);
        }
        self.events = events;
    }

    fn event(&mut self, event: ProcEvent, out: &mut Vec<Observation>) {
        match event {
            // Threads share their process's membership: only processes join.
            ProcEvent::Fork { parent_tgid, child_pid, child_tgid, ktime_ns } if child_pid == child_tgid => {
                let inherited = self.members.get(&parent_tgid).map(|m| (m.watch, m.comm.clone()));
                let (id, comm) = match inherited {
                    // Before exec the child runs its parent's program.
                    Some((id, comm)) => (id, Some(comm)),
                    None => match self.cgroup_watch_of(child_pid) {
                        Some(id) => {
                            // A parent in the same cgroup that is no member moved
                            // itself in after its own fork (`echo $$ >
                            // cgroup.procs`): it joins too, or its exit is missed.
                            if self.cgroup_watch_of(parent_tgid) == Some(id) {
                                self.join(parent_tgid, id, 0, None);
                            }
                            (id, None)
                        }
                        None => return,
                    },
                };
                if self.join(child_pid, id, parent_tgid, comm) {
                    self.stats.emitted[1] += 1;
                    if self.watches.get(&id).is_some_and(|w| w.settings.forks) {
                        out.push(Observation::ProcessForked {
                            watch: id,
                            parent: parent_tgid,
                            child: child_pid,
                            cgroup_id: 0,
                            ktime_ns,
                        });
                    }
                }
            }
            ProcEvent::Exec { pid, tgid } if pid == tgid => {
                if let Some(m) = self.members.get_mut(&pid) {
                    m.comm = read_comm(pid);
                } else if let Some(id) = self.cgroup_watch_of(pid) {
                    // Moved into a watched cgroup between fork and exec (what a
                    // spawner's pre-exec hook does): a member from now on.
                    self.join(pid, id, 0, None);
                }
            }
            // A thread's exit (pid != tgid) is no process exit; the leader's, with
            // the group's wait status, is.
            ProcEvent::Exit { pid, tgid, exit_code, parent_tgid, ktime_ns, .. } if pid == tgid => {
                if let Some(member) = self.members.remove(&pid) {
                    self.stats.emitted[0] += 1;
                    out.push(Observation::ProcessExited(ProcessExited {
                        watch: member.watch,
                        pid,
                        ppid: if parent_tgid != 0 { parent_tgid } else { member.ppid },
                        status: ExitStatus::from_wait_status(exit_code),
                        oom_killed: false,
                        rss_bytes: None,
                        cgroup_id: 0,
                        comm: member.comm,
                        ktime_ns,
                    }));
                }
            }
            _ => {}
        }
    }

    /// The socket overran: messages are lost. Reported now; once the queue is
    /// drained, members that died meanwhile are reported without a status and
    /// the sets are re-read (`reconcile`). The kernel reports the overrun before
    /// the messages still queued.
    fn overrun(&mut self, out: &mut Vec<Observation>) {
        self.overran = true;
        self.stats.dropped[0] += 1;
        out.push(Observation::EventsLost { kind: "overrun", count: 1 });
        tracing::warn!("kernel: the process connector's receive buffer overran; re-reading the watched processes");
    }

    /// Members whose process is gone are reported as exits with an unknown
    /// status; cgroup sets and trees are re-read.
    fn reconcile(&mut self, out: &mut Vec<Observation>) {
        let now = monotonic_ns();
        let gone: Vec<u32> =
            self.members.keys().copied().filter(|p| !Path::new(&format!("/proc/{p}")).exists()).collect();
        for pid in gone {
            if let Some(member) = self.members.remove(&pid) {
                self.stats.emitted[0] += 1;
                out.push(Observation::ProcessExited(ProcessExited {
                    watch: member.watch,
                    pid,
                    ppid: member.ppid,
                    status: ExitStatus::Unknown,
                    oom_killed: false,
                    rss_bytes: None,
                    cgroup_id: 0,
                    comm: member.comm,
                    ktime_ns: now,
                }));
            }
        }
        let ids: Vec<WatchId> = self.watches.keys().copied().collect();
        for id in ids {
            self.seed(id);
        }
        // Trees: children forked while messages were lost.
        let tree_members: Vec<(u32, WatchId)> = self
            .members
            .iter()
            .filter(|(_, m)| self.watches.get(&m.watch).is_some_and(|w| matches!(w.target, Target::Tree)))
            .map(|(p, m)| (*p, m.watch))
            .collect();
        for (pid, id) in tree_members {
            for child in descendants_and_self(pid) {
                self.join(child, id, pid, None);
            }
        }
    }

    /// Once per cycle: processes moved into watched cgroups join, and RSS is
    /// compared with the watches' limits (this tier has no per-page RSS events).
    fn cycle(&mut self, out: &mut Vec<Observation>) {
        let ids: Vec<WatchId> = self.watches.keys().copied().collect();
        for id in ids {
            self.seed(id);
        }
        let now = monotonic_ns();
        for (&pid, member) in &mut self.members {
            let Some(limits) = self.watches.get(&member.watch).and_then(|w| w.settings.rss) else {
                continue;
            };
            let Some(rss) = read_rss(pid, self.page_size) else {
                continue;
            };
            if let Some(crossed) = member.rss.observe(member.watch, pid, rss, limits, now) {
                self.stats.emitted[2] += 1;
                out.push(crossed);
            }
        }
    }
}

impl Drop for ProcConnectorMonitor {
    fn drop(&mut self) {
        // Kernels before 6.6 count listeners globally; tell this one is gone.
        if let Some(fd) = self.socket.fd() {
            let _ = send(fd, wire::PROC_CN_MCAST_IGNORE);
        }
    }
}

impl From<ProcConnectorError> for KernelError {
    fn from(err: ProcConnectorError) -> Self {
        KernelError::ProcConnector(err)
    }
}

#[cfg(test)]
mod tests {
    use super::wire::{self, ProcEvent};

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    // Captured on the reference VM (x86_64, Linux 6.18) from a NETLINK_CONNECTOR
    // socket: a python parent (pid 0x3488) forking a child (0x34e6) that calls _exit(7).
    const ACK: &str = "4c00000003000000000000000000000001000000010000000000000001000000280000000000000000000000a07ffa834b000000000000000000000000000000000000000000000000000000";
    const FORK: &str = "4c00000003000000010000000000000001000000010000000100000000000000280000000100000000000000623401844b0000008834000088340000e6340000e63400000000000000000000";
    const EXIT_7: &str = "4c00000003000000000000000000000001000000010000000000000000000000280000000000008001000000ea75f7844b000000e6340000e634000000070000110000008834000088340000";
    // A child (0x361a) killing itself with SIGKILL, and a thread (0x361b) of
    // process 0x35f0 starting and ending.
    const EXIT_KILLED: &str = "4c0000000300000056010000000000000100000001000000560100000000000028000000000000800000000013269e2e4d0000001a3600001a3600000900000011000000f0350000f0350000";
    const THREAD_FORK: &str = "4c00000003000000570100000000000001000000010000005701000000000000280000000100000000000000bcfea02e4d000000ed350000ed3500001b360000f03500000000000000000000";
    const THREAD_EXIT: &str = "4c00000003000000f9010000000000000100000001000000f9010000000000002800000000000080010000004f506f2f4d0000001b360000f035000000000000ffffffff0000000000000000";

    fn parse(text: &str) -> Vec<ProcEvent> {
        let mut out = Vec::new();
        wire::parse(&hex(text), &mut out).unwrap();
        out
    }

    #[test]
    fn the_listen_ack_parses() {
        assert_eq!(parse(ACK), vec![ProcEvent::Ack { err: 0 }]);
    }

    #[test]
    fn a_fork_names_parent_and_child() {
        assert_eq!(
            parse(FORK),
            vec![ProcEvent::Fork {
                parent_tgid: 0x3488,
                child_pid: 0x34e6,
                child_tgid: 0x34e6,
                ktime_ns: 0x4b_8401_3462
            }]
        );
        let [ProcEvent::Fork { child_pid, child_tgid, .. }] = parse(THREAD_FORK)[..] else { panic!() };
        assert_ne!(child_pid, child_tgid, "a thread: pid differs from tgid");
    }

    #[test]
    fn an_exit_carries_the_wait_status() {
        let [ProcEvent::Exit { pid, tgid, exit_code, exit_signal, parent_tgid, .. }] = parse(EXIT_7)[..] else {
            panic!()
        };
        assert_eq!((pid, tgid, parent_tgid), (0x34e6, 0x34e6, 0x3488));
        assert_eq!(crate::kernel::ExitStatus::from_wait_status(exit_code), crate::kernel::ExitStatus::Code(7));
        assert_eq!(exit_signal, libc::SIGCHLD as u32, "exit_signal is what the parent gets");
        let [ProcEvent::Exit { exit_code, .. }] = parse(EXIT_KILLED)[..] else { panic!() };
        assert_eq!(
            crate::kernel::ExitStatus::from_wait_status(exit_code),
            crate::kernel::ExitStatus::Signal { signal: 9, core_dumped: false }
        );
        let [ProcEvent::Exit { pid, tgid, exit_signal, .. }] = parse(THREAD_EXIT)[..] else { panic!() };
        assert_ne!(pid, tgid);
        assert_eq!(exit_signal, u32::MAX, "a thread signals nobody (-1)");
    }

    #[test]
    fn several_messages_in_one_datagram_and_truncation() {
        let mut two = hex(FORK);
        two.extend(hex(EXIT_7));
        let mut out = Vec::new();
        wire::parse(&two, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        let cut = &hex(EXIT_7)[..60];
        assert!(matches!(wire::parse(cut, &mut Vec::new()), Err(wire::ParseError::Truncated { .. })));
        // An exit event from before Linux 4.18 (no parent fields): 16 bytes of data.
        let mut old = hex(EXIT_7);
        old.truncate(16 + 20 + 32);
        old[0] = old.len() as u8;
        old[16 + 16] = 32;
        let mut out = Vec::new();
        wire::parse(&old, &mut out).unwrap();
        assert!(matches!(out[..], [ProcEvent::Exit { exit_code: 0x700, parent_tgid: 0, .. }]));
    }

    #[test]
    fn the_listen_request_is_laid_out_as_the_kernel_reads_it() {
        let m = wire::mcast_request(wire::PROC_CN_MCAST_LISTEN, 77);
        assert_eq!(m.len(), 40);
        assert_eq!(&m[0..4], &40u32.to_ne_bytes());
        assert_eq!(&m[4..6], &3u16.to_ne_bytes(), "NLMSG_DONE");
        assert_eq!(&m[12..16], &77u32.to_ne_bytes());
        assert_eq!(&m[16..24], &[1, 0, 0, 0, 1, 0, 0, 0], "CN_IDX_PROC, CN_VAL_PROC");
        assert_eq!(&m[32..34], &4u16.to_ne_bytes());
        assert_eq!(&m[36..40], &1u32.to_ne_bytes());
    }

    #[test]
    fn cgroup_paths_nest_by_component() {
        assert!(super::inside("/a/b", "/a"));
        assert!(super::inside("/a", "/a"));
        assert!(!super::inside("/ab", "/a"));
        assert!(super::inside("/x", "/"));
    }
}
