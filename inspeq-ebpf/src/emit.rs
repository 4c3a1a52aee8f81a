//! The ring buffer, its wakeup policy and the per-CPU counters.
//!
//! Waking the reader costs the traced task about 11 µs on the project's VM, so only
//! urgent records (exits, threshold crossings) force a wakeup. High-rate records
//! (forks, RSS moves) are submitted without one; the daemon drains them on a short
//! timer, or earlier when `WAKEUP_BYTES` are waiting.

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

#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u32> = Global::new(DEFAULT_RING_BYTES / 4);

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
pub fn emit<T: 'static>(kind: EventKind, record: T, urgency: Urgency) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(COUNTER_DROPPED + kind as u32);
        return;
    };
    entry.write(record);
    let flags = match urgency {
        Urgency::Now => BPF_RB_FORCE_WAKEUP,
        Urgency::Batched if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_BYTES.load() as u64 => {
            BPF_RB_FORCE_WAKEUP
        }
        Urgency::Batched => BPF_RB_NO_WAKEUP,
    };
    entry.submit(flags as u64);
    count(COUNTER_EMITTED + kind as u32);
}
