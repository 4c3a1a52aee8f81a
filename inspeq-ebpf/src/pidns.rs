//! Pids as the daemon knows them. The kernel's own numbers (`bpf_get_current_pid_tgid`,
//! `task->tgid`, the tracepoints' `pid` fields) are those of the initial pid
//! namespace. A daemon in a container, or one running as a unit of a systemd that is
//! PID 1 of its own namespaces, knows its own namespace's numbers: `cgroup.procs`,
//! /proc, `waitpid`, `kill` and the init system all speak them. So when the daemon is
//! not in the initial namespace (`PIDNS_TRANSLATE`), every pid the programs report and
//! every `WATCH_TGIDS`/`RSS_STATE` key is the task's number in the daemon's namespace,
//! read as the kernel's `pid_nr_ns` does: the task's `struct pid` holds one `upid { nr,
//! ns }` per level from the initial namespace (0) down to the task's own (`pid->level`);
//! the daemon's number is the entry whose `ns` is the daemon's namespace, recognised by
//! its inode number (`PIDNS_INUM`, what `/proc/self/ns/pid` names), since no program can
//! know the namespace's address.
//!
//! The daemon's level is not known from userspace (a namespace's depth is not exposed,
//! and its parent is hidden from it), so the levels are tried from the task's own
//! upwards: a task of the daemon's namespace matches at once, one in a namespace nested
//! below it (a unit with its own pid namespace, a container under the daemon) one level
//! later. A task with no number there (in a sibling or an ancestor namespace) is not the
//! daemon's to watch or name: it is treated as unwatched.
//!
//! Not `bpf_get_ns_current_pid_tgid`: it answers only for a current task that is
//! exactly in the given namespace (a task in a nested one gets `-EINVAL`), and it cannot
//! name another task (a fork's child, an exiting process's parent).
//!
//! In the initial namespace (the common case) `PIDNS_TRANSLATE` is 0 in read-only data:
//! the verifier drops every branch below, and the programs run as before.

use aya_ebpf::{Global, macros::map, maps::Array};

use crate::task::{self, read};

#[unsafe(no_mangle)]
static PIDNS_TRANSLATE: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static PIDNS_INUM: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_THREAD_PID_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static PID_LEVEL_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static PID_NUMBERS_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static UPID_SIZE: Global<u32> = Global::new(16);
#[unsafe(no_mangle)]
static UPID_NR_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static UPID_NS_OFF: Global<u32> = Global::new(8);
#[unsafe(no_mangle)]
static PIDNS_NS_INUM_OFF: Global<u32> = Global::new(0);

/// How many process-tree watches the daemon holds (see `MAP_TREE_WATCHES`).
#[map(name = "TREE_WATCHES")]
static TREE_WATCHES: Array<u32> = Array::with_max_entries(1, 0);

/// `MAX_PID_NS_LEVEL` (include/linux/pid_namespace.h): no task is deeper.
const MAX_LEVELS: u32 = 32;

/// Whether pids are translated into the daemon's namespace.
#[inline(always)]
pub fn translating() -> bool {
    PIDNS_TRANSLATE.load() != 0
}

/// Whether the daemon holds any process-tree watch (published in every mode;
/// read when translating, and by the listener program).
#[inline(always)]
pub fn tree_watches() -> bool {
    TREE_WATCHES.get(0).is_some_and(|n| *n != 0)
}

/// The current process's tgid in the daemon's namespace, or `None` when it has
/// none there (translation mode only).
#[inline(always)]
pub fn current_tgid() -> Option<u32> {
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as *const u8;
    tgid_of(task)
}

/// The tgid of `task`'s process in the daemon's namespace, from its group
/// leader's `struct pid` (what `task_tgid_nr_ns` reads), or `None` when it has
/// none there (translation mode only).
#[inline(always)]
pub fn tgid_of(task: *const u8) -> Option<u32> {
    let leader = task::group_leader(task)?;
    let pid: *const u8 = unsafe { read(leader, TASK_THREAD_PID_OFF.load()).ok()? };
    if pid.is_null() {
        return None;
    }
    nr(pid)
}

/// `pid_nr_ns(pid, daemon's namespace)`, with the namespace found by its inode.
#[inline(always)]
fn nr(pid: *const u8) -> Option<u32> {
    let level: u32 = unsafe { read(pid, PID_LEVEL_OFF.load()).ok()? };
    let want = PIDNS_INUM.load();
    let numbers = PID_NUMBERS_OFF.load();
    let stride = UPID_SIZE.load();
    let mut up = 0;
    while up < MAX_LEVELS {
        if up > level {
            return None;
        }
        let upid = numbers + (level - up) * stride;
        let ns: *const u8 = unsafe { read(pid, upid + UPID_NS_OFF.load()).ok()? };
        if !ns.is_null() {
            let inum: u32 = unsafe { read(ns, PIDNS_NS_INUM_OFF.load()).ok()? };
            if inum == want {
                let nr: i32 = unsafe { read(pid, upid + UPID_NR_OFF.load()).ok()? };
                return (nr > 0).then_some(nr as u32);
            }
        }
        up += 1;
    }
    None
}
