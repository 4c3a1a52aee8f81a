//! The real `inspeqd` for the daemon tests: a [`Daemon`] guard writes a
//! configuration directory, starts the binary on it with a socket and state
//! directory of its own, captures its standard output (where alerts with no route
//! go, one `alert: ...` line each) and standard error (its log) line by line on
//! threads, and stops it when dropped: SIGTERM, then SIGKILL.
//!
//! [`Daemon::ctl`] runs the real control client against the daemon's socket.
//! [`Builder::stderr_unread`] leaves standard error a pipe nobody reads, as a
//! hung log reader would.

use std::{
    ffi::OsString,
    io::{BufRead as _, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, ExitStatus, Output, Stdio},
    // A test that panics while waiting poisons the list; the reader and the guard's
    // drop still need it.
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::{Duration, Instant},
};

use crate::init_harness::Scratch;

/// Lines a child wrote to one stream, as they arrive.
#[derive(Clone, Default)]
pub struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lines {
    /// Reads `stream` on a thread until it ends, echoing each line to the test's
    /// output (shown when a test fails) with `label` in front.
    fn capture(stream: impl Read + Send + 'static, label: String) -> Self {
        let lines = Self::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                eprintln!("[{label}] {line}");
                let (list, arrived) = &*sink.inner;
                list.lock().unwrap_or_else(PoisonError::into_inner).push(line);
                arrived.notify_all();
            }
        });
        lines
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many lines so far satisfy `matches`.
    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner).iter().filter(|l| matches(l)).count()
    }

    /// Waits until the `nth` (0-based) line satisfying `matches` has arrived and
    /// returns it; panics naming `what` after `limit` (a hang guard, not a timing
    /// assertion).
    pub fn wait_nth(&self, what: &str, nth: usize, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        let (list, arrived) = &*self.inner;
        let mut guard = list.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(line) = guard.iter().filter(|l| matches(l)).nth(nth) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out after {limit:?} waiting for {what}; lines so far:\n{}",
                guard.join("\n")
            );
            guard = arrived.wait_timeout(guard, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Waits for the first line satisfying `matches` (see [`Self::wait_nth`]).
    pub fn wait(&self, what: &str, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        self.wait_nth(what, 0, limit, matches)
    }
}

/// A configuration directory being written, before the daemon starts on it.
pub struct Builder {
    scratch: Scratch,
    env: Vec<(OsString, OsString)>,
    args: Vec<OsString>,
    state_dir: Option<PathBuf>,
    stderr_unread: bool,
}

/// A running `inspeqd`, stopped when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// The configuration directory (`inspeq.conf`, `services.d/`, ...).
    pub config_dir: PathBuf,
    pub socket: PathBuf,
    /// `--state-dir` (the alert outbox).
    pub state_dir: PathBuf,
    /// When the process was started.
    pub started: Instant,
    /// Standard output: alerts through the log channel.
    pub stdout: Lines,
    /// Standard error: the daemon's log (empty with [`Builder::stderr_unread`]).
    pub stderr: Lines,
    /// The read end of standard error's pipe, kept open and never read.
    _unread: Option<ChildStderr>,
    // Last: removed after the daemon is gone.
    _scratch: Scratch,
}

impl Builder {
    /// Writes `file` (relative to the configuration directory), creating its directory.
    pub fn file(self, file: &str, text: &str) -> Self {
        write_config(&self.scratch.dir.join("config"), file, text);
        self
    }

    /// Writes `file` as [`Self::file`] does, with permission bits `mode`.
    pub fn file_with_mode(self, file: &str, text: &str, mode: u32) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        let this = self.file(file, text);
        let path = this.scratch.dir.join("config").join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
        this
    }

    /// Adds a command-line argument (`--no-ebpf`, ...).
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Uses `dir` as the state directory (another daemon's, or one a test
    /// filled) instead of a fresh one.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_owned());
        self
    }

    /// Leaves standard error a pipe that is never read.
    pub fn stderr_unread(mut self) -> Self {
        self.stderr_unread = true;
        self
    }

    /// Starts `inspeqd` on the directory and waits until its socket answers.
    pub fn start(self) -> Daemon {
        let base = self.scratch.dir.clone();
        let config_dir = base.join("config");
        let socket = base.join("sock");
        let state_dir = self.state_dir.clone().unwrap_or_else(|| base.join("state"));
        let mut command = Command::new(crate::inspeqd());
        command
            .arg("--config-dir")
            .arg(&config_dir)
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(&self.args)
            // Only what the test sets reaches a bus: never the caller's session.
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NOTIFY_SOCKET")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", crate::inspeqd().display()));
        let label = base.file_name().unwrap().to_string_lossy().into_owned();
        let stdout = Lines::capture(child.stdout.take().unwrap(), format!("{label} stdout"));
        let (stderr, unread) = match child.stderr.take().unwrap() {
            pipe if self.stderr_unread => (Lines::default(), Some(pipe)),
            pipe => (Lines::capture(pipe, format!("{label} stderr")), None),
        };
        let mut daemon = Daemon {
            child: Some(child),
            config_dir,
            socket,
            state_dir,
            started,
            stdout,
            stderr,
            _unread: unread,
            _scratch: self.scratch,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.child.as_mut().unwrap().try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!("inspeqd exited at start with {status}:\n{}", daemon.stderr.all().join("\n"));
            }
            if daemon.ctl(&["status"]).status.success() {
                return daemon;
            }
            assert!(Instant::now() < deadline, "inspeqd did not answer on {} within 20 s", daemon.socket.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write_config(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

impl Daemon {
    /// A configuration directory in a fresh temporary directory named after `name`
    /// (unique per test), to be filled and started.
    pub fn builder(name: &str) -> Builder {
        Builder {
            scratch: Scratch::new(&format!("daemon-{name}")),
            env: Vec::new(),
            args: Vec::new(),
            state_dir: None,
            stderr_unread: false,
        }
    }

    /// Writes (or replaces) `file` in the configuration directory of the running daemon.
    pub fn write(&self, file: &str, text: &str) {
        write_config(&self.config_dir, file, text);
    }

    /// Removes `file` from the configuration directory.
    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.config_dir.join(file)).unwrap();
    }

    /// `inspeqctl --socket SOCKET ARGS`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(crate::inspeqctl())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running inspeqctl {args:?}: {e}"))
    }

    /// `inspeqctl ARGS`, which must succeed; returns its standard output.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "inspeqctl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `inspeqctl status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let text = self.ctl_ok(&["status", "--json"]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status --json is not JSON ({e}):\n{text}"))
    }

    /// The service `name` in `status --json`.
    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.status()["services"].as_array()?.iter().find(|s| s["name"] == name).cloned()
    }

    /// Polls `status --json` until service `name` is up, and returns its main pid.
    pub fn wait_up(&self, name: &str, limit: Duration) -> u32 {
        self.wait_up_not(name, None, limit)
    }

    /// Polls `status --json` until service `name` is up with a main pid other than
    /// `old`, and returns that pid.
    pub fn wait_up_not(&self, name: &str, old: Option<u32>, limit: Duration) -> u32 {
        crate::init_harness::wait_for(&format!("service `{name}` up (pid not {old:?})"), limit, || {
            let service = self.service(name)?;
            let pid = service["pid"].as_u64()? as u32;
            (service["state"] == "up" && Some(pid) != old).then_some(pid)
        })
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().expect("inspeqd is running").id();
        // SAFETY: kill(2) on the child this guard started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill -{signal} {pid}");
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("inspeqd is running").id()
    }

    /// A line of the daemon's `/proc/PID/status` (`VmHWM`, `VmRSS`, ...), in kB.
    pub fn proc_status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// How many file descriptors the daemon has open.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM, then waits (up to 10 s, a hang guard) for the daemon to exit and
    /// returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("inspeqd did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        // SAFETY: signalling the child this guard started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A line the log channel wrote for a firing alert of `event` about `service`.
pub fn is_alert(line: &str, service: &str, event: &str) -> bool {
    line.starts_with(&format!("alert: firing service={service} event={event} "))
}
