//! inspeq beside a real systemd user manager, agreeing with it: an operator's
//! `systemctl stop` and `systemctl restart` are no crash, a crash systemd
//! restarts by itself is not restarted twice, a failed restart is alerted with
//! its cause, the built-in restart limit stops a restart loop, a worker's death
//! is an event, and a service that died during a deploy is judged when the
//! deploy ends. The real `inspeqd`, its log (stderr) and alerts (stdout); units
//! run `inspeq-workload`, whose `serve` dies at once of SIGTERM's default action
//! (the hardest case: its exit reaches inspeq before any D-Bus message about
//! the stop does).
//!
//! Time limits are hang guards; "nothing happens" is checked over counted
//! cycles, never over a sleep.

use std::{path::Path, time::Duration};

use tests::{
    daemon_harness::{Daemon, is_alert},
    init_harness::{Scratch, UserManager, kill9, marks, wait_for},
    privileged_with,
};

const LIMIT: Duration = Duration::from_secs(10);
const INIT_LIMIT: Duration = Duration::from_secs(20);
const WORKLOAD: &str = env!("CARGO_BIN_EXE_inspeq-workload");
const SYSTEMD_USER: &[&str] = &["/lib/systemd/systemd", "/usr/bin/dbus-daemon", "/usr/lib/systemd/user/dbus.socket"];

/// A one-second cycle, and a host rule whose samples count the cycles.
const CONF: &str = "set cycle_time 1\nset deploy_length 60\n";
const HOST: &str = "check host\n  if load:1 > 100000 then alert\n";

/// A unit running `inspeq-workload ARGS`, with extra `[Service]` lines.
fn unit(args: &str, service: &str) -> String {
    format!("[Unit]\nDescription=inspeq supervision test\n\n[Service]\nExecStart={WORKLOAD} {args}\n{service}\n")
}

fn main_pid(manager: &UserManager, unit: &str) -> u32 {
    manager.systemctl_ok(&["show", "-P", "MainPID", unit]).parse().unwrap()
}

/// Cycles the daemon has run so far (one host sample each).
fn cycles(daemon: &Daemon) -> usize {
    let show = daemon.ctl_ok(&["show", "host", "load:1"]);
    if show.contains("no values yet") { 0 } else { show.lines().nth(1).unwrap_or("").chars().count() }
}

/// Waits until `n` more cycles have run: what happens late shows up by then.
fn let_cycles_pass(daemon: &Daemon, n: usize) {
    let start = cycles(daemon);
    wait_for(&format!("{n} more cycles"), LIMIT + Duration::from_secs(n as u64), || {
        (cycles(daemon) >= start + n).then_some(())
    });
}

fn count(daemon: &Daemon, service: &str, event: &str) -> usize {
    daemon.stdout.count(|l| is_alert(l, service, event))
}

fn restart_requests(daemon: &Daemon, service: &str) -> usize {
    daemon.stderr.count(|l| l.contains(&format!("service `{service}`: restart requested")))
}

/// A user manager running `unit_text` as `SERVICE.service`, started, and an
/// inspeqd watching it with `rules`.
struct Setup {
    manager: UserManager,
    daemon: Daemon,
    service: String,
    unit: String,
    first: u32,
    scratch: Scratch,
}

fn setup(tag: &str, unit_text: impl FnOnce(&Path) -> String, rules: &str) -> Setup {
    let manager = UserManager::start(&format!("supervision-{tag}"));
    let scratch = Scratch::new(&format!("supervision-{tag}"));
    let service = format!("inspeq-sup-{tag}");
    let unit = format!("{service}.service");
    manager.add_unit(&unit, &unit_text(&scratch.dir));
    manager.systemctl_ok(&["start", &unit]);
    let first = wait_for("the unit's main pid", INIT_LIMIT, || Some(main_pid(&manager, &unit)).filter(|p| *p != 0));
    let daemon = Daemon::builder(&format!("supervision-{tag}"))
        .file("inspeq.conf", CONF)
        .file("host.inq", HOST)
        .file("services.d/unit.inq", &format!("check service {service} with scope user\n{rules}"))
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(&service, INIT_LIMIT), first);
    Setup { manager, daemon, service, unit, first, scratch }
}

#[test]
fn an_operators_stop_is_no_crash_and_the_service_stays_stopped() {
    if !privileged_with("an_operators_stop_is_no_crash_and_the_service_stays_stopped", SYSTEMD_USER) {
        return;
    }
    let s = setup(
        "stop",
        |dir| unit(&format!("serve {}", dir.join("marks").display()), "Restart=no"),
        "  if crashed then alert, restart\n",
    );
    s.manager.systemctl_ok(&["stop", &s.unit]);
    s.daemon.stderr.wait("the stop, as systemd's", LIMIT, |l| {
        l.contains(&format!("service `{}`: main process {} stopped by systemd", s.service, s.first))
    });
    let_cycles_pass(&s.daemon, 3);
    assert_eq!(s.manager.systemctl(&["is-active", &s.unit]).stdout, b"inactive\n", "it stays stopped");
    assert_eq!(
        (count(&s.daemon, &s.service, "crashed"), count(&s.daemon, &s.service, "process_down")),
        (0, 0),
        "{:#?}",
        s.daemon.stdout.all()
    );
    assert_eq!(restart_requests(&s.daemon, &s.service), 0, "{:#?}", s.daemon.stderr.all());
    assert_eq!(s.daemon.service(&s.service).unwrap()["state"], "down");

    // The operator's next start is the operator's: no alert to resolve, one restart counted.
    s.manager.systemctl_ok(&["start", &s.unit]);
    s.daemon.wait_up_not(&s.service, Some(s.first), INIT_LIMIT);
    assert_eq!(s.daemon.stdout.all(), Vec::<String>::new());
    assert_eq!(s.daemon.service(&s.service).unwrap()["restarts"], 1);
}

#[test]
fn an_operators_restarts_are_no_crash_and_each_is_counted_once() {
    if !privileged_with("an_operators_restarts_are_no_crash_and_each_is_counted_once", SYSTEMD_USER) {
        return;
    }
    let s = setup(
        "restart",
        |dir| unit(&format!("serve {}", dir.join("marks").display()), "Restart=no"),
        "  if crashed then alert, restart\n  if restarts > 10 within 5 minutes then alert\n",
    );
    // Several times: the exit of a process that dies of SIGTERM at once races
    // systemd's own report of the restart job every time.
    let mut pid = s.first;
    for round in 1..=4u64 {
        s.manager.systemctl_ok(&["restart", &s.unit]);
        pid = s.daemon.wait_up_not(&s.service, Some(pid), INIT_LIMIT);
        let_cycles_pass(&s.daemon, 2);
        let status = s.daemon.service(&s.service).unwrap();
        assert_eq!(status["restarts"], round, "round {round}: {status}");
        assert_eq!(status["pid"], main_pid(&s.manager, &s.unit), "{status}");
    }
    assert_eq!(s.daemon.stdout.all(), Vec::<String>::new(), "no alert at all");
    assert_eq!(restart_requests(&s.daemon, &s.service), 0, "{:#?}", s.daemon.stderr.all());
    assert_eq!(s.daemon.stderr.count(|l| l.contains("stopped by systemd")), 4);
}

#[test]
fn a_crash_systemd_restarts_by_itself_is_alerted_once_and_not_restarted_again() {
    if !privileged_with("a_crash_systemd_restarts_by_itself_is_alerted_once_and_not_restarted_again", SYSTEMD_USER) {
        return;
    }
    let s = setup(
        "auto",
        |dir| unit(&format!("serve {}", dir.join("marks").display()), "Restart=on-failure\nRestartSec=200ms"),
        "  if crashed then alert, restart\n",
    );
    kill9(s.first);
    let alert = s.daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, &s.service, "crashed"));
    assert!(alert.contains("killed by signal 9") && alert.contains("systemd is restarting it."), "{alert}");
    let second = s.daemon.wait_up_not(&s.service, Some(s.first), INIT_LIMIT);
    s.daemon.stdout.wait("the crash resolved", LIMIT, |l| {
        l.starts_with(&format!("alert: resolved service={} event=process_up", s.service))
    });
    let_cycles_pass(&s.daemon, 2);
    assert_eq!(restart_requests(&s.daemon, &s.service), 0, "{:#?}", s.daemon.stderr.all());
    assert_eq!(main_pid(&s.manager, &s.unit), second, "one restart, systemd's");
    assert_eq!(s.daemon.service(&s.service).unwrap()["restarts"], 1);
    assert_eq!(s.manager.systemctl_ok(&["show", "-P", "NRestarts", &s.unit]), "1");
}

#[test]
fn a_failed_restart_is_alerted_with_its_cause_and_resolved_by_the_next_start() {
    if !privileged_with("a_failed_restart_is_alerted_with_its_cause_and_resolved_by_the_next_start", SYSTEMD_USER) {
        return;
    }
    let s = setup(
        "failed",
        |dir| {
            let broken = dir.join("broken");
            unit(
                &format!("serve {}", dir.join("marks").display()),
                &format!("Restart=no\nExecStartPre=/bin/sh -c 'test ! -e {}'", broken.display()),
            )
        },
        "  if crashed then alert, restart\n",
    );
    let broken = s.scratch.dir.join("broken");
    std::fs::write(&broken, "").unwrap();
    kill9(s.first);
    s.daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, &s.service, "crashed"));
    let failed = s.daemon.stdout.wait("the failed restart", INIT_LIMIT, |l| is_alert(l, &s.service, "restart_failed"));
    assert!(failed.contains("restart failed") && failed.contains("result `failed`"), "{failed}");
    std::fs::remove_file(&broken).unwrap();
    s.manager.systemctl_ok(&["start", &s.unit]);
    s.daemon.wait_up_not(&s.service, Some(s.first), INIT_LIMIT);
    s.daemon.stdout.wait("the down resolved", LIMIT, |l| {
        l.starts_with(&format!("alert: resolved service={} event=process_up", s.service))
    });
}

#[test]
fn without_a_restarts_rule_a_service_that_keeps_crashing_is_unmonitored_at_the_restart_limit() {
    if !privileged_with(
        "without_a_restarts_rule_a_service_that_keeps_crashing_is_unmonitored_at_the_restart_limit",
        SYSTEMD_USER,
    ) {
        return;
    }
    // It lives two seconds (long enough for its start to be confirmed) and
    // exits 3; systemd's own start limit is off.
    let s = setup(
        "loop",
        |_| {
            format!(
                "[Unit]\nDescription=crash loop\nStartLimitIntervalSec=0\n\n[Service]\nExecStart={WORKLOAD} exit-after 2000 3\nRestart=no\n"
            )
        },
        "  if crashed then alert, restart\n",
    );
    s.daemon.stdout.wait("the restart limit", Duration::from_secs(60), |l| is_alert(l, &s.service, "flap_detected"));
    s.daemon.stderr.wait("unmonitored", LIMIT, |l| l.contains(&format!("service `{}`: unmonitored", s.service)));
    let_cycles_pass(&s.daemon, 3);
    assert_eq!(restart_requests(&s.daemon, &s.service), 6, "{:#?}", s.daemon.stderr.all());
    assert_eq!(count(&s.daemon, &s.service, "flap_detected"), 1);
    assert_eq!(s.daemon.service(&s.service).unwrap()["state"], "unmonitored");
}

#[test]
fn a_worker_killed_by_sigkill_is_a_worker_event_and_no_crash() {
    if !privileged_with("a_worker_killed_by_sigkill_is_a_worker_event_and_no_crash", SYSTEMD_USER) {
        return;
    }
    let marks_dir = tempfile::tempdir().unwrap();
    let marks_file = marks_dir.path().join("worker-marks");
    let s = setup(
        "worker",
        |_| unit(&format!("puma {}", marks_file.display()), "ExecReload=/bin/kill -USR1 $MAINPID\nRestart=no"),
        "  if worker crashed then alert\n  if crashed then alert, restart\n",
    );
    let line = wait_for("the workers", LIMIT, || marks(&marks_file).into_iter().next().filter(|m| m == "WORKERS"));
    assert_eq!(line, "WORKERS");
    let text = std::fs::read_to_string(&marks_file).unwrap();
    let worker: u32 = text.lines().next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    // A phased restart TERMs the workers: no event.
    s.manager.systemctl_ok(&["reload", &s.unit]);
    wait_for("the phased restart", LIMIT, || {
        (marks(&marks_file).iter().filter(|m| *m == "WORKERS").count() >= 2).then_some(())
    });
    let text = std::fs::read_to_string(&marks_file).unwrap();
    let worker_after: u32 = text.lines().last().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert_ne!(worker, worker_after);
    kill9(worker_after);
    let alert = s.daemon.stdout.wait("the worker alert", LIMIT, |l| is_alert(l, &s.service, "worker_crashed"));
    assert!(alert.contains(&format!("pid {worker_after} was killed by signal 9")), "{alert}");
    let_cycles_pass(&s.daemon, 2);
    assert_eq!(count(&s.daemon, &s.service, "worker_crashed"), 1, "{:#?}", s.daemon.stdout.all());
    assert_eq!(count(&s.daemon, &s.service, "crashed"), 0);
    let status = s.daemon.service(&s.service).unwrap();
    assert_eq!(
        (status["workers"]["crashed"].as_u64(), status["pid"].as_u64()),
        (Some(1), Some(u64::from(s.first))),
        "{status}"
    );
    let _ = std::fs::remove_file(&marks_file);
}

#[test]
fn a_service_that_died_during_a_deploy_is_judged_when_the_deploy_ends() {
    if !privileged_with("a_service_that_died_during_a_deploy_is_judged_when_the_deploy_ends", SYSTEMD_USER) {
        return;
    }
    let s = setup(
        "deploy",
        |dir| unit(&format!("serve {}", dir.join("marks").display()), "Restart=no"),
        "  if crashed then alert, restart\n",
    );
    s.daemon.ctl_ok(&["start", "deploy"]);
    kill9(s.first);
    s.daemon.stderr.wait("the exit", LIMIT, |l| l.contains(&format!("main process {} exited", s.first)));
    let_cycles_pass(&s.daemon, 2);
    assert_eq!(s.daemon.stdout.all(), Vec::<String>::new(), "silenced during the deploy");
    s.daemon.ctl_ok(&["finish", "deploy"]);
    let alert = s.daemon.stdout.wait("the crash, after the deploy", LIMIT, |l| is_alert(l, &s.service, "crashed"));
    assert!(alert.contains("killed by signal 9"), "{alert}");
    s.daemon.wait_up_not(&s.service, Some(s.first), INIT_LIMIT);
    assert_eq!(restart_requests(&s.daemon, &s.service), 1);
}

#[test]
fn a_frozen_init_system_does_not_stall_the_loop() {
    if !privileged_with("a_frozen_init_system_does_not_stall_the_loop", SYSTEMD_USER) {
        return;
    }
    // A systemd unit and a plain process, watched by one daemon.
    let s = setup(
        "frozen",
        |dir| unit(&format!("serve {}", dir.join("marks").display()), "Restart=no"),
        "  if crashed then alert\n",
    );
    let marks_file = s.scratch.dir.join("plain-marks");
    let mut plain = std::process::Command::new(WORKLOAD).arg("serve").arg(&marks_file).spawn().unwrap();
    wait_for("the plain process", LIMIT, || (!marks(&marks_file).is_empty()).then_some(()));
    s.daemon.write(
        "services.d/plain.inq",
        &format!(
            "check process plain with matching \"inspeq-workload serve {}$\"\n  if crashed then alert\n",
            marks_file.display()
        ),
    );
    s.daemon.signal(libc::SIGHUP);
    s.daemon.wait_up("plain", INIT_LIMIT);
    // systemd stops answering: the next reload connects to it and waits out its
    // 3 s timeout, in its own task.
    // SAFETY: signals to processes this test started.
    unsafe { libc::kill(s.manager.pid() as i32, libc::SIGSTOP) };
    s.daemon.signal(libc::SIGHUP);
    unsafe { libc::kill(plain.id() as i32, libc::SIGKILL) };
    let _ = plain.wait();
    // Meanwhile the loop goes on: the crash is alerted and status answers, before
    // the reload gives up on the frozen manager.
    s.daemon.stdout.wait("the crash, while systemd is frozen", LIMIT, |l| is_alert(l, "plain", "crashed"));
    assert!(s.daemon.service("plain").is_some());
    let unavailable = s
        .daemon
        .stderr
        .wait("the reload giving up on the frozen manager", LIMIT, |l| l.contains("systemd user scope unavailable"));
    let lines = s.daemon.stderr.all();
    let at = |needle: &str| lines.iter().position(|l| l.contains(needle));
    assert!(at("alert: plain: crashed") < at(&unavailable), "the crash waited for the frozen init system:\n{lines:#?}");
    unsafe { libc::kill(s.manager.pid() as i32, libc::SIGCONT) };
    s.daemon.stderr.wait_nth("the second reload in force", 1, INIT_LIMIT, |l| l.contains("reload: configuration from"));
}
