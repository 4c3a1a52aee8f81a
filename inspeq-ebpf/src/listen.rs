//! `sock:inet_sock_set_state`: one [`ListenClosed`] when a listening TCP socket
//! of a watched process closes (`TCP_LISTEN` → `TCP_CLOSE`), for watches that ask
//! (`WATCH_FLAG_LISTEN`). "Port 8080 stopped listening" is then known the moment
//! it happens, not at the next cycle's socket scan.
//!
//! Whose close it is: the current task's. A listener goes from LISTEN to CLOSE in
//! `tcp_close` (the last `close` of its file), `tcp_disconnect` (`shutdown(SHUT_RD)`)
//! or a failed `listen` (`inet_csk_listen_start` when the port is taken), all in
//! the calling task. A process that exits holding the socket (killed by SIGKILL or
//! not) drops its files in `do_exit`: `exit_files` queues the final `fput` as task
//! work, and `exit_task_work` runs it in the exiting task, before `cgroup_exit`, so
//! the task is still in its cgroup. A close that runs elsewhere (the last
//! reference held by a file in flight over a Unix socket, a kernel worker's
//! delayed `fput`, `ss -K`) is not this watch's and is missed; the daemon's socket
//! scan still sees the port gone.
//!
//! A process-tree member has left `WATCH_TGIDS` by then: `exit.rs` takes it out
//! at `sched_process_exit`, which comes before `exit_files`. For watches that ask
//! for listener closes, `exit.rs` first copies the member's entry into
//! [`LISTEN_EXITED`], keyed by the process's kernel tgid and its leader's start
//! time (pids are reused; the pair is not), where this program finds it.
//!
//! Every field offset comes from tracefs (set by the daemon); the tracepoint
//! fires for every TCP state change on the host, so the states and the protocol
//! are compared before anything else is looked up.

use aya_ebpf::{
    Global,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
    programs::TracePointContext,
};
use inspeq_common::{
    EventKind, ExitKey, Header, LISTEN_FAMILY_INET, LISTEN_FAMILY_INET6, ListenClosed, WATCH_FLAG_LISTEN, WatchConfig,
};

use crate::{emit::emit, pidns, task, watch};

#[unsafe(no_mangle)]
static TP_SOCK_OLDSTATE_OFF: Global<u32> = Global::new(16);
#[unsafe(no_mangle)]
static TP_SOCK_NEWSTATE_OFF: Global<u32> = Global::new(20);
#[unsafe(no_mangle)]
static TP_SOCK_SPORT_OFF: Global<u32> = Global::new(24);
#[unsafe(no_mangle)]
static TP_SOCK_FAMILY_OFF: Global<u32> = Global::new(28);
#[unsafe(no_mangle)]
static TP_SOCK_PROTOCOL_OFF: Global<u32> = Global::new(30);
#[unsafe(no_mangle)]
static TP_SOCK_SADDR_OFF: Global<u32> = Global::new(32);
#[unsafe(no_mangle)]
static TP_SOCK_SADDR_V6_OFF: Global<u32> = Global::new(40);

/// `TCP_CLOSE` and `TCP_LISTEN` (include/net/tcp_states.h).
const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
/// `IPPROTO_TCP`; the tracepoint also fires for SCTP and MPTCP sockets.
const IPPROTO_TCP: u16 = 6;

/// Process-tree members of watches with `WATCH_FLAG_LISTEN` that have exited,
/// for the closes their exit causes after `exit.rs` dropped them from
/// `WATCH_TGIDS`. An LRU: an entry is needed only between the exit tracepoint and
/// the end of `do_exit`, and one left behind names a process that cannot come back.
#[map(name = "LISTEN_EXITED")]
static LISTEN_EXITED: LruHashMap<ExitKey, WatchConfig> = LruHashMap::with_max_entries(1024, 0);

/// Called by `exit.rs` for an exiting tree member of a watch that asks for
/// listener closes, before it leaves `WATCH_TGIDS`.
#[inline(always)]
pub fn member_exiting(host_tgid: u32, task: *const u8, cfg: &WatchConfig) {
    if let Ok(start_time) = task::leader_start_time(task) {
        let key = ExitKey { tgid: host_tgid, _pad: 0, start_time };
        let _ = LISTEN_EXITED.insert(key, cfg, 0);
    }
}

#[inline(always)]
fn field<T>(ctx: &TracePointContext, off: &Global<u32>) -> Result<T, i64> {
    unsafe { ctx.read_at::<T>(off.load() as usize) }.map_err(|e| e as i64)
}

/// The watch of the current task and its tgid as the daemon knows it, or of the
/// exited tree member it is.
#[inline(always)]
fn watch_of_current() -> Option<(WatchConfig, u32)> {
    let host_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some((cfg, _, tgid)) = watch::current(host_tgid) {
        return Some((cfg, tgid));
    }
    // Only tree members are ever copied there.
    if !pidns::tree_watches() {
        return None;
    }
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let key = ExitKey { tgid: host_tgid, _pad: 0, start_time: task::leader_start_time(task).ok()? };
    let cfg = unsafe { LISTEN_EXITED.get(key) }?;
    // The exiting task keeps its `struct pid` until it is reaped, after do_exit.
    let tgid = if pidns::translating() { pidns::current_tgid()? } else { host_tgid };
    Some((*cfg, tgid))
}

#[inline(always)]
pub fn try_listen(ctx: &TracePointContext) -> Result<(), i64> {
    let newstate: i32 = field(ctx, &TP_SOCK_NEWSTATE_OFF)?;
    if newstate != TCP_CLOSE {
        return Ok(());
    }
    let oldstate: i32 = field(ctx, &TP_SOCK_OLDSTATE_OFF)?;
    if oldstate != TCP_LISTEN {
        return Ok(());
    }
    let protocol: u16 = field(ctx, &TP_SOCK_PROTOCOL_OFF)?;
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let Some((cfg, tgid)) = watch_of_current() else {
        return Ok(());
    };
    if cfg.flags & WATCH_FLAG_LISTEN == 0 {
        return Ok(());
    }
    let family: u16 = field(ctx, &TP_SOCK_FAMILY_OFF)?;
    let mut addr = [0u8; 16];
    match family {
        LISTEN_FAMILY_INET => {
            let v4: [u8; 4] = field(ctx, &TP_SOCK_SADDR_OFF)?;
            addr[..4].copy_from_slice(&v4);
        }
        LISTEN_FAMILY_INET6 => addr = field(ctx, &TP_SOCK_SADDR_V6_OFF)?,
        _ => return Ok(()),
    }
    // `sport` is `ntohs(inet->inet_sport)` in the tracepoint: already host order.
    let port: u16 = field(ctx, &TP_SOCK_SPORT_OFF)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let record = ListenClosed {
        header: Header::new(EventKind::ListenClosed, size_of::<ListenClosed>(), cfg.watch_id, now),
        tgid,
        family,
        port,
        addr,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    emit(EventKind::ListenClosed, record);
    Ok(())
}
