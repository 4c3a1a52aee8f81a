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
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tests::{
    daemon_harness::{Daemon, is_alert},
    init_harness::{Scratch, UserManager, kill9, marks, wait_for},
    privileged,
};

/// Hang guard for anything the daemon should do within milliseconds.
const LIMIT: Duration = Duration::from_secs(10);
/// Hang guard for what goes through an init system (restarts, D-Bus lookups).
const INIT_LIMIT: Duration = Duration::from_secs(20);

const WORKLOAD: &str = env!("CARGO_BIN_EXE_inspeq-workload");

/// A systemd user manager and the user bus its stock dbus.socket starts.
const SYSTEMD_USER: &[&str] = &["/lib/systemd/systemd", "/usr/bin/dbus-daemon", "/usr/lib/systemd/user/dbus.socket"];

/// Like `privileged`, and the programs the test drives are installed: fails under
/// CI when not, skips elsewhere.
fn can_run(test: &str, programs: &[&str]) -> bool {
    if !privileged(test) {
        return false;
    }
    let missing: Vec<&str> = programs.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "{test}: cannot run under CI: {missing:?} not installed");
    eprintln!("skipped {test}: {missing:?} not installed (cargo xtask setup installs them)");
    false
}

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
            &format!("check process inspeq-crash-worker with matching \"{}\"\n  if crashed then alert\n", workload.pattern()),
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

// ------------------------------------------------------------ shutdown

#[test]
fn sigterm_shuts_down_cleanly_removing_the_socket() {
    if !privileged("sigterm_shuts_down_cleanly_removing_the_socket") {
        return;
    }
    let mut daemon = Daemon::builder("sigterm").file("inspeq.conf", &conf(1)).start();
    assert!(daemon.socket.exists());
    let status = daemon.terminate();
    assert!(status.success(), "inspeqd exited with {status}");
    assert!(!daemon.socket.exists(), "{} left behind", daemon.socket.display());
    assert!(daemon.stderr.count(|l| l.contains("inspeqd stopping")) == 1, "{:#?}", daemon.stderr.all());
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
            &format!("check process inspeq-ctl-web with matching \"{}\"\n  if memory:rss > 100g then alert\n", workload.pattern()),
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
    assert_eq!((web["state"].as_str(), web["pid"].as_u64(), web["watched_by"].as_str()), (Some("up"), Some(u64::from(pid)), Some("tree")));
    assert_eq!(status["jobs"][0]["name"], "nightly");
    assert_eq!(status["jobs"][0]["every_secs"], 86400);

    // export: the latest metrics once a cycle has sampled them.
    let metrics = wait_for("export to have the service's and the host's metrics", LIMIT, || {
        let export: serde_json::Value = serde_json::from_str(&daemon.ctl_ok(&["export"])).unwrap();
        let metrics = export["metrics"].as_array()?.clone();
        let has = |t: &str, m: &str| metrics.iter().any(|v| v["target"] == t && v["metric"] == m && v["value"].is_number());
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

#[test]
fn check_reports_a_broken_directory_compiler_style_without_a_daemon() {
    // Needs no privilege: it only parses files.
    let scratch = Scratch::new("daemon-check");
    std::fs::create_dir_all(scratch.dir.join("services.d")).unwrap();
    std::fs::write(scratch.dir.join("inspeq.conf"), "set cycle_time 1\n").unwrap();
    std::fs::write(scratch.dir.join("services.d/bad.inq"), "check service web\n  if memory:rss > then alert\n").unwrap();
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
    assert!(stdout.contains("if memory:rss > then alert") && stdout.contains('^'), "no source line and caret: {stdout}");

    // And a good directory is ok.
    std::fs::remove_file(scratch.dir.join("services.d/bad.inq")).unwrap();
    let out = Command::new(tests::inspeqctl()).arg("check").arg(&scratch.dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
