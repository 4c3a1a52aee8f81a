//! inspeq's daemon library: everything `inspeqd` and `inspeqctl` do, with the
//! binaries as thin argument parsers over it.
//!
//! # Layout
//! - [`alert`]: alert events, routes, templates, the durable outbox and the
//!   channels (email, Slack, webhook, PagerDuty, Alertmanager, log).
//! - [`kernel`]: the eBPF programs' userspace half (load, watch, read, decode) and
//!   the /proc fallback; yields [`kernel::Observation`]s.
//! - [`trace`]: `inspeqd trace`, printing observations live.
//! - `logging`: the stderr log backend.

pub mod alert;
pub mod kernel;
pub mod logging;
pub mod trace;
