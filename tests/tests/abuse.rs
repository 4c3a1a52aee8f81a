//! The real `inspeqd` against what a careless or hostile local user can do to it (issue #12): odd files in the
//! configuration directory, many idle control connections, undecodable requests, and `--socket` or
//! `--socket-group` options that point at the wrong thing. In every case the daemon keeps answering and stops
//! on SIGTERM, and what it refuses it says plainly. Root and BTF needed (see `tests::privileged`), except where
//! no daemon runs.
//!
//! Time limits below are hang guards, never performance assertions.

use std::{
    io::{Read as _, Write as _},
    os::unix::{ffi::OsStrExt as _, net::UnixStream},
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use tests::{daemon_harness::Daemon, init_harness::Scratch, privileged};

/// Hang guard for anything the daemon should do within milliseconds.
const LIMIT: Duration = Duration::from_secs(10);

const CONF: &str = "set cycle_time 1\nset deploy_length 60\n";

/// A process check on a command line nothing runs: registered, never up.
fn absent_process(name: &str) -> String {
    format!("check process {name} with matching \"^inspeq-no-such-process-{name}$\"\n  if crashed then alert\n")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", path.display());
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A daemon that watches one (absent) service, for the tests that abuse its files or its socket.
fn daemon(name: &str, args: &[&str]) -> Daemon {
    let mut builder =
        Daemon::builder(name).file("inspeq.conf", CONF).file("services.d/web.inq", &absent_process("web"));
    for arg in args {
        builder = builder.arg(arg);
    }
    builder.start()
}

/// The daemon answers `status` with its service, and stops cleanly on SIGTERM.
fn still_answers_and_stops(mut daemon: Daemon) {
    let status = daemon.status();
    assert_eq!(status["services"][0]["name"], "web", "{status}");
    let exit = daemon.terminate();
    assert!(exit.success(), "inspeqd exited with {exit}");
}

// ------------------------------------------------------------ the configuration directory

#[test]
fn a_fifo_in_services_d_fails_the_reload_naming_it_and_the_daemon_keeps_answering() {
    if !privileged("a_fifo_in_services_d_fails_the_reload_naming_it_and_the_daemon_keeps_answering") {
        return;
    }
    let daemon = daemon("abuse-fifo", &[]);
    let fifo = daemon.config_dir.join("services.d/pipe.inq");
    mkfifo(&fifo);
    let expected = format!("{}:1:1: error: cannot read: a FIFO (named pipe), expected a regular file", fifo.display());

    // SIGHUP: nobody ever writes to the FIFO, so a blocking open would freeze the daemon here.
    daemon.signal(libc::SIGHUP);
    daemon.stderr.wait("the failed reload naming the FIFO", LIMIT, |l| l.contains(&expected));
    // `inspeqctl reload` hears the same.
    let out = daemon.ctl(&["reload"]);
    assert!(!out.status.success() && stderr(&out).contains(&expected), "{}", stderr(&out));
    still_answers_and_stops(daemon);
}

#[test]
fn a_symlink_to_dev_zero_fails_the_reload_without_reading_it() {
    if !privileged("a_symlink_to_dev_zero_fails_the_reload_without_reading_it") {
        return;
    }
    let daemon = daemon("abuse-devzero", &[]);
    let link = daemon.config_dir.join("services.d/zero.inq");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let out = daemon.ctl(&["reload"]);
    let expected = format!("{}:1:1: error: cannot read: a character device, expected a regular file", link.display());
    assert!(!out.status.success() && stderr(&out).contains(&expected), "{}", stderr(&out));
    // Nothing was read from it: the daemon's peak memory stays that of a small daemon (reading /dev/zero took
    // it to out of memory). 200 MiB leaves room for a debug build.
    let peak = daemon.proc_status_kb("VmHWM");
    assert!(peak < 200 * 1024, "peak RSS {peak} kB");
    still_answers_and_stops(daemon);
}

// ------------------------------------------------------------ the control socket

/// Connects to the control socket and sends nothing.
fn idle(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream
}

/// Everything the daemon writes on `stream` until it closes it (a hang guard: the read times out). A close with
/// part of the request unread reaches the client as a reset, after the answer.
fn read_to_close(mut stream: &UnixStream) -> String {
    let mut bytes = Vec::new();
    match stream.read_to_end(&mut bytes) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading until the daemon closes: {e} (got {:?})", String::from_utf8_lossy(&bytes)),
    }
    String::from_utf8(bytes).unwrap()
}

fn error_message(line: &str) -> String {
    let reply: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(reply["reply"], "error", "{line}");
    reply["message"].as_str().unwrap().to_owned()
}

#[test]
fn idle_connections_beyond_the_cap_are_told_busy_and_idle_ones_are_closed_after_the_timeout() {
    if !privileged("idle_connections_beyond_the_cap_are_told_busy_and_idle_ones_are_closed_after_the_timeout") {
        return;
    }
    // A cap of 4 and 3 s to send a request: the connections below are made within microseconds of each other.
    let daemon = daemon("abuse-idle", &["--control-connections", "4", "--control-timeout", "3"]);
    let fds_before = daemon.open_fds();
    let held: Vec<UnixStream> = (0..4).map(|_| idle(&daemon.socket)).collect();
    // Each one more than the cap is answered and closed at once, however many come.
    let extra: Vec<UnixStream> = (0..200).map(|_| idle(&daemon.socket)).collect();
    for stream in &extra {
        let message = error_message(&read_to_close(stream));
        assert_eq!(message, "busy: 4 control connections are open, the limit; try again");
    }
    // The refused ones hold nothing in the daemon: only the four served do (with room for a file the cycle
    // happens to have open while we count).
    let fds_held = daemon.open_fds();
    assert!(fds_held < fds_before + 4 + 10, "{fds_before} descriptors before, {fds_held} with 4 held and 200 refused");
    let out = daemon.ctl(&["status"]);
    assert!(!out.status.success() && stderr(&out).contains("busy: 4 control connections"), "{}", stderr(&out));

    // The held ones are closed after the timeout, each with a reason.
    for stream in &held {
        assert_eq!(error_message(&read_to_close(stream)), "timed out: no request within 3s");
    }
    tests::init_harness::wait_for("status to be answered again", LIMIT, || {
        daemon.ctl(&["status"]).status.success().then_some(())
    });
    still_answers_and_stops(daemon);
}

#[test]
fn undecodable_requests_get_an_error_reply() {
    if !privileged("undecodable_requests_get_an_error_reply") {
        return;
    }
    let daemon = daemon("abuse-requests", &[]);
    let ask = |bytes: &[u8]| {
        let mut stream = idle(&daemon.socket);
        // The daemon may answer (and close) before the whole of a long request is written.
        let _ = stream.write_all(bytes);
        error_message(&read_to_close(&stream))
    };
    assert_eq!(
        ask(b"{\"version\":1,\"command\":\"show\",\"target\":\"\xff\xfe\",\"metric\":\"x\"}\n"),
        "bad request: not UTF-8 text"
    );
    assert!(ask(b"\x00\x01\x02 not json\n").starts_with("bad request: expected value"));
    assert_eq!(ask(&[b'{'; 20_000]), "bad request: longer than 8192 bytes");
    assert_eq!(ask(b"{\"version\":7,\"command\":\"status\"}\n"), "protocol version 7 not supported (daemon speaks 1)");
    // Without a newline, the end of input ends the request.
    let mut stream = idle(&daemon.socket);
    stream.write_all(b"{\"version\":1,\"command\":\"nonsense\"}").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(error_message(&read_to_close(&stream)).starts_with("bad request: unknown variant `nonsense`"));
    still_answers_and_stops(daemon);
}

#[test]
fn inspeqctl_gives_up_on_a_daemon_that_does_not_answer() {
    // A socket that accepts (the kernel queues the connection) but never answers; no daemon, no root needed.
    let scratch = Scratch::new("abuse-mute");
    let socket = scratch.dir.join("mute.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = Command::new(tests::inspeqctl())
        .arg("--socket")
        .arg(&socket)
        .args(["--timeout", "1", "status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "inspeqctl succeeded against a mute socket");
    assert!(
        stderr(&out).contains(&format!("inspeqd on {} did not answer within 1s", socket.display())),
        "{}",
        stderr(&out)
    );
}

// ------------------------------------------------------------ --socket and --socket-group

/// `inspeqd` on a configuration of its own with these arguments, expected to refuse to start.
fn refused(scratch: &Scratch, args: &[&std::ffi::OsStr]) -> String {
    let config = scratch.dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("inspeq.conf"), CONF).unwrap();
    let mut child = Command::new(tests::inspeqd())
        .arg("--config-dir")
        .arg(&config)
        .arg("--state-dir")
        .arg(scratch.dir.join("state"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exit = tests::init_harness::wait_for("inspeqd to refuse to start", LIMIT, || child.try_wait().unwrap());
    let mut text = String::new();
    child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
    assert!(!exit.success(), "inspeqd started: {text}");
    text
}

#[test]
fn socket_refuses_to_replace_a_regular_file_or_a_directory() {
    if !privileged("socket_refuses_to_replace_a_regular_file_or_a_directory") {
        return;
    }
    let scratch = Scratch::new("abuse-socket-file");
    let file = scratch.dir.join("precious");
    std::fs::write(&file, "an operator's file\n").unwrap();
    let text = refused(&scratch, &["--socket".as_ref(), file.as_os_str()]);
    assert!(
        text.contains(&format!(
            "{} exists and is a regular file, not a socket; refusing to replace it",
            file.display()
        )),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "an operator's file\n");

    let dir = scratch.dir.join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let text = refused(&scratch, &["--socket".as_ref(), dir.as_os_str()]);
    assert!(text.contains("exists and is a directory, not a socket"), "{text}");
    assert!(dir.is_dir());
}

#[test]
fn a_socket_group_that_does_not_exist_leaves_no_socket_behind() {
    if !privileged("a_socket_group_that_does_not_exist_leaves_no_socket_behind") {
        return;
    }
    let scratch = Scratch::new("abuse-socket-group");
    let socket = scratch.dir.join("sock");
    let text = refused(
        &scratch,
        &["--socket".as_ref(), socket.as_os_str(), "--socket-group".as_ref(), "inspeq-no-such-group".as_ref()],
    );
    assert!(text.contains("group `inspeq-no-such-group` does not exist"), "{text}");
    assert!(!socket.exists(), "{} left behind", socket.display());
}
