//! The daemon end to end: the real `inspeqd` and `inspeqctl` binaries, the real
//! kernel path, a real systemd user manager and real processes
//! (`inspeq-workload serve`). Alerts are read where an operator without routes
//! reads them, on the daemon's standard output; actions are seen in its log and in
//! what the services themselves record. Root and BTF needed (see
//! `tests::privileged`).
//!
//! Time limits below are hang guards, never performance assertions. The one
//! comparison with time (the memory rule) checks behaviour: the alert comes from
//! the kernel's crossing, so it arrives long before the next 30 s cycle could.

use std::{
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{
    TestCgroup,
    daemon_harness::{Daemon, is_alert},
    init_harness::{Scratch, UserManager, kill9, marks, wait_for},
    join_cgroups, privileged, privileged_with,
};

/// Hang guard for anything the daemon should do within milliseconds.
const LIMIT: Duration = Duration::from_secs(10);
/// Hang guard for what goes through an init system (restarts, D-Bus lookups).
const INIT_LIMIT: Duration = Duration::from_secs(20);

const WORKLOAD: &str = env!("CARGO_BIN_EXE_inspeq-workload");

/// A systemd user manager and the user bus its stock dbus.socket starts.
const SYSTEMD_USER: &[&str] = &["/lib/systemd/systemd", "/usr/bin/dbus-daemon", "/usr/lib/systemd/user/dbus.socket"];

/// `inspeq-workload serve MARKS` started by the test itself (no init system),
/// killed when dropped.
struct Workload {
    child: Child,
    marks: PathBuf,
}

impl Workload {
    fn start(scratch: &Scratch) -> Self {
        let marks_file = scratch.dir.join("marks");
        let child = Command::new(WORKLOAD)
            .arg("serve")
            .arg(&marks_file)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting inspeq-workload serve");
        wait_for("the workload to start", LIMIT, || marks(&marks_file).contains(&"START".to_owned()).then_some(()));
        Self { child, marks: marks_file }
    }

    /// A `matching` pattern for this workload alone: its marks path is unique to the test.
    fn pattern(&self) -> String {
        let path = self.marks.display().to_string();
        assert!(path.chars().all(|c| c.is_ascii_alphanumeric() || "/_-".contains(c)), "{path} needs regex escapes");
        format!("inspeq-workload serve {path}$")
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `inspeq.conf` with a cycle of `secs` seconds.
fn conf(secs: u64) -> String {
    format!("set cycle_time {secs}\nset deploy_length 60\n")
}

// ------------------------------------------------------------ check process

#[test]
fn a_matched_process_killed_with_sigkill_raises_one_crash_alert_naming_the_signal() {
    if !privileged("a_matched_process_killed_with_sigkill_raises_one_crash_alert_naming_the_signal") {
        return;
    }
    let scratch = Scratch::new("daemon-process-crash");
    let mut workload = Workload::start(&scratch);
    let daemon = Daemon::builder("process-crash")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/worker.inq",
            &format!(
                "check process inspeq-crash-worker with matching \"{}\"\n  if crashed then alert\n",
                workload.pattern()
            ),
        )
        .start();
    let pid = daemon.wait_up("inspeq-crash-worker", LIMIT);
    assert_eq!(pid, workload.child.id(), "the daemon found another process");

    kill9(pid);
    let _ = workload.child.wait();
    let alert = daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, "inspeq-crash-worker", "crashed"));
    assert!(alert.contains(&format!("pid {pid} was killed by signal 9")), "{alert}");
    // No second alert follows for the same death (several cycles later).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(daemon.stdout.count(|l| is_alert(l, "inspeq-crash-worker", "crashed")), 1, "{:#?}", daemon.stdout.all());
    assert_eq!(daemon.service("inspeq-crash-worker").unwrap()["state"], "down");
}

#[test]
fn without_ebpf_a_killed_process_is_a_crash_even_when_its_status_is_unknown() {
    if !privileged("without_ebpf_a_killed_process_is_a_crash_even_when_its_status_is_unknown") {
        return;
    }
    // (flags, tier, what the alert says): the process connector reads the wait
    // status even though the test reaps the process at once; /proc polling finds
    // it gone, and a `check process` has no init system to ask.
    for (flags, tier, how) in [
        (&["--no-ebpf"][..], "proc_connector", "was killed by signal 9 (SIGKILL)"),
        (&["--no-ebpf", "--no-proc-connector", "--no-pidfd"][..], "proc", "exited with an unknown status"),
    ] {
        let scratch = Scratch::new(&format!("daemon-tier-{tier}"));
        let mut workload = Workload::start(&scratch);
        let builder = Daemon::builder(&format!("tier-{tier}")).file("inspeq.conf", &conf(1)).file(
            "services.d/worker.inq",
            &format!(
                "check process inspeq-tier-worker with matching \"{}\"\n  if crashed then alert\n",
                workload.pattern()
            ),
        );
        let daemon = flags.iter().fold(builder, |b, f| b.arg(f)).start();
        assert_eq!(daemon.status()["kernel"]["mode"], tier);
        let pid = daemon.wait_up("inspeq-tier-worker", LIMIT);
        assert_eq!(pid, workload.child.id(), "the daemon found another process");
        kill9(pid);
        let _ = workload.child.wait();
        let alert = daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, "inspeq-tier-worker", "crashed"));
        assert!(alert.contains(&format!("pid {pid} {how}")), "{tier}: {alert}");
        assert_eq!(
            daemon.stdout.count(|l| is_alert(l, "inspeq-tier-worker", "crashed")),
            1,
            "{:#?}",
            daemon.stdout.all()
        );
    }
}

/// The kernel's exit record has the OOM killer's mark and the resident memory at exit; both reach the alert.
#[test]
fn an_oom_kill_is_alerted_with_the_processs_rss_at_exit() {
    if !privileged("an_oom_kill_is_alerted_with_the_processs_rss_at_exit") {
        return;
    }
    // The memory limit: cgroup v1's memory controller on hybrid hosts, else v2's memory.max (as in kernel.rs).
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (limits, file) = if v1.join("memory.limit_in_bytes").exists() {
        (TestCgroup::new_under(v1, "daemon-oom"), "memory.limit_in_bytes")
    } else {
        (TestCgroup::new("daemon-oom"), "memory.max")
    };
    if !limits.dir.join(file).exists() {
        eprintln!("skipped an_oom_kill_is_alerted_with_the_processs_rss_at_exit: no memory controller here");
        return;
    }
    std::fs::write(limits.dir.join(file), (16u64 << 20).to_string()).unwrap();
    let _ = std::fs::write(limits.dir.join("memory.swap.max"), "0");
    let scratch = Scratch::new("daemon-oom");
    // Found and watched first, then told to allocate 128 MiB under a 16 MiB limit: the same pid after `exec`.
    let marker = scratch.dir.join("oom");
    let mut command = Command::new("/bin/sh");
    command.arg("-c").arg(format!("read go; exec {WORKLOAD} alloc 128 0 0 {}", marker.display())).stdin(Stdio::piped());
    let mut child = join_cgroups(&mut command, &[&limits.dir]).spawn().unwrap();
    let daemon = Daemon::builder("oom")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/oom.inq",
            &format!(
                "check process inspeq-oom with matching \"alloc 128 0 0 {}$\"\n  if oom_killed then alert\n",
                marker.display()
            ),
        )
        .start();
    let pid = daemon.wait_up("inspeq-oom", LIMIT);
    assert_eq!(pid, child.id(), "the daemon found another process");
    writeln!(child.stdin.take().unwrap(), "go").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "the workload was not OOM-killed: {status:?}");
    let alert = daemon.stdout.wait("the OOM alert", LIMIT, |l| is_alert(l, "inspeq-oom", "oom_killed"));
    assert!(alert.contains(&format!("was killed by the OOM killer: pid {pid}, ")), "{alert}");
    assert!(alert.contains(" resident"), "no RSS at exit in: {alert}");
}

// ------------------------------------------------------------ shutdown

#[test]
fn sigterm_shuts_down_cleanly_removing_the_socket() {
    if !privileged("sigterm_shuts_down_cleanly_removing_the_socket") {
        return;
    }
    let mut daemon = Daemon::builder("sigterm").file("inspeq.conf", &conf(1)).start();
    // Mode 0660, so a deploy group can be given the socket without root.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&daemon.socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660, "socket mode {mode:o}");
    let status = daemon.terminate();
    assert!(status.success(), "inspeqd exited with {status}");
    assert!(!daemon.socket.exists(), "{} left behind", daemon.socket.display());
    assert!(daemon.stderr.count(|l| l.contains("inspeqd stopping")) == 1, "{:#?}", daemon.stderr.all());
}

#[test]
fn startup_refuses_a_live_socket_and_a_broken_config_but_replaces_a_stale_socket() {
    if !privileged("startup_refuses_a_live_socket_and_a_broken_config_but_replaces_a_stale_socket") {
        return;
    }
    // Not `daemon-startup`: that is the first daemon's own scratch directory,
    // whose state directory a second daemon may not share.
    let scratch = Scratch::new("daemon-startup-others");
    let run = |config_dir: &Path, socket: &Path| {
        Command::new(tests::inspeqd())
            .arg("--config-dir")
            .arg(config_dir)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(scratch.dir.join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // A second daemon on a live socket exits with a reason; the first keeps answering.
    let mut first = Daemon::builder("startup").file("inspeq.conf", &conf(1)).start();
    let out = run(&first.config_dir, &first.socket);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("another inspeqd answers on"), "{stderr}");
    first.ctl_ok(&["status"]);
    assert!(first.running());

    // A broken configuration: every problem with file:line:col, and no daemon.
    let broken = scratch.dir.join("broken");
    std::fs::create_dir_all(broken.join("services.d")).unwrap();
    std::fs::write(broken.join("inspeq.conf"), "set cycle_time 1\n").unwrap();
    std::fs::write(broken.join("services.d/web.inq"), "check service web\n  if memory:rss > then alert\n").unwrap();
    let out = run(&broken, &scratch.dir.join("broken.sock"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("web.inq:2:"), "{stderr}");
    assert!(!scratch.dir.join("broken.sock").exists());

    // A socket file left by a daemon that died (nobody answers) is replaced.
    let stale = scratch.dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut child = Command::new(tests::inspeqd())
        .arg("--config-dir")
        .arg(&first.config_dir)
        .arg("--socket")
        .arg(&stale)
        .arg("--state-dir")
        .arg(scratch.dir.join("state2"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let answered = wait_for("the daemon on the stale socket to answer", LIMIT, || {
        if child.try_wait().unwrap().is_some() {
            return Some(false);
        }
        let out = Command::new(tests::inspeqctl()).arg("--socket").arg(&stale).arg("status").output().unwrap();
        out.status.success().then_some(true)
    });
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(answered, "inspeqd exited instead of replacing the stale socket ({status})");
    assert!(status.success(), "SIGINT: {status}");
    assert!(!stale.exists());
}

// ------------------------------------------------------------ a log nobody reads

/// `status` over the socket itself (no `inspeqctl` process per request, so that
/// thousands take seconds); `None` when the daemon did not answer within 10 s.
fn raw_status(socket: &Path) -> Option<String> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"{\"version\":1,\"command\":\"status\"}\n").ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    (!line.is_empty()).then_some(line)
}

#[test]
fn an_inspeqd_whose_stderr_nobody_reads_still_answers_and_alerts_a_crash() {
    if !privileged("an_inspeqd_whose_stderr_nobody_reads_still_answers_and_alerts_a_crash") {
        return;
    }
    let scratch = Scratch::new("daemon-stuck-stderr");
    let mut workload = Workload::start(&scratch);
    // At debug, every `status` logs a line: thousands of them are far more than
    // the pipe (64 KiB) and the daemon's log queue hold.
    let daemon = Daemon::builder("stuck-stderr")
        .arg("--log-level")
        .arg("debug")
        .stderr_unread()
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/worker.inq",
            &format!(
                "check process inspeq-stuck-worker with matching \"{}\"\n  if crashed then alert\n",
                workload.pattern()
            ),
        )
        .start();
    let pid = daemon.wait_up("inspeq-stuck-worker", LIMIT);
    for i in 0..4000 {
        assert!(raw_status(&daemon.socket).is_some(), "inspeqd stopped answering after {i} status requests");
    }
    let status = daemon.status();
    assert!(status["log"]["dropped_lines"].as_u64().is_some_and(|n| n > 0), "no log line dropped: {}", status["log"]);

    kill9(pid);
    let _ = workload.child.wait();
    let alert = daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, "inspeq-stuck-worker", "crashed"));
    assert!(alert.contains(&format!("pid {pid} was killed by signal 9")), "{alert}");
    assert!(daemon.ctl_ok(&["status"]).contains("line(s) dropped because standard error was not being read"));
}

// ------------------------------------------------------------ control commands

fn ctl_fails(daemon: &Daemon, args: &[&str]) -> String {
    let out = daemon.ctl(args);
    assert!(!out.status.success(), "inspeqctl {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).unwrap()
}

fn service_names(daemon: &Daemon) -> Vec<String> {
    let status = daemon.status();
    status["services"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect()
}

/// A process check on a command line nothing runs: registered, never up.
fn absent_process(name: &str) -> String {
    format!("check process {name} with matching \"^inspeq-no-such-process-{name}$\"\n  if crashed then alert\n")
}

#[test]
fn every_control_command_answers() {
    if !privileged("every_control_command_answers") {
        return;
    }
    let scratch = Scratch::new("daemon-control");
    let workload = Workload::start(&scratch);
    let daemon = Daemon::builder("control")
        .file("inspeq.conf", &conf(1))
        .file("host.inq", "check host\n  if load:1 > 100000 then alert\n")
        .file("jobs.d/x.inq", "check jobs\nnightly happens every 1 day\n")
        .file(
            "services.d/web.inq",
            &format!(
                "check process inspeq-ctl-web with matching \"{}\"\n  if memory:rss > 100g then alert\n",
                workload.pattern()
            ),
        )
        .start();
    let pid = daemon.wait_up("inspeq-ctl-web", LIMIT);

    // status, for people and as JSON.
    let human = daemon.ctl_ok(&["status"]);
    assert!(human.contains("inspeq-ctl-web (process) up"), "{human}");
    assert!(human.contains("kernel: eBPF"), "{human}");
    let status = daemon.status();
    assert_eq!(status["cycle_secs"], 1);
    assert_eq!(status["kernel"]["mode"], "ebpf");
    let web = daemon.service("inspeq-ctl-web").unwrap();
    assert_eq!(
        (web["state"].as_str(), web["pid"].as_u64(), web["watched_by"].as_str()),
        (Some("up"), Some(u64::from(pid)), Some("tree"))
    );
    assert_eq!(status["jobs"][0]["name"], "nightly");
    assert_eq!(status["jobs"][0]["every_secs"], 86400);

    // export: the latest metrics once a cycle has sampled them.
    let metrics = wait_for("export to have the service's and the host's metrics", LIMIT, || {
        let export: serde_json::Value = serde_json::from_str(&daemon.ctl_ok(&["export"])).unwrap();
        let metrics = export["metrics"].as_array()?.clone();
        let has =
            |t: &str, m: &str| metrics.iter().any(|v| v["target"] == t && v["metric"] == m && v["value"].is_number());
        (has("host", "load:1") && has("inspeq-ctl-web", "memory:rss")).then_some(metrics)
    });
    let rss = metrics.iter().find(|v| v["target"] == "inspeq-ctl-web" && v["metric"] == "memory:rss").unwrap();
    assert!(rss["value"].as_f64().unwrap() > 0.0, "{rss}");

    // show: min/max/avg and a sparkline of the host's load.
    let show = daemon.ctl_ok(&["show", "host", "load:1"]);
    assert!(show.starts_with("host load:1  min "), "{show}");
    assert!(show.contains(" max ") && show.contains(" avg "), "{show}");
    assert_eq!(show.lines().count(), 2, "{show}");

    // start deploy / finish deploy.
    let started = daemon.ctl_ok(&["start", "deploy"]);
    assert!(started.starts_with("deploy started"), "{started}");
    assert!(daemon.status()["silenced_for_secs"].as_u64().is_some_and(|s| s > 0 && s <= 60));
    let finished = daemon.ctl_ok(&["finish", "deploy"]);
    assert!(finished.starts_with("deploy finished"), "{finished}");

    // job_done: an unknown job is an error, a configured one is recorded.
    let err = ctl_fails(&daemon, &["job_done", "weekly"]);
    assert!(err.contains("no job `weekly` is configured"), "{err}");
    let done = daemon.ctl_ok(&["job_done", "nightly"]);
    assert!(done.contains("job `nightly` recorded as done"), "{done}");

    // reload with a broken file: an error naming file:line:col; the old config stays.
    daemon.write("services.d/broken.inq", "check service inspeq-broken\n  if memory:rss > then alert\n");
    let err = ctl_fails(&daemon, &["reload"]);
    assert!(err.contains("the running configuration stays"), "{err}");
    let at = err.find("broken.inq:2:").unwrap_or_else(|| panic!("no broken.inq:2:COL in {err}"));
    let col: String = err[at + "broken.inq:2:".len()..].chars().take_while(char::is_ascii_digit).collect();
    assert!(!col.is_empty(), "no column after broken.inq:2: in {err}");
    // The log says so too, where an operator who did not run the reload sees it.
    daemon.stderr.wait("the failed reload in the log", LIMIT, |l| l.contains("keeping the running configuration"));
    daemon.stderr.wait("the failed reload's location in the log", LIMIT, |l| l.contains("broken.inq:2:"));
    assert_eq!(service_names(&daemon), ["inspeq-ctl-web"]);
    assert_eq!(daemon.wait_up("inspeq-ctl-web", LIMIT), pid);

    // reload with a valid change: the new service is there, the old one still watched.
    daemon.remove("services.d/broken.inq");
    daemon.write("services.d/second.inq", &absent_process("inspeq-ctl-second"));
    let reloaded = daemon.ctl_ok(&["reload"]);
    assert!(reloaded.contains("configuration reloaded"), "{reloaded}");
    assert_eq!(service_names(&daemon), ["inspeq-ctl-second", "inspeq-ctl-web"]);
    assert_eq!(daemon.wait_up("inspeq-ctl-web", LIMIT), pid);

    // SIGHUP reloads too.
    daemon.write("services.d/third.inq", &absent_process("inspeq-ctl-third"));
    daemon.signal(libc::SIGHUP);
    wait_for("SIGHUP to load services.d/third.inq", LIMIT, || {
        service_names(&daemon).contains(&"inspeq-ctl-third".to_owned()).then_some(())
    });
    assert_eq!(daemon.wait_up("inspeq-ctl-web", LIMIT), pid);
}

/// How many values of `metric` the daemon's history holds for `target` (`show`'s sparkline).
fn history_len(daemon: &Daemon, target: &str, metric: &str) -> usize {
    let show = daemon.ctl_ok(&["show", target, metric]);
    if show.contains("no values yet") { 0 } else { show.lines().nth(1).unwrap_or("").chars().count() }
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_rules_and_the_metric_history() {
    if !privileged("a_reload_keeps_the_state_of_unchanged_rules_and_the_metric_history") {
        return;
    }
    let scratch = Scratch::new("daemon-reload-state");
    let workload = Workload::start(&scratch);
    let service = "inspeq-reload-bloat";
    let daemon = Daemon::builder("reload-state")
        .file("inspeq.conf", &conf(1))
        .file("host.inq", "check host\n  if load:1 < 0 then alert\n")
        .file(
            "services.d/bloat.inq",
            &format!(
                "check process {service} with matching \"{}\"\n  if memory:rss > 64m then alert\n",
                workload.pattern()
            ),
        )
        .start();
    let pid = daemon.wait_up(service, LIMIT);
    // SAFETY: kill(2) on the workload this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, service, "rule_failed"));
    wait_for("the workload to finish growing", LIMIT, || {
        marks(&workload.marks).contains(&"GREW".to_owned()).then_some(())
    });

    // A reload that changes nothing about this service, by inspeqctl and by SIGHUP.
    let before = history_len(&daemon, service, "memory:rss");
    daemon.write("services.d/other.inq", &absent_process("inspeq-reload-other"));
    daemon.ctl_ok(&["reload"]);
    daemon.signal(libc::SIGHUP);
    daemon.stderr.wait_nth("the second reload", 1, LIMIT, |l| l.contains("reload: configuration from"));
    // Three more cycles sample the service, still far above 64 MiB...
    wait_for("three more cycles", LIMIT, || (history_len(&daemon, service, "memory:rss") >= before + 3).then_some(()));
    // ...and the rule, already triggered, stays triggered without a second alert.
    let status = daemon.service(service).unwrap();
    assert_eq!(status["rules"][0]["state"], "triggered", "{status}");
    assert_eq!(daemon.stdout.count(|l| is_alert(l, service, "rule_failed")), 1, "{:#?}", daemon.stdout.all());
    assert!(history_len(&daemon, "host", "load:1") >= 3, "the host's history was dropped");
}

#[test]
fn check_reports_a_broken_directory_compiler_style_without_a_daemon() {
    // Needs no privilege: it only parses files.
    let scratch = Scratch::new("daemon-check");
    std::fs::create_dir_all(scratch.dir.join("services.d")).unwrap();
    std::fs::write(scratch.dir.join("inspeq.conf"), "set cycle_time 1\n").unwrap();
    std::fs::write(scratch.dir.join("services.d/bad.inq"), "check service web\n  if memory:rss > then alert\n")
        .unwrap();
    let out = Command::new(tests::inspeqctl())
        .args(["--socket", "/nonexistent/inspeq.sock", "check"])
        .arg(&scratch.dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "check of a broken dir succeeded: {stdout}");
    let at = stdout.find("bad.inq:2:").unwrap_or_else(|| panic!("no bad.inq:2:COL in {stdout}"));
    let rest = &stdout[at + "bad.inq:2:".len()..];
    let col: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(!col.is_empty() && rest[col.len()..].starts_with(": error: "), "{stdout}");
    assert!(
        stdout.contains("if memory:rss > then alert") && stdout.contains('^'),
        "no source line and caret: {stdout}"
    );

    // And a good directory is ok.
    std::fs::remove_file(scratch.dir.join("services.d/bad.inq")).unwrap();
    let out = Command::new(tests::inspeqctl()).arg("check").arg(&scratch.dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Every kind of secret a configuration holds, each value containing `SECRET-`.
const SECRETS_CONF: &str = "set cycle_time 1
send alerts via slack with url http://127.0.0.1:PORT/services/T0/B0/SECRET-SLACK
send alerts to mail via email with smtp_server 127.0.0.1, smtp_port PORT, username alerts,
  password \"SECRET-MAIL\", to_email ops@example.org
send alerts to hook via webhook with url http://127.0.0.1:PORT/hook, secret SECRET-HOOK
send alerts to pager via pagerduty with routing_key SECRET-PAGER, url http://127.0.0.1:PORT/v2/enqueue
";

#[test]
fn secrets_stay_out_of_the_log_status_export_and_test_alert_and_a_readable_file_is_warned_about() {
    if !privileged("secrets_stay_out_of_the_log_status_export_and_test_alert_and_a_readable_file_is_warned_about") {
        return;
    }
    let scratch = Scratch::new("daemon-secrets");
    let mut workload = Workload::start(&scratch);
    // Nothing listens there: every send fails, and its error is logged and shown.
    let closed = tests::alert_harness::free_port().to_string();
    let daemon = Daemon::builder("secrets")
        .file_with_mode("inspeq.conf", &SECRETS_CONF.replace("PORT", &closed), 0o644)
        .file_with_mode(
            "services.d/worker.inq",
            &format!(
                "check process inspeq-secret-worker with matching \"{}\", password \"SECRET-CHECK\"\n  \
                 if crashed then alert, alert mail, alert hook, alert pager\n",
                workload.pattern()
            ),
            0o604,
        )
        .start();
    let conf = daemon.config_dir.join("inspeq.conf").display().to_string();
    let check = daemon.config_dir.join("services.d/worker.inq").display().to_string();

    // The warnings, at start: path, mode and the fix, without the secrets.
    let warned = |path: &str, what: &str, mode: &str| {
        daemon.stderr.wait(&format!("the warning about {path}"), LIMIT, |l| {
            l.contains(&format!("config: {path}:"))
                && l.contains(&format!("{path} holds {what}"))
                && l.contains(&format!("is readable by every user (mode {mode})"))
                && l.contains(&format!("run `chmod 640 {path}` (or `chmod 600 {path}`)"))
        })
    };
    warned(&conf, "the `url` of the default route and 3 more secrets", "0644");
    warned(&check, "the `password` of check `inspeq-secret-worker`", "0604");

    // Real alerts through every route, each send failing and logged.
    let pid = daemon.wait_up("inspeq-secret-worker", LIMIT);
    kill9(pid);
    let _ = workload.child.wait();
    for route in ["default (slack)", "mail (email)", "hook (webhook)", "pager (pagerduty)"] {
        daemon
            .stderr
            .wait(&format!("a failed send on {route}"), LIMIT, |l| l.contains(&format!("alert route {route}: ")));
    }
    let test_alert = daemon.ctl(&["test-alert"]);
    let test_alert =
        format!("{}{}", String::from_utf8_lossy(&test_alert.stdout), String::from_utf8_lossy(&test_alert.stderr));
    assert!(
        test_alert.contains("http://127.0.0.1:") && test_alert.contains("/***"),
        "the slack URL shown without its path: {test_alert}"
    );
    let checked = Command::new(tests::inspeqctl()).arg("check").arg(&daemon.config_dir).output().unwrap();
    let checked = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.contains("is readable by every user (mode 0644)"), "{checked}");

    let shown = [
        ("the log", daemon.stderr.all().join("\n")),
        ("standard output", daemon.stdout.all().join("\n")),
        ("status", daemon.ctl_ok(&["status"])),
        ("status --json", daemon.ctl_ok(&["status", "--json"])),
        ("export", daemon.ctl_ok(&["export"])),
        ("test-alert", test_alert),
        ("inspeqctl check", checked),
    ];
    for (what, text) in shown {
        assert!(!text.contains("SECRET-"), "a secret in {what}:\n{text}");
    }
}

// ------------------------------------------------------------ systemd user manager

/// A `Restart=no` unit running `inspeq-workload serve MARKS`, reloaded with SIGHUP.
fn workload_unit(marks_file: &Path) -> String {
    format!(
        "[Unit]\nDescription=inspeq daemon test service\n\n[Service]\nExecStart={WORKLOAD} serve {}\nExecReload=/bin/kill -HUP $MAINPID\nRestart=no\n",
        marks_file.display()
    )
}

fn main_pid(manager: &UserManager, unit: &str) -> u32 {
    manager.systemctl_ok(&["show", "-P", "MainPID", unit]).parse().unwrap()
}

#[test]
fn systemd_a_crash_is_alerted_once_restarted_and_the_new_main_process_is_watched() {
    if !privileged_with("systemd_a_crash_is_alerted_once_restarted_and_the_new_main_process_is_watched", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("daemon-crash");
    let scratch = Scratch::new("daemon-systemd-crash");
    let marks_file = scratch.dir.join("marks");
    let service = "inspeq-daemon-crash";
    let unit = format!("{service}.service");
    manager.add_unit(&unit, &workload_unit(&marks_file));
    manager.systemctl_ok(&["start", &unit]);
    let first = main_pid(&manager, &unit);

    let daemon = Daemon::builder("systemd-crash")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/crash.inq",
            &format!("check service {service} with scope user\n  if crashed then alert, restart\n"),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(service, INIT_LIMIT), first);
    let status = daemon.service(service).unwrap();
    assert_eq!((status["init"].as_str(), status["watched_by"].as_str()), (Some("systemd"), Some("cgroup")), "{status}");

    // The first crash: one alert with the signal, one restart through systemd.
    kill9(first);
    let alert = daemon.stdout.wait("the first crash alert", LIMIT, |l| is_alert(l, service, "crashed"));
    assert!(alert.contains(&format!("pid {first} was killed by signal 9")), "{alert}");
    daemon
        .stderr
        .wait("the restart request", LIMIT, |l| l.contains(&format!("service `{service}`: restart requested")));
    daemon.stderr.wait("the restart", INIT_LIMIT, |l| l.contains(&format!("service `{service}`: restart done")));
    let second = wait_for("systemd to give the unit a new main pid", INIT_LIMIT, || {
        let pid = main_pid(&manager, &unit);
        (pid != 0 && pid != first).then_some(pid)
    });
    assert_eq!(daemon.wait_up_not(service, Some(first), INIT_LIMIT), second);
    let status = daemon.service(service).unwrap();
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(daemon.stdout.count(|l| is_alert(l, service, "crashed")), 1, "{:#?}", daemon.stdout.all());
    assert_eq!(daemon.stderr.count(|l| l.contains(&format!("service `{service}`: restart requested"))), 1);

    // The restarted unit lives in a new cgroup, and that one is watched: the next
    // crash is alerted too.
    kill9(second);
    let alert = daemon.stdout.wait_nth("the second crash alert", 1, LIMIT, |l| is_alert(l, service, "crashed"));
    assert!(alert.contains(&format!("pid {second} was killed by signal 9")), "{alert}");
    daemon
        .stderr
        .wait_nth("the second restart", 1, INIT_LIMIT, |l| l.contains(&format!("service `{service}`: restart done")));
    daemon.wait_up_not(service, Some(second), INIT_LIMIT);
}

/// A unit under the daemon run with `flags`: its main process is killed with
/// SIGKILL; the crash alert (naming the signal: the tier's own status, or
/// systemd's record of it) and a restart follow. Returns kill → alert line.
fn systemd_kill9_is_a_crash_and_restarted(name: &str, flags: &[&str], tier: &str, cycle_secs: u64) -> Duration {
    let manager = UserManager::start(&format!("daemon-{name}"));
    let scratch = Scratch::new(&format!("daemon-systemd-{name}"));
    let service = format!("inspeq-daemon-{name}");
    let unit = format!("{service}.service");
    manager.add_unit(&unit, &workload_unit(&scratch.dir.join("marks")));
    manager.systemctl_ok(&["start", &unit]);
    let first = main_pid(&manager, &unit);
    let builder = Daemon::builder(&format!("systemd-{name}"))
        .file("inspeq.conf", &conf(cycle_secs))
        .file(
            "services.d/crash.inq",
            &format!("check service {service} with scope user\n  if crashed then alert, restart\n"),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir);
    let daemon = flags.iter().fold(builder, |b, f| b.arg(f)).start();
    let kernel = daemon.status()["kernel"].clone();
    assert_eq!(kernel["mode"], tier, "{kernel}");
    assert!(!kernel["blind_spots"].as_array().unwrap().is_empty(), "{kernel}");
    assert!(daemon.ctl_ok(&["status"]).contains("this tier cannot see"));
    assert_eq!(daemon.wait_up(&service, INIT_LIMIT), first);

    let killed = Instant::now();
    kill9(first);
    let alert = daemon.stdout.wait("the crash alert", INIT_LIMIT, |l| is_alert(l, &service, "crashed"));
    let took = killed.elapsed();
    assert!(alert.contains(&format!("pid {first} was killed by signal 9 (SIGKILL)")), "{alert}");
    daemon.stderr.wait("the restart", INIT_LIMIT, |l| l.contains(&format!("service `{service}`: restart done")));
    assert_ne!(daemon.wait_up_not(&service, Some(first), INIT_LIMIT), first);
    assert_eq!(daemon.stdout.count(|l| is_alert(l, &service, "crashed")), 1, "{:#?}", daemon.stdout.all());
    took
}

#[test]
fn systemd_without_ebpf_a_kill9_is_alerted_as_sigkill_and_restarted() {
    if !privileged_with("systemd_without_ebpf_a_kill9_is_alerted_as_sigkill_and_restarted", SYSTEMD_USER) {
        return;
    }
    // A 30 s cycle: the alert comes from the process connector's exit event.
    let took = systemd_kill9_is_a_crash_and_restarted("pc", &["--no-ebpf"], "proc_connector", 30);
    // Reported, not asserted: speed is for benchmarks.
    eprintln!("proc connector: kill -9 → crash alert line in {took:?}");
}

#[test]
fn systemd_without_ebpf_and_the_proc_connector_a_kill9_is_alerted_within_a_cycle() {
    if !privileged_with("systemd_without_ebpf_and_the_proc_connector_a_kill9_is_alerted_within_a_cycle", SYSTEMD_USER) {
        return;
    }
    // pidfds (the exit at once), then /proc polling (at the next 1 s cycle): the
    // status is gone when systemd has reaped the process, so the daemon asks
    // systemd, and the alert still names the signal.
    for (name, flags, tier) in [
        ("pidfd", &["--no-ebpf", "--no-proc-connector"][..], "pidfd"),
        ("proc", &["--no-ebpf", "--no-proc-connector", "--no-pidfd"][..], "proc"),
    ] {
        let took = systemd_kill9_is_a_crash_and_restarted(name, flags, tier, 1);
        eprintln!("{tier}: kill -9 → crash alert line in {took:?}");
    }
}

/// A service that grows by 96 MiB on SIGUSR1, under a real systemd user manager,
/// watched by an inspeqd with one `rule` and a 30 s cycle: the only cycle before
/// the growth is the one at start, so only the kernel's crossing can fire the
/// rule before the next.
struct Bloating {
    manager: UserManager,
    _scratch: Scratch,
    marks_file: PathBuf,
    service: String,
    unit: String,
    pid: u32,
    daemon: Daemon,
    cycle: Duration,
}

fn bloating(tag: &str, rule: &str) -> Bloating {
    let manager = UserManager::start(&format!("daemon-{tag}"));
    let scratch = Scratch::new(&format!("daemon-systemd-{tag}"));
    let marks_file = scratch.dir.join("marks");
    let service = format!("inspeq-daemon-{tag}");
    let unit = format!("{service}.service");
    manager.add_unit(&unit, &workload_unit(&marks_file));
    manager.systemctl_ok(&["start", &unit]);
    let pid = main_pid(&manager, &unit);
    wait_for("the service to start", LIMIT, || marks(&marks_file).contains(&"START".to_owned()).then_some(()));
    let cycle = Duration::from_secs(30);
    let daemon = Daemon::builder(&format!("systemd-{tag}"))
        .file("inspeq.conf", &conf(cycle.as_secs()))
        .file("services.d/bloat.inq", &format!("check service {service} with scope user\n  {rule}\n"))
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(&service, INIT_LIMIT), pid);
    Bloating { manager, _scratch: scratch, marks_file, service, unit, pid, daemon, cycle }
}

#[test]
fn systemd_a_memory_rule_fires_at_the_crossing_not_at_the_next_cycle() {
    if !privileged_with("systemd_a_memory_rule_fires_at_the_crossing_not_at_the_next_cycle", SYSTEMD_USER) {
        return;
    }
    let Bloating { manager, _scratch, marks_file, service, unit, pid, daemon, cycle } =
        bloating("memory", "if memory:rss > 64m then alert, reload");
    let service = service.as_str();

    // Grow past 64 MiB (96 MiB, touched).
    // SAFETY: kill(2) on the unit's main pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let alert = daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, service, "rule_failed"));
    let next_cycle = daemon.started + cycle;
    assert!(Instant::now() < next_cycle, "the alert waited for the next cycle: {alert}");
    assert!(alert.contains("memory:rss"), "{alert}");
    // (The alert may come before the growth is complete: it fires at the crossing.)
    wait_for("the service to finish growing", LIMIT, || marks(&marks_file).contains(&"GREW".to_owned()).then_some(()));

    // The reload reaches the process (systemd's ExecReload sends HUP), still before the next cycle.
    daemon.stderr.wait("the reload", INIT_LIMIT, |l| l.contains(&format!("service `{service}`: reload done")));
    wait_for("the service to record the HUP", LIMIT, || marks(&marks_file).contains(&"HUP".to_owned()).then_some(()));
    assert!(Instant::now() < next_cycle, "the reload waited for the next cycle");
    assert_eq!(main_pid(&manager, &unit), pid, "a reload is no restart");

    // status --json shows the service up, same pid, its rule triggered.
    let status = daemon.service(service).unwrap();
    assert_eq!((status["state"].as_str(), status["pid"].as_u64()), (Some("up"), Some(u64::from(pid))), "{status}");
    assert_eq!(status["rules"][0]["state"], "triggered", "{status}");
    assert_eq!(daemon.stdout.count(|l| is_alert(l, service, "rule_failed")), 1, "{:#?}", daemon.stdout.all());
    assert_eq!(
        daemon.stdout.count(|l| is_alert(l, service, "crashed")),
        0,
        "a reload is no crash: {:#?}",
        daemon.stdout.all()
    );
}

#[test]
fn systemd_a_total_memory_rule_fires_at_the_services_crossing() {
    if !privileged_with("systemd_a_total_memory_rule_fires_at_the_services_crossing", SYSTEMD_USER) {
        return;
    }
    // Every part bound: the user manager and scratch directory live to the end.
    let Bloating { manager: _manager, _scratch, marks_file: _, service, unit: _, pid, daemon, cycle } =
        bloating("total", "if memory:total_rss > 64m then alert");
    let service = service.as_str();
    // SAFETY: kill(2) on the unit's main pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGUSR1) }, 0);
    let alert = daemon.stdout.wait("the total memory alert", LIMIT, |l| is_alert(l, service, "rule_failed"));
    assert!(Instant::now() < daemon.started + cycle, "the alert waited for the next cycle: {alert}");
    assert!(alert.contains("memory:total_rss"), "{alert}");
}

#[test]
fn systemd_a_restart_the_rules_asked_for_is_no_crash() {
    if !privileged_with("systemd_a_restart_the_rules_asked_for_is_no_crash", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("daemon-requested");
    let scratch = Scratch::new("daemon-systemd-requested");
    let marks_file = scratch.dir.join("marks");
    let service = "inspeq-daemon-requested";
    let unit = format!("{service}.service");
    manager.add_unit(&unit, &workload_unit(&marks_file));
    manager.systemctl_ok(&["start", &unit]);
    let first = main_pid(&manager, &unit);
    let daemon = Daemon::builder("systemd-requested")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/requested.inq",
            &format!("check service {service} with scope user\n  if memory:rss > 64m then alert, restart\n  if crashed then alert\n"),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(service, INIT_LIMIT), first);

    // SAFETY: kill(2) on the unit's main pid.
    assert_eq!(unsafe { libc::kill(first as i32, libc::SIGUSR1) }, 0);
    daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, service, "rule_failed"));
    daemon.stderr.wait("the restart", INIT_LIMIT, |l| l.contains(&format!("service `{service}`: restart done")));
    let second = daemon.wait_up_not(service, Some(first), INIT_LIMIT);
    assert_eq!(main_pid(&manager, &unit), second);
    // A few cycles for anything late to show up.
    let cycles = history_len(&daemon, service, "memory:rss");
    wait_for("three more cycles", LIMIT, || (history_len(&daemon, service, "memory:rss") >= cycles + 3).then_some(()));
    assert_eq!(daemon.stdout.count(|l| is_alert(l, service, "crashed")), 0, "{:#?}", daemon.stdout.all());
    assert_eq!(daemon.stderr.count(|l| l.contains(&format!("service `{service}`: restart requested"))), 1);
}

#[test]
fn systemd_a_phased_restart_that_replaces_the_workers_is_no_crash() {
    if !privileged_with("systemd_a_phased_restart_that_replaces_the_workers_is_no_crash", SYSTEMD_USER) {
        return;
    }
    let manager = UserManager::start("daemon-puma");
    let scratch = Scratch::new("puma-marks");
    let marks_file = scratch.dir.join("marks");
    let service = "inspeq-daemon-puma";
    let unit = format!("{service}.service");
    // Puma's reload is USR1: the master stays, every worker is replaced.
    manager.add_unit(
        &unit,
        &format!(
            "[Unit]\nDescription=Puma-like\n\n[Service]\nExecStart={WORKLOAD} puma {}\nExecReload=/bin/kill -USR1 $MAINPID\nRestart=no\n",
            marks_file.display()
        ),
    );
    manager.systemctl_ok(&["start", &unit]);
    let master = main_pid(&manager, &unit);
    let workers = |marks: &[String]| marks.iter().filter(|m| m.starts_with("WORKERS")).cloned().collect::<Vec<_>>();
    wait_for("the first workers", LIMIT, || (!workers(&marks(&marks_file)).is_empty()).then_some(()));
    // A rule that holds at once, so the daemon reloads the service as soon as it watches it.
    let daemon = Daemon::builder("systemd-puma")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/puma.inq",
            &format!("check service {service} with scope user\n  if memory:rss > 1k then alert, reload\n  if crashed then alert, restart\n"),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(service, INIT_LIMIT), master);
    daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, service, "rule_failed"));
    daemon.stderr.wait("the reload", INIT_LIMIT, |l| l.contains(&format!("service `{service}`: reload done")));
    let replaced = (0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        workers(&marks(&marks_file)).len() >= 2
    });
    assert!(
        replaced,
        "no phased restart; marks: {:?}; stderr: {:#?}",
        std::fs::read_to_string(&marks_file),
        daemon.stderr.all()
    );
    // A few cycles for anything late to show up.
    let cycles = history_len(&daemon, service, "memory:rss");
    wait_for("three more cycles", LIMIT, || (history_len(&daemon, service, "memory:rss") >= cycles + 3).then_some(()));
    assert_eq!(daemon.stdout.count(|l| is_alert(l, service, "crashed")), 0, "{:#?}", daemon.stdout.all());
    assert_eq!(daemon.stderr.count(|l| l.contains(&format!("service `{service}`: restart requested"))), 0);
    assert_eq!(main_pid(&manager, &unit), master, "the master was never restarted");
    assert_eq!(daemon.service(service).unwrap()["pid"], master);
}

#[test]
fn systemd_status_counts_the_services_processes_and_shows_each_rules_value_in_its_unit() {
    if !privileged_with(
        "systemd_status_counts_the_services_processes_and_shows_each_rules_value_in_its_unit",
        SYSTEMD_USER,
    ) {
        return;
    }
    let manager = UserManager::start("daemon-status");
    let scratch = Scratch::new("daemon-systemd-status");
    let marks_file = scratch.dir.join("marks");
    let service = "inspeq-daemon-status";
    let unit = format!("{service}.service");
    // A master and two workers, each worker spending 10 % of a core: three
    // processes in the unit's cgroup, and no `forks` rule to report any of them.
    manager.add_unit(
        &unit,
        &format!(
            "[Unit]\nDescription=Puma-like, busy\n\n[Service]\nExecStart={WORKLOAD} puma {} 10\nRestart=no\n",
            marks_file.display()
        ),
    );
    manager.systemctl_ok(&["start", &unit]);
    let master = main_pid(&manager, &unit);
    wait_for("the workers", LIMIT, || marks(&marks_file).iter().any(|m| m.starts_with("WORKERS")).then_some(()));
    let daemon = Daemon::builder("systemd-status")
        .file("inspeq.conf", &conf(1))
        .file(
            "services.d/status.inq",
            &format!(
                "check service {service} with scope user\n  if memory:rss > 1g then alert\n  if memory:total_rss > 10g then alert\n  \
                 if cpu:total_user > 95% then alert\n  if restarts > 5 within 1 minutes then alert\n  if crashed then alert\n"
            ),
        )
        .env("XDG_RUNTIME_DIR", &manager.runtime_dir)
        .start();
    assert_eq!(daemon.wait_up(service, INIT_LIMIT), master);

    // CPU needs two cycles' samples before there is a percentage to compare.
    let status = wait_for("every metric rule to have a value", LIMIT, || {
        let status = daemon.status();
        let s = status["services"].as_array()?.iter().find(|s| s["name"] == service)?.clone();
        s["rules"].as_array()?.iter().take(3).all(|r| r["value"].is_number()).then_some(status)
    });
    let s = status["services"].as_array().unwrap().iter().find(|s| s["name"] == service).unwrap();
    assert_eq!((s["watched_by"].as_str(), s["processes"].as_u64()), (Some("cgroup"), Some(3)), "{s:#}");
    let rule = |text: &str| {
        s["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rule"] == text)
            .unwrap_or_else(|| panic!("no `{text}` in {s:#}"))
    };
    for (text, unit) in
        [("memory:rss > 1g", "bytes"), ("memory:total_rss > 10g", "bytes"), ("cpu:total_user > 95%", "percent")]
    {
        let r = rule(text);
        assert!(r["value"].as_f64().is_some_and(|v| v > 0.0), "{r}");
        assert_eq!(r["unit"], unit, "{r}");
    }
    // The total is over all three processes: more than the master alone.
    assert!(rule("memory:total_rss > 10g")["value"].as_f64() > rule("memory:rss > 1g")["value"].as_f64(), "{s:#}");
    // What the rule compared is what the history holds: the same conversion.
    let metric = |name: &str| {
        let m = status["metrics"].as_array().unwrap().iter().find(|m| m["target"] == service && m["metric"] == name);
        m.unwrap_or_else(|| panic!("no {name} in {:#}", status["metrics"]))["value"].as_f64().unwrap()
    };
    let cpu = rule("cpu:total_user > 95%")["value"].as_f64().unwrap();
    assert_eq!(cpu, metric("cpu:total_user"));
    // Two workers at 10 % each (less on a loaded machine), never cumulative seconds.
    assert!((1.0..60.0).contains(&cpu), "cpu:total_user {cpu} %");
    let restarts = rule("restarts > 5 within 1 minutes");
    assert_eq!((restarts["value"].as_f64(), restarts["unit"].as_str()), (Some(0.0), Some("count")), "{restarts}");
    assert_eq!(restarts["value_text"], "0 restarts within 1m");
    let crashed = rule("crashed");
    assert!(crashed["value"].is_null() && crashed["last_exit"].is_null(), "{crashed}");
    assert_eq!(crashed["value_text"], "no exit seen yet");

    // `show` draws percentages; `status` prints each rule's value and the count.
    let show = daemon.ctl_ok(&["show", service, "cpu:total_user"]);
    let first = show.lines().next().unwrap();
    assert!(first.starts_with(&format!("{service} cpu:total_user  min ")), "{show}");
    let figures: Vec<&str> = first.split_whitespace().skip(2).collect();
    assert_eq!(figures.len(), 6, "{show}");
    for pair in figures.chunks(2) {
        let value: f64 = pair[1]
            .strip_suffix('%')
            .unwrap_or_else(|| panic!("`{}` is no percentage: {show}", pair[1]))
            .parse()
            .unwrap();
        assert!((0.0..60.0).contains(&value), "{show}");
    }
    let human = daemon.ctl_ok(&["status"]);
    assert!(human.contains(&format!("{service} (systemd) up pid {master}, 3 process(es)")), "{human}");
    assert!(
        human.contains("[ok] cpu:total_user > 95% — ") && human.contains("[ok] crashed — no exit seen yet"),
        "{human}"
    );
}
