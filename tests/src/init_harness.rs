//! Real init systems for the init tests, each brought up in its own directory and
//! cgroup and torn down when dropped, whatever the test did: a systemd user
//! manager in a private mount namespace, `runsvdir`, init.d scripts driving
//! start-stop-daemon, and the fake upstart `initctl` (tests/fixtures/initctl),
//! which runs real processes.
//!
//! Every service runs [`SERVICE_PROGRAM`], a small Perl server (Perl is Essential
//! in Debian) that appends each reload signal it receives to a marks file, so a
//! test can see that a reload reached the process.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{TestCgroup, cgroup2_root, join_cgroups};

/// The service every backend runs: `perl service.pl MARKS`. It writes
/// `SIGNAL PID` lines to MARKS for HUP, USR1 and USR2 and otherwise sleeps.
pub const SERVICE_PROGRAM: &str = r#"
use strict;
my $marks = shift @ARGV;
sub mark { my ($sig) = @_; open(my $f, '>>', $marks) or die "$marks: $!"; print $f "$sig $$\n"; close $f; }
$SIG{HUP} = sub { mark('HUP') };
$SIG{USR1} = sub { mark('USR1') };
$SIG{USR2} = sub { mark('USR2') };
mark('START');
while (1) { sleep 1; }
"#;

/// A per-test directory, removed when dropped.
pub struct Scratch {
    pub dir: PathBuf,
    _guard: tempfile::TempDir,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        // 0755: services the init systems start as other users read their programs here.
        let guard = tempfile::Builder::new()
            .prefix(&format!("inspeq-init-{name}-"))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a scratch directory for {name}: {e}"));
        Self { dir: guard.path().to_owned(), _guard: guard }
    }

    /// Writes `service.pl` here and returns the argv that runs it with `marks`.
    pub fn service_command(&self, marks: &Path) -> Vec<String> {
        let program = self.dir.join("service.pl");
        std::fs::write(&program, SERVICE_PROGRAM).unwrap();
        vec!["/usr/bin/perl".into(), program.display().to_string(), marks.display().to_string()]
    }
}

/// Writes an executable file.
pub fn write_executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The signals recorded in a marks file, in order (`START` first).
pub fn marks(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| l.split(' ').next().unwrap().to_owned()).collect()
}

/// Polls `check` every 20 ms until it returns `Some`, or panics naming `what`
/// after `limit` (a guard against a hang, not a timing assertion).
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

/// `kill -9 PID`.
pub fn kill9(pid: u32) {
    // SAFETY: kill(2) with a pid the test got from an init system.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0, "kill -9 {pid}");
}

/// The v1 `name=systemd` hierarchy of a hybrid host, which systemd also needs.
fn systemd_v1_root() -> Option<PathBuf> {
    let dir = PathBuf::from("/sys/fs/cgroup/systemd");
    (dir.join("cgroup.procs").exists() && cgroup2_root().as_deref() != Some(Path::new("/sys/fs/cgroup"))).then_some(dir)
}

/// `systemd --user`, run as root in a private mount namespace (where
/// `/run/systemd/system` exists, which it insists on, without making the host
/// look systemd-booted), inside its own cgroup. Units go into [`Self::unit_dir`].
pub struct UserManager {
    manager: Child,
    pub runtime_dir: PathBuf,
    pub unit_dir: PathBuf,
    pub log: PathBuf,
    // Dropped after the manager is told to stop: they kill what is left.
    _cgroup_v1: Option<TestCgroup>,
    pub cgroup: TestCgroup,
    _scratch: Scratch,
}

impl UserManager {
    pub fn start(name: &str) -> Self {
        let scratch = Scratch::new(&format!("manager-{name}"));
        let base = scratch.dir.clone();
        let (runtime_dir, config, unit_dir, empty) =
            (base.join("rt"), base.join("config"), base.join("units"), base.join("empty"));
        for dir in [&runtime_dir, &config, &unit_dir, &empty] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::set_permissions(&runtime_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let cgroup = TestCgroup::new(&format!("systemd-{name}"));
        let cgroup_v1 = systemd_v1_root().map(|root| TestCgroup::new_under(&root, &format!("systemd-{name}")));
        let log = base.join("manager.log");
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg("mount -t tmpfs inspeq-test /run/systemd && mkdir /run/systemd/system && exec /lib/systemd/systemd --user --log-target=console")
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env("XDG_CONFIG_HOME", &config)
            // The trailing colon keeps the default unit path (dbus.socket) after ours.
            .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_dir.display()))
            .env("SYSTEMD_GENERATOR_PATH", &empty)
            .env("SYSTEMD_ENVIRONMENT_GENERATOR_PATH", &empty)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(base.join("manager.err")).unwrap());
        let mut cgroups = vec![cgroup.dir.as_path()];
        if let Some(v1) = &cgroup_v1 {
            cgroups.push(v1.dir.as_path());
        }
        let manager = join_cgroups(&mut command, &cgroups).spawn().expect("starting systemd --user");
        let this = Self { manager, runtime_dir, unit_dir, log, _cgroup_v1: cgroup_v1, cgroup, _scratch: scratch };
        wait_for("the user manager to answer", Duration::from_secs(20), || {
            (this.runtime_dir.join("systemd/private").exists()
                && this.runtime_dir.join("bus").exists()
                && this.systemctl(&["show", "-P", "Version"]).status.success())
            .then_some(())
        });
        this
    }

    /// The manager's pid (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.manager.id()
    }

    /// The manager's user bus (its stock dbus.socket starts dbus-daemon there).
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.runtime_dir.join("bus").display())
    }

    /// `systemctl --user ARGS` against this manager.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        run(Command::new("systemctl").arg("--user").args(args).env("XDG_RUNTIME_DIR", &self.runtime_dir))
    }

    /// `systemctl --user ARGS`, which must succeed; returns its stdout.
    pub fn systemctl_ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        assert!(out.status.success(), "systemctl --user {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Writes `NAME` (a unit file name) and reloads the manager.
    pub fn add_unit(&self, name: &str, text: &str) {
        std::fs::write(self.unit_dir.join(name), text).unwrap();
        self.systemctl_ok(&["daemon-reload"]);
    }
}

impl Drop for UserManager {
    fn drop(&mut self) {
        // An orderly exit stops the units; the cgroups' own teardown kills the rest.
        // SAFETY: signalling the manager this harness started.
        unsafe { libc::kill(self.manager.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.manager.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.manager.kill();
        let _ = self.manager.wait();
    }
}

/// `runsvdir` over a fresh service directory, in its own cgroup.
pub struct RunitDir {
    runsvdir: Child,
    pub service_dir: PathBuf,
    sv_dir: PathBuf,
    services: Vec<PathBuf>,
    pub cgroup: TestCgroup,
    pub scratch: Scratch,
}

impl RunitDir {
    pub fn start(name: &str) -> Self {
        let scratch = Scratch::new(&format!("runit-{name}"));
        let (service_dir, sv_dir) = (scratch.dir.join("service"), scratch.dir.join("sv"));
        std::fs::create_dir_all(&service_dir).unwrap();
        std::fs::create_dir_all(&sv_dir).unwrap();
        let cgroup = TestCgroup::new(&format!("runit-{name}"));
        let mut command = Command::new("runsvdir");
        command.arg("-P").arg(&service_dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        let runsvdir =
            join_cgroups(&mut command, &[&cgroup.dir]).spawn().expect("starting runsvdir (apt-get install runit)");
        Self { runsvdir, service_dir, sv_dir, services: Vec::new(), cgroup, scratch }
    }

    /// Adds a service whose `run` script is `exec ARGV`, and waits until runsv
    /// reports it running; returns its pid.
    pub fn add_service(&mut self, name: &str, argv: &[String]) -> u32 {
        let dir = self.sv_dir.join(name);
        write_executable(&dir.join("run"), &format!("#!/bin/sh\nexec {}\n", argv.join(" ")));
        let link = self.service_dir.join(name);
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        self.services.push(link.clone());
        wait_for(&format!("runsv to start {name}"), Duration::from_secs(15), || self.running_pid(name))
    }

    /// The service's pid as `sv status` prints it, when it is running.
    pub fn running_pid(&self, name: &str) -> Option<u32> {
        let out = self.sv(&["status", name]);
        let text = String::from_utf8_lossy(&out.stdout);
        let rest = text.strip_prefix("run: ")?;
        rest.split_once("(pid ")?.1.split_once(')')?.0.parse().ok()
    }

    /// `sv ARGS`, with the last argument a service name in this directory.
    pub fn sv(&self, args: &[&str]) -> Output {
        let (name, verbs) = args.split_last().unwrap();
        run(Command::new("sv").args(verbs).arg(self.service_dir.join(name)))
    }
}

impl Drop for RunitDir {
    fn drop(&mut self) {
        // TERM to runsv only means "exit once the service is down": stop each
        // service first, then let runsv and runsvdir go.
        for service in &self.services {
            let _ = Command::new("sv").args(["-w", "5", "force-stop"]).arg(service).output();
            let _ = Command::new("sv").arg("exit").arg(service).output();
        }
        // SAFETY: signalling the runsvdir this harness started.
        unsafe { libc::kill(self.runsvdir.id() as i32, libc::SIGHUP) };
        let _ = self.runsvdir.kill();
        let _ = self.runsvdir.wait();
    }
}

/// An init.d directory of LSB scripts that drive start-stop-daemon, with their
/// pidfiles in a run directory, everything started inside one cgroup.
pub struct InitdDir {
    pub script_dir: PathBuf,
    pub run_dir: PathBuf,
    scripts: Vec<PathBuf>,
    pub cgroup: TestCgroup,
    pub scratch: Scratch,
}

impl InitdDir {
    pub fn new(name: &str) -> Self {
        let scratch = Scratch::new(&format!("initd-{name}"));
        let (script_dir, run_dir) = (scratch.dir.join("init.d"), scratch.dir.join("run"));
        std::fs::create_dir_all(&script_dir).unwrap();
        std::fs::create_dir_all(&run_dir).unwrap();
        let cgroup = TestCgroup::new(&format!("initd-{name}"));
        Self { script_dir, run_dir, scripts: Vec::new(), cgroup, scratch }
    }

    /// Writes `init.d/NAME` running ARGV with pidfile `run/NAME.pid` (or `pidfile`);
    /// its `reload` sends `reload_signal`.
    pub fn add_script(&mut self, name: &str, argv: &[String], pidfile: Option<&Path>, reload_signal: &str) -> PathBuf {
        let script = self.script_dir.join(name);
        let pidfile = pidfile.map_or_else(|| self.run_dir.join(format!("{name}.pid")), Path::to_path_buf);
        let (program, args) = argv.split_first().unwrap();
        write_executable(
            &script,
            &format!(
                r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: inspeq test service
### END INIT INFO
PIDFILE={pidfile}
echo 0 > {cgroup}/cgroup.procs
do_start() {{
    start-stop-daemon --start --quiet --background --make-pidfile --pidfile $PIDFILE --startas {program} -- {args} || return 1
    # The background child writes the pidfile: wait for it, or a quick stop misses the daemon.
    i=0; while [ ! -s $PIDFILE ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
}}
do_stop() {{
    start-stop-daemon --stop --quiet --retry=TERM/5/KILL/5 --remove-pidfile --pidfile $PIDFILE
    [ $? -le 1 ]
}}
case "$1" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop && do_start ;;
  reload) start-stop-daemon --stop --signal {reload_signal} --quiet --pidfile $PIDFILE ;;
  status) start-stop-daemon --status --pidfile $PIDFILE ;;
  *) echo "Usage: $0 {{start|stop|restart|reload|status}}" >&2; exit 3 ;;
esac
"#,
                pidfile = pidfile.display(),
                cgroup = self.cgroup.dir.display(),
                args = args.join(" "),
            ),
        );
        self.scripts.push(script.clone());
        script
    }

    /// Runs `init.d/NAME ACTION`, which must succeed.
    pub fn invoke(&self, name: &str, action: &str) {
        let out = run(Command::new(self.script_dir.join(name)).arg(action));
        assert!(out.status.success(), "{name} {action}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for InitdDir {
    fn drop(&mut self) {
        for script in &self.scripts {
            let _ = Command::new(script).arg("stop").output();
        }
    }
}

/// The fake upstart: `bin/initctl` (with its start/stop/... symlinks), job files
/// in `init/`, state in `run/`, jobs running inside one cgroup.
pub struct FakeUpstart {
    pub initctl: PathBuf,
    pub job_dir: PathBuf,
    jobs: Vec<String>,
    pub cgroup: TestCgroup,
    pub scratch: Scratch,
}

impl FakeUpstart {
    pub fn new(name: &str) -> Self {
        let scratch = Scratch::new(&format!("upstart-{name}"));
        let bin = scratch.dir.join("bin");
        let job_dir = scratch.dir.join("init");
        std::fs::create_dir_all(&job_dir).unwrap();
        let initctl = bin.join("initctl");
        write_executable(&initctl, include_str!("../fixtures/initctl"));
        for verb in ["start", "stop", "restart", "reload", "status"] {
            std::os::unix::fs::symlink("initctl", bin.join(verb)).unwrap();
        }
        let cgroup = TestCgroup::new(&format!("upstart-{name}"));
        std::fs::write(scratch.dir.join("cgroup.dir"), cgroup.dir.display().to_string()).unwrap();
        Self { initctl, job_dir, jobs: Vec::new(), cgroup, scratch }
    }

    /// Writes `init/JOB.conf` with these stanzas (`exec ...`, `reload signal ...`).
    pub fn add_job(&mut self, job: &str, stanzas: &str) {
        std::fs::write(self.job_dir.join(format!("{job}.conf")), stanzas).unwrap();
        self.jobs.push(job.to_owned());
    }

    /// `initctl ARGS`.
    pub fn initctl(&self, args: &[&str]) -> Output {
        run(Command::new(&self.initctl).args(args))
    }
}

impl Drop for FakeUpstart {
    fn drop(&mut self) {
        for job in &self.jobs {
            let _ = Command::new(&self.initctl).args(["stop", job]).output();
        }
    }
}
