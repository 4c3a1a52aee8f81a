//! Logging through `tracing`, written to standard error as plain lines (no
//! colours), which terminals and journald both read well. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no timestamp: the journal adds its own.
//! The daemon logs one line per state change and stays quiet while healthy.
//!
//! Lines go through a bounded queue to a writer thread (`queue.rs`): a standard
//! error nobody reads (a pipe whose reader hung, a journald that stalls) costs
//! log lines, counted in [`dropped_lines`], never the event loop.

mod queue;

use tracing_subscriber::filter::LevelFilter;

pub use queue::{Flush, dropped_lines};

/// Installs the subscriber at `level`; a second call does nothing. Keep the
/// returned guard until the program ends: dropping it writes what is still
/// queued (waiting at most a second).
#[must_use = "dropping the guard at once would lose the last lines at exit"]
pub fn init(level: LevelFilter) -> Flush {
    let (writer, flush) = queue::stderr();
    let builder =
        tracing_subscriber::fmt().with_writer(writer).with_max_level(level).with_target(false).with_ansi(false);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests, or a second call): keep the first.
    let _ = result;
    flush
}
