//! The wire format shared by the eBPF programs (`inspeq-ebpf`) and the daemon
//! (`inspeq-daemon`): ring-buffer records, watch-map entries, counter indices and
//! the names of maps and loader-set globals. Nothing else lives here.
//!
//! Every type is `#[repr(C)]`, `Copy`, has explicit padding and a size fixed by a
//! compile-time assertion, so a layout change on either side fails the build
//! instead of corrupting records. There are no strings and no service names: the
//! daemon maps ids (watch ids, cgroup ids, tgids) to names.
#![no_std]

pub mod event;
pub mod watch;

pub use event::*;
pub use watch::*;
