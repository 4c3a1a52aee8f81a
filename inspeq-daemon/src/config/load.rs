//! Loads a whole configuration from file contents already in memory: the pure core of `inspeqctl check` and of the
//! daemon's start and reload. Reading the directory happens at the edge, in `load_dir.rs`.

use crate::config::ast::Span;
use crate::config::check::{Context, check_checks, check_global};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::Config;
use crate::config::parse::{parse_checks, parse_global};

/// File names of the global file, in order of preference.
pub const GLOBAL_FILES: [&str; 2] = ["inspeq.conf", "inspeqtor.conf"];

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parses and checks every file. `files` are `(path, contents)` pairs; the file name classifies the file
/// (`inspeq.conf`, else `inspeqtor.conf`, is the global file; `*.inq` are check files) and the path is shown in
/// diagnostics.
///
/// Always returns a configuration (holding whatever was valid) and every diagnostic. A configuration with an
/// error diagnostic must not be run; that decision is the caller's.
pub fn load<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Config, Vec<Diagnostic>) {
    let mut files: Vec<(&str, &str)> = files.into_iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let global = GLOBAL_FILES.iter().find_map(|name| files.iter().copied().find(|(path, _)| file_name(path) == *name));
    let mut diagnostics = Vec::new();
    let mut checks = Vec::new();
    for (path, text) in &files {
        let file = SourceFile::new(path, text);
        let name = file_name(path);
        if GLOBAL_FILES.contains(&name) {
            if let Some((used, _)) = global.filter(|(g, _)| g != path) {
                diagnostics.push(
                    file.warning(Span::default(), format!("ignored because {used} is used, expected one global file")),
                );
            }
        } else if name.ends_with(".inq") {
            checks.push((*path, *text));
        } else {
            diagnostics
                .push(file.warning(Span::default(), "ignored: not a check file, expected a name ending in .inq"));
        }
    }
    let (config, mut found) = load_files(global, checks);
    diagnostics.append(&mut found);
    (config, diagnostics)
}

/// Loads an explicit global file (if any) and check files, whatever their names: for `inspeqctl check FILE`,
/// fixtures and fuzzers. Check files are read in the order given.
pub fn load_files<'a>(
    global: Option<(&'a str, &'a str)>,
    checks: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Config, Vec<Diagnostic>) {
    let mut cx = Context::default();
    let mut diagnostics = Vec::new();
    // The global file goes first: check files refer to its routes.
    if let Some((path, text)) = global {
        let file = SourceFile::new(path, text);
        let (tree, mut found) = parse_global(&file);
        check_global(&file, &tree, &mut cx, &mut found);
        found.sort_by_key(|d| (d.line, d.column));
        diagnostics.extend(found);
    }
    for (path, text) in checks {
        let file = SourceFile::new(path, text);
        let (tree, mut found) = parse_checks(&file);
        check_checks(&file, &tree, &mut cx, &mut found);
        found.sort_by_key(|d| (d.line, d.column));
        diagnostics.extend(found);
    }
    let config =
        Config { settings: cx.settings, routes: cx.routes, host: cx.host, services: cx.services, jobs: cx.jobs };
    (config, diagnostics)
}
