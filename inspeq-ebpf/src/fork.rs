//! `task:task_newtask`: a watched process created a new process. The child of a
//! process-tree watch joins the tree (in-kernel tracking, for services without a
//! cgroup of their own); a fork record goes out when the watch asks for forks.
//!
//! Why not `sched:sched_process_fork`: its classic tracepoint carries only the two
//! pids, so a new thread cannot be told from a new process there, and a threaded
//! server would look like a fork storm. `task_newtask` fires at the same point of
//! `copy_process` (after the child joined its cgroup, before it runs) and carries
//! `clone_flags`.

use aya_ebpf::{
    Global,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    helpers::generated::bpf_get_current_cgroup_id,
    programs::TracePointContext,
};
use inspeq_common::{EventKind, Header, ProcessFork, WATCH_FLAG_FORKS};

use crate::{
    emit::emit,
    watch::{self, Origin, WATCH_TGIDS},
};

/// `CLONE_THREAD` (include/uapi/linux/sched.h).
const CLONE_THREAD: u64 = 0x0001_0000;

#[unsafe(no_mangle)]
static TP_NEWTASK_PID_OFF: Global<u32> = Global::new(8);
#[unsafe(no_mangle)]
static TP_NEWTASK_CLONE_FLAGS_OFF: Global<u32> = Global::new(32);

#[inline(always)]
pub fn try_fork(ctx: &TracePointContext) -> Result<(), i64> {
    let clone_flags: u64 =
        unsafe { ctx.read_at(TP_NEWTASK_CLONE_FLAGS_OFF.load() as usize) }.map_err(|e| e as i64)?;
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some((cfg, origin)) = watch::current(parent_tgid) else {
        return Ok(());
    };
    let child: i32 = unsafe { ctx.read_at(TP_NEWTASK_PID_OFF.load() as usize) }.map_err(|e| e as i64)?;
    let child_tgid = child as u32;
    if let Origin::Tree = origin {
        // A cgroup child is found through its cgroup; only trees need the entry.
        let _ = WATCH_TGIDS.insert(child_tgid, cfg, 0);
    }
    if cfg.flags & WATCH_FLAG_FORKS != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        let record = ProcessFork {
            header: Header::new(EventKind::Fork, core::mem::size_of::<ProcessFork>(), cfg.watch_id, now),
            parent_tgid,
            child_tgid,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        };
        emit(EventKind::Fork, record);
    }
    Ok(())
}
