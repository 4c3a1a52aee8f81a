//! Init systems, end to end against the real managers: a systemd user manager,
//! runit, init.d scripts with start-stop-daemon, processes found by pidfile or
//! command line, and upstart through a fake `initctl` that runs real processes.
//! For each: a lookup finds the real main pid (and for systemd the cgroup); a
//! restart yields a new pid (and for systemd a new cgroup, which the kernel watch
//! follows); a reload delivers the signal; a `kill -9` of the main process is
//! observed through the kernel path with its status; a missing service is
//! NotFound and a stopped one Down. Root and BTF needed (see `tests::privileged`).

use std::{path::Path, sync::Arc, time::Duration};

use inspeq_daemon::{
    init::{
        Argv, InitD, InitDOptions, InitError, InitKind, InitSystem, ProcessLocator, ProcessOptions, ProcessService,
        ReloadSignal, Runit, RunitOptions, Scope, ServiceName, ServiceState, ServiceStatus, Systemd, SystemdOptions,
        Timeouts, Upstart, UpstartOptions, Wrapper, resolve,
    },
    kernel::{ExitStatus, Mode, Monitor, Observation, Options, WatchSettings, WatchTarget},
};
use tests::{
    init_harness::{FakeUpstart, InitdDir, RunitDir, Scratch, UserManager, kill9, marks, wait_for},
    privileged_with,
};

const LIMIT: Duration = Duration::from_secs(20);

/// A systemd user manager and the user bus its stock dbus.socket starts.
const SYSTEMD_USER: &[&str] = &["/lib/systemd/systemd", "/usr/bin/dbus-daemon", "/usr/lib/systemd/user/dbus.socket"];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).unwrap()
}

fn ebpf() -> Monitor {
    let monitor = Monitor::start(&Options::default());
    assert_eq!(monitor.mode(), &Mode::Ebpf, "eBPF did not start");
    monitor
}

/// Watches `target`, kills `pid` with SIGKILL and returns once the kernel side
/// reports that exit; panics unless the status is SIGKILL.
async fn kill9_is_observed(monitor: &mut Monitor, target: &WatchTarget, pid: u32) {
    let watch = monitor.watch(target, WatchSettings::default()).expect("watching the service");
    kill9(pid);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let mut batch = Vec::new();
        tokio::time::timeout_at(deadline, monitor.next_batch(&mut batch))
            .await
            .unwrap_or_else(|_| panic!("the exit of {pid} was not observed through {target:?}"))
            .expect("reading the kernel side");
        let exit = batch.iter().find_map(|o| match o {
            Observation::ProcessExited(e) if e.pid == pid && e.watch == watch => Some(e),
            _ => None,
        });
        if let Some(exit) = exit {
            assert_eq!(exit.status, ExitStatus::Signal { signal: libc::SIGKILL, core_dumped: false });
            break;
        }
    }
    monitor.unwatch(watch);
}

/// Looks `service` up until `ready` accepts the status.
async fn lookup_until(
    init: &dyn InitSystem,
    service: &ServiceName,
    what: &str,
    ready: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let status = init.lookup(service).await.expect("lookup");
        if ready(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "{service}: timed out waiting for {what}; last {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn up(status: &ServiceStatus) -> u32 {
    assert_eq!(status.state, ServiceState::Up, "{status:?}");
    status.main_pid.expect("an Up service has a main pid")
}

/// The pids in a cgroup directory (not its children).
fn cgroup_procs(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

// ---------------------------------------------------------------- systemd

fn service_unit(scratch: &Scratch, marks: &Path, extra: &str) -> String {
    format!(
        "[Unit]\nDescription=inspeq test service\n\n[Service]\nExecStart={}\nExecReload=/bin/kill -USR1 $MAINPID\n{extra}\n",
        scratch.service_command(marks).join(" ")
    )
}

async fn user_systemd(manager: &UserManager) -> Systemd {
    let mut options = SystemdOptions::new(Scope::User);
    options.address = Some(manager.bus_address());
    Systemd::connect(options).await.expect("connecting to the user manager's bus")
}

#[test]
fn systemd_lookup_reports_the_main_pid_and_the_units_cgroup() {
    if !privileged_with("systemd_lookup_reports_the_main_pid_and_the_units_cgroup", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("lookup");
    let scratch = Scratch::new("systemd-lookup");
    let marks_file = scratch.dir.join("marks");
    manager.add_unit("inspeq-lookup.service", &service_unit(&scratch, &marks_file, ""));
    manager.systemctl_ok(&["start", "inspeq-lookup.service"]);
    let main_pid: u32 = manager.systemctl_ok(&["show", "-P", "MainPID", "inspeq-lookup.service"]).parse().unwrap();
    let control_group = manager.systemctl_ok(&["show", "-P", "ControlGroup", "inspeq-lookup.service"]);

    runtime().block_on(async {
        let systemd = user_systemd(&manager).await;
        let status = systemd.lookup(&name("inspeq-lookup")).await.unwrap();
        assert_eq!(up(&status), main_pid);
        let cgroup = status.cgroup.clone().expect("a running unit has a cgroup");
        assert_eq!(cgroup.path, tests::cgroup2_root().unwrap().join(control_group.trim_start_matches('/')));
        assert!(cgroup.path.starts_with(&manager.cgroup.dir), "{cgroup:?} is not under the manager's cgroup");
        assert_eq!(cgroup.id, std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&cgroup.path).unwrap()));
        assert!(cgroup_procs(&cgroup.path).contains(&main_pid));
        assert_eq!(status.wrapper, None, "perl is the server itself");
        assert_eq!(status.watch_target(), Some(WatchTarget::CgroupId(cgroup.id)));

        // The same unit, named in full.
        assert_eq!(systemd.lookup(&name("inspeq-lookup.service")).await.unwrap().main_pid, Some(main_pid));
    });
}

#[test]
fn systemd_unknown_unit_is_not_found_and_a_stopped_one_is_down() {
    if !privileged_with("systemd_unknown_unit_is_not_found_and_a_stopped_one_is_down", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("states");
    let scratch = Scratch::new("systemd-states");
    manager.add_unit("inspeq-stopped.service", &service_unit(&scratch, &scratch.dir.join("marks"), ""));
    runtime().block_on(async {
        let systemd = user_systemd(&manager).await;
        let missing = systemd.lookup(&name("inspeq-no-such-unit")).await.unwrap();
        assert_eq!(missing.state, ServiceState::NotFound, "{missing:?}");
        let stopped = systemd.lookup(&name("inspeq-stopped")).await.unwrap();
        assert_eq!(
            (stopped.state, stopped.main_pid, stopped.cgroup.as_ref()),
            (ServiceState::Down, None, None),
            "{stopped:?}"
        );
        let err = systemd.restart(&name("inspeq-no-such-unit")).await.unwrap_err();
        assert!(matches!(err, InitError::NotFound { init: InitKind::Systemd, .. }), "{err}");
        // Restarting a stopped unit starts it.
        systemd.restart(&name("inspeq-stopped")).await.unwrap();
        up(&systemd.lookup(&name("inspeq-stopped")).await.unwrap());
    });
}

#[test]
fn systemd_restart_gives_a_new_cgroup_that_is_announced_and_the_kernel_watch_follows() {
    if !privileged_with(
        "systemd_restart_gives_a_new_cgroup_that_is_announced_and_the_kernel_watch_follows",
        SYSTEMD_USER,
    ) {
        return;
    }
    let manager = UserManager::start("restart");
    let scratch = Scratch::new("systemd-restart");
    let marks_file = scratch.dir.join("marks");
    manager.add_unit("inspeq-restart.service", &service_unit(&scratch, &marks_file, ""));
    manager.systemctl_ok(&["start", "inspeq-restart.service"]);
    let service = name("inspeq-restart");

    runtime().block_on(async {
        let mut monitor = ebpf();
        let systemd = user_systemd(&manager).await;
        let before = systemd.lookup(&service).await.unwrap();
        let (old_pid, old_cgroup) = (up(&before), before.cgroup.clone().unwrap());

        let (tx, mut changes) = tokio::sync::mpsc::channel(16);
        let _subscription = systemd.subscribe(&service, tx).await.unwrap().expect("systemd announces changes");
        systemd.restart(&service).await.expect("restart");

        // The announcement, not a poll, brings the new pid and cgroup.
        let after = tokio::time::timeout(LIMIT, async {
            loop {
                let change = changes.recv().await.expect("the subscription ended");
                assert_eq!(change.service, service);
                if change.status.state == ServiceState::Up && change.status.main_pid != Some(old_pid) {
                    break change.status;
                }
            }
        })
        .await
        .expect("no change announced after the restart");
        let new_pid = up(&after);
        let new_cgroup = after.cgroup.clone().expect("the restarted unit has a cgroup");
        assert_ne!(new_cgroup.id, old_cgroup.id, "systemd recreates the unit's cgroup on restart");
        assert_eq!(systemd.lookup(&service).await.unwrap(), after);

        // The re-keyed watch sees the new main process crash.
        kill9_is_observed(&mut monitor, &after.watch_target().unwrap(), new_pid).await;
        // And the unit leaving `active` is announced too.
        let down = tokio::time::timeout(LIMIT, async {
            loop {
                let change = changes.recv().await.expect("the subscription ended");
                if change.status.state != ServiceState::Up {
                    break change.status;
                }
            }
        })
        .await
        .expect("the crash was not announced");
        assert_eq!(down.main_pid, None, "{down:?}");
    });
}

#[test]
fn systemd_reload_runs_exec_reload_which_signals_the_process() {
    if !privileged_with("systemd_reload_runs_exec_reload_which_signals_the_process", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("reload");
    let scratch = Scratch::new("systemd-reload");
    let marks_file = scratch.dir.join("marks");
    manager.add_unit("inspeq-reload.service", &service_unit(&scratch, &marks_file, ""));
    manager.systemctl_ok(&["start", "inspeq-reload.service"]);
    runtime().block_on(async {
        let systemd = user_systemd(&manager).await;
        let service = name("inspeq-reload");
        let before = systemd.lookup(&service).await.unwrap();
        wait_for("the service to start", LIMIT, || (marks(&marks_file) == ["START"]).then_some(()));
        systemd.reload(&service).await.expect("reload");
        wait_for("USR1 to reach the service", LIMIT, || (marks(&marks_file) == ["START", "USR1"]).then_some(()));
        // A reload is not a restart: same process, same cgroup.
        assert_eq!(systemd.lookup(&service).await.unwrap(), before);
    });
}

#[test]
fn systemd_user_manager_is_found_through_its_runtime_dir() {
    if !privileged_with("systemd_user_manager_is_found_through_its_runtime_dir", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("runtime-dir");
    let scratch = Scratch::new("systemd-runtime-dir");
    manager.add_unit("inspeq-rt.service", &service_unit(&scratch, &scratch.dir.join("marks"), ""));
    manager.systemctl_ok(&["start", "inspeq-rt.service"]);
    let main_pid: u32 = manager.systemctl_ok(&["show", "-P", "MainPID", "inspeq-rt.service"]).parse().unwrap();
    runtime().block_on(async {
        let mut options = SystemdOptions::new(Scope::User);
        options.runtime_dir = Some(manager.runtime_dir.clone());
        let systemd = Systemd::connect(options).await.expect("connecting through XDG_RUNTIME_DIR");
        assert_eq!(up(&systemd.lookup(&name("inspeq-rt")).await.unwrap()), main_pid);
    });
}

#[test]
fn systemd_a_shell_wrapper_is_reported_and_the_cgroup_still_sees_the_server_crash() {
    if !privileged_with(
        "systemd_a_shell_wrapper_is_reported_and_the_cgroup_still_sees_the_server_crash",
        &[SYSTEMD_USER[0], SYSTEMD_USER[1], SYSTEMD_USER[2], "/usr/bin/logger"],
    ) {
        return;
    }
    let manager = UserManager::start("wrapper");
    let scratch = Scratch::new("systemd-wrapper");
    let command = scratch.service_command(&scratch.dir.join("marks")).join(" ");
    manager.add_unit(
        "inspeq-wrapped.service",
        // logger quits without /dev/log where /run/systemd/system exists, unless told not to mind.
        &format!("[Service]\nExecStart=/bin/sh -c '{command} 2>&1 | logger --socket-errors=off -t inspeq-wrapped'\n"),
    );
    manager.systemctl_ok(&["start", "inspeq-wrapped.service"]);
    runtime().block_on(async {
        let mut monitor = ebpf();
        let systemd = user_systemd(&manager).await;
        let status = lookup_until(&systemd, &name("inspeq-wrapped"), "the pipeline to start", |s| {
            matches!(s.wrapper, Some(Wrapper::LoggerPipeline { server: Some(_), .. }))
        })
        .await;
        let server = status.wrapper.as_ref().unwrap().server_pid().unwrap();
        assert_ne!(Some(server), status.main_pid);
        assert!(status.is_main_process(server), "the server behind the wrapper counts as the main process");
        kill9_is_observed(&mut monitor, &status.watch_target().unwrap(), server).await;
    });
}

// ---------------------------------------------------------------- runit

fn runit(dir: &RunitDir, reload_signal: ReloadSignal) -> Runit {
    Runit::new(RunitOptions { service_dir: dir.service_dir.clone(), reload_signal, ..RunitOptions::default() })
}

#[test]
fn runit_lookup_finds_the_supervised_pid_and_a_kill_is_observed() {
    if !privileged_with(
        "runit_lookup_finds_the_supervised_pid_and_a_kill_is_observed",
        &["/usr/bin/runsvdir", "/usr/bin/sv"],
    ) {
        return;
    }
    let mut dir = RunitDir::start("lookup");
    let marks_file = dir.scratch.dir.join("marks");
    let command = dir.scratch.service_command(&marks_file);
    let pid = dir.add_service("web", &command);
    runtime().block_on(async {
        let mut monitor = ebpf();
        let runit = runit(&dir, ReloadSignal::Hup);
        let status = runit.lookup(&name("web")).await.unwrap();
        assert_eq!(up(&status), pid);
        assert_eq!(status.wrapper, None);
        assert_eq!(status.watch_target(), Some(WatchTarget::Tree(pid)));
        kill9_is_observed(&mut monitor, &WatchTarget::Tree(pid), pid).await;
        // runsv brings it back with a new pid, which the next lookup finds.
        let again =
            lookup_until(&runit, &name("web"), "runsv to restart it", |s| s.main_pid.is_some_and(|p| p != pid)).await;
        assert_eq!(Some(up(&again)), dir.running_pid("web"));
    });
}

#[test]
fn runit_restart_yields_a_new_pid_and_reload_sends_the_configured_signal() {
    if !privileged_with(
        "runit_restart_yields_a_new_pid_and_reload_sends_the_configured_signal",
        &["/usr/bin/runsvdir", "/usr/bin/sv"],
    ) {
        return;
    }
    let mut dir = RunitDir::start("restart");
    let marks_file = dir.scratch.dir.join("marks");
    let command = dir.scratch.service_command(&marks_file);
    let old = dir.add_service("app", &command);
    runtime().block_on(async {
        let runit = runit(&dir, ReloadSignal::Usr1);
        let service = name("app");
        wait_for("the service to start", LIMIT, || (marks(&marks_file) == ["START"]).then_some(()));
        runit.reload(&service).await.expect("reload");
        wait_for("USR1 to reach the service", LIMIT, || (marks(&marks_file) == ["START", "USR1"]).then_some(()));
        assert_eq!(up(&runit.lookup(&service).await.unwrap()), old, "a reload keeps the process");

        runit.restart(&service).await.expect("restart");
        let new = up(&runit.lookup(&service).await.unwrap());
        assert_ne!(new, old);
        assert_eq!(Some(new), dir.running_pid("app"));
    });
}

#[test]
fn runit_unknown_service_is_not_found_and_a_stopped_one_is_down() {
    if !privileged_with(
        "runit_unknown_service_is_not_found_and_a_stopped_one_is_down",
        &["/usr/bin/runsvdir", "/usr/bin/sv"],
    ) {
        return;
    }
    let mut dir = RunitDir::start("states");
    let command = dir.scratch.service_command(&dir.scratch.dir.join("marks"));
    dir.add_service("idle", &command);
    let out = dir.sv(&["-w", "5", "down", "idle"]);
    assert!(out.status.success(), "sv down: {}", String::from_utf8_lossy(&out.stdout));
    runtime().block_on(async {
        let runit = runit(&dir, ReloadSignal::Hup);
        assert_eq!(runit.lookup(&name("nosuch")).await.unwrap().state, ServiceState::NotFound);
        let down = runit.lookup(&name("idle")).await.unwrap();
        assert_eq!((down.state, down.main_pid), (ServiceState::Down, None), "{down:?}");
        assert!(matches!(runit.restart(&name("nosuch")).await, Err(InitError::NotFound { .. })));
        // Restart brings a downed service up.
        runit.restart(&name("idle")).await.expect("restart");
        up(&runit.lookup(&name("idle")).await.unwrap());
    });
}

// ---------------------------------------------------------------- init.d

fn initd(dir: &InitdDir) -> InitD {
    InitD::new(InitDOptions {
        script_dir: dir.script_dir.clone(),
        run_dir: dir.run_dir.clone(),
        ..InitDOptions::default()
    })
}

fn pidfile_pid(path: &Path) -> u32 {
    wait_for(&format!("{}", path.display()), LIMIT, || std::fs::read_to_string(path).ok()?.trim().parse().ok())
}

#[test]
fn initd_lookup_restart_reload_and_kill() {
    if !privileged_with("initd_lookup_restart_reload_and_kill", &["/sbin/start-stop-daemon"]) {
        return;
    }
    let mut dir = InitdDir::new("cycle");
    let marks_file = dir.scratch.dir.join("marks");
    let command = dir.scratch.service_command(&marks_file);
    dir.add_script("inspeq-web", &command, None, "USR2");
    dir.invoke("inspeq-web", "start");
    let pid = pidfile_pid(&dir.run_dir.join("inspeq-web.pid"));
    runtime().block_on(async {
        let mut monitor = ebpf();
        let initd = initd(&dir);
        let service = name("inspeq-web");
        let status = initd.lookup(&service).await.unwrap();
        assert_eq!(up(&status), pid);

        wait_for("the service to start", LIMIT, || (marks(&marks_file) == ["START"]).then_some(()));
        initd.reload(&service).await.expect("reload");
        wait_for("USR2 to reach the service", LIMIT, || (marks(&marks_file) == ["START", "USR2"]).then_some(()));

        initd.restart(&service).await.expect("restart");
        let new = up(&lookup_until(&initd, &service, "a new pid", |s| s.main_pid.is_some_and(|p| p != pid)).await);
        assert!(!tests_process_alive(pid), "the old process is gone");

        kill9_is_observed(&mut monitor, &WatchTarget::Tree(new), new).await;
        // Nothing restarts it: the pidfile is left stale. (The kernel reports the
        // exit a moment before /proc shows the process as dead.)
        let stale = lookup_until(&initd, &service, "the service to be down", |s| s.state == ServiceState::Down).await;
        assert!(stale.detail.contains("stale"), "{stale:?}");
    });
}

#[test]
fn initd_pidfiles_in_a_subdirectory_or_configured_are_found() {
    if !privileged_with("initd_pidfiles_in_a_subdirectory_or_configured_are_found", &["/sbin/start-stop-daemon"]) {
        return;
    }
    let mut dir = InitdDir::new("pidfiles");
    let command = dir.scratch.service_command(&dir.scratch.dir.join("marks"));
    std::fs::create_dir_all(dir.run_dir.join("inspeq-sub")).unwrap();
    let sub = dir.run_dir.join("inspeq-sub/inspeq-sub.pid");
    dir.add_script("inspeq-sub", &command, Some(&sub), "HUP");
    let custom = dir.scratch.dir.join("custom.pid");
    dir.add_script("inspeq-custom", &command, Some(&custom), "HUP");
    dir.invoke("inspeq-sub", "start");
    dir.invoke("inspeq-custom", "start");
    runtime().block_on(async {
        assert_eq!(up(&initd(&dir).lookup(&name("inspeq-sub")).await.unwrap()), pidfile_pid(&sub));
        // `with pidfile PATH` for a pidfile the defaults would not find.
        assert_eq!(initd(&dir).lookup(&name("inspeq-custom")).await.unwrap().state, ServiceState::Down);
        let mut options = InitDOptions {
            script_dir: dir.script_dir.clone(),
            run_dir: dir.run_dir.clone(),
            ..InitDOptions::default()
        };
        options.pidfiles.insert(name("inspeq-custom"), custom.clone());
        assert_eq!(up(&InitD::new(options).lookup(&name("inspeq-custom")).await.unwrap()), pidfile_pid(&custom));
    });
}

#[test]
fn initd_unknown_script_is_not_found_and_a_stopped_service_is_down() {
    if !privileged_with("initd_unknown_script_is_not_found_and_a_stopped_service_is_down", &["/sbin/start-stop-daemon"])
    {
        return;
    }
    let mut dir = InitdDir::new("states");
    let command = dir.scratch.service_command(&dir.scratch.dir.join("marks"));
    dir.add_script("inspeq-idle", &command, None, "HUP");
    runtime().block_on(async {
        let initd = initd(&dir);
        assert_eq!(initd.lookup(&name("inspeq-nosuch")).await.unwrap().state, ServiceState::NotFound);
        assert!(matches!(initd.restart(&name("inspeq-nosuch")).await, Err(InitError::NotFound { .. })));
        assert_eq!(initd.lookup(&name("inspeq-idle")).await.unwrap().state, ServiceState::Down);
        initd.restart(&name("inspeq-idle")).await.expect("restart starts a stopped service");
        up(&lookup_until(&initd, &name("inspeq-idle"), "the service to start", |s| s.state == ServiceState::Up).await);
    });
}

fn tests_process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| !r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- upstart (fake initctl)

fn upstart(fake: &FakeUpstart) -> Upstart {
    Upstart::new(UpstartOptions {
        initctl: fake.initctl.clone(),
        job_dir: fake.job_dir.clone(),
        timeouts: Timeouts::default(),
    })
}

#[test]
fn upstart_lookup_restart_reload_and_kill() {
    if !privileged_with("upstart_lookup_restart_reload_and_kill", &["/sbin/start-stop-daemon"]) {
        return;
    }
    let mut fake = FakeUpstart::new("cycle");
    let marks_file = fake.scratch.dir.join("marks");
    let command = fake.scratch.service_command(&marks_file);
    fake.add_job("inspeq-puma", &format!("description \"test\"\nexec {}\nreload signal SIGUSR1\n", command.join(" ")));
    let out = fake.initctl(&["start", "inspeq-puma"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    runtime().block_on(async {
        let mut monitor = ebpf();
        let upstart = upstart(&fake);
        let service = name("inspeq-puma");
        let old = up(&upstart.lookup(&service).await.unwrap());
        assert!(cgroup_procs(&fake.cgroup.dir).contains(&old), "the fake runs real processes");

        wait_for("the service to start", LIMIT, || (marks(&marks_file) == ["START"]).then_some(()));
        upstart.reload(&service).await.expect("reload");
        wait_for("USR1 to reach the service", LIMIT, || (marks(&marks_file) == ["START", "USR1"]).then_some(()));

        upstart.restart(&service).await.expect("restart");
        let new = up(&upstart.lookup(&service).await.unwrap());
        assert_ne!(new, old);

        kill9_is_observed(&mut monitor, &WatchTarget::Tree(new), new).await;
        lookup_until(&upstart, &service, "the job to be down", |s| s.state == ServiceState::Down).await;
    });
}

#[test]
fn upstart_unknown_job_is_not_found_and_a_stopped_one_is_down() {
    if !privileged_with("upstart_unknown_job_is_not_found_and_a_stopped_one_is_down", &["/sbin/start-stop-daemon"]) {
        return;
    }
    let mut fake = FakeUpstart::new("states");
    let command = fake.scratch.service_command(&fake.scratch.dir.join("marks"));
    fake.add_job("inspeq-idle", &format!("exec {}\n", command.join(" ")));
    runtime().block_on(async {
        let upstart = upstart(&fake);
        assert_eq!(upstart.lookup(&name("inspeq-nosuch")).await.unwrap().state, ServiceState::NotFound);
        let down = upstart.lookup(&name("inspeq-idle")).await.unwrap();
        assert_eq!((down.state, down.detail.as_str()), (ServiceState::Down, "stop/waiting"));
        assert!(matches!(upstart.reload(&name("inspeq-idle")).await, Err(InitError::Failed { .. })));
        // `initctl restart` of a stopped job fails; restart starts it instead.
        upstart.restart(&name("inspeq-idle")).await.expect("restart");
        up(&upstart.lookup(&name("inspeq-idle")).await.unwrap());
    });
}

#[test]
fn upstart_logger_pipeline_is_reported_and_the_servers_crash_is_seen_through_the_tree() {
    if !privileged_with(
        "upstart_logger_pipeline_is_reported_and_the_servers_crash_is_seen_through_the_tree",
        &["/sbin/start-stop-daemon", "/usr/bin/logger"],
    ) {
        return;
    }
    let mut fake = FakeUpstart::new("wrapper");
    let command = fake.scratch.service_command(&fake.scratch.dir.join("marks"));
    // The seed post's pitfall: upstart runs this through `sh -e -c`, and the
    // shell — not the server — is the job's process.
    fake.add_job("inspeq-piped", &format!("exec {} 2>&1 | logger -t inspeq-piped\n", command.join(" ")));
    assert!(fake.initctl(&["start", "inspeq-piped"]).status.success());
    runtime().block_on(async {
        let mut monitor = ebpf();
        let upstart = upstart(&fake);
        let status = lookup_until(&upstart, &name("inspeq-piped"), "the pipeline", |s| {
            matches!(s.wrapper, Some(Wrapper::LoggerPipeline { server: Some(_), .. }))
        })
        .await;
        let shell = up(&status);
        let server = status.wrapper.as_ref().unwrap().server_pid().unwrap();
        assert_ne!(server, shell);
        // The watch is the shell's tree, so the server's crash is seen even
        // though the job's process (the shell) lives on a moment longer.
        kill9_is_observed(&mut monitor, &status.watch_target().unwrap(), server).await;
    });
}

// ---------------------------------------------------------------- check process (pidfile, matching)

#[test]
fn process_by_pidfile_restarts_with_its_restart_command_and_reloads_by_signal() {
    if !privileged_with(
        "process_by_pidfile_restarts_with_its_restart_command_and_reloads_by_signal",
        &["/sbin/start-stop-daemon"],
    ) {
        return;
    }
    // An init.d-style script, run here as a plain `restart_command`.
    let mut dir = InitdDir::new("process");
    let marks_file = dir.scratch.dir.join("marks");
    let command = dir.scratch.service_command(&marks_file);
    let pidfile = dir.scratch.dir.join("daemon.pid");
    let script = dir.add_script("inspeq-daemon", &command, Some(&pidfile), "HUP");
    dir.invoke("inspeq-daemon", "start");
    let old = pidfile_pid(&pidfile);
    runtime().block_on(async {
        let mut monitor = ebpf();
        let process = ProcessService::new(ProcessOptions {
            locator: ProcessLocator::Pidfile(pidfile.clone()),
            restart_command: Argv::new([script.display().to_string(), "restart".to_owned()]),
            reload_signal: ReloadSignal::Usr2,
            timeouts: Timeouts::default(),
        });
        let service = name("daemon");
        assert_eq!(process.kind(), InitKind::Process);
        assert_eq!(up(&process.lookup(&service).await.unwrap()), old);

        wait_for("the service to start", LIMIT, || (marks(&marks_file) == ["START"]).then_some(()));
        process.reload(&service).await.expect("reload");
        wait_for("USR2 to reach the process", LIMIT, || (marks(&marks_file) == ["START", "USR2"]).then_some(()));

        process.restart(&service).await.expect("restart");
        let new = up(&lookup_until(&process, &service, "a new pid", |s| s.main_pid.is_some_and(|p| p != old)).await);
        kill9_is_observed(&mut monitor, &WatchTarget::Tree(new), new).await;
        lookup_until(&process, &service, "the process to be down", |s| s.state == ServiceState::Down).await;
    });
}

#[test]
fn process_without_a_restart_command_cannot_be_restarted() {
    let process = ProcessService::new(ProcessOptions {
        locator: ProcessLocator::Pidfile("/nonexistent/inspeq.pid".into()),
        restart_command: None,
        reload_signal: ReloadSignal::Hup,
        timeouts: Timeouts::default(),
    });
    runtime().block_on(async {
        let status = process.lookup(&name("x")).await.unwrap();
        assert_eq!(status.state, ServiceState::Down, "a configured process without its pidfile is down, not unknown");
        assert!(matches!(process.restart(&name("x")).await, Err(InitError::NoRestartCommand { .. })));
    });
}

#[test]
fn process_matching_a_command_line_is_found_and_watched_as_a_tree() {
    if !privileged_with("process_matching_a_command_line_is_found_and_watched_as_a_tree", &[]) {
        return;
    }
    let scratch = Scratch::new("matching");
    let marks_file = scratch.dir.join("marks");
    let command = scratch.service_command(&marks_file);
    let mut child = std::process::Command::new(&command[0]).args(&command[1..]).spawn().unwrap();
    let pid = child.id();
    runtime().block_on(async {
        let mut monitor = ebpf();
        let pattern = format!("perl .*{}", regex_escape(&marks_file.display().to_string()));
        let process = ProcessService::new(ProcessOptions {
            locator: ProcessLocator::matching(&pattern).unwrap(),
            restart_command: None,
            reload_signal: ReloadSignal::Hup,
            timeouts: Timeouts::default(),
        });
        let status = process.lookup(&name("matched")).await.unwrap();
        assert_eq!(up(&status), pid);
        assert_eq!(status.watch_target(), Some(WatchTarget::Tree(pid)));
        kill9_is_observed(&mut monitor, &WatchTarget::Tree(pid), pid).await;
    });
    let _ = child.wait();
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '/' || c == '-' { c.to_string() } else { format!("\\{c}") })
        .collect()
}

// ---------------------------------------------------------------- resolution

#[test]
fn a_service_resolves_to_the_first_init_system_that_knows_it() {
    if !privileged_with(
        "a_service_resolves_to_the_first_init_system_that_knows_it",
        &["/usr/bin/runsvdir", "/sbin/start-stop-daemon"],
    ) {
        return;
    }
    let fake = FakeUpstart::new("resolve");
    let mut dir = RunitDir::start("resolve");
    let command = dir.scratch.service_command(&dir.scratch.dir.join("marks"));
    let pid = dir.add_service("only-in-runit", &command);
    runtime().block_on(async {
        let systems: Vec<Arc<dyn InitSystem>> =
            vec![Arc::new(upstart(&fake)), Arc::new(runit(&dir, ReloadSignal::Hup))];
        let (found, errors) = resolve(&systems, &name("only-in-runit")).await;
        assert!(errors.is_empty(), "{errors:?}");
        let (index, status) = found.expect("runit knows it");
        assert_eq!((index, status.main_pid), (1, Some(pid)));
        let (found, _) = resolve(&systems, &name("nowhere")).await;
        assert!(found.is_none(), "an unknown service resolves to nothing, to be looked up again next cycle");
    });
}
