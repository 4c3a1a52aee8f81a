//! Loads a whole configuration from file contents already in memory: the pure core of `inspeqctl check` and of the
//! daemon's start and reload. Reading the directory happens at the edge, in `load_dir.rs`, which also hands over
//! each file's mode, so that a file holding a secret and readable by every user is warned about (`check::secrets`).

use crate::config::ast::Span;
use crate::config::check::{Context, check_checks, check_global, secrets};
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::model::Config;
use crate::config::parse::{parse_checks, parse_global};

/// File names of the global file, in order of preference.
pub const GLOBAL_FILES: [&str; 2] = ["inspeq.conf", "inspeqtor.conf"];

/// One configuration file: its path (shown in diagnostics), its text, and, when read from the disk, its mode
/// (`st_mode`: type and permission bits).
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    pub path: &'a str,
    pub text: &'a str,
    pub mode: Option<u32>,
}

impl<'a> Source<'a> {
    /// A file that did not come from the disk: no mode, so no permission warnings.
    #[must_use]
    pub fn text(path: &'a str, text: &'a str) -> Self {
        Source { path, text, mode: None }
    }
}

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
    load_sources(files.into_iter().map(|(path, text)| Source::text(path, text)))
}

/// [`load`], for files that carry their mode.
pub fn load_sources<'a>(files: impl IntoIterator<Item = Source<'a>>) -> (Config, Vec<Diagnostic>) {
    let mut files: Vec<Source<'a>> = files.into_iter().collect();
    files.sort_by(|a, b| a.path.cmp(b.path));
    let global = GLOBAL_FILES.iter().find_map(|name| files.iter().copied().find(|f| file_name(f.path) == *name));
    let mut diagnostics = Vec::new();
    let mut checks = Vec::new();
    for source in &files {
        let file = SourceFile::new(source.path, source.text);
        let name = file_name(source.path);
        if GLOBAL_FILES.contains(&name) {
            if let Some(used) = global.filter(|g| g.path != source.path) {
                diagnostics.push(file.warning(
                    Span::default(),
                    format!("ignored because {} is used, expected one global file", used.path),
                ));
            }
        } else if name.ends_with(".inq") {
            checks.push(*source);
        } else {
            diagnostics
                .push(file.warning(Span::default(), "ignored: not a check file, expected a name ending in .inq"));
        }
    }
    let (config, mut found) = check_sources(global, checks);
    diagnostics.append(&mut found);
    (config, diagnostics)
}

/// Loads an explicit global file (if any) and check files, whatever their names: for `inspeqctl check FILE`,
/// fixtures and fuzzers. Check files are read in the order given.
pub fn load_files<'a>(
    global: Option<(&'a str, &'a str)>,
    checks: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Config, Vec<Diagnostic>) {
    check_sources(
        global.map(|(path, text)| Source::text(path, text)),
        checks.into_iter().map(|(path, text)| Source::text(path, text)),
    )
}

fn check_sources<'a>(
    global: Option<Source<'a>>,
    checks: impl IntoIterator<Item = Source<'a>>,
) -> (Config, Vec<Diagnostic>) {
    let mut cx = Context::default();
    let mut diagnostics = Vec::new();
    // The global file goes first: check files refer to its routes.
    if let Some(source) = global {
        let file = SourceFile::new(source.path, source.text);
        let (tree, mut found) = parse_global(&file);
        check_global(&file, &tree, &mut cx, &mut found);
        guard_secrets(&file, source.mode, &secrets::in_global(&tree), &mut found);
        diagnostics.extend(found);
    }
    for source in checks {
        let file = SourceFile::new(source.path, source.text);
        let (tree, mut found) = parse_checks(&file);
        check_checks(&file, &tree, &mut cx, &mut found);
        guard_secrets(&file, source.mode, &secrets::in_checks(&tree), &mut found);
        diagnostics.extend(found);
    }
    let config =
        Config { settings: cx.settings, routes: cx.routes, host: cx.host, services: cx.services, jobs: cx.jobs };
    (config, diagnostics)
}

/// Adds the warning for a file whose secrets every user can read, hides the secrets in the source lines the
/// file's diagnostics quote, and puts them in file order.
fn guard_secrets(file: &SourceFile<'_>, mode: Option<u32>, found: &[secrets::SecretAt], out: &mut Vec<Diagnostic>) {
    if let Some(warning) = mode.and_then(|mode| secrets::readable_by_others(file, found, mode)) {
        out.push(warning);
    }
    secrets::mask(file, found, out);
    out.sort_by_key(|d| (d.line, d.column));
}
