//! Logging through `tracing`, written to standard error as plain lines (no
//! colours), which terminals and journald both read well. Under systemd
//! (`JOURNAL_STREAM` set) lines carry no timestamp: the journal adds its own.
//! The daemon logs one line per state change and stays quiet while healthy.

use tracing_subscriber::filter::LevelFilter;

/// Installs the subscriber at `level`; a second call does nothing.
pub fn init(level: LevelFilter) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
    // Already installed (tests, or a second call): keep the first.
    let _ = result;
}
