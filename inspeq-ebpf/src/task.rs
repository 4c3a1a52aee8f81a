//! Reads of kernel structs (`task_struct`, `signal_struct`, `mm_struct`) at byte
//! offsets the daemon resolved from `/sys/kernel/btf/vmlinux` and set as globals
//! before loading: Rust eBPF has no CO-RE relocations, and these offsets differ
//! between kernel builds.

use aya_ebpf::{Global, helpers::bpf_probe_read_kernel};

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

/// `SIGNAL_GROUP_EXIT` in `signal_struct.flags` (include/linux/sched/signal.h).
const SIGNAL_GROUP_EXIT: u32 = 0x4;

#[inline(always)]
unsafe fn read<T>(base: *const u8, off: u32) -> Result<T, i64> {
    unsafe { bpf_probe_read_kernel(base.add(off as usize).cast::<T>()) }.map_err(|e| e as i64)
}

/// The wait status `waitpid` will report for the process whose last thread is
/// `task`: the group exit code when the whole group was told to exit (exit_group,
/// a fatal signal), else the task's own exit code — as `wait_task_zombie` decides.
#[inline(always)]
pub fn exit_status(task: *const u8) -> Result<u32, i64> {
    let own: u32 = unsafe { read(task, TASK_EXIT_CODE_OFF.load())? };
    let signal: *const u8 = unsafe { read(task, TASK_SIGNAL_OFF.load())? };
    if signal.is_null() {
        return Ok(own);
    }
    let flags: u32 = unsafe { read(signal, SIGNAL_FLAGS_OFF.load())? };
    if flags & SIGNAL_GROUP_EXIT != 0 {
        return unsafe { read(signal, SIGNAL_GROUP_EXIT_CODE_OFF.load()) };
    }
    Ok(own)
}

/// The tgid of `task`'s parent.
#[inline(always)]
pub fn parent_tgid(task: *const u8) -> Result<u32, i64> {
    let parent: *const u8 = unsafe { read(task, TASK_REAL_PARENT_OFF.load())? };
    if parent.is_null() {
        return Ok(0);
    }
    unsafe { read(parent, TASK_TGID_OFF.load()) }
}

/// The address of `task`'s mm, or `None` for a task without one.
#[inline(always)]
pub fn mm(task: *const u8) -> Option<u64> {
    let mm: u64 = unsafe { read(task, TASK_MM_OFF.load()).ok()? };
    (mm != 0).then_some(mm)
}

/// Resident bytes of `task`'s address space (file + anon + shmem pages), or `None`
/// for a task without one (a kernel thread, or an mm already released).
#[inline(always)]
pub fn rss_bytes(task: *const u8) -> Option<u64> {
    let mm: *const u8 = unsafe { read(task, TASK_MM_OFF.load()).ok()? };
    if mm.is_null() {
        return None;
    }
    let base = MM_RSS_COUNT0_OFF.load();
    let stride = PERCPU_COUNTER_SIZE.load();
    let mut pages: i64 = 0;
    // MM_FILEPAGES, MM_ANONPAGES, MM_SHMEMPAGES; MM_SWAPENTS (2) is not resident.
    for member in [0u32, 1, 3] {
        let count: i64 = unsafe { read(mm, base + member * stride).ok()? };
        // The shared count lags per-CPU deltas and may dip below zero.
        if count > 0 {
            pages += count;
        }
    }
    Some(pages as u64 * PAGE_SIZE.load() as u64)
}
