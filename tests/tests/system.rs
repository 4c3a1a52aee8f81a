//! systemd's system scope end to end: a real systemd **system** manager as PID 1 of
//! its own pid, mount, uts and cgroup namespaces (`tests::system_manager`), with
//! its own system bus.
//!
//! - inspeqd runs as a unit of that manager, from the shipped `dist/inspeqd.service`
//!   unchanged (plus a drop-in for the paths of the test only), so it lives in the
//!   manager's pid namespace — the kernel reports other numbers than the manager's
//!   `MainPID` unless the eBPF programs translate — and sees the manager's cgroup2
//!   mount over the host's hybrid tree. It watches another unit with `if crashed
//!   then alert, restart`.
//! - inspeqd runs on the host and reaches the manager with `with scope system, bus
//!   ..., cgroup_root ...`, so the manager's `MainPID` is translated into a host pid.
//!
//! Alerts go through the log channel: to the unit's standard output (a file, there
//! is no journald) or, on the host, the daemon's. Root, BTF and systemd's and
//! D-Bus's binaries needed (see `tests::privileged_with`). Time limits are hang
//! guards, never performance assertions.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tests::{
    daemon_harness::{Daemon, is_alert},
    init_harness::{SERVICE_PROGRAM, kill9, wait_for},
    privileged_with,
    system_manager::{LogFile, SYSTEM_MANAGER, SystemManager},
};

/// Hang guard for anything that goes through the manager (restarts, D-Bus lookups).
const LIMIT: Duration = Duration::from_secs(20);

/// The watched unit.
const DEMO: &str = "inspeq-demo.service";

/// The shipped unit file.
const SHIPPED_UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/inspeqd.service");

/// A system manager whose base directory is in cargo's target directory (not
/// `/tmp`, which `PrivateTmp=yes` hides from the inspeqd unit).
fn manager(name: &str) -> SystemManager {
    SystemManager::start(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

/// Adds and starts `inspeq-demo.service` (the init tests' Perl service), which
/// systemd itself never restarts: restarts are inspeq's.
fn start_demo(manager: &SystemManager) -> u32 {
    let program = manager.base.join("service.pl");
    std::fs::write(&program, SERVICE_PROGRAM).unwrap();
    manager.add_unit(
        DEMO,
        &format!(
            "[Unit]\nDescription=inspeq test service\n[Service]\nExecStart=/usr/bin/perl {} {}\nRestart=no\n",
            program.display(),
            manager.base.join("marks").display()
        ),
    );
    manager.systemctl_ok(&["start", DEMO]);
    wait_for("the demo's main pid", LIMIT, || Some(manager.main_pid(DEMO)).filter(|&p| p != 0))
}

/// The id (inode) of a cgroup directory.
fn cgroup_id(dir: &Path) -> u64 {
    std::fs::metadata(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).ino()
}

/// inspeqd as a unit of the manager, from the shipped unit file.
struct InspeqdUnit {
    socket: PathBuf,
    /// The unit's standard output: alerts (the log channel).
    out: LogFile,
    /// Its standard error: inspeqd's log.
    err: LogFile,
}

impl InspeqdUnit {
    /// Installs `dist/inspeqd.service` and a drop-in, writes its configuration
    /// (`services.d/demo.inq` = `checks`) and starts it; returns once its control
    /// socket answers.
    fn start(manager: &SystemManager, checks: &str) -> Self {
        let base = &manager.base;
        let config = base.join("config");
        std::fs::create_dir_all(config.join("services.d")).unwrap();
        std::fs::create_dir_all(base.join("state")).unwrap();
        std::fs::write(config.join("inspeq.conf"), "set cycle_time 1\nset deploy_length 60\n").unwrap();
        std::fs::write(config.join("services.d/demo.inq"), checks).unwrap();
        std::fs::copy(SHIPPED_UNIT, manager.unit_dir.join("inspeqd.service")).unwrap();
        let (out, err) = (base.join("inspeqd.out"), base.join("inspeqd.err"));
        manager.add_unit(
            "inspeqd.service.d/test.conf",
            &format!(
                "# Only paths differ from the shipped unit: the binary under test, the test's\n\
                 # configuration and state directories (StateDirectory= would create\n\
                 # /var/lib/inspeq on the host's root file system, which the manager shares), and\n\
                 # files for its output (there is no journald to take it).\n\
                 [Service]\n\
                 ExecStart=\n\
                 ExecStart={inspeqd} --config-dir {config} --socket /run/inspeq/inspeq.sock --state-dir {state}\n\
                 StateDirectory=\n\
                 ReadWritePaths={state}\n\
                 StandardOutput=append:{out}\n\
                 StandardError=append:{err}\n",
                inspeqd = tests::inspeqd().display(),
                config = config.display(),
                state = base.join("state").display(),
                out = out.display(),
                err = err.display(),
            ),
        );
        manager.systemctl_ok(&["start", "inspeqd.service"]);
        // RuntimeDirectory=inspeq is /run/inspeq inside: the manager's /run is $BASE/run.
        let unit = Self {
            socket: base.join("run/inspeq/inspeq.sock"),
            out: LogFile { path: out },
            err: LogFile { path: err },
        };
        wait_for(&format!("inspeqd's control socket (log: {})", unit.err.path.display()), LIMIT, || {
            unit.ctl(&["status"]).status.success().then_some(())
        });
        unit
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(tests::inspeqctl()).arg("--socket").arg(&self.socket).args(args).output().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.ctl(&["status", "--json"]);
        assert!(out.status.success(), "inspeqctl status: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.status()["services"].as_array()?.iter().find(|s| s["name"] == name).cloned()
    }

    /// Waits until `name` is `state` with `pid` (when given); returns its status.
    fn wait_service(&self, name: &str, state: &str, pid: Option<u32>) -> serde_json::Value {
        wait_for(&format!("`{name}` {state} with pid {pid:?} (log: {})", self.err.path.display()), LIMIT, || {
            let service = self.service(name)?;
            (service["state"] == state && pid.is_none_or(|p| service["pid"] == p)).then_some(service)
        })
    }
}

const CRASH_CHECK: &str = "check service inspeq-demo with scope system\n  if crashed then alert, restart\n";

#[test]
fn inspeqd_as_a_system_unit_alerts_and_restarts_a_killed_unit_each_time() {
    if !privileged_with("inspeqd_as_a_system_unit_alerts_and_restarts_a_killed_unit_each_time", SYSTEM_MANAGER) {
        return;
    }
    let manager = manager("unit-crash");
    let mut pid = start_demo(&manager);
    let inspeqd = InspeqdUnit::start(&manager, CRASH_CHECK);
    assert_eq!(inspeqd.status()["kernel"]["mode"], "ebpf");
    // inspeqd shares the manager's pid namespace: the pids it shows are the manager's.
    inspeqd.wait_service("inspeq-demo", "up", Some(pid));
    let mut cgroup = cgroup_id(&manager.unit_cgroup(DEMO));

    for round in 0..2 {
        let host = manager.host_pid(pid).expect("the demo's host pid");
        assert_ne!(host, pid, "the manager's namespace numbers its own processes");
        kill9(host);
        let alert = inspeqd
            .out
            .wait_nth(&format!("crash alert {round}"), round, LIMIT, |l| is_alert(l, "inspeq-demo", "crashed"));
        assert!(alert.contains(&format!("pid {pid} was killed by signal 9 (SIGKILL)")), "{alert}");
        let new = wait_for("a new main pid after inspeq's restart", LIMIT, || {
            Some(manager.main_pid(DEMO)).filter(|&p| p != 0 && p != pid)
        });
        inspeqd.wait_service("inspeq-demo", "up", Some(new));
        let new_cgroup = cgroup_id(&manager.unit_cgroup(DEMO));
        assert_ne!(new_cgroup, cgroup, "a restart gives the unit a new cgroup");
        (pid, cgroup) = (new, new_cgroup);
    }
    assert_eq!(inspeqd.out.count(|l| is_alert(l, "inspeq-demo", "crashed")), 2, "{:#?}", inspeqd.out.lines());
    assert_eq!(
        inspeqd.err.count(|l| l.contains("service `inspeq-demo`: restart requested")),
        2,
        "{:#?}",
        inspeqd.err.lines()
    );
}

#[test]
fn inspeqd_as_a_system_unit_leaves_a_unit_the_operator_stopped_stopped() {
    if !privileged_with("inspeqd_as_a_system_unit_leaves_a_unit_the_operator_stopped_stopped", SYSTEM_MANAGER) {
        return;
    }
    let manager = manager("unit-stop");
    let pid = start_demo(&manager);
    let inspeqd = InspeqdUnit::start(&manager, CRASH_CHECK);
    inspeqd.wait_service("inspeq-demo", "up", Some(pid));

    manager.systemctl_ok(&["stop", DEMO]);
    inspeqd.wait_service("inspeq-demo", "down", None);
    // Several cycles for anything that would follow.
    std::thread::sleep(Duration::from_secs(3));
    // Every way the spec can be missed, at once.
    let active = String::from_utf8_lossy(&manager.systemctl(&["is-active", DEMO]).stdout).trim().to_owned();
    let crashes = inspeqd.out.count(|l| is_alert(l, "inspeq-demo", "crashed"));
    let restarts = inspeqd.err.count(|l| l.contains("restart requested"));
    assert!(
        active == "inactive" && crashes == 0 && restarts == 0,
        "after `systemctl stop`: the unit is {active} (expected inactive), {crashes} crash alert(s) and {restarts} \
         `restart requested` (expected none)\nalerts: {:#?}\nlog: {:#?}",
        inspeqd.out.lines(),
        inspeqd.err.lines()
    );
}

#[test]
fn inspeqd_as_a_system_unit_takes_an_operator_restart_for_no_crash() {
    if !privileged_with("inspeqd_as_a_system_unit_takes_an_operator_restart_for_no_crash", SYSTEM_MANAGER) {
        return;
    }
    let manager = manager("unit-restart");
    let pid = start_demo(&manager);
    let inspeqd = InspeqdUnit::start(&manager, CRASH_CHECK);
    inspeqd.wait_service("inspeq-demo", "up", Some(pid));

    manager.systemctl_ok(&["restart", DEMO]);
    let new =
        wait_for("the restarted unit's pid", LIMIT, || Some(manager.main_pid(DEMO)).filter(|&p| p != 0 && p != pid));
    // Up again with a new pid; inspeq restarting it once more (the crash it must not see) would change it again,
    // which is checked below, so any new pid will do here.
    wait_for("`inspeq-demo` up with a new pid", LIMIT, || {
        let service = inspeqd.service("inspeq-demo")?;
        (service["state"] == "up" && service["pid"] != pid).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let now = manager.main_pid(DEMO);
    let crashes = inspeqd.out.count(|l| is_alert(l, "inspeq-demo", "crashed"));
    assert!(
        now == new && crashes == 0,
        "after `systemctl restart`: main pid {now} (expected {new}: no second restart), {crashes} crash alert(s) \
         (expected none)\nalerts: {:#?}\nlog: {:#?}",
        inspeqd.out.lines(),
        inspeqd.err.lines()
    );
}

#[test]
fn inspeqd_on_the_host_reaches_a_system_manager_by_its_bus_and_cgroup_root() {
    if !privileged_with("inspeqd_on_the_host_reaches_a_system_manager_by_its_bus_and_cgroup_root", SYSTEM_MANAGER) {
        return;
    }
    // (flags, tier): with eBPF the kernel reports the wait status; the pidfd tier
    // sees the process reaped by the manager at once, and the alert's signal comes
    // from the manager's ExecMainPID/ExecMainCode record, matched through the
    // translated pid.
    for (flags, tier) in [(&[][..], "ebpf"), (&["--no-ebpf", "--no-proc-connector"][..], "pidfd")] {
        let manager = manager(&format!("host-{tier}"));
        let manager_pid = start_demo(&manager);
        let check = format!(
            "check service inspeq-demo with scope system, bus \"{}\", cgroup_root {}\n  if crashed then alert, restart\n",
            manager.bus_address(),
            manager.cgroup.dir.display()
        );
        let builder = Daemon::builder(&format!("system-host-{tier}"))
            .file("inspeq.conf", "set cycle_time 1\nset deploy_length 60\n")
            .file("services.d/demo.inq", &check);
        let daemon = flags.iter().fold(builder, |b, f| b.arg(f)).start();
        assert_eq!(daemon.status()["kernel"]["mode"], tier);
        let host = manager.host_pid(manager_pid).expect("the demo's host pid");
        assert_ne!(host, manager_pid);
        // The manager's MainPID, translated into the host's pid namespace.
        assert_eq!(daemon.wait_up("inspeq-demo", LIMIT), host, "{tier}");
        let service = daemon.service("inspeq-demo").unwrap();
        assert_eq!(service["cgroup"], manager.unit_cgroup(DEMO).display().to_string(), "{tier}: {service}");

        kill9(host);
        let alert = daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, "inspeq-demo", "crashed"));
        assert!(alert.contains(&format!("pid {host} was killed by signal 9 (SIGKILL)")), "{tier}: {alert}");
        let new = wait_for("a new main pid after inspeq's restart", LIMIT, || {
            Some(manager.main_pid(DEMO)).filter(|&p| p != 0 && p != manager_pid)
        });
        let new_host = manager.host_pid(new).expect("the new main process's host pid");
        assert_eq!(daemon.wait_up_not("inspeq-demo", Some(host), LIMIT), new_host, "{tier}");
    }
}
