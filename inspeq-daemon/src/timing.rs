//! Per-stage timestamps of an alert's way through the daemon, for benchmarks
//! (`inspeqd --timing`, read by `cargo xtask bench e2e`): the kernel's record of
//! an exit received, the init system's answer about it, the engine's alert
//! raised, its outbox segment persisted, and its channel's acceptance. Each is a
//! log line `timing: STAGE service=NAME at_us=N` with N on CLOCK_MONOTONIC (the
//! clock the kernel's `bpf_ktime_get_ns` and a benchmark's `Instant` share), so
//! a reader lines them up with its own instants. Off unless asked for: a line
//! per stage is a cost no one else should pay.

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the stamps on for this process.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether stamps are on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// CLOCK_MONOTONIC now, in microseconds.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Logs that `service` reached `stage` now (with `extra` fields, e.g. `kernel_us=`).
pub fn stamp(stage: &str, service: &str, extra: std::fmt::Arguments<'_>) {
    if enabled() {
        tracing::info!("timing: {stage} service={service} at_us={}{extra}", now_us());
    }
}
