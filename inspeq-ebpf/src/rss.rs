//! `rss_stat` (a raw tracepoint): fires on every RSS counter change, about once
//! per 4 KiB page (before 6.2, once per 64 page faults of a task, when its split
//! counters are folded into the mm). Per-process state stays here; a record leaves
//! the kernel only when a watched process's RSS crosses its watch's threshold (up,
//! or down past the hysteresis) or moved by the watch's delta, or when the watch's
//! total RSS (the sum of its processes' RSS, kept here by adding each change)
//! crosses the watch's total threshold. Userspace never sees per-page traffic.
//!
//! Raw, not the classic `kmem:rss_stat`: at this rate the classic path's cost is
//! mostly the kernel filling a trace record (hashing the mm pointer among other
//! things) before the program even runs, for every page of every process. The raw
//! tracepoint hands over `TP_PROTO`'s arguments: `(struct mm_struct *mm, int
//! member)` since 6.2, `(mm, member, long count)` before; the first two are the
//! same on every kernel since the tracepoint appeared (5.5), and only they are read.
//!
//! Only changes to the current task's own mm are used: then the RSS can be read
//! from it directly. Others (the parent's copy at fork, teardown at exit,
//! reclaim) would need an `mm → tgid` map to attribute.

use aya_ebpf::{
    Global,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::HashMap,
    programs::RawTracePointContext,
};
use inspeq_common::{
    EventKind, Header, RSS_CROSSED_DOWN, RSS_CROSSED_UP, RSS_MOVED, RssChange, RssState, RssTotal, RssTotalChange,
    WATCH_FLAG_RSS, WatchConfig,
};

use crate::{emit::emit, task, watch};

/// 1 when the exit tracepoint fires after `exit_mm` (before 6.16): then the RSS
/// of every watched process is kept, so its exit can say what it had.
#[unsafe(no_mangle)]
static KEEP_EXIT_RSS: Global<u32> = Global::new(0);

// Not preallocated, as WATCH_TGIDS.
#[map(name = "RSS_STATE")]
pub static RSS_STATE: HashMap<u32, RssState> = HashMap::with_max_entries(65536, 1);

/// Watch id → the watch's RSS total; written by the daemon before it arms the
/// watch, then changed here by atomic adds only.
#[map(name = "RSS_TOTALS")]
static RSS_TOTALS: HashMap<u32, RssTotal> = HashMap::with_max_entries(4096, 0);

#[inline(always)]
pub fn try_rss(ctx: &RawTracePointContext) -> Result<(), i64> {
    let mm: u64 = ctx.arg(0);
    let member: u64 = ctx.arg(1);
    let task = unsafe { bpf_get_current_task() } as *const u8;
    if task::mm(task) != Some(mm) {
        return Ok(());
    }
    // `tgid` is the daemon's number for the process (see `pidns`).
    let Some((cfg, _, tgid)) = watch::current((bpf_get_current_pid_tgid() >> 32) as u32) else {
        return Ok(());
    };
    if cfg.flags & WATCH_FLAG_RSS == 0 && KEEP_EXIT_RSS.load() == 0 {
        return Ok(());
    }
    let Some(rss) = task::rss_bytes(task, member as u32) else {
        return Ok(());
    };
    let state = match RSS_STATE.get_ptr_mut(tgid) {
        Some(state) => state,
        None => {
            let first = RssState { last_bytes: rss, now_bytes: 0, above: 0, total_watch: 0 };
            RSS_STATE.insert(tgid, first, 0).map_err(|e| e as i64)?;
            RSS_STATE.get_ptr_mut(tgid).ok_or(0i64)?
        }
    };
    let state = unsafe { &mut *state };
    let before = if state.total_watch == cfg.watch_id { state.now_bytes } else { 0 };
    state.now_bytes = rss;
    state.total_watch = cfg.watch_id;
    if cfg.flags & WATCH_FLAG_RSS == 0 {
        return Ok(());
    }
    if cfg.total_threshold != 0 {
        add_to_total(&cfg, tgid, rss as i64 - before as i64);
    }

    let direction = if cfg.rss_threshold != 0 && state.above == 0 && rss >= cfg.rss_threshold {
        state.above = 1;
        RSS_CROSSED_UP
    } else if cfg.rss_threshold != 0 && state.above != 0 && rss < cfg.rss_threshold.saturating_sub(cfg.rss_hysteresis) {
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
        header: Header::new(EventKind::Rss, size_of::<RssChange>(), cfg.watch_id, now),
        tgid,
        direction,
        rss_bytes: rss,
        threshold_bytes: cfg.rss_threshold,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    };
    emit(EventKind::Rss, record);
    Ok(())
}

/// The last RSS seen for `tgid`, for its exit record when its mm is gone.
#[inline(always)]
pub fn last_known(tgid: u32) -> Option<u64> {
    let state = unsafe { RSS_STATE.get(tgid) }?;
    (state.total_watch != 0).then_some(state.now_bytes)
}

/// Takes an exiting process's RSS out of its watch's total.
#[inline(always)]
pub fn leave_total(tgid: u32, cfg: &WatchConfig) {
    if cfg.total_threshold == 0 {
        return;
    }
    let Some(state) = (unsafe { RSS_STATE.get(tgid) }) else {
        return;
    };
    if state.total_watch == cfg.watch_id && state.now_bytes != 0 {
        add_to_total(cfg, tgid, -(state.now_bytes as i64));
    }
}

/// Adds `delta` to the watch's total and reports a crossing of its threshold.
#[inline(always)]
fn add_to_total(cfg: &WatchConfig, tgid: u32, delta: i64) {
    let Some(total) = RSS_TOTALS.get_ptr_mut(cfg.watch_id) else {
        return;
    };
    // SAFETY: a valid map value pointer; `bytes` is 8-aligned (asserted layout).
    let bytes = unsafe { &raw mut (*total).bytes };
    if delta != 0 {
        // The BPF target has no `AtomicI64::fetch_add`. With its result unused this
        // is a plain atomic add (BPF_XADD), which every kernel has; the fetching
        // variants need 5.12.
        // SAFETY: as above.
        unsafe {
            core::intrinsics::atomic_xadd::<i64, i64, { core::intrinsics::AtomicOrdering::Relaxed }>(bytes, delta)
        };
    }
    // SAFETY: as above; a torn read is impossible for an aligned 8-byte load.
    let sum = unsafe { core::ptr::read_volatile(bytes) };
    let sum = if sum > 0 { sum as u64 } else { 0 };
    // SAFETY: as above. Two CPUs crossing at once may both report; the daemon
    // takes a repeated crossing as a repeated sample.
    let above = unsafe { &mut (*total).above };
    let direction = if *above == 0 && sum >= cfg.total_threshold {
        *above = 1;
        RSS_CROSSED_UP
    } else if *above != 0 && sum < cfg.total_threshold.saturating_sub(cfg.total_hysteresis) {
        *above = 0;
        RSS_CROSSED_DOWN
    } else {
        return;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let record = RssTotalChange {
        header: Header::new(EventKind::RssTotal, size_of::<RssTotalChange>(), cfg.watch_id, now),
        direction,
        tgid,
        total_bytes: sum,
        threshold_bytes: cfg.total_threshold,
    };
    // Counted with the per-process RSS records.
    emit(EventKind::Rss, record);
}
