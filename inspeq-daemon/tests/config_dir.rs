//! Reading a configuration directory whatever is in it: `load_dir` reads regular files only, each of bounded size,
//! and never blocks; loading is linear in the number of checks and rules.
//!
//! The scale tests print how long they took (for docs/performance.md) but assert only what was loaded: timings on a
//! shared machine are not a specification.

use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use inspeq_daemon::config::{Diagnostic, load_dir, load_dir::MAX_FILE_BYTES};

/// A configuration directory removed when dropped.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new().prefix(&format!("inspeq-config-dir-{name}-")).tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("services.d")).unwrap();
        std::fs::write(dir.path().join("inspeq.conf"), "set cycle_time 15\n").unwrap();
        Self(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.path().join(file)
    }
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

/// The one error diagnostic, which must be at `path:1:1`.
fn only_error(diagnostics: &[Diagnostic], path: &Path) -> String {
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{diagnostics:#?}");
    let d = errors[0];
    assert_eq!((d.path.as_str(), d.line, d.column), (path.to_str().unwrap(), 1, 1), "{d:?}");
    d.message.clone()
}

#[test]
fn a_fifo_is_refused_at_once_naming_what_it_is() {
    let dir = Dir::new("fifo");
    let fifo = dir.path("services.d/web.inq");
    mkfifo(&fifo);
    // No writer ever opens the FIFO: a blocking open would hang this test forever.
    let (_, diagnostics) = load_dir(dir.0.path());
    let message = only_error(&diagnostics, &fifo);
    assert_eq!(message, "cannot read: a FIFO (named pipe), expected a regular file");
}

#[test]
fn a_symlink_to_a_device_is_refused_without_reading_it() {
    let dir = Dir::new("devzero");
    let link = dir.path("services.d/zero.inq");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let (_, diagnostics) = load_dir(dir.0.path());
    assert_eq!(only_error(&diagnostics, &link), "cannot read: a character device, expected a regular file");
}

#[test]
fn a_socket_is_refused() {
    let dir = Dir::new("socket");
    let path = dir.path("host.inq");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (_, diagnostics) = load_dir(dir.0.path());
    assert_eq!(only_error(&diagnostics, &path), "cannot read: a socket, expected a regular file");
}

#[test]
fn a_file_over_the_size_cap_is_refused_and_one_at_the_cap_is_read() {
    let dir = Dir::new("big");
    let big = dir.path("services.d/big.inq");
    // Comments only: the file is valid whatever its length.
    let line = "# a comment line of exactly sixty-four bytes, newline included.\n";
    assert_eq!(line.len(), 64);
    let at_cap = line.repeat(usize::try_from(MAX_FILE_BYTES).unwrap() / 64);
    std::fs::write(&big, &at_cap).unwrap();
    let (_, diagnostics) = load_dir(dir.0.path());
    assert!(!diagnostics.iter().any(Diagnostic::is_error), "{diagnostics:#?}");

    std::fs::write(&big, format!("{at_cap}#")).unwrap();
    let (_, diagnostics) = load_dir(dir.0.path());
    assert_eq!(
        only_error(&diagnostics, &big),
        format!("cannot read: the file is {} bytes, expected at most {MAX_FILE_BYTES} (4 MiB)", MAX_FILE_BYTES + 1)
    );
}

#[test]
fn a_directory_among_the_check_files_is_named_and_left_out() {
    let dir = Dir::new("subdir");
    let sub = dir.path("services.d/old");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("web.inq"), "check service web\n  if memory:rss > 1g then alert\n").unwrap();
    std::fs::write(dir.path("services.d/db.inq"), "check service db\n  if memory:rss > 1g then alert\n").unwrap();
    let (config, diagnostics) = load_dir(dir.0.path());
    assert_eq!(config.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["db"]);
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    let d = &diagnostics[0];
    assert!(!d.is_error() && d.path == sub.to_str().unwrap() && d.line == 1, "{d:?}");
    assert_eq!(d.message, "ignored: a directory, expected a regular file");
}

/// Loads `text` as the one check file and returns (services, rules, milliseconds).
fn load_one(name: &str, text: &str) -> (usize, usize, u128) {
    let dir = Dir::new(name);
    std::fs::write(dir.path("services.d/all.inq"), text).unwrap();
    let started = Instant::now();
    let (config, diagnostics) = load_dir(dir.0.path());
    let took = started.elapsed().as_millis();
    assert!(!diagnostics.iter().any(Diagnostic::is_error), "{:#?}", &diagnostics[..diagnostics.len().min(5)]);
    (config.services.len(), config.services.iter().map(|s| s.rules.len()).sum(), took)
}

#[test]
fn forty_thousand_checks_load_each_once() {
    let n = 40_000;
    let text: String = (0..n).map(|i| format!("check service svc{i}\n  if memory:rss > 1g then alert\n")).collect();
    let (services, rules, ms) = load_one("checks", &text);
    assert_eq!((services, rules), (n, n));
    eprintln!("{n} checks ({} bytes): {ms} ms", text.len());
    // A name declared twice is still found, however many came between.
    let twice = format!("{text}check service svc7\n  if memory:rss > 1g then alert\n");
    let dir = Dir::new("checks-twice");
    std::fs::write(dir.path("services.d/all.inq"), &twice).unwrap();
    let (_, diagnostics) = load_dir(dir.0.path());
    let errors: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(Diagnostic::short).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("`svc7` is already checked at") && errors[0].contains("all.inq:15,"), "{errors:?}");
}

#[test]
fn a_hundred_thousand_rules_load() {
    let n = 100_000;
    let mut text = String::new();
    for check in 0..100 {
        text.push_str(&format!("check service svc{check}\n"));
        for rule in 0..n / 100 {
            text.push_str(&format!("  if memory:rss > {}m then alert\n", rule + 1));
        }
    }
    let (services, rules, ms) = load_one("rules", &text);
    assert_eq!((services, rules), (100, n));
    eprintln!("{n} rules ({} bytes): {ms} ms", text.len());
}

#[test]
fn a_file_holding_a_secret_that_every_user_can_read_is_warned_about_with_its_mode_and_the_fix() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Dir::new("secret-mode");
    let conf = dir.path("inspeq.conf");
    std::fs::write(&conf, "send alerts via webhook with url http://127.0.0.1:9/h, secret hunter2\n").unwrap();
    let check = dir.path("services.d/db.inq");
    // A redis rule reads the password (an unread one would be warned about as ignored besides).
    std::fs::write(&check, "check service db with password hunter3\n  if redis:used_memory > 1g then alert\n").unwrap();
    let chmod = |mode: u32| {
        for file in [&conf, &check] {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    // The mode warnings only: the check's `password` is also warned about as read by nothing (no daemon family
    // that would read it is collected), which is another test's business.
    let shown = || {
        load_dir(dir.0.path())
            .1
            .iter()
            .map(Diagnostic::short)
            .filter(|d| d.contains("is readable by every user"))
            .collect::<Vec<_>>()
    };

    chmod(0o644);
    let (conf, check) = (conf.display().to_string(), check.display().to_string());
    assert_eq!(
        shown(),
        [
            format!(
                "{conf}:1:63: warning: {conf} holds the `secret` of the default route and is readable by every user \
                 (mode 0644), expected it readable by its owner and group only: run `chmod 640 {conf}` (or `chmod 600 {conf}`)"
            ),
            format!(
                "{check}:1:32: warning: {check} holds the `password` of check `db` and is readable by every user \
                 (mode 0644), expected it readable by its owner and group only: run `chmod 640 {check}` (or `chmod 600 {check}`)"
            ),
        ]
    );
    for private in [0o640, 0o600, 0o400] {
        chmod(private);
        assert_eq!(shown(), Vec::<String>::new(), "mode {private:o}");
    }
}
