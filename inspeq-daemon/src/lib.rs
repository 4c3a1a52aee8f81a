//! inspeq's daemon library: everything `inspeqd` and `inspeqctl` do, with the
//! binaries as thin argument parsers over it.
//!
//! # Layout
//! - [`kernel`]: the eBPF programs' userspace half (load, watch, read, decode) and
//!   the /proc fallback; yields [`kernel::Observation`]s.
//! - [`trace`]: `inspeqd trace`, printing observations live.
//! - `logging`: the stderr log backend.

pub mod kernel;
pub mod logging;
pub mod trace;
