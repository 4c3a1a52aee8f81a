//! Configuration fixtures as specifications.
//!
//! Every entry of `valid/` and `invalid/` is a fixture: a single `*.inq` check file, a single `*.conf` global file,
//! or a directory laid out like `/etc/inspeq` (loaded whole, so routes and duplicates across files are checked).
//! `NAME.expected` beside it lists the diagnostics exactly, one `path:line:col: severity: message` per line; no
//! file means no diagnostics. Valid fixtures must load without errors (warnings allowed), invalid ones with at
//! least one. Run with `BLESS=1` to rewrite the expected files, then review the diff.

use std::fs;
use std::path::{Path, PathBuf};

use inspeq_daemon::config::{Diagnostic, load, load_dir, load_files};

/// The one place fixture paths are computed from; re-point it when the tests move.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/config");

fn files_under(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, fs::read_to_string(&path).unwrap()));
        }
    }
}

fn diagnostics_of(category: &Path, entry: &Path) -> Vec<Diagnostic> {
    let mut files = Vec::new();
    if entry.is_dir() {
        files_under(category, entry, &mut files);
        return load(files.iter().map(|(p, t)| (p.as_str(), t.as_str()))).1;
    }
    let rel = entry.strip_prefix(category).unwrap().display().to_string();
    let text = fs::read_to_string(entry).unwrap();
    if rel.ends_with(".conf") {
        load_files(Some((&rel, &text)), []).1
    } else {
        load_files(None, [(rel.as_str(), text.as_str())]).1
    }
}

fn run(category: &str, expect_errors: bool) {
    let dir = Path::new(FIXTURES).join(category);
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    let bless = std::env::var_os("BLESS").is_some();
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in entries.iter().filter(|p| p.extension().is_none_or(|e| e != "expected")) {
        count += 1;
        let stem = entry.file_stem().unwrap().to_string_lossy().into_owned();
        let expected_path = dir.join(format!("{stem}.expected"));
        let diagnostics = diagnostics_of(&dir, entry);
        let actual: String = diagnostics.iter().map(|d| format!("{}\n", d.short())).collect();
        let has_errors = diagnostics.iter().any(Diagnostic::is_error);
        if has_errors != expect_errors {
            failures.push(format!(
                "{category}/{stem}: expected {}errors, got:\n{actual}",
                if expect_errors { "" } else { "no " }
            ));
        }
        if bless {
            if actual.is_empty() {
                let _ = fs::remove_file(&expected_path);
            } else {
                fs::write(&expected_path, &actual).unwrap();
            }
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures
                .push(format!("{category}/{stem}: diagnostics differ\n--- expected\n{expected}--- actual\n{actual}"));
        }
    }
    assert!(count > 0, "no fixtures found in {}", dir.display());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_fixtures_load_without_errors_and_with_exactly_the_expected_warnings() {
    run("valid", false);
}

#[test]
fn invalid_fixtures_report_exactly_the_expected_diagnostics() {
    run("invalid", true);
}

#[test]
fn load_dir_reads_an_inspeqtor_tree_like_the_pure_loader() {
    let root = Path::new(FIXTURES).join("valid/inspeqtor");
    let (config, diagnostics) = load_dir(&root);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
    assert_eq!(config.services.len(), 3);
    assert_eq!(config.jobs.len(), 3);
    let prefix = format!("{}/", root.display());
    assert!(diagnostics.iter().all(|d| d.path.starts_with(&prefix)), "paths name the real files: {diagnostics:?}");
}

#[test]
fn load_dir_reports_a_missing_directory_instead_of_an_empty_config() {
    let (_, diagnostics) = load_dir(&Path::new(FIXTURES).join("no-such-dir"));
    assert_eq!(diagnostics.len(), 1);
    assert!(diagnostics[0].is_error() && diagnostics[0].message.starts_with("cannot read:"), "{diagnostics:?}");
}
