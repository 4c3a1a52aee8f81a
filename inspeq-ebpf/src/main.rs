//! inspeq's eBPF programs. Each program is a thin shim over a `try_` function in its
//! own module:
//!
//! - `exit`: `sched:sched_process_exit` → one [`ProcessExit`] per dying process;
//! - `fork`: `task_newtask` (raw) → [`ProcessFork`], and process-tree inheritance;
//! - `rss`: `rss_stat` (raw) → [`RssChange`] on threshold crossings and large moves;
//! - `oom`: `oom:mark_victim` → marks a process so its exit says "OOM killed";
//! - `listen`: `sock:inet_sock_set_state` → [`ListenClosed`] when a watched
//!   process's listening TCP socket closes.
//!
//! `watch` decides whether the current task is watched; `emit` owns the ring buffer,
//! the wakeup policy and the counters; `task` reads kernel structs at offsets the
//! daemon resolved from BTF and passed in as globals (Rust eBPF has no CO-RE);
//! `pidns` turns pids into the daemon's pid namespace when it runs outside the
//! initial one.
//!
//! [`ProcessExit`]: inspeq_common::ProcessExit
//! [`ProcessFork`]: inspeq_common::ProcessFork
//! [`RssChange`]: inspeq_common::RssChange
//! [`ListenClosed`]: inspeq_common::ListenClosed
#![no_std]
#![no_main]
// `atomic_xadd` for the per-watch RSS totals: the BPF target has no atomic RMW
// in `core::sync::atomic` (the crate builds with RUSTC_BOOTSTRAP=1).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod emit;
mod exit;
mod fork;
mod listen;
mod oom;
mod pidns;
mod rss;
mod task;
mod watch;

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn inspeq_exit(ctx: TracePointContext) -> u32 {
    let _ = exit::try_exit(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "task_newtask")]
pub fn inspeq_fork(ctx: RawTracePointContext) -> i32 {
    let _ = fork::try_fork(&ctx);
    0
}

#[raw_tracepoint(tracepoint = "rss_stat")]
pub fn inspeq_rss(ctx: RawTracePointContext) -> i32 {
    let _ = rss::try_rss(&ctx);
    0
}

#[tracepoint(category = "oom", name = "mark_victim")]
pub fn inspeq_oom(ctx: TracePointContext) -> u32 {
    let _ = oom::try_mark_victim(&ctx);
    0
}

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inspeq_listen(ctx: TracePointContext) -> u32 {
    let _ = listen::try_listen(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never called in a
    // loaded program; looping satisfies the `!` type without unsafe.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
// GPL-compatible: bpf_probe_read_kernel and bpf_get_current_task are GPL-only helpers.
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
