//! The ring buffer, its wakeup policy and the per-CPU counters.
//!
//! Waking the reader costs the traced task about 11 µs on the project's VM, so:
//! - high-rate records (forks, RSS moves) never wake it; the daemon drains them on
//!   a short timer, or earlier when `WAKEUP_BYTES` are waiting;
//! - urgent records (exits, threshold crossings) wake it at once, unless this CPU
//!   woke it less than `WAKEUP_GAP_NS` ago: that reader is busy draining and polls
//!   again within the same gap, so in an exit storm wakeups stay at most one per
//!   gap per CPU while no exit waits longer than about two gaps.

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use inspeq_common::{COUNTER_DROPPED, COUNTER_EMITTED, COUNTER_SLOTS, DEFAULT_RING_BYTES, EventKind};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// When this CPU last forced a wakeup (ktime ns).
#[map(name = "LAST_WAKEUP")]
static LAST_WAKEUP: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u32> = Global::new(DEFAULT_RING_BYTES / 4);
#[unsafe(no_mangle)]
static WAKEUP_GAP_NS: Global<u64> = Global::new(500_000);

/// Whether the reader must hear of a record now.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    Now,
    Batched,
}

#[inline(always)]
fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        unsafe { *p += 1 };
    }
}

/// Reserves, fills and submits one record; a full ring counts a drop.
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, record: T, urgency: Urgency, now_ns: u64) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(COUNTER_DROPPED + kind as u32);
        return;
    };
    entry.write(record);
    let flags = match urgency {
        Urgency::Now => urgent_flags(now_ns),
        Urgency::Batched if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() as u64 => {
            BPF_RB_FORCE_WAKEUP
        }
        Urgency::Batched => BPF_RB_NO_WAKEUP,
    };
    entry.submit(flags as u64);
    count(COUNTER_EMITTED + kind as u32);
}

#[inline(always)]
fn urgent_flags(now_ns: u64) -> u32 {
    let Some(last) = LAST_WAKEUP.get_ptr_mut(0) else {
        return BPF_RB_FORCE_WAKEUP;
    };
    // SAFETY: a per-CPU slot; this program cannot be preempted on this CPU.
    let last = unsafe { &mut *last };
    if now_ns.wrapping_sub(*last) >= WAKEUP_GAP_NS.load() {
        *last = now_ns;
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}
