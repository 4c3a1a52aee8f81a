//! `rss_stat` (a raw tracepoint): fires on every RSS counter change, about once
//! per 4 KiB page. Per-process state stays here; a record leaves the kernel only
//! when a watched process's RSS crosses its watch's threshold (up, or down past
//! the hysteresis) or moved by the watch's delta. Userspace never sees per-page
//! traffic.
//!
//! Raw, not the classic `kmem:rss_stat`: at this rate the classic path's cost is
//! mostly the kernel filling a trace record (hashing the mm pointer among other
//! things) before the program even runs, for every page of every process. The raw
//! tracepoint hands over `TP_PROTO`'s arguments; the first, `struct mm_struct *`,
//! has been stable since the tracepoint appeared (5.5).
//!
//! Only changes to the current task's own mm are used: then the RSS can be read
//! from it directly. Others (the parent's copy at fork, teardown at exit,
//! reclaim) would need an `mm → tgid` map to attribute.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    macros::map,
    maps::HashMap,
    programs::RawTracePointContext,
};
use inspeq_common::{
    EventKind, Header, RSS_CROSSED_DOWN, RSS_CROSSED_UP, RSS_MOVED, RssChange, RssState, WATCH_FLAG_RSS,
};

use crate::{
    emit::emit,
    task, watch,
};

// Not preallocated, as WATCH_TGIDS.
#[map(name = "RSS_STATE")]
pub static RSS_STATE: HashMap<u32, RssState> = HashMap::with_max_entries(65536, 1);

#[inline(always)]
pub fn try_rss(ctx: &RawTracePointContext) -> Result<(), i64> {
    let mm: u64 = ctx.arg(0);
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if task::mm(task) != Some(mm) {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some((cfg, _)) = watch::current(tgid) else {
        return Ok(());
    };
    if cfg.flags & WATCH_FLAG_RSS == 0 {
        return Ok(());
    }
    let Some(rss) = task::rss_bytes(task) else {
        return Ok(());
    };
    let state = match RSS_STATE.get_ptr_mut(tgid) {
        Some(state) => state,
        None => {
            let first = RssState { last_bytes: rss, above: 0, _pad: 0 };
            RSS_STATE.insert(tgid, first, 0).map_err(|e| e as i64)?;
            RSS_STATE.get_ptr_mut(tgid).ok_or(0i64)?
        }
    };
    let state = unsafe { &mut *state };

    let direction = if cfg.rss_threshold != 0 && state.above == 0 && rss >= cfg.rss_threshold {
        state.above = 1;
        RSS_CROSSED_UP
    } else if cfg.rss_threshold != 0
        && state.above != 0
        && rss < cfg.rss_threshold.saturating_sub(cfg.rss_hysteresis)
    {
        state.above = 0;
        RSS_CROSSED_DOWN
    } else if cfg.rss_delta != 0 && rss.abs_diff(state.last_bytes) >= cfg.rss_delta {
        RSS_MOVED
    } else {
        return Ok(());
    };
    state.last_bytes = rss;
    let now = unsafe { bpf_ktime_get_ns() };
    let record = RssChange {
        header: Header::new(EventKind::Rss, core::mem::size_of::<RssChange>(), cfg.watch_id, now),
        tgid,
        direction,
        rss_bytes: rss,
        threshold_bytes: cfg.rss_threshold,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    emit(EventKind::Rss, record);
    Ok(())
}
