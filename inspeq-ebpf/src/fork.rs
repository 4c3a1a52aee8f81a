//! `task:task_newtask` (a raw tracepoint): a watched process created a new
//! process. The child of a process-tree watch joins the tree (in-kernel tracking,
//! for services without a cgroup of their own); a fork record goes out when the
//! watch asks for forks.
//!
//! Why not `sched:sched_process_fork`: its classic tracepoint carries only the two
//! pids, so a new thread cannot be told from a new process there, and a threaded
//! server would look like a fork storm. `task_newtask` fires at the same point of
//! `copy_process` (after the child joined its cgroup and got its `struct pid`,
//! before it runs) and carries `clone_flags`.
//!
//! Raw, not the classic tracepoint: `TP_PROTO(struct task_struct *task, unsigned
//! long clone_flags)` (`u64` in 7.x, the same 8 bytes) hands over the child's task,
//! whose `struct pid` gives its number in the daemon's pid namespace (see `pidns`);
//! the classic record has only its initial-namespace pid. It also spares the kernel
//! filling a trace record for every fork on the host.

use aya_ebpf::{
    helpers::generated::bpf_get_current_cgroup_id,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use inspeq_common::{EventKind, Header, ProcessFork, WATCH_FLAG_FORKS};

use crate::{
    emit::emit,
    pidns, task,
    watch::{self, Origin, WATCH_TGIDS},
};

/// `CLONE_THREAD` (include/uapi/linux/sched.h).
const CLONE_THREAD: u64 = 0x0001_0000;

#[inline(always)]
pub fn try_fork(ctx: &RawTracePointContext) -> Result<(), i64> {
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let Some((cfg, origin, parent_tgid)) = watch::current((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return Ok(());
    };
    let child = ctx.arg::<u64>(0) as *const u8;
    // A new process is its own group leader: its tgid is its pid.
    let child_tgid = if pidns::translating() { pidns::tgid_of(child).ok_or(0i64)? } else { task::tgid(child)? };
    if let Origin::Tree = origin {
        // A cgroup child is found through its cgroup; only trees need the entry.
        let _ = WATCH_TGIDS.insert(child_tgid, cfg, 0);
    }
    if cfg.flags & WATCH_FLAG_FORKS != 0 {
        let now = unsafe { bpf_ktime_get_ns() };
        let record = ProcessFork {
            header: Header::new(EventKind::Fork, size_of::<ProcessFork>(), cfg.watch_id, now),
            parent_tgid,
            child_tgid,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        };
        emit(EventKind::Fork, record);
    }
    Ok(())
}
