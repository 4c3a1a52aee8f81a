//! The I/O edge of configuration loading: reads a configuration directory and hands the contents to the pure
//! [`load`]. This is the only file under `config/` allowed to touch the file system.
//!
//! Layout read (Inspeqtor's, so existing `/etc/inspeqtor` trees work): `inspeq.conf` or `inspeqtor.conf`,
//! `*.inq` at the top (`host.inq`), and every file in `services.d/` and `jobs.d/`. A file that cannot be read is
//! an error diagnostic, never skipped silently.

use std::fs;
use std::path::Path;

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::load::load;
use crate::config::model::Config;

fn unreadable(path: &Path, why: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        path: path.display().to_string(),
        line: 1,
        column: 1,
        width: 1,
        message: format!("cannot read: {why}"),
        source_line: String::new(),
    }
}

fn list(dir: &Path, all: bool, out: &mut Vec<std::path::PathBuf>, problems: &mut Vec<Diagnostic>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !out.is_empty() => return,
        Err(e) => {
            problems.push(unreadable(dir, &e.to_string()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() || name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        if all || name.ends_with(".inq") || name == "inspeq.conf" || name == "inspeqtor.conf" {
            out.push(path);
        }
    }
}

/// Reads `dir` and loads it. Paths in diagnostics are `dir` joined with the file's relative path.
#[must_use]
pub fn load_dir(dir: &Path) -> (Config, Vec<Diagnostic>) {
    let mut paths = Vec::new();
    let mut problems = Vec::new();
    list(dir, false, &mut paths, &mut problems);
    if problems.is_empty() {
        for sub in ["services.d", "jobs.d"] {
            let sub = dir.join(sub);
            if sub.is_dir() {
                list(&sub, true, &mut paths, &mut problems);
            }
        }
    }
    let mut contents: Vec<(String, String)> = Vec::new();
    for path in paths {
        match fs::read(&path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => contents.push((path.display().to_string(), text)),
                Err(_) => problems.push(unreadable(&path, "not UTF-8 text")),
            },
            Err(e) => problems.push(unreadable(&path, &e.to_string())),
        }
    }
    let (config, mut diagnostics) = load(contents.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    problems.append(&mut diagnostics);
    (config, problems)
}
