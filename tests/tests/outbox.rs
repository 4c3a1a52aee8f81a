//! The alert outbox in the real `inspeqd`: one owner per state directory, route
//! changes while alerts wait, and what the daemon does with damaged or strange
//! files in the outbox. Alerts are counted where they land, at a local HTTP
//! receiver behind a webhook route; the alerts themselves come from host rules
//! that always hold (`load:1 >= 0`), so no root and no service is needed.
//!
//! Time limits are hang guards. The waits after delivery are not: they outlast
//! every retry a second, stray sender would have had pending, so that a
//! duplicate it sent would be seen.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use inspeq_daemon::alert::{Alert, AlertKind};
use serde_json::json;
use tests::{
    alert_harness::HttpReceiver,
    daemon_harness::Daemon,
    init_harness::{Scratch, wait_for},
};

/// Hang guard for what the daemon does within a cycle or two.
const LIMIT: Duration = Duration::from_secs(20);
/// Longer than the retries a stray sender of these alerts could have pending
/// (the receiver refuses for about two seconds: backoffs of 1, 2, 4 s at most).
const QUIET: Duration = Duration::from_secs(6);

/// Three rules that hold at the first cycle: three alerts, raised together.
const THREE_RULES: &str =
    "check host\n  if load:1 >= 0 then alert\n  if load:5 >= 0 then alert\n  if load:15 >= 0 then alert\n";

/// `inspeq.conf` with a one-second cycle and `routes`.
fn conf(routes: &[String]) -> String {
    let mut text = String::from("set cycle_time 1\n");
    for route in routes {
        text.push_str(route);
        text.push('\n');
    }
    text
}

fn webhook(receiver: &HttpReceiver, name: Option<&str>, path: &str) -> String {
    let to = name.map(|n| format!("to {n} ")).unwrap_or_default();
    format!("send alerts {to}via webhook with url {}", receiver.url(path))
}

/// The alerts the receiver accepted, by fingerprint, with how often each came
/// and the paths they came to.
fn deliveries(receiver: &HttpReceiver) -> BTreeMap<String, (usize, Vec<String>)> {
    let mut seen: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    for request in receiver.accepted() {
        for alert in request.json()["alerts"].as_array().expect("an alerts list") {
            let entry = seen.entry(alert["fingerprint"].as_str().unwrap().to_owned()).or_default();
            entry.0 += 1;
            entry.1.push(request.path.clone());
        }
    }
    seen
}

fn alerts_status(daemon: &Daemon) -> serde_json::Value {
    daemon.status()["alerts"].clone()
}

/// Waits until `pending` alerts wait and at least one send failed.
fn wait_pending(daemon: &Daemon, pending: u64) {
    wait_for(&format!("{pending} pending alerts and a failed send"), LIMIT, || {
        let a = alerts_status(daemon);
        (a["pending"] == pending && a["failed_attempts"].as_u64()? >= 1).then_some(())
    });
}

fn wait_delivered(daemon: &Daemon, delivered: u64) {
    wait_for(&format!("{delivered} delivered alerts"), LIMIT, || {
        let a = alerts_status(daemon);
        (a["delivered"] == delivered && a["pending"] == 0).then_some(())
    });
}

#[test]
fn reloads_that_change_the_routes_while_alerts_wait_deliver_each_alert_once() {
    let receiver = HttpReceiver::start();
    receiver.answer(503);
    let mut daemon = Daemon::builder("outbox-reload")
        .file("inspeq.conf", &conf(&[webhook(&receiver, None, "/first")]))
        .file("host.inq", THREE_RULES)
        .start();
    wait_pending(&daemon, 3);

    // A route added (every route is rebuilt), then the default route's URL
    // changed, then the added route removed again by SIGHUP: three reloads while
    // the three alerts wait.
    daemon.write("inspeq.conf", &conf(&[webhook(&receiver, None, "/first"), webhook(&receiver, Some("ops"), "/ops")]));
    daemon.ctl_ok(&["reload"]);
    daemon.write("inspeq.conf", &conf(&[webhook(&receiver, None, "/second"), webhook(&receiver, Some("ops"), "/ops")]));
    daemon.ctl_ok(&["reload"]);
    daemon.write("inspeq.conf", &conf(&[webhook(&receiver, None, "/second")]));
    daemon.signal(libc::SIGHUP);
    daemon.stderr.wait_nth("the third reload", 2, LIMIT, |l| l.contains("reload: configuration from"));
    assert_eq!(alerts_status(&daemon)["pending"], 3, "the reloads lost or added alerts");

    receiver.answer(200);
    wait_delivered(&daemon, 3);
    std::thread::sleep(QUIET);
    let seen = deliveries(&receiver);
    assert_eq!(seen.len(), 3, "three alerts: {seen:#?}");
    for (fingerprint, (times, paths)) in &seen {
        assert_eq!(*times, 1, "alert {fingerprint} delivered {times} times, to {paths:?}");
        assert_eq!(paths, &["/second"], "through the route in force when it went out");
    }
    let a = alerts_status(&daemon);
    assert_eq!((a["delivered"].as_u64(), a["pending"].as_u64()), (Some(3), Some(0)), "{a}");
    assert!(daemon.running());
}

#[test]
fn a_second_daemon_on_the_same_state_dir_exits_naming_it_and_delivers_nothing() {
    let receiver = HttpReceiver::start();
    receiver.answer(503);
    let mut first = Daemon::builder("outbox-owner")
        .file("inspeq.conf", &conf(&[webhook(&receiver, None, "/first")]))
        .file("host.inq", THREE_RULES)
        .start();
    wait_pending(&first, 3);

    // Another configuration and socket, the same state directory.
    let scratch = Scratch::new("outbox-owner-second");
    let config = scratch.dir.join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("inspeq.conf"), conf(&[webhook(&receiver, None, "/second")])).unwrap();
    std::fs::write(config.join("host.inq"), THREE_RULES).unwrap();
    let mut second = Command::new(tests::inspeqd())
        .arg("--config-dir")
        .arg(&config)
        .arg("--socket")
        .arg(scratch.dir.join("sock"))
        .arg("--state-dir")
        .arg(&first.state_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            receiver.answer(200);
            std::thread::sleep(QUIET);
            let _ = second.kill();
            let _ = second.wait();
            panic!(
                "the second inspeqd ran on the first one's state directory; deliveries: {:#?}",
                deliveries(&receiver)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status}: {stderr}");
    let expected =
        format!("state directory {} is in use by another inspeqd, pid {}", first.state_dir.display(), first.pid());
    assert!(stderr.contains(&expected), "wanted `{expected}` in: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");

    receiver.answer(200);
    wait_delivered(&first, 3);
    std::thread::sleep(QUIET);
    assert!(receiver.requests().iter().all(|r| r.path == "/first"), "the second daemon sent something");
    let seen = deliveries(&receiver);
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert!(seen.values().all(|(times, _)| *times == 1), "{seen:#?}");
    assert!(first.running());
}

/// The segment files in `route`'s outbox directory, oldest first.
fn segments(state_dir: &Path, route: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(state_dir.join("outbox").join(route))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

fn append(path: &Path, bytes: &[u8]) {
    std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(bytes).unwrap();
}

/// The condition label of the alert in one record line.
fn condition_of(line: &str) -> String {
    let record: serde_json::Value = serde_json::from_str(line).unwrap();
    let alert: Alert = serde_json::from_value(record["alert"].clone()).unwrap();
    alert.event.condition().key
}

#[test]
fn a_damaged_segment_loses_only_its_damaged_records_and_status_counts_them() {
    let receiver = HttpReceiver::start();
    receiver.answer(503);
    // Raised over two cycles: one segment or several, as the writer batched them.
    let rules = "check host\n  if load:1 >= 0 then alert\n  if load:5 >= 0 for 2 cycles then alert\n  if load:15 >= 0 for 2 cycles then alert\n";
    let mut writer = Daemon::builder("outbox-damage-writer")
        .file("inspeq.conf", &conf(&[webhook(&receiver, None, "/hook")]))
        .file("host.inq", rules)
        .start();
    wait_pending(&writer, 3);
    assert!(writer.terminate().success());
    let state_dir = writer.state_dir.clone();
    let files = segments(&state_dir, "default");
    let records: Vec<String> = files
        .iter()
        .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(records.len(), 3, "one record per line: {records:#?}");

    // The newest segment cut mid-way through its last record, as a crash of
    // the machine during a write leaves it; garbage after the oldest segment.
    let (oldest, newest) = (&files[0], &files[files.len() - 1]);
    let cut = condition_of(&records[2]);
    let len = std::fs::metadata(newest).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len - 40).unwrap();
    append(oldest, b"\n\x00\x00garbage \xff\n");

    // Started again without the rules, so the only alerts are those on disk.
    receiver.answer(200);
    let reader = Daemon::builder("outbox-damage-reader")
        .file("inspeq.conf", &conf(&[webhook(&receiver, None, "/hook")]))
        .state_dir(&state_dir)
        .start();
    wait_delivered(&reader, 2);
    let mut delivered: Vec<String> = receiver
        .accepted()
        .iter()
        .flat_map(|r| r.json()["alerts"].as_array().unwrap().clone())
        .map(|a| a["labels"]["condition"].as_str().unwrap_or_default().to_owned())
        .collect();
    delivered.sort();
    let mut intact: Vec<String> = records.iter().map(|r| condition_of(r)).filter(|c| *c != cut).collect();
    intact.sort();
    assert_eq!(delivered, intact, "the intact records, once each; {cut} was cut");
    // The cut record, and the garbage line.
    let a = alerts_status(&reader);
    assert_eq!((a["unreadable"].as_u64(), a["pending"].as_u64()), (Some(2), Some(0)), "{a}");
    assert!(reader.ctl_ok(&["status"]).contains("2 outbox record(s) could not be read back"));
    for file in [oldest, newest] {
        let bad = file.with_extension("bad");
        assert!(bad.exists(), "the damaged bytes of {} are kept in {}", file.display(), bad.display());
        reader.stderr.wait("the log naming the damaged file", LIMIT, |l| l.contains(&file.display().to_string()));
    }
    let garbage = std::fs::read(oldest.with_extension("bad")).unwrap();
    assert!(garbage.windows(7).any(|w| w == b"garbage"), "{garbage:?}");
}

/// A record as this version writes it.
fn record(n: usize, of: usize, alert: &Alert) -> String {
    format!("{}\n", json!({ "v": 1, "n": n, "of": of, "alert": alert }))
}

fn alert(service: &str, seq: u64) -> Alert {
    let mut alert = Alert::new("web1", service, AlertKind::ProcessDown, SystemTime::now());
    alert.seq = seq;
    alert
}

#[test]
fn strangers_in_the_outbox_are_skipped_with_a_warning_naming_them_and_old_files_still_read() {
    let scratch = Scratch::new("outbox-strangers");
    let state_dir = scratch.dir.join("state");
    let route = state_dir.join("outbox/default");
    std::fs::create_dir_all(route.join("x.json")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/inspeq-segment", route.join("y.json")).unwrap();
    // The previous version's format: one JSON array per file.
    std::fs::write(route.join("00000000000000000001.json"), serde_json::to_vec(&[alert("old-format", 1)]).unwrap())
        .unwrap();
    std::fs::write(route.join("00000000000000000002.jsonl"), record(0, 1, &alert("this-format", 2))).unwrap();

    let receiver = HttpReceiver::start();
    let daemon = Daemon::builder("outbox-strangers")
        .file("inspeq.conf", &conf(&[webhook(&receiver, None, "/hook")]))
        .state_dir(&state_dir)
        .start();
    wait_delivered(&daemon, 2);
    for name in ["x.json", "y.json"] {
        let path = route.join(name).display().to_string();
        daemon.stderr.wait(&format!("a warning naming {path}"), LIMIT, |l| l.contains(&path) && l.contains("skipped"));
    }
    let services: Vec<String> = receiver
        .accepted()
        .iter()
        .flat_map(|r| r.json()["alerts"].as_array().unwrap().clone())
        .map(|a| a["labels"]["service"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(services, ["old-format", "this-format"]);
    assert_eq!(alerts_status(&daemon)["unreadable"], 2, "the directory and the dangling symlink");
    assert!(route.join("x.json").is_dir(), "left for the operator");
}
