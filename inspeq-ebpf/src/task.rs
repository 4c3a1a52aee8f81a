//! Reads of kernel structs (`task_struct`, `signal_struct`, `mm_struct`) at byte
//! offsets the daemon resolved from `/sys/kernel/btf/vmlinux` and set as globals
//! before loading: Rust eBPF has no CO-RE relocations, and these offsets differ
//! between kernel builds.

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};
use inspeq_common::RSS_MEMBERS;

#[unsafe(no_mangle)]
static TASK_EXIT_CODE_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_SIGNAL_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static SIGNAL_FLAGS_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static SIGNAL_GROUP_EXIT_CODE_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_MM_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_REAL_PARENT_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_TGID_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static MM_RSS_COUNT0_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static PERCPU_COUNTER_SIZE: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static PAGE_SIZE: Global<u32> = Global::new(4096);
#[unsafe(no_mangle)]
static TASK_RSS_COUNT0_OFF: Global<u32> = Global::new(u32::MAX);
#[unsafe(no_mangle)]
static TASK_GROUP_LEADER_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TASK_START_TIME_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static SIGNAL_LIVE_OFF: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static TASK_CGROUPS_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CSS_SET_DFL_CGRP_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CGROUP_LEVEL_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CGROUP_ANCESTORS_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static CGROUP_KN_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static KERNFS_NODE_ID_OFF: Global<u32> = Global::new(0);

/// `SIGNAL_GROUP_EXIT` in `signal_struct.flags` (include/linux/sched/signal.h).
const SIGNAL_GROUP_EXIT: u32 = 0x4;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub(crate) unsafe fn read<T>(base: *const u8, off: u32) -> Result<T, i64> {
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()) }.map_err(|e| e as i64)
}

/// The wait status `waitpid` will report for the process whose last thread is
/// `task`: the group exit code when the whole group was told to exit (exit_group,
/// a fatal signal), else the group leader's own exit code — as `wait_task_zombie`
/// decides (it waits on the leader, which may have exited long before the last
/// thread).
#[inline(always)]
pub fn exit_status(task: *const u8) -> Result<u32, i64> {
    let signal: *const u8 = unsafe { read(task, TASK_SIGNAL_OFF.load())? };
    if !signal.is_null() {
        let flags: u32 = unsafe { read(signal, SIGNAL_FLAGS_OFF.load())? };
        if flags & SIGNAL_GROUP_EXIT != 0 {
            return unsafe { read(signal, SIGNAL_GROUP_EXIT_CODE_OFF.load()) };
        }
    }
    let leader: *const u8 = unsafe { read(task, TASK_GROUP_LEADER_OFF.load())? };
    let leader = if leader.is_null() { task } else { leader };
    unsafe { read(leader, TASK_EXIT_CODE_OFF.load()) }
}

/// Whether `task`'s thread group is dead: `signal->live`, decremented by every
/// thread at the start of `do_exit`, is zero. For kernels whose exit tracepoint
/// has no `group_dead` (before 6.16).
#[inline(always)]
pub fn group_dead(task: *const u8) -> Result<bool, i64> {
    let signal: *const u8 = unsafe { read(task, TASK_SIGNAL_OFF.load())? };
    if signal.is_null() {
        return Ok(true);
    }
    let live: i32 = unsafe { read(signal, SIGNAL_LIVE_OFF.load())? };
    Ok(live <= 0)
}

/// The start time (ns since boot) of `task`'s group leader: with the tgid, it
/// names a process uniquely even when pids are reused.
#[inline(always)]
pub fn leader_start_time(task: *const u8) -> Result<u64, i64> {
    let leader: *const u8 = unsafe { read(task, TASK_GROUP_LEADER_OFF.load())? };
    let leader = if leader.is_null() { task } else { leader };
    unsafe { read(leader, TASK_START_TIME_OFF.load()) }
}

/// The tgid of `task`'s parent in the daemon's pid namespace: 0 when it has
/// none there (as `getppid` says for a parent outside the caller's namespace).
#[inline(always)]
pub fn parent_tgid(task: *const u8) -> Result<u32, i64> {
    let parent: *const u8 = unsafe { read(task, TASK_REAL_PARENT_OFF.load())? };
    if parent.is_null() {
        return Ok(0);
    }
    if crate::pidns::translating() {
        return Ok(crate::pidns::tgid_of(parent).unwrap_or(0));
    }
    unsafe { read(parent, TASK_TGID_OFF.load()) }
}

/// `task->tgid`: its process's pid in the initial namespace.
#[inline(always)]
pub fn tgid(task: *const u8) -> Result<u32, i64> {
    unsafe { read(task, TASK_TGID_OFF.load()) }
}

/// `task`'s thread-group leader (`task` itself when the pointer is unset).
#[inline(always)]
pub fn group_leader(task: *const u8) -> Option<*const u8> {
    let leader: *const u8 = unsafe { read(task, TASK_GROUP_LEADER_OFF.load()).ok()? };
    Some(if leader.is_null() { task } else { leader })
}

/// The address of `task`'s mm, or `None` for a task without one.
#[inline(always)]
pub fn mm(task: *const u8) -> Option<u64> {
    let mm: u64 = unsafe { read(task, TASK_MM_OFF.load()).ok()? };
    (mm != 0).then_some(mm)
}

/// Resident bytes of `task`'s address space (file + anon + shmem pages), or `None`
/// for a task without one (a kernel thread, or an mm already released).
///
/// `mm->rss_stat` is an array of `percpu_counter` since 6.2 and a struct of
/// `atomic_long_t` before; either way a 64-bit count per member at a stride the
/// daemon read from BTF. Before 6.2 each task also holds up to 64 page-fault
/// events of its own (`task->rss_stat`, split counting), folded into the mm by
/// `sync_mm_rss`, which fires `rss_stat` for `syncing` after adding that
/// member's share to the mm but before clearing it in the task: so the task's
/// pending count of every member but `syncing` is added here.
#[inline(always)]
pub fn rss_bytes(task: *const u8, syncing: u32) -> Option<u64> {
    let mm: *const u8 = unsafe { read(task, TASK_MM_OFF.load()).ok()? };
    if mm.is_null() {
        return None;
    }
    let base = MM_RSS_COUNT0_OFF.load();
    let stride = PERCPU_COUNTER_SIZE.load();
    let split = TASK_RSS_COUNT0_OFF.load();
    let mut pages: i64 = 0;
    for member in RSS_MEMBERS {
        let mut count: i64 = unsafe { read(mm, base + member * stride).ok()? };
        if split != u32::MAX && member != syncing {
            let pending: i32 = unsafe { read(task, split + member * 4).ok()? };
            count += i64::from(pending);
        }
        // The shared count lags per-CPU deltas and may dip below zero.
        if count > 0 {
            pages += count;
        }
    }
    Some(pages as u64 * PAGE_SIZE.load() as u64)
}

/// The current task's cgroup on the unified hierarchy (`cgroups->dfl_cgrp`) and
/// its level, for kernels whose tracing programs lack
/// `bpf_get_current_ancestor_cgroup_id`.
#[inline(always)]
pub fn current_cgroup() -> Option<(*const u8, i32)> {
    let task = unsafe { aya_ebpf::helpers::generated::bpf_get_current_task() } as *const u8;
    let css_set: *const u8 = unsafe { read(task, TASK_CGROUPS_OFF.load()).ok()? };
    if css_set.is_null() {
        return None;
    }
    let cgroup: *const u8 = unsafe { read(css_set, CSS_SET_DFL_CGRP_OFF.load()).ok()? };
    if cgroup.is_null() {
        return None;
    }
    let level: i32 = unsafe { read(cgroup, CGROUP_LEVEL_OFF.load()).ok()? };
    Some((cgroup, level))
}

/// The id of `cgroup`'s ancestor at `level` (its own at its level): an entry of
/// `u64 ancestor_ids[]` (before 6.0), or of `struct cgroup *ancestors[]`, whose
/// id is its kernfs node's.
#[inline(always)]
pub fn cgroup_ancestor_id(cgroup: *const u8, level: i32, ids: bool) -> Option<u64> {
    let slot = CGROUP_ANCESTORS_OFF.load() + level as u32 * 8;
    if ids {
        return unsafe { read(cgroup, slot).ok() };
    }
    let ancestor: *const u8 = unsafe { read(cgroup, slot).ok()? };
    if ancestor.is_null() {
        return None;
    }
    let kn: *const u8 = unsafe { read(ancestor, CGROUP_KN_OFF.load()).ok()? };
    if kn.is_null() {
        return None;
    }
    unsafe { read(kn, KERNFS_NODE_ID_OFF.load()).ok() }
}
