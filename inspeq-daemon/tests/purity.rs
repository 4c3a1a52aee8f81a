//! The rule language and the engine (with `exit.rs`, the exit status they carry) are pure: no async runtime, no
//! eBPF, no mail, no processes, no clock, and file access only in `config/load_dir.rs`. This test keeps it that way
//! by reading the sources (a tidy check, as rust-analyzer does), so a stray `use` fails `cargo test` rather than a
//! review.

use std::fs;
use std::path::{Path, PathBuf};

/// Where the pure modules live; re-point when merging.
const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// The one file allowed to touch the file system.
const IO_EDGE: &str = "config/load_dir.rs";

const FORBIDDEN_EVERYWHERE: &[&str] = &[
    "tokio",
    "aya",
    "lettre",
    "std::process",
    "Command::new",
    "SystemTime",
    "Instant::now",
    "std::time::Instant",
    "std::thread",
    // Sockets; `core::net`'s addresses are plain values and allowed.
    "std::net",
    "std::env",
    "nix::",
];

/// `libc::` is allowed at the edge for its open flags (`O_NONBLOCK`), which std does not name.
const FORBIDDEN_OUTSIDE_EDGE: &[&str] = &["libc::", "std::fs", "fs::", "File::open", "read_to_string", "read_dir"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs" || e == "lalrpop") {
            out.push(path);
        }
    }
}

/// Whether `code` names `word` as a path of its own: `nix::` in `use nix::unistd`, not in `std::os::unix::fs`.
fn mentions(code: &str, word: &str) -> bool {
    code.match_indices(word)
        .any(|(at, _)| !code[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_'))
}

#[test]
fn config_and_engine_do_no_io_and_read_no_clock() {
    let mut files = Vec::new();
    for module in ["config", "engine"] {
        rust_files(&Path::new(SRC).join(module), &mut files);
    }
    // How a process ended: the engine's inputs and notices carry it, so it is held to the engine's rules.
    files.push(Path::new(SRC).join("exit.rs"));
    assert!(files.len() > 10, "expected the config and engine sources under {SRC}");
    let mut violations = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(SRC).unwrap().display().to_string();
        let text = fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let mut banned: Vec<&str> = FORBIDDEN_EVERYWHERE.to_vec();
            if rel != IO_EDGE {
                banned.extend(FORBIDDEN_OUTSIDE_EDGE);
            }
            for word in banned {
                if mentions(code, word) {
                    violations.push(format!("{rel}:{}: `{word}` in: {}", n + 1, line.trim()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "impure code in the pure modules:\n{}", violations.join("\n"));
}

#[test]
fn a_word_counts_where_it_starts_a_path() {
    assert!(mentions("use nix::unistd;", "nix::"));
    assert!(!mentions("use std::os::unix::fs::FileTypeExt;", "nix::"));
    assert!(mentions("let t = std::fs::read(p);", "fs::"));
    assert!(mentions("tokio::spawn(f)", "tokio"));
}
