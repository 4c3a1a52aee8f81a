//! The ring buffer, its wakeup policy and the per-CPU counters.
//!
//! Waking the reader costs the traced task about 11 µs on the project's VM
//! (irq_work, then waking a task), so wakeups follow the reader's state, which it
//! keeps in `READER_STATE`:
//! - idle (0): the reader sleeps on the ring's fd. A record is submitted with the
//!   kernel's adaptive notification, which wakes it for the first record landing
//!   in a drained ring: a lone exit is seen in tens of microseconds.
//! - polling (1): records are flowing and the reader drains the ring every
//!   millisecond by itself. Records wake nobody, so a fork or exit storm pays no
//!   wakeups at all, and no record waits longer than one poll.
//!
//! The reader goes idle by writing 0 and draining once more. A record whose
//! program read 1 just before that write may be committed after that last drain;
//! the program re-reads the state after committing and, on seeing 0, nudges the
//! reader with a discarded (never delivered) record that forces a wakeup.

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use inspeq_common::{COUNTER_DROPPED, COUNTER_EMITTED, COUNTER_SLOTS, DEFAULT_RING_BYTES, EventKind, READER_POLLING};

#[map(name = "EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[map(name = "READER_STATE")]
pub static READER_STATE: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn count(slot: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot; this program cannot be preempted on this CPU.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn reader_polling() -> bool {
    match READER_STATE.get_ptr(0) {
        // Volatile: the re-read after committing must not reuse the first load.
        // SAFETY: a valid map value pointer.
        Some(p) => (unsafe { core::ptr::read_volatile(p) }) == READER_POLLING,
        None => false,
    }
}

/// Reserves, fills and submits one record; a full ring counts a drop.
#[inline(always)]
pub fn emit<T: 'static>(kind: EventKind, record: T) {
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(COUNTER_DROPPED + kind as u32);
        return;
    };
    entry.write(record);
    if reader_polling() {
        entry.submit(BPF_RB_NO_WAKEUP as u64);
        if !reader_polling() {
            nudge();
        }
    } else {
        // 0: adaptive notification, see the module comment.
        entry.submit(0);
    }
    count(COUNTER_EMITTED + kind as u32);
}

/// Wakes the reader without delivering anything.
#[inline(always)]
fn nudge() {
    if let Some(entry) = EVENTS.reserve::<u64>(0) {
        entry.discard(BPF_RB_FORCE_WAKEUP as u64);
    }
}
