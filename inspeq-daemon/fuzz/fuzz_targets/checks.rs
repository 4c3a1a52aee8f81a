//! Fuzzes the `*.inq` parser, the semantic pass and the engine's construction from the result: any text must give
//! a configuration and diagnostics, never a panic, and every diagnostic must point inside the file.
#![no_main]

use inspeq_daemon::config::{load_files, render};
use inspeq_daemon::engine::{EngineState, Input, Timestamp, step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (config, diagnostics) = load_files(None, [("fuzz.inq", text)]);
    let lines = text.lines().count().max(1) + 1;
    for d in &diagnostics {
        assert!(d.line >= 1 && d.line <= lines && d.column >= 1 && d.width >= 1, "{d:?}");
        assert!(!d.message.contains('\n'), "{d:?}");
    }
    let _ = render(&diagnostics);
    // Whatever was valid must also be runnable.
    let mut state = EngineState::new(&config, Timestamp::ZERO);
    let _ = step(&mut state, Input::Cycle, Timestamp::from_secs(1 << 40));
});
