//! `oom:mark_victim`: the OOM killer chose a task. The task is remembered so that
//! its process's exit says "OOM killed" rather than just "SIGKILL". The current
//! task here is whoever triggered the kill, not the victim, so the watch check
//! happens at exit; an LRU map bounds the marks of unwatched victims.

use aya_ebpf::{Global, macros::map, maps::LruHashMap, programs::TracePointContext};

#[unsafe(no_mangle)]
static TP_OOM_PID_OFF: Global<u32> = Global::new(8);

#[map(name = "OOM_VICTIMS")]
pub static OOM_VICTIMS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(1024, 0);

#[inline(always)]
pub fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i64> {
    let pid: i32 = unsafe { ctx.read_at(TP_OOM_PID_OFF.load() as usize) }.map_err(|e| e as i64)?;
    OOM_VICTIMS.insert(pid as u32, 1, 0).map_err(|e| e as i64)
}
