//! `sched:sched_process_exit`: one [`ProcessExit`] when a watched process's last
//! thread exits (`group_dead`). A thread's exit is not a process exit; it only
//! hands an OOM mark on to its process. The process's kernel-side state is
//! dropped here, so maps do not grow with dead pids.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    programs::TracePointContext,
};
use inspeq_common::{
    EXIT_FLAG_OOM_KILLED, EXIT_FLAG_RSS_KNOWN, EXIT_FLAG_STATUS_KNOWN, EventKind, Header, ProcessExit,
};

use crate::{
    emit::emit,
    oom::OOM_VICTIMS,
    rss::RSS_STATE,
    task,
    watch::{self, WATCH_TGIDS},
};

#[unsafe(no_mangle)]
static TP_EXIT_GROUP_DEAD_OFF: Global<u32> = Global::new(32);

#[inline(always)]
pub fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    let Some((cfg, _)) = watch::current(tgid) else {
        return Ok(());
    };
    let group_dead: u8 = unsafe { ctx.read_at(TP_EXIT_GROUP_DEAD_OFF.load() as usize) }.map_err(|e| e as i64)?;
    let marked_thread = unsafe { OOM_VICTIMS.get(pid) }.is_some();
    if group_dead == 0 {
        // The OOM killer may have marked this thread rather than the leader.
        if marked_thread && pid != tgid {
            let _ = OOM_VICTIMS.insert(tgid, 1, 0);
        }
        return Ok(());
    }
    let oom = marked_thread || unsafe { OOM_VICTIMS.get(tgid) }.is_some();

    let task = unsafe { bpf_get_current_task() } as *const u8;
    let mut flags = 0;
    let exit_status = match task::exit_status(task) {
        Ok(status) => {
            flags |= EXIT_FLAG_STATUS_KNOWN;
            status
        }
        Err(_) => 0,
    };
    let mut rss_bytes = 0;
    if let Some(rss) = task::rss_bytes(task) {
        flags |= EXIT_FLAG_RSS_KNOWN;
        rss_bytes = rss;
    }
    if oom {
        flags |= EXIT_FLAG_OOM_KILLED;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let record = ProcessExit {
        header: Header::new(EventKind::Exit, core::mem::size_of::<ProcessExit>(), cfg.watch_id, now),
        tgid,
        ppid: task::parent_tgid(task).unwrap_or(0),
        exit_status,
        flags,
        rss_bytes,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    emit(EventKind::Exit, record);

    let _ = WATCH_TGIDS.remove(tgid);
    let _ = RSS_STATE.remove(tgid);
    let _ = OOM_VICTIMS.remove(tgid);
    if pid != tgid {
        let _ = OOM_VICTIMS.remove(pid);
    }
    Ok(())
}
