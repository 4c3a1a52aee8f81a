//! The I/O edge of configuration loading: reads a configuration directory and hands the contents to the pure
//! [`load`]. This is the only file under `config/` allowed to touch the file system.
//!
//! Layout read (Inspeqtor's, so existing `/etc/inspeqtor` trees work): `inspeq.conf` or `inspeqtor.conf`,
//! `*.inq` at the top (`host.inq`), and every file in `services.d/` and `jobs.d/`. A file that cannot be read is
//! an error diagnostic, never skipped silently.
//!
//! The daemon reads this on a reload while it runs, so reading must never block and never take unbounded memory,
//! whatever is put in the directory: only regular files are read (a FIFO would block `open` until a writer comes,
//! `/dev/zero` would never end), and each at most [`MAX_FILE_BYTES`].
//!
//! Each file's mode goes along with its text: the pure pass decides whether a file holding a password, a secret or
//! a key is readable by every user and warns (`check::secrets`), for `inspeqctl check` and the daemon's start and
//! reload alike (the daemon logs every warning).

use std::fs::{self, File, Metadata};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::diagnostic::{Diagnostic, Severity};
use crate::config::load::{Source, load_sources};
use crate::config::model::Config;

/// The largest configuration file read. Real files are a few KiB (a 4 MiB file holds over 100,000 rules); the cap
/// bounds what one file can make the daemon allocate (parsing takes about 40× the text's size).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

fn at_start(path: &Path, severity: Severity, message: String) -> Diagnostic {
    Diagnostic {
        severity,
        path: path.display().to_string(),
        line: 1,
        column: 1,
        width: 1,
        message,
        source_line: String::new(),
    }
}

fn unreadable(path: &Path, why: &str) -> Diagnostic {
    at_start(path, Severity::Error, format!("cannot read: {why}"))
}

/// What a file that is not a regular file is, for people.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

fn too_big(path: &Path, size: u64) -> Diagnostic {
    unreadable(path, &format!("the file is {size} bytes, expected at most {MAX_FILE_BYTES} (4 MiB)"))
}

/// Why a file that looked fine from its metadata is still refused, or its metadata's size when it is readable.
fn refuse(path: &Path, meta: &Metadata) -> Result<u64, Diagnostic> {
    if !meta.is_file() {
        return Err(unreadable(path, &format!("{}, expected a regular file", kind(meta))));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_big(path, meta.len()));
    }
    Ok(meta.len())
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`], and returns it with its mode (of the file opened, so of a
/// symlink's target).
///
/// `stat` first, so that nothing but a regular file is ever opened: opening a device can have effects of its own
/// (`/dev/watchdog` arms the hardware watchdog). The open itself is non-blocking, and the opened file is checked
/// again by `fstat`, so that a FIFO swapped in between cannot block it. The read is bounded too, for files whose
/// size says nothing (procfs and sysfs files say 0 or 4096).
fn read_regular(path: &Path) -> Result<(Vec<u8>, u32), Diagnostic> {
    let meta = fs::metadata(path).map_err(|e| unreadable(path, &e.to_string()))?;
    refuse(path, &meta)?;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| unreadable(path, &e.to_string()))?;
    let opened = file.metadata().map_err(|e| unreadable(path, &e.to_string()))?;
    let size = refuse(path, &opened)?;
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let read =
        File::take(file, MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| unreadable(path, &e.to_string()))?;
    if read as u64 > MAX_FILE_BYTES {
        return Err(too_big(path, read as u64));
    }
    Ok((bytes, opened.mode()))
}

/// The files of `dir` to read: every entry when `all`, else the check and global files. Directories among them
/// are warned about and left out (a `services.d/old/` kept aside is not a mistake worth refusing the whole
/// configuration for); anything else that is not a regular file is refused when it is read.
fn list(dir: &Path, all: bool, out: &mut Vec<PathBuf>, problems: &mut Vec<Diagnostic>) {
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
        if name.starts_with('.') || name.ends_with('~') {
            continue;
        }
        let wanted = all || name.ends_with(".inq") || name == "inspeq.conf" || name == "inspeqtor.conf";
        // `stat`, not the entry's own type: a symlink to a directory is a directory here. Never blocks.
        if fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
            if wanted {
                problems.push(at_start(
                    &path,
                    Severity::Warning,
                    "ignored: a directory, expected a regular file".into(),
                ));
            }
            continue;
        }
        if wanted {
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
    if !problems.iter().any(Diagnostic::is_error) {
        for sub in ["services.d", "jobs.d"] {
            let sub = dir.join(sub);
            if sub.is_dir() {
                list(&sub, true, &mut paths, &mut problems);
            }
        }
    }
    let mut contents: Vec<(String, String, u32)> = Vec::new();
    for path in paths {
        match read_regular(&path) {
            Ok((bytes, mode)) => match String::from_utf8(bytes) {
                Ok(text) => contents.push((path.display().to_string(), text, mode)),
                Err(_) => problems.push(unreadable(&path, "not UTF-8 text")),
            },
            Err(problem) => problems.push(problem),
        }
    }
    let (config, mut diagnostics) =
        load_sources(contents.iter().map(|(path, text, mode)| Source { path, text, mode: Some(*mode) }));
    problems.append(&mut diagnostics);
    (config, problems)
}
