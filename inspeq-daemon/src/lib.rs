//! inspeq's daemon library: everything `inspeqd` and `inspeqctl` do, with the
//! binaries as thin argument parsers over it.
//!
//! # Layout
//! - [`config`]: the rule language (`inspeq.conf`, `*.inq`): lexer, LALRPOP
//!   grammars, semantic pass, diagnostics. Pure but for `config::load_dir`.
//! - [`engine`]: the pure rule engine, `step(state, input, now) -> Vec<Action>`.
//! - [`exit`]: how a process ended ([`exit::ExitStatus`]), one type from the
//!   kernel's record through the engine to the alert. Pure.
//! - [`alert`]: alert events, routes, templates, the durable outbox and the
//!   channels (email, Slack, webhook, PagerDuty, Alertmanager, log).
//! - [`kernel`]: the eBPF programs' userspace half (load, watch, read, decode) and
//!   the /proc fallback; yields [`kernel::Observation`]s.
//! - [`init`]: init systems (systemd over D-Bus, upstart, runit, init.d, pidfile
//!   processes): look services up, restart and reload them, announce changes.
//! - [`daemon`]: `inspeqd` itself: the event loop, executor, reload, status.
//! - [`control`]: the control socket protocol, server and client (`inspeqctl`).
//! - [`metrics`]: per-cycle host and process metrics from procfs.
//! - [`export`]: statsd export.
//! - [`trace`]: `inspeqd trace`, printing observations live.
//! - [`timing`]: per-stage timestamps of an alert's way, for benchmarks (`--timing`).
//! - [`signal`]: signal names and numbers, one table.
//! - `logging`: the stderr log backend (a bounded queue and a writer thread).
//! - `assets`: man pages and shell completions from the binaries' argument definitions.

pub mod alert;
pub mod assets;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod exit;
pub mod export;
pub mod init;
pub mod kernel;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod signal;
pub mod timing;
pub mod trace;
