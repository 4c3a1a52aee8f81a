//! Fuzzes the `inspeq.conf` parser and semantic pass: any text must give a configuration and diagnostics, never a
//! panic, and every diagnostic must point inside the file.
#![no_main]

use inspeq_daemon::config::{load_files, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (_, diagnostics) = load_files(Some(("inspeq.conf", text)), []);
    let lines = text.lines().count().max(1) + 1;
    for d in &diagnostics {
        assert!(d.line >= 1 && d.line <= lines && d.column >= 1 && d.width >= 1, "{d:?}");
        assert!(!d.message.contains('\n'), "{d:?}");
    }
    let _ = render(&diagnostics);
});
