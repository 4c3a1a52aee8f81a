//! `sched:sched_process_exit`: one [`ProcessExit`] when a watched process's last
//! thread exits. A thread's exit is not a process exit; it only hands an OOM mark
//! on to its process. The process's kernel-side state is dropped here, so maps do
//! not grow with dead pids.
//!
//! Which exit is the last: since 6.16 the tracepoint says so (`group_dead`).
//! Before, every thread decrements `signal->live` at the start of `do_exit`, long
//! before the tracepoint, so `live == 0` there means the group is dead — but
//! several threads of a group killed at once can all see it. The first of them to
//! insert the process's [`ExitKey`] into `EXITS_SEEN` reports the exit.
//!
//! Before 6.16 the tracepoint also fires after `exit_mm`: the mm is gone, and the
//! RSS at exit is the last value the RSS program saw for the process.
//!
//! A tree member of a watch that asks for listener closes is copied to
//! `listen::LISTEN_EXITED` before it leaves `WATCH_TGIDS`: its sockets close
//! later in `do_exit`.
//!
//! The record's pids, and the `WATCH_TGIDS`/`RSS_STATE` keys, are the daemon's
//! (see `pidns`); `EXITS_SEEN` and `OOM_VICTIMS`, which only the programs use,
//! stay keyed by the kernel's own numbers.

use aya_ebpf::{
    Global,
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::LruHashMap,
    programs::TracePointContext,
};
use inspeq_common::{
    EXIT_FLAG_OOM_KILLED, EXIT_FLAG_RSS_KNOWN, EXIT_FLAG_STATUS_KNOWN, EventKind, ExitKey, Header, ProcessExit,
    WATCH_FLAG_LISTEN,
};

use crate::{
    emit::emit,
    listen,
    oom::OOM_VICTIMS,
    rss::{self, RSS_STATE},
    task,
    watch::{self, Origin, WATCH_TGIDS},
};

/// Offset of `group_dead` in the tracepoint's record, or `u32::MAX` when the
/// kernel's tracepoint has none (before 6.16).
#[unsafe(no_mangle)]
static TP_EXIT_GROUP_DEAD_OFF: Global<u32> = Global::new(u32::MAX);

/// Processes whose exit was reported, for kernels without `group_dead`. An LRU:
/// a key is only needed while the group's threads pass the tracepoint.
#[map(name = "EXITS_SEEN")]
static EXITS_SEEN: LruHashMap<ExitKey, u8> = LruHashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The kernel's numbers, for the programs' own maps; `tgid` is the daemon's.
    let host_tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    let Some((cfg, origin, tgid)) = watch::current(host_tgid) else {
        return Ok(());
    };
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let group_dead_off = TP_EXIT_GROUP_DEAD_OFF.load();
    let group_dead = if group_dead_off == u32::MAX {
        task::group_dead(task)?
    } else {
        let dead: u8 = unsafe { ctx.read_at(group_dead_off as usize) }.map_err(|e| e as i64)?;
        dead != 0
    };
    let marked_thread = unsafe { OOM_VICTIMS.get(pid) }.is_some();
    if !group_dead {
        // The OOM killer may have marked this thread rather than the leader.
        if marked_thread && pid != host_tgid {
            let _ = OOM_VICTIMS.insert(host_tgid, 1, 0);
        }
        return Ok(());
    }
    if group_dead_off == u32::MAX {
        let key = ExitKey { tgid: host_tgid, _pad: 0, start_time: task::leader_start_time(task)? };
        if EXITS_SEEN.insert(key, 1, BPF_NOEXIST as u64).is_err() {
            // Another thread of this group reports it.
            return Ok(());
        }
    }
    let oom = marked_thread || unsafe { OOM_VICTIMS.get(host_tgid) }.is_some();

    let mut flags = 0;
    let exit_status = match task::exit_status(task) {
        Ok(status) => {
            flags |= EXIT_FLAG_STATUS_KNOWN;
            status
        }
        Err(_) => 0,
    };
    let mut rss_bytes = 0;
    if let Some(rss) = task::rss_bytes(task, u32::MAX).or_else(|| rss::last_known(tgid)) {
        flags |= EXIT_FLAG_RSS_KNOWN;
        rss_bytes = rss;
    }
    if oom {
        flags |= EXIT_FLAG_OOM_KILLED;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let record = ProcessExit {
        header: Header::new(EventKind::Exit, size_of::<ProcessExit>(), cfg.watch_id, now),
        tgid,
        ppid: task::parent_tgid(task).unwrap_or(0),
        exit_status,
        flags,
        rss_bytes,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    emit(EventKind::Exit, record);
    // After the exit record: a total crossing down that the exit causes follows it.
    rss::leave_total(tgid, &cfg);

    // Its files close after this tracepoint (`exit_files`): a listener among them
    // must still find the watch once the entry below is gone (see `listen`).
    if matches!(origin, Origin::Tree) && cfg.flags & WATCH_FLAG_LISTEN != 0 {
        listen::member_exiting(host_tgid, task, &cfg);
    }
    let _ = WATCH_TGIDS.remove(tgid);
    let _ = RSS_STATE.remove(tgid);
    let _ = OOM_VICTIMS.remove(host_tgid);
    if pid != host_tgid {
        let _ = OOM_VICTIMS.remove(pid);
    }
    Ok(())
}
