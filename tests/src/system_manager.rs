//! A systemd **system** manager for the system-scope tests: PID 1 of new pid,
//! mount, uts and cgroup namespaces, as `init-systems.md` §1b measured it
//! (`setsid script -qfec "unshare --pid --mount --uts --fork --kill-child
//! --propagation private --mount-proc env -i ... sh -c '... exec unshare --cgroup
//! sh -c \"mount ...; exec systemd --system ...\"'"`). Torn down when dropped:
//! `systemctl --force exit`, then `cgroup.kill`, then the cgroup is removed.
//!
//! What each step is for:
//! - The unit path holds only `itest.target`, **stub** `sysinit`, `basic`,
//!   `sockets` and `shutdown` targets, and copies of the host's `dbus.socket` and
//!   `dbus.service`: the manager shares the host's root file system, and the host's
//!   `sysinit.target` would set the VM's clock, sysctls and devices.
//! - `container=itest`: systemd takes the container paths (no umount, swapoff or
//!   loop detaching at exit; `systemctl --force exit` is allowed); `--uts` keeps
//!   the VM's hostname.
//! - In the cgroup namespace (rooted at this manager's cgroup), cgroup2 is mounted
//!   at `/sys/fs/cgroup`: a pure v2 view over the host's hybrid tmpfs.
//! - `$BASE/run` is the manager's `/run`, so the host reaches its bus at
//!   `$BASE/run/dbus/system_bus_socket` and a unit's control socket under it.
//! - `/proc/sys` is read-only inside (PID 1 would bump global sysctls), and the pty
//!   `script` provides is the console (PID 1 logs only to a real tty).
//!
//! The base directory is under cargo's target directory, not `/tmp`: units that
//! run with `PrivateTmp=yes` (the shipped `inspeqd.service`) would not see `/tmp`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{TestCgroup, init_harness::wait_for};

/// What a system manager needs on the host (Debian: `systemd`, `dbus`, `util-linux`).
pub const SYSTEM_MANAGER: &[&str] = &[
    "/lib/systemd/systemd",
    "/usr/bin/dbus-daemon",
    "/lib/systemd/system/dbus.socket",
    "/lib/systemd/system/dbus.service",
    "/usr/bin/script",
    "/usr/bin/setsid",
    "/usr/bin/unshare",
    "/usr/bin/nsenter",
];

/// A stub target: present so units with default dependencies resolve, pulling nothing in.
const STUB_TARGET: &str = "[Unit]\nDescription=inspeq test stub\nDefaultDependencies=no\n";

/// A systemd system manager as PID 1 of its own namespaces.
pub struct SystemManager {
    script: Child,
    /// `$BASE`: `units/`, `run/` (the manager's `/run`), `console.log`.
    pub base: PathBuf,
    pub unit_dir: PathBuf,
    /// The manager's pid in the host's pid namespace (1 in its own).
    pub leader: u32,
    /// `$CG`: the manager's cgroup root, as seen from the host.
    pub cgroup: TestCgroup,
}

impl SystemManager {
    /// Boots a manager named after `name` (unique per test), its base directory
    /// under `parent` (the test's `CARGO_TARGET_TMPDIR`), and waits until its system
    /// bus answers.
    pub fn start(parent: &Path, name: &str) -> Self {
        let base = parent.join(format!("inspeq-system-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (unit_dir, empty, run) = (base.join("units"), base.join("empty"), base.join("run"));
        for dir in [&unit_dir, &empty, &run] {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        }
        for target in ["sysinit", "basic", "sockets", "shutdown"] {
            std::fs::write(unit_dir.join(format!("{target}.target")), STUB_TARGET).unwrap();
        }
        std::fs::write(
            unit_dir.join("itest.target"),
            "[Unit]\nDescription=inspeq system-scope tests\nWants=dbus.socket dbus.service\n",
        )
        .unwrap();
        for unit in ["dbus.socket", "dbus.service"] {
            std::fs::copy(Path::new("/lib/systemd/system").join(unit), unit_dir.join(unit)).unwrap();
        }
        let cgroup = TestCgroup::new(&format!("system-{name}"));
        let (b, cg) = (base.display(), cgroup.dir.display());
        let inner = format!(
            "mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup && mount --bind {b}/run /run \
             && mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys \
             && mount --bind $(tty) /dev/console \
             && exec /lib/systemd/systemd --system --unit=itest.target --show-status=no --log-target=console"
        );
        let command = format!(
            "unshare --pid --mount --uts --fork --kill-child --propagation private --mount-proc \
             env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin container=itest SYSTEMD_UNIT_PATH={b}/units \
             SYSTEMD_GENERATOR_PATH={b}/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH={b}/empty \
             sh -c 'echo 0 > {cg}/cgroup.procs; exec unshare --cgroup sh -c \"{inner}\"'"
        );
        let script = Command::new("setsid")
            .args(["script", "-qfec", &command])
            .arg(base.join("console.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting setsid script unshare ... systemd --system");
        let leader_file = cgroup.dir.join("init.scope/cgroup.procs");
        let console = base.join("console.log");
        // During boot init.scope briefly holds forked children too: PID 1 is the one whose NSpid ends in 1.
        let leader = wait_for(
            &format!("the system manager's PID 1 (console: {})", console.display()),
            Duration::from_secs(20),
            || {
                let procs = std::fs::read_to_string(&leader_file).ok()?;
                procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()).find(|&p| nspid(p).last() == Some(&1))
            },
        );
        let this = Self { script, base, unit_dir, leader, cgroup };
        wait_for("the manager's system bus", Duration::from_secs(20), || {
            (this.base.join("run/dbus/system_bus_socket").exists()
                && this.systemctl(&["is-active", "dbus.service"]).status.success())
            .then_some(())
        });
        this
    }

    /// `systemctl ARGS` inside the manager's mount and pid namespaces (systemctl
    /// checks `/run/systemd/system` in its own mount namespace).
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("nsenter");
        command.arg("-t").arg(self.leader.to_string()).args(["-m", "-p", "--", "systemctl"]).args(args);
        command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
    }

    /// `systemctl ARGS`, which must succeed; returns its stdout.
    pub fn systemctl_ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        assert!(out.status.success(), "systemctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes `NAME` (a unit file name, or `NAME.d/x.conf` for a drop-in) and reloads the manager.
    pub fn add_unit(&self, name: &str, text: &str) {
        let path = self.unit_dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        self.systemctl_ok(&["daemon-reload"]);
    }

    /// The manager's bus, as the host reaches it.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.base.join("run/dbus/system_bus_socket").display())
    }

    /// `MainPID` of `unit`, in the manager's pid namespace (0 when not running).
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.systemctl_ok(&["show", "-P", "MainPID", unit]).parse().unwrap()
    }

    /// The host directory of `unit`'s cgroup (`ControlGroup` is relative to `$CG`).
    pub fn unit_cgroup(&self, unit: &str) -> PathBuf {
        let relative = self.systemctl_ok(&["show", "-P", "ControlGroup", unit]);
        self.cgroup.dir.join(relative.trim_start_matches('/'))
    }

    /// The host pid of the process that is `pid` in the manager's namespace.
    pub fn host_pid(&self, pid: u32) -> Option<u32> {
        let mut procs = Vec::new();
        collect(&self.cgroup.dir, &mut procs);
        procs.into_iter().find(|&p| nspid(p).len() == 2 && nspid(p).last() == Some(&pid))
    }
}

/// The pids in the cgroup at `dir` and below.
fn collect(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(&entry.path(), out);
        }
    }
}

/// `/proc/PID/status`'s `NSpid:`: the pid in each namespace, the host's first.
pub fn nspid(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:")).unwrap_or_default();
    line.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

impl Drop for SystemManager {
    fn drop(&mut self) {
        // An orderly exit stops the units (1.7–1.9 s); cgroup.kill ends what is left.
        let _ = self.systemctl(&["--force", "exit"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !matches!(self.script.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::write(self.cgroup.dir.join("cgroup.kill"), "1");
        let _ = self.script.kill();
        let _ = self.script.wait();
        // The cgroup (its drop, after this) waits for its processes to go.
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Lines of a file another process appends to (a unit's `StandardOutput=append:`),
/// re-read on each look.
pub struct LogFile {
    pub path: PathBuf,
}

impl LogFile {
    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// How many lines satisfy `matches`.
    pub fn count(&self, matches: impl Fn(&str) -> bool) -> usize {
        self.lines().iter().filter(|l| matches(l)).count()
    }

    /// Waits for the `nth` (0-based) line satisfying `matches` and returns it; panics
    /// naming `what` after `limit` (a hang guard) with the file's lines.
    pub fn wait_nth(&self, what: &str, nth: usize, limit: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.lines();
            if let Some(line) = lines.iter().filter(|l| matches(l)).nth(nth) {
                return line.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what} in {}:\n{}",
                self.path.display(),
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
