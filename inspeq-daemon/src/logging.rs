//! A minimal `log` backend writing `level: message` lines to standard error, which
//! journald and terminals both read well. Kept small until the daemon moves to
//! `tracing`.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            let level = match record.level() {
                Level::Error => "error",
                Level::Warn => "warning",
                Level::Info => "info",
                Level::Debug => "debug",
                Level::Trace => "trace",
            };
            eprintln!("inspeqd: {level}: {}", record.args());
        }
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`; a second call changes only the level.
pub fn init(level: LevelFilter) {
    let _ = log::set_logger(&Stderr);
    log::set_max_level(level);
}
