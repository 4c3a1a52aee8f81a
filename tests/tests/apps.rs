//! inspeq against the real apps (issue #11): Debian's Puma 5 (cluster mode),
//! Sidekiq 6 and Redis 7 as units of a real systemd user manager
//! (`tests::apps_harness`), watched by the real `inspeqd` with the rules a Rails
//! shop would write. Each test is one scenario an operator meets: a worker that
//! bloats, `systemctl stop` and `restart` by hand, a `kill -9` of the master or of
//! one worker, a Sidekiq restarted by inspeq, a Redis that grows.
//!
//! Alerts are read where an operator without routes reads them, on the daemon's
//! standard output (`alert: firing service=NAME event=KIND fingerprint=FP: text`);
//! its log is its standard error. Every time limit is a hang guard, never a timing
//! assertion; "a few cycles" are counted on the host's sampled load (the cycle is
//! 1 s). Root, BTF and the packages of `tests::apps_harness::PROGRAMS` needed (see
//! `tests::privileged_with`).

use std::time::Duration;

use tests::{
    apps_harness::{Apps, PROGRAMS, rss_bytes},
    daemon_harness::{Daemon, is_alert},
    init_harness::{kill9, wait_for},
    privileged_with,
};

/// Hang guard for what the daemon does at once (an alert after an exit or a crossing).
const LIMIT: Duration = Duration::from_secs(20);
/// Hang guard for what goes through systemd and a Ruby boot (restarts, reloads).
const INIT_LIMIT: Duration = Duration::from_secs(60);

/// `inspeq.conf` (a 1 s cycle) and a host check, whose sampled load counts cycles.
const CONF: &str = "set cycle_time 1\nset deploy_length 60\n";
const HOST: &str = "check host\n  if load:1 > 100000 then alert\n";

/// The seed's Puma check: a bloated app is reloaded (USR1, a phased restart), a
/// crashed one restarted.
const PUMA: &str = "check service puma with scope user\n  if memory:total_rss > 300m then alert, reload\n  if crashed then alert, restart\n";

/// An `inspeqd` watching `apps` with the checks in `services.d/apps.inq`, on the
/// manager's user bus.
fn daemon(apps: &Apps, tag: &str, checks: &str) -> Daemon {
    Daemon::builder(&format!("apps-{tag}"))
        .file("inspeq.conf", CONF)
        .file("host.inq", HOST)
        .file("services.d/apps.inq", checks)
        .env("XDG_RUNTIME_DIR", &apps.manager.runtime_dir)
        .start()
}

/// How many cycles have sampled the host (the length of `show host load:1`).
fn cycles(daemon: &Daemon) -> usize {
    let show = daemon.ctl_ok(&["show", "host", "load:1"]);
    if show.contains("no values yet") { 0 } else { show.lines().nth(1).unwrap_or("").chars().count() }
}

/// Waits until `n` more cycles have run: time for anything late to show up.
fn wait_cycles(daemon: &Daemon, n: usize) {
    let start = cycles(daemon);
    wait_for(&format!("{n} more cycles"), LIMIT + Duration::from_secs(n as u64), || {
        (cycles(daemon) >= start + n).then_some(())
    });
}

/// Alert lines, firing or resolved, of `event` about `service`, in order.
fn alerts(daemon: &Daemon, service: &str, event: &str) -> Vec<String> {
    daemon.stdout.all().into_iter().filter(|l| is_event(l, service, event)).collect()
}

fn is_event(line: &str, service: &str, event: &str) -> bool {
    ["firing", "resolved"]
        .iter()
        .any(|status| line.starts_with(&format!("alert: {status} service={service} event={event} ")))
}

fn fingerprint(line: &str) -> &str {
    line.split_once(" fingerprint=")
        .and_then(|(_, rest)| rest.split(':').next())
        .unwrap_or_else(|| panic!("no fingerprint: {line}"))
}

/// How many log lines of the daemon contain `text`.
fn logged(daemon: &Daemon, text: &str) -> usize {
    daemon.stderr.count(|l| l.contains(text))
}

/// Whether `text` names `pid` as a whole number (not as part of a longer one).
fn names_pid(text: &str, pid: u32) -> bool {
    text.split(|c: char| !c.is_ascii_digit()).any(|word| word == pid.to_string())
}

/// The service `name` in `status --json`.
fn service(daemon: &Daemon, name: &str) -> serde_json::Value {
    daemon.service(name).unwrap_or_else(|| panic!("no service `{name}` in status: {}", daemon.status()))
}

// ------------------------------------------------------------ puma

#[test]
fn puma_a_bloated_worker_is_alerted_and_reloaded_which_replaces_the_workers_under_the_same_master() {
    if !privileged_with(
        "puma_a_bloated_worker_is_alerted_and_reloaded_which_replaces_the_workers_under_the_same_master",
        PROGRAMS,
    ) {
        return;
    }
    let apps = Apps::new("bloat");
    let master = apps.start_puma();
    let workers = apps.puma_workers();
    let daemon = daemon(&apps, "bloat", PUMA);
    assert_eq!(daemon.wait_up("puma", INIT_LIMIT), master);

    // One worker takes 320 MiB: the service (about 65 MiB idle) goes past 300 MiB.
    let bloated = apps.bloat_puma_worker(320);
    assert!(workers.contains(&bloated), "/bloat was served by {bloated}, not a worker of {workers:?}");
    let alert = daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, "puma", "rule_failed"));
    assert!(alert.contains("memory:total_rss"), "{alert}");

    // The reload is USR1 to the master: every worker is replaced, the master stays.
    daemon.stderr.wait("the reload", INIT_LIMIT, |l| l.contains("service `puma`: reload done"));
    let fresh = apps.wait_puma_workers_replaced(&workers);
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "puma", "crashed"), Vec::<String>::new(), "a phased restart is no crash");
    assert_eq!(logged(&daemon, "service `puma`: restart requested"), 0, "a phased restart needs no restart");
    assert_eq!(apps.main_pid("puma.service"), master, "the master was replaced; puma.log:\n{}", apps.log("puma"));
    assert_eq!(service(&daemon, "puma")["pid"], master);
    assert_eq!(alerts(&daemon, "puma", "rule_failed").len(), 1, "{:#?}", daemon.stdout.all());
    eprintln!("workers {workers:?} replaced by {fresh:?} under master {master}");
}

#[test]
fn puma_stopped_by_the_operator_stays_stopped_with_no_crash_alert_and_no_restart() {
    if !privileged_with("puma_stopped_by_the_operator_stays_stopped_with_no_crash_alert_and_no_restart", PROGRAMS) {
        return;
    }
    let apps = Apps::new("stop");
    let master = apps.start_puma();
    let daemon = daemon(&apps, "stop", PUMA);
    assert_eq!(daemon.wait_up("puma", INIT_LIMIT), master);

    // systemctl returns once the stop job is done: puma is inactive now.
    apps.manager.systemctl_ok(&["stop", "puma.service"]);
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "puma", "crashed"), Vec::<String>::new(), "an operator's stop is no crash");
    assert_eq!(logged(&daemon, "service `puma`: restart requested"), 0, "an operator's stop was undone");
    assert_eq!(apps.active_state("puma.service"), "inactive", "puma did not stay stopped");
    assert!(
        daemon.stderr.count(|l| l.contains("puma") && l.contains("stopped by")) >= 1,
        "the log does not say who stopped puma: {:#?}",
        daemon.stderr.all()
    );
}

#[test]
fn puma_restarted_by_the_operator_is_no_crash_and_counts_exactly_one_restart() {
    if !privileged_with("puma_restarted_by_the_operator_is_no_crash_and_counts_exactly_one_restart", PROGRAMS) {
        return;
    }
    let apps = Apps::new("restart");
    let first = apps.start_puma();
    let daemon = daemon(&apps, "restart", PUMA);
    assert_eq!(daemon.wait_up("puma", INIT_LIMIT), first);

    apps.manager.systemctl_ok(&["restart", "puma.service"]);
    let second = apps.wait_puma_ready();
    assert_ne!(second, first);
    daemon.wait_up_not("puma", Some(first), INIT_LIMIT);
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "puma", "crashed"), Vec::<String>::new(), "an operator's restart is no crash");
    assert_eq!(logged(&daemon, "service `puma`: restart requested"), 0, "inspeq restarted puma on top of the operator");
    let status = service(&daemon, "puma");
    assert_eq!(status["pid"], apps.main_pid("puma.service"), "{status}");
    assert_eq!(status["restarts"], 1, "{status}");
}

#[test]
fn puma_master_killed_with_sigkill_is_one_crash_alert_one_restart_and_one_counted_restart() {
    if !privileged_with(
        "puma_master_killed_with_sigkill_is_one_crash_alert_one_restart_and_one_counted_restart",
        PROGRAMS,
    ) {
        return;
    }
    let apps = Apps::new("kill-master");
    let first = apps.start_puma();
    let daemon = daemon(&apps, "kill-master", PUMA);
    assert_eq!(daemon.wait_up("puma", INIT_LIMIT), first);

    // The workers notice their master is gone and exit 1 by themselves.
    kill9(first);
    let alert = daemon.stdout.wait("the crash alert", LIMIT, |l| is_alert(l, "puma", "crashed"));
    assert!(alert.contains(&format!("pid {first} was killed by signal 9 (SIGKILL)")), "{alert}");
    daemon.stderr.wait("the restart", INIT_LIMIT, |l| l.contains("service `puma`: restart done"));
    let second = daemon.wait_up_not("puma", Some(first), INIT_LIMIT);
    assert_eq!(apps.wait_puma_ready(), second);
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "puma", "crashed").len(), 1, "{:#?}", daemon.stdout.all());
    assert_eq!(logged(&daemon, "service `puma`: restart requested"), 1, "{:#?}", daemon.stderr.all());
    assert_eq!(apps.main_pid("puma.service"), second);
    let status = service(&daemon, "puma");
    assert_eq!(status["restarts"], 1, "{status}");
}

#[test]
fn puma_worker_killed_with_sigkill_is_a_worker_crash_not_a_crash_of_the_service() {
    if !privileged_with("puma_worker_killed_with_sigkill_is_a_worker_crash_not_a_crash_of_the_service", PROGRAMS) {
        return;
    }
    let apps = Apps::new("kill-worker");
    let master = apps.start_puma();
    let workers = apps.puma_workers();
    let daemon = daemon(
        &apps,
        "kill-worker",
        "check service puma with scope user\n  if worker crashed then alert\n  if crashed then alert, restart\n",
    );
    assert_eq!(daemon.wait_up("puma", INIT_LIMIT), master);

    // The master forks a new worker in its place.
    let victim = workers[0];
    kill9(victim);
    let alert = daemon.stdout.wait("the worker crash alert", LIMIT, |l| is_alert(l, "puma", "worker_crashed"));
    assert!(names_pid(&alert, victim), "the alert does not name worker {victim}: {alert}");
    apps.wait_puma_workers_replaced(&[victim]);
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "puma", "worker_crashed").len(), 1, "{:#?}", daemon.stdout.all());
    assert_eq!(alerts(&daemon, "puma", "crashed"), Vec::<String>::new(), "a worker's death is no crash of puma");
    assert_eq!(logged(&daemon, "service `puma`: restart requested"), 0);
    assert_eq!(apps.main_pid("puma.service"), master);
    let status = service(&daemon, "puma");
    assert_eq!(status["workers"]["crashed"], 1, "{status}");
}

// ------------------------------------------------------------ sidekiq

#[test]
fn sidekiq_restarted_by_inspeq_leaves_no_down_alert_without_its_up() {
    if !privileged_with("sidekiq_restarted_by_inspeq_leaves_no_down_alert_without_its_up", PROGRAMS) {
        return;
    }
    let apps = Apps::new("sidekiq");
    apps.start_redis();
    let first = apps.start_sidekiq();
    // No exit rules: Inspeqtor's default, a down alert and an up alert.
    let daemon =
        daemon(&apps, "sidekiq", "check service sidekiq with scope user\n  if memory:rss > 128m then restart\n");
    assert_eq!(daemon.wait_up("sidekiq", INIT_LIMIT), first);
    let idle = rss_bytes(first).unwrap();
    assert!(idle < 96 << 20, "sidekiq idles at {idle} bytes, too close to the rule's 128m");

    // A leaking job: Sidekiq grows by 192 MiB, the rule restarts it.
    apps.enqueue_sidekiq_bloat(192);
    daemon.stderr.wait("the restart", INIT_LIMIT, |l| l.contains("service `sidekiq`: restart done"));
    let second = daemon.wait_up_not("sidekiq", Some(first), INIT_LIMIT);
    apps.wait_sidekiq_beating(second);
    wait_cycles(&daemon, 3);
    assert_eq!(logged(&daemon, "service `sidekiq`: restart requested"), 1, "{:#?}", daemon.stderr.all());

    // Every down has its up, with the same fingerprint, after it.
    let lines = daemon.stdout.all();
    let (downs, ups) = (alerts(&daemon, "sidekiq", "process_down"), alerts(&daemon, "sidekiq", "process_up"));
    // inspeq's own restart opens nothing: no down, so no up either.
    assert_eq!((downs.len(), ups.len()), (0, 0), "{:#?}", daemon.stdout.all());
    for (at, down) in lines.iter().enumerate().filter(|(_, l)| is_event(l, "sidekiq", "process_down")) {
        let up = lines[at + 1..]
            .iter()
            .find(|l| is_event(l, "sidekiq", "process_up") && fingerprint(l) == fingerprint(down));
        assert!(up.is_some(), "a down alert with no up after it: {down}\n{lines:#?}");
    }
}

// ------------------------------------------------------------ redis

#[test]
fn redis_populated_past_64m_raises_one_memory_alert() {
    if !privileged_with("redis_populated_past_64m_raises_one_memory_alert", PROGRAMS) {
        return;
    }
    let apps = Apps::new("redis");
    let pid = apps.start_redis();
    let daemon = daemon(&apps, "redis", "check service redis with scope user\n  if memory:rss > 64m then alert\n");
    assert_eq!(daemon.wait_up("redis", INIT_LIMIT), pid);

    // 500,000 keys of 100 bytes: about 100 MiB resident.
    assert_eq!(apps.redis_cli(&["DEBUG", "POPULATE", "500000", "key", "100"]), "OK");
    let rss = rss_bytes(pid).unwrap();
    assert!(rss > 64 << 20, "redis grew to only {rss} bytes");
    let alert = daemon.stdout.wait("the memory alert", LIMIT, |l| is_alert(l, "redis", "rule_failed"));
    assert!(alert.contains("memory:rss"), "{alert}");
    wait_cycles(&daemon, 3);
    assert_eq!(alerts(&daemon, "redis", "rule_failed").len(), 1, "{:#?}", daemon.stdout.all());
}
