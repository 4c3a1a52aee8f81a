//! Engine scenarios as specifications: a configuration, then a table of `(seconds, input) -> actions`.
//!
//! Actions are written in a compact form so a table reads like a log:
//! `alert ROUTE TARGET: WHAT` (route `-` when the rule names none; ` (owner NAME)` after the target when the check
//! has an owner, carried apart from the route for the outbox to choose), `restart web`, `reload web`,
//! `unmonitor web`, `exec /path args`.

use std::net::SocketAddr;

use inspeq_daemon::config::model::ProbeId;
use inspeq_daemon::config::{Diagnostic, load};
use inspeq_daemon::engine::{
    Action, EngineState, Exit, ExitCause, ExitStatus, Input, NoticeKind, Probed, ProcessExit, Sample, Target,
    Timestamp, step, swap_used_percent,
};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

fn engine(files: &[(&str, &str)]) -> EngineState {
    let (config, diagnostics) = load(files.iter().copied());
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "scenario configuration has errors: {errors:#?}");
    EngineState::new(&config, Timestamp::ZERO)
}

fn describe(action: &Action) -> String {
    match action {
        Action::Alert { route, owner, event } => {
            let text = event.rule.as_ref().map_or("", |r| r.text.as_str());
            let what = match &event.kind {
                NoticeKind::RuleFailed { value } => format!("failed `{text}` ({value})"),
                NoticeKind::RuleRecovered { value, failed_for } => {
                    format!("recovered `{text}` ({value}) after {}s", failed_for.as_secs())
                }
                NoticeKind::ProcessExited(exit) => match exit.status {
                    ExitStatus::Code(code) => format!("`{text}` on exit code {code}"),
                    ExitStatus::Signal { signal, .. } => format!("`{text}` on signal {signal}"),
                    ExitStatus::Unknown => format!("`{text}` on an unknown exit"),
                },
                NoticeKind::Unreachable { daemon } => format!("`{text}`: {daemon} unreachable"),
                NoticeKind::Reachable { daemon, failed_for } => {
                    format!("recovered `{text}`: {daemon} reached after {}s", failed_for.as_secs())
                }
                NoticeKind::ProbeFailed { probe } => format!("`{text}`: probe {} fails", probe.0),
                NoticeKind::ProbeAnswers { probe, failed_for } => {
                    format!("recovered `{text}`: probe {} answers after {}s", probe.0, failed_for.as_secs())
                }
                NoticeKind::ListenerStopped { port, address, pid } => match (address, pid) {
                    (Some(address), Some(pid)) => format!("`{text}`: pid {pid} closed {address}"),
                    _ => format!("`{text}`: port {port} not listed"),
                },
                NoticeKind::Listening { port, failed_for } => {
                    format!("recovered `{text}`: port {port} listened on after {}s", failed_for.as_secs())
                }
                NoticeKind::ProcessDown => "down".to_owned(),
                NoticeKind::ProcessUp { pid } => format!("up as pid {pid}"),
                NoticeKind::ForkRate { forks, window } => {
                    format!("`{text}`: {forks} forks in {}s", window.as_secs())
                }
                NoticeKind::ForkRateRecovered => format!("recovered `{text}`"),
                NoticeKind::Flapping { restarts, window } => {
                    format!("`{text}`: {restarts} restarts in {}s", window.as_secs())
                }
                NoticeKind::FlappingRecovered => format!("recovered `{text}`"),
                NoticeKind::RestartFailed { reason } => format!("restart failed: {reason}"),
                NoticeKind::WorkerDied(exit) => match exit.status.signal() {
                    Some(signal) if exit.oom_killed => {
                        format!("`{text}`: worker {} oom-killed ({signal})", exit.pid)
                    }
                    Some(signal) => format!("`{text}`: worker {} on signal {signal}", exit.pid),
                    None => format!("`{text}`: worker {}", exit.pid),
                },
                NoticeKind::WorkerDeaths { deaths, window } => {
                    format!("`{text}`: {deaths} worker deaths in {}s", window.as_secs())
                }
                NoticeKind::WorkerDeathsRecovered => format!("recovered `{text}`"),
                NoticeKind::JobOverdue { job, .. } => format!("job {job} overdue"),
                NoticeKind::JobRan { job } => format!("job {job} ran"),
            };
            let owner = owner.as_ref().map_or_else(String::new, |o| format!(" (owner {o})"));
            format!("alert {} {}{owner}: {what}", route.as_deref().unwrap_or("-"), event.target)
        }
        Action::Restart { service } => format!("restart {service}"),
        Action::InitRestarts { service } => format!("init restarts {service}"),
        Action::Reload { service } => format!("reload {service}"),
        Action::Unmonitor { service } => format!("unmonitor {service}"),
        Action::Exec { argv, .. } => format!("exec {}", argv.join(" ")),
    }
}

/// Runs the steps in order, checking each step's actions exactly.
fn play(state: &mut EngineState, steps: Vec<(u64, Input, &[&str])>) {
    for (i, (at, input, expected)) in steps.into_iter().enumerate() {
        let shown = format!("{input:?}");
        let actual: Vec<String> = step(state, input, Timestamp::from_secs(at)).iter().map(describe).collect();
        assert_eq!(actual, expected, "step {i} at {at}s: {shown}");
    }
}

fn svc(name: &str, metrics: &[(&str, f64)]) -> Input {
    let sample = metrics.iter().fold(Sample::new(Target::Service(name.to_owned())), |s, (m, v)| s.with(m, *v));
    Input::Sample(sample)
}

fn host(cores: u32, metrics: &[(&str, f64)]) -> Input {
    let sample = metrics.iter().fold(Sample::new(Target::Host).cores(cores), |s, (m, v)| s.with(m, *v));
    Input::Sample(sample)
}

/// An unexpected exit of pid 100 with `status`.
fn exit(service: &str, status: ExitStatus) -> Input {
    Input::ProcessExited(ProcessExit::unexpected(service, Exit::new(100, status)))
}

fn code(code: i32) -> ExitStatus {
    ExitStatus::Code(code)
}

fn signal(signal: i32) -> ExitStatus {
    ExitStatus::Signal { signal, core_dumped: false }
}

fn started(service: &str, pid: u32) -> Input {
    Input::ProcessStarted { service: service.to_owned(), pid }
}

const NONE: &[&str] = &[];

#[test]
fn a_gauge_rule_fails_once_recovers_once_and_never_restarts_on_recovery() {
    let mut s = engine(&[("web.inq", "check service web\n  if memory:rss > 1g then alert, restart\n")]);
    play(
        &mut s,
        vec![
            (0, svc("web", &[("memory:rss", 0.5 * GIB)]), NONE),
            (
                15,
                svc("web", &[("memory:rss", 2.0 * GIB)]),
                &["alert - web: failed `memory:rss > 1g` (2147483648)", "restart web"],
            ),
            (30, svc("web", &[("memory:rss", 3.0 * GIB)]), NONE),
            (45, svc("web", &[("memory:rss", 0.5 * GIB)]), NONE),
            // Inspeqtor's quirk: its Restarter also fired on RuleRecovered. Only the alert runs here.
            (
                60,
                svc("web", &[("memory:rss", 0.5 * GIB)]),
                &["alert - web: recovered `memory:rss > 1g` (536870912) after 45s"],
            ),
            (75, svc("web", &[("memory:rss", 0.5 * GIB)]), NONE),
        ],
    );
}

#[test]
fn one_good_cycle_inside_an_incident_does_not_end_it() {
    let mut s = engine(&[("web.inq", "check service web\n  if memory:rss > 1g then alert\n")]);
    play(
        &mut s,
        vec![
            (0, svc("web", &[("memory:rss", 2.0 * GIB)]), &["alert - web: failed `memory:rss > 1g` (2147483648)"]),
            (15, svc("web", &[("memory:rss", 0.0)]), NONE),
            (30, svc("web", &[("memory:rss", 2.0 * GIB)]), NONE),
            (45, svc("web", &[("memory:rss", 0.0)]), NONE),
            (60, svc("web", &[("memory:rss", 0.0)]), &["alert - web: recovered `memory:rss > 1g` (0) after 60s"]),
        ],
    );
}

#[test]
fn for_n_cycles_needs_n_consecutive_tripped_cycles() {
    let mut s = engine(&[("web.inq", "check service web\n  if memory:rss > 1g for 3 cycles then alert\n")]);
    let high = || svc("web", &[("memory:rss", 2.0 * GIB)]);
    let low = || svc("web", &[("memory:rss", 0.0)]);
    play(
        &mut s,
        vec![
            (0, high(), NONE),
            (15, high(), NONE),
            (30, low(), NONE),
            (45, high(), NONE),
            (60, high(), NONE),
            (75, high(), &["alert - web: failed `memory:rss > 1g for 3 cycles` (2147483648)"]),
        ],
    );
}

#[test]
fn missing_data_skips_the_cycle_without_touching_the_rule() {
    let mut s = engine(&[("web.inq", "check service web\n  if memory:rss > 1g for 2 cycles then alert\n")]);
    play(
        &mut s,
        vec![
            (0, svc("web", &[("memory:rss", 2.0 * GIB)]), NONE),
            (15, svc("web", &[]), NONE),
            (
                30,
                svc("web", &[("memory:rss", 2.0 * GIB)]),
                &["alert - web: failed `memory:rss > 1g for 2 cycles` (2147483648)"],
            ),
        ],
    );
}

#[test]
fn counters_compare_the_change_per_cycle_or_per_second() {
    let mut s = engine(&[(
        "services.d/db.inq",
        "check service db\n  if mysql:Queries > 1k/sec then alert\n  if mysql:Slow_queries > 10 then alert\n",
    )]);
    play(
        &mut s,
        vec![
            // The first sample of a counter has nothing to compare with: skipped, not read as 0 or -1.
            (0, svc("db", &[("mysql:Queries", 1_000_000.0), ("mysql:Slow_queries", 500.0)]), NONE),
            (15, svc("db", &[("mysql:Queries", 1_015_000.0), ("mysql:Slow_queries", 505.0)]), NONE),
            (
                30,
                svc("db", &[("mysql:Queries", 1_045_720.0), ("mysql:Slow_queries", 520.0)]),
                &[
                    "alert - db: failed `mysql:Queries > 1k/sec` (2048)",
                    "alert - db: failed `mysql:Slow_queries > 10` (15)",
                ],
            ),
            // A counter going backwards (the server restarted) gives no value this cycle.
            (45, svc("db", &[("mysql:Queries", 10.0), ("mysql:Slow_queries", 0.0)]), NONE),
        ],
    );
}

#[test]
fn host_cpu_is_normalised_per_core_and_process_cpu_is_per_one_core() {
    let files = [
        ("host.inq", "check host\n  if cpu:user > 50% then alert\n"),
        ("web.inq", "check service web\n  if cpu:user > 150% then alert\n"),
    ];
    let mut s = engine(&files);
    play(
        &mut s,
        vec![
            (0, host(4, &[("cpu:user", 1000.0)]), NONE),
            // 36 CPU-seconds in 15 s on 4 cores: 60 % of the machine (Inspeqtor would say 240 %).
            (15, host(4, &[("cpu:user", 1036.0)]), &["alert - host: failed `cpu:user > 50%` (60)"]),
            (0, svc("web", &[("cpu:user", 10.0)]), NONE),
            // 30 CPU-seconds in 15 s: two cores busy, 200 % of one core.
            (15, svc("web", &[("cpu:user", 40.0)]), &["alert - web: failed `cpu:user > 150%` (200)"]),
        ],
    );
}

#[test]
fn a_host_without_swap_uses_zero_percent_of_it() {
    assert_eq!(swap_used_percent(0, 0), 0.0);
    assert_eq!(swap_used_percent(1000, 250), 75.0);
    assert_eq!(swap_used_percent(1000, 2000), 0.0);
}

#[test]
fn deploys_silence_rules_and_reset_their_counts_then_one_grace_cycle() {
    let files = [
        ("inspeq.conf", "set deploy_length 60\n"),
        ("web.inq", "check service web\n  if memory:rss > 1g for 2 cycles then alert\n  if crashed then restart\n"),
    ];
    let mut s = engine(&files);
    let high = || svc("web", &[("memory:rss", 2.0 * GIB)]);
    play(
        &mut s,
        vec![
            (0, high(), NONE),
            (10, Input::DeployStarted, NONE),
            (15, high(), NONE),
            (20, exit("web", code(1)), NONE),
            (30, high(), NONE),
            (40, Input::DeployFinished, NONE),
            // Still inside the grace cycle (15 s after finish).
            (45, high(), NONE),
            // The count restarted from zero after the deploy: two more cycles are needed.
            (60, high(), NONE),
            (75, high(), &["alert - web: failed `memory:rss > 1g for 2 cycles` (2147483648)"]),
            (80, exit("web", code(1)), &["restart web"]),
        ],
    );
}

#[test]
fn a_deploy_that_never_finishes_ends_after_deploy_length() {
    let files = [
        ("inspeq.conf", "set deploy_length 60\n"),
        ("web.inq", "check service web\n  if memory:rss > 1g then alert\n"),
    ];
    let mut s = engine(&files);
    play(
        &mut s,
        vec![
            (0, Input::DeployStarted, NONE),
            (59, svc("web", &[("memory:rss", 2.0 * GIB)]), NONE),
            (60, svc("web", &[("memory:rss", 2.0 * GIB)]), &["alert - web: failed `memory:rss > 1g` (2147483648)"]),
        ],
    );
}

#[test]
fn exit_rules_fire_the_instant_the_kernel_reports_an_exit() {
    let inq = "check service web\n\
               \x20 if exited then alert\n\
               \x20 if crashed then restart\n\
               \x20 if signaled SIGKILL then exec /usr/local/bin/why-killed web\n\
               \x20 if exit_code == 75 then reload\n\
               \x20 if oom_killed then alert\n";
    let mut s = engine(&[("web.inq", inq)]);
    let oom = Input::ProcessExited(ProcessExit {
        service: "web".into(),
        exit: Exit {
            pid: 7,
            status: ExitStatus::Signal { signal: 9, core_dumped: false },
            oom_killed: true,
            rss_bytes: None,
        },
        cause: ExitCause::Unexpected { init_restarts: false },
        init_says_clean: false,
    });
    let requested = Input::ProcessExited(ProcessExit {
        service: "web".into(),
        exit: Exit {
            pid: 8,
            status: ExitStatus::Signal { signal: 15, core_dumped: false },
            oom_killed: false,
            rss_bytes: None,
        },
        cause: ExitCause::Restart,
        init_says_clean: false,
    });
    play(
        &mut s,
        vec![
            (1, exit("web", code(0)), &["alert - web: `exited` on exit code 0"]),
            (2, exit("web", code(75)), &["alert - web: `exited` on exit code 75", "restart web", "reload web"]),
            (3, exit("web", signal(11)), &["alert - web: `exited` on signal 11", "restart web"]),
            (
                4,
                oom,
                &[
                    "alert - web: `exited` on signal 9",
                    "restart web",
                    "exec /usr/local/bin/why-killed web",
                    "alert - web: `oom_killed` on signal 9",
                ],
            ),
            // inspeq's own restart (or a unit stop) is not a crash.
            (5, requested, NONE),
        ],
    );
}

#[test]
fn an_exit_with_an_unknown_status_is_a_crash_unless_the_init_system_says_it_was_clean() {
    // What the tiers without eBPF report when the parent reaped the process first.
    let inq = "check service web\n\
               \x20 if crashed then alert, restart\n\
               \x20 if exit_code == 0 then exec /bin/true\n";
    let mut s = engine(&[("web.inq", inq)]);
    let clean = Input::ProcessExited(ProcessExit {
        service: "web".into(),
        exit: Exit { pid: 101, status: ExitStatus::Unknown, oom_killed: false, rss_bytes: None },
        cause: ExitCause::Unexpected { init_restarts: false },
        init_says_clean: true,
    });
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            // Unknown: `crashed` matches, `exit_code` rules (which need a code) do not.
            (1, exit("web", ExitStatus::Unknown), &["alert - web: `crashed` on an unknown exit", "restart web"]),
            // The crash alert opened the service's condition: the next start resolves it.
            (2, started("web", 101), &["alert - web: up as pid 101"]),
            (3, clean, NONE),
        ],
    );
    // Without exit rules, the built-in down alert.
    let mut s = engine(&[("web.inq", "check service web\n  if memory:rss > 1g then alert\n")]);
    play(&mut s, vec![(0, started("web", 100), NONE), (1, exit("web", ExitStatus::Unknown), &["alert - web: down"])]);
}

/// How each exit rule judges an exit whose status nobody learned: `exited` and `crashed` match (it is gone, and
/// silence would be the worse error), and no rule that needs what is unknown does: not `signaled`, and no
/// `exit_code` comparison, `== 0` and `!= 0` alike. Never a made-up code 0.
#[test]
fn an_unknown_exit_matches_exited_and_crashed_and_nothing_that_needs_a_code_or_a_signal() {
    let inq = "check service web\n\
               \x20 if exited then alert\n\
               \x20 if crashed then restart\n\
               \x20 if exit_code == 0 then exec /bin/zero\n\
               \x20 if exit_code != 0 then exec /bin/nonzero\n\
               \x20 if signaled then exec /bin/signaled\n\
               \x20 if oom_killed then exec /bin/oom\n";
    let mut s = engine(&[("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            (1, exit("web", ExitStatus::Unknown), &["alert - web: `exited` on an unknown exit", "restart web"]),
            (2, started("web", 101), &["alert - web: up as pid 101"]),
            // The same rules on a known clean exit and a known failure, for contrast.
            (3, exit("web", code(0)), &["alert - web: `exited` on exit code 0", "exec /bin/zero"]),
            (4, started("web", 102), &["alert - web: up as pid 102"]),
            (5, exit("web", code(2)), &["alert - web: `exited` on exit code 2", "restart web", "exec /bin/nonzero"]),
        ],
    );
}

/// The kernel's record has the resident memory at exit; the notice carries it, with the OOM mark, to the alert.
#[test]
fn an_oom_kill_carries_its_rss_at_exit_into_the_notice() {
    let mut s =
        engine(&[("web.inq", "check service web\n  if oom_killed then alert\n  if worker oom_killed then alert\n")]);
    let killed = |pid| Exit {
        pid,
        status: ExitStatus::Signal { signal: 9, core_dumped: false },
        oom_killed: true,
        rss_bytes: Some(3 << 30),
    };
    step(&mut s, started("web", 100), Timestamp::from_secs(0));
    let inputs = [
        Input::WorkerDied(ProcessExit::unexpected("web", killed(200))),
        Input::ProcessExited(ProcessExit::unexpected("web", killed(100))),
    ];
    for (i, input) in inputs.into_iter().enumerate() {
        let actions = step(&mut s, input, Timestamp::from_secs(1 + i as u64));
        let [Action::Alert { event, .. }] = &actions[..] else { panic!("one alert expected: {actions:?}") };
        let exit = match &event.kind {
            NoticeKind::WorkerDied(exit) | NoticeKind::ProcessExited(exit) => *exit,
            other => panic!("not an exit: {other:?}"),
        };
        assert_eq!(exit, killed(if i == 0 { 200 } else { 100 }));
    }
}

#[test]
fn without_exit_rules_a_service_reports_down_and_up_like_inspeqtor() {
    let mut s = engine(&[
        ("inspeq.conf", "send alerts to ops via log\n"),
        ("web.inq", "check service web with owner ops\n  if memory:rss > 1g then alert\n"),
    ]);
    play(
        &mut s,
        vec![
            // Found running at startup: silent.
            (0, started("web", 10), NONE),
            (5, exit("web", code(1)), &["alert - web (owner ops): down"]),
            // The init system saying the same again changes nothing.
            (6, Input::ServiceDown { service: "web".into(), stopped: false }, NONE),
            (8, started("web", 11), &["alert - web (owner ops): up as pid 11"]),
        ],
    );
}

#[test]
fn fork_rate_is_judged_over_one_cycle_and_reported_once_per_burst() {
    let mut s = engine(&[
        ("inspeq.conf", "set cycle_time 10\n"),
        ("web.inq", "check service web\n  if forks > 10/sec then alert\n"),
    ]);
    // 100 forks in a 10 s cycle is exactly 10/sec: not more.
    let mut steps: Vec<(u64, Input, &[&str])> =
        (0..100).map(|i| (i / 10, Input::Forked { service: "web".into() }, NONE)).collect();
    steps.push((9, Input::Forked { service: "web".into() }, &["alert - web: `forks > 10/sec`: 101 forks in 10s"]));
    steps.push((9, Input::Forked { service: "web".into() }, NONE));
    steps.push((9, Input::Cycle, NONE));
    // At 10 s the forks of second 0 leave the window: 91 in the last 10 s.
    steps.push((10, Input::Cycle, &["alert - web: recovered `forks > 10/sec`"]));
    play(&mut s, steps);
}

#[test]
fn flapping_is_counted_in_time_and_unmonitor_stops_everything_until_remonitor() {
    let inq =
        "check service web\n  if restarts > 2 within 5 minutes then unmonitor, alert\n  if crashed then restart\n";
    let mut s = engine(&[("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("web", 1), NONE),
            (10, exit("web", code(1)), &["restart web"]),
            (11, started("web", 2), NONE),
            (20, exit("web", code(1)), &["restart web"]),
            (21, started("web", 3), NONE),
            (30, exit("web", code(1)), &["restart web"]),
            (
                31,
                started("web", 4),
                &["unmonitor web", "alert - web: `restarts > 2 within 5 minutes`: 3 restarts in 300s"],
            ),
            (40, exit("web", code(1)), NONE),
            (50, started("web", 5), NONE),
            (60, Input::Remonitor { service: "web".into() }, NONE),
            (70, exit("web", code(1)), &["restart web"]),
        ],
    );
    assert!(!s.is_unmonitored("web"));
}

#[test]
fn restarts_spread_wider_than_the_window_are_not_flapping() {
    let inq = "check service web\n  if restarts > 1 within 2 cycles then alert\n";
    let mut s = engine(&[("inspeq.conf", "set cycle_time 10\n"), ("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("web", 1), NONE),
            (10, started("web", 2), NONE),
            (30, started("web", 3), NONE),
            (35, started("web", 4), &["alert - web: `restarts > 1 within 2 cycles`: 2 restarts in 20s"]),
            (49, Input::Cycle, NONE),
            // The restart at 30 s is now a full window (20 s) old.
            (50, Input::Cycle, &["alert - web: recovered `restarts > 1 within 2 cycles`"]),
        ],
    );
}

#[test]
fn jobs_are_overdue_after_their_period_plus_a_minute_and_report_when_they_run() {
    let mut s = engine(&[
        ("inspeq.conf", "send alerts to ops via log\n"),
        ("jobs.inq", "check jobs with owner ops\nbackup happens every 1 hour\n"),
    ]);
    play(
        &mut s,
        vec![
            (3659, Input::Cycle, NONE),
            (3660, Input::Cycle, &["alert - host (owner ops): job backup overdue"]),
            (3675, Input::Cycle, NONE),
            (3700, Input::JobDone { job: "backup".into() }, &["alert - host (owner ops): job backup ran"]),
            (3700 + 3659, Input::Cycle, NONE),
            (3700 + 3660, Input::Cycle, &["alert - host (owner ops): job backup overdue"]),
        ],
    );
    assert!(s.knows_job("backup") && !s.knows_job("nightly"));
}

/// The engine carries the rule's `alert NAME` and the check's owner apart; the outbox picks the route from both
/// (`alert::Routes::select`: the rule's, else the owner's, else the default).
#[test]
fn alerts_carry_the_rules_route_and_the_checks_owner_apart() {
    let conf = "send alerts via log\nsend alerts to ops via log\nsend alerts to dev via log\n";
    let inq = "check service web with owner dev\n  if memory:rss > 1g then alert ops\n  if memory:rss > 2g then alert\n\
               \x20 if crashed then alert dev\n\
               check service db\n  if memory:rss > 1g then alert\n";
    let mut s = engine(&[("inspeq.conf", conf), ("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (
                0,
                svc("web", &[("memory:rss", 3.0 * GIB)]),
                &[
                    "alert ops web (owner dev): failed `memory:rss > 1g` (3221225472)",
                    "alert - web (owner dev): failed `memory:rss > 2g` (3221225472)",
                ],
            ),
            (0, svc("db", &[("memory:rss", 3.0 * GIB)]), &["alert - db: failed `memory:rss > 1g` (3221225472)"]),
            // A rule naming the owner's route still names it: nothing is folded or unfolded on the way.
            (1, started("web", 100), NONE),
            (2, exit("web", signal(9)), &["alert dev web (owner dev): `crashed` on signal 9"]),
            // The engine's own alerts (here: up after the crash's alert) name no route, only the owner.
            (3, started("web", 101), &["alert - web (owner dev): up as pid 101"]),
        ],
    );
}

#[test]
fn inputs_for_unknown_services_are_ignored() {
    let mut s = engine(&[("web.inq", "check service web\n  if exited then alert\n")]);
    play(
        &mut s,
        vec![
            (0, exit("ghost", code(1)), NONE),
            (0, svc("ghost", &[("memory:rss", 1.0)]), NONE),
            (0, Input::JobDone { job: "nope".into() }, NONE),
        ],
    );
}

/// A reload builds a new engine from the new configuration; `carry_over` hands it
/// the old one's state for checks that did not change.
fn reloaded(old: &EngineState, files: &[(&str, &str)], at: u64) -> EngineState {
    let (config, diagnostics) = load(files.iter().copied());
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
    let mut fresh = EngineState::new(&config, Timestamp::from_secs(at));
    fresh.carry_over(old);
    fresh
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_checks_and_resets_changed_ones() {
    let web = ("web.inq", "check service web\n  if memory:rss > 1g then alert, restart\n");
    let mut s = engine(&[web]);
    play(
        &mut s,
        vec![(
            0,
            svc("web", &[("memory:rss", 2.0 * GIB)]),
            &["alert - web: failed `memory:rss > 1g` (2147483648)", "restart web"],
        )],
    );
    // Unchanged: still triggered, so no second alert and no second restart; the
    // recovery still comes after two good cycles.
    let mut s = reloaded(&s, &[web], 10);
    play(
        &mut s,
        vec![
            (15, svc("web", &[("memory:rss", 2.0 * GIB)]), NONE),
            (30, svc("web", &[("memory:rss", 0.5 * GIB)]), NONE),
            (
                45,
                svc("web", &[("memory:rss", 0.5 * GIB)]),
                &["alert - web: recovered `memory:rss > 1g` (536870912) after 45s"],
            ),
        ],
    );
    // Changed (a new threshold): a fresh rule, which fails anew.
    let changed = ("web.inq", "check service web\n  if memory:rss > 1.5g then alert\n");
    let mut s = reloaded(&s, &[changed], 50);
    play(
        &mut s,
        vec![(60, svc("web", &[("memory:rss", 2.0 * GIB)]), &["alert - web: failed `memory:rss > 1.5g` (2147483648)"])],
    );
}

#[test]
fn a_reload_keeps_deploy_silence_unmonitor_and_job_runs() {
    let files = [
        ("web.inq", "check service web\n  if crashed then alert, unmonitor\n"),
        ("jobs.inq", "check jobs\n  backup happens every 1 hour\n"),
    ];
    let mut s = engine(&files);
    let crash = || {
        Input::ProcessExited(ProcessExit {
            service: "web".into(),
            exit: Exit {
                pid: 7,
                status: ExitStatus::Signal { signal: 9, core_dumped: false },
                oom_killed: false,
                rss_bytes: None,
            },
            cause: ExitCause::Unexpected { init_restarts: false },
            init_says_clean: false,
        })
    };
    play(
        &mut s,
        vec![
            (0, Input::ProcessStarted { service: "web".into(), pid: 7 }, NONE),
            (5, crash(), &["alert - web: `crashed` on signal 9", "unmonitor web"]),
            (3000, Input::JobDone { job: "backup".into() }, NONE),
            (3100, Input::DeployStarted, NONE),
        ],
    );
    let s = reloaded(&s, &files, 3110);
    assert!(s.is_unmonitored("web"), "a reload must not monitor an unmonitored service again");
    assert!(s.is_silenced(Timestamp::from_secs(3120)), "the deploy silence goes on");
    let (_, last_run, overdue) = s.jobs().next().unwrap();
    assert_eq!((last_run, overdue), (Timestamp::from_secs(3000), false), "the job's last run is kept");
}

/// An exit of `pid` with `cause`, killed by `signal`.
fn ended(service: &str, pid: u32, signal: i32, cause: ExitCause) -> Input {
    Input::ProcessExited(ProcessExit {
        cause,
        ..ProcessExit::unexpected(service, Exit::new(pid, ExitStatus::Signal { signal, core_dumped: false }))
    })
}

const CRASH: ExitCause = ExitCause::Unexpected { init_restarts: false };

fn worker(service: &str, pid: u32, signal: i32, oom_killed: bool) -> Input {
    let status = ExitStatus::Signal { signal, core_dumped: false };
    Input::WorkerDied(ProcessExit::unexpected(service, Exit { pid, status, oom_killed, rss_bytes: None }))
}

#[test]
fn an_exit_the_init_system_was_asked_for_is_no_crash_and_its_next_start_is_quiet() {
    // The seed's Puma: `systemctl stop` and `systemctl restart` end the master by SIGTERM.
    let inq = "check service puma\n  if crashed then alert, restart\n";
    let mut s = engine(&[("puma.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("puma", 10), NONE),
            (5, ended("puma", 10, 15, ExitCause::InitStopped), NONE),
            // The init system says it is stopped; that is where it stays.
            (6, Input::ServiceDown { service: "puma".into(), stopped: true }, NONE),
            (20, Input::Cycle, NONE),
            // The operator starts it again: nothing was open, nothing to resolve.
            (30, started("puma", 11), NONE),
            // inspeq's own restart: the same.
            (40, ended("puma", 11, 15, ExitCause::Restart), NONE),
            (41, started("puma", 12), NONE),
        ],
    );
    assert_eq!(s.counts("puma").0, 2, "two new main processes after the first");
}

#[test]
fn a_crash_the_init_system_restarts_by_itself_is_alerted_but_not_restarted_twice() {
    let inq = "check service web\n  if crashed then alert, restart\n";
    let mut s = engine(&[("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("web", 10), NONE),
            (
                5,
                ended("web", 10, 9, ExitCause::Unexpected { init_restarts: true }),
                &["alert - web: `crashed` on signal 9", "init restarts web"],
            ),
            // Every down has its up: the crash alert opened the service's condition.
            (6, started("web", 11), &["alert - web: up as pid 11"]),
        ],
    );
    assert_eq!(s.counts("web").0, 1);
}

#[test]
fn a_failed_restart_is_alerted_with_its_cause_and_resolved_by_the_next_start() {
    let inq = "check service web\n  if memory:rss > 1g then alert, restart\n";
    let mut s = engine(&[("web.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("web", 10), NONE),
            (
                15,
                svc("web", &[("memory:rss", 2.0 * GIB)]),
                &["alert - web: failed `memory:rss > 1g` (2147483648)", "restart web"],
            ),
            (16, ended("web", 10, 15, ExitCause::Restart), NONE),
            (
                46,
                Input::RestartFailed {
                    service: "web".into(),
                    reason: "systemd: restart web: job ended with result `failed`".into(),
                },
                &["alert - web: restart failed: systemd: restart web: job ended with result `failed`"],
            ),
            (60, started("web", 11), &["alert - web: up as pid 11"]),
        ],
    );
}

#[test]
fn without_a_restarts_rule_a_service_that_keeps_dying_is_unmonitored_after_the_restart_limit() {
    let inq = "check service web\n  if crashed then alert, restart\n";
    let mut s = engine(&[("web.inq", inq)]);
    let described = |actions: Vec<Action>| actions.iter().map(describe).collect::<Vec<_>>();
    step(&mut s, started("web", 100), Timestamp::ZERO);
    // Five crashes and restarts within the limit: each alerted, restarted, and resolved by its start.
    for i in 1..=5u32 {
        let at = u64::from(i) * 10;
        let crash = step(&mut s, ended("web", 99 + i, 9, CRASH), Timestamp::from_secs(at));
        assert_eq!(described(crash), ["alert - web: `crashed` on signal 9", "restart web"], "crash {i}");
        let up = step(&mut s, started("web", 100 + i), Timestamp::from_secs(at + 1));
        assert_eq!(described(up), [format!("alert - web: up as pid {}", 100 + i)], "start {i}");
    }
    play(
        &mut s,
        vec![
            (60, ended("web", 105, 9, CRASH), &["alert - web: `crashed` on signal 9", "restart web"]),
            (
                61,
                started("web", 106),
                &[
                    "alert - web: up as pid 106",
                    "alert - web: `restarts > 5 within 5 minutes (the restart limit)`: 6 restarts in 300s",
                    "unmonitor web",
                ],
            ),
            // Unmonitored: no more restarts, whatever happens.
            (70, ended("web", 106, 9, CRASH), NONE),
        ],
    );
    // `set restart_limit 0` lifts the cap; a check's own `restarts` rule replaces it.
    for files in [
        vec![("inspeq.conf", "set restart_limit 0\n"), ("web.inq", inq)],
        vec![(
            "web.inq",
            "check service web\n  if crashed then alert, restart\n  if restarts > 50 within 1 minute then alert\n",
        )],
    ] {
        let mut s = engine(&files);
        step(&mut s, started("web", 100), Timestamp::ZERO);
        for i in 1..=10u32 {
            let at = u64::from(i) * 2;
            step(&mut s, ended("web", 99 + i, 9, CRASH), Timestamp::from_secs(at));
            let actions = step(&mut s, started("web", 100 + i), Timestamp::from_secs(at + 1));
            assert!(!actions.iter().any(|a| matches!(a, Action::Unmonitor { .. })), "{files:?}: {actions:?}");
        }
    }
}

#[test]
fn a_service_that_died_during_a_deploy_and_is_still_down_after_it_is_judged_then() {
    let inq = "check service web\n  if crashed then alert, restart\n";
    let mut s = engine(&[("web.inq", inq), ("api.inq", "check service api\n  if memory:rss > 1g then alert\n")]);
    play(
        &mut s,
        vec![
            (0, started("web", 10), NONE),
            (0, started("api", 20), NONE),
            (5, Input::DeployStarted, NONE),
            (6, ended("web", 10, 9, CRASH), NONE),
            (7, ended("api", 20, 9, CRASH), NONE),
            (8, started("api", 21), NONE),
            (10, Input::DeployFinished, NONE),
            // One grace cycle (15 s) for what the deploy restarted.
            (20, Input::Cycle, NONE),
            // web is still down: its rule runs now; api came back during the deploy: nothing.
            (30, Input::Cycle, &["alert - web: `crashed` on signal 9", "restart web"]),
            (31, started("web", 11), &["alert - web: up as pid 11"]),
            (45, Input::Cycle, NONE),
        ],
    );
    // Without exit rules, the built-in down alert, once.
    let mut s = engine(&[("api.inq", "check service api\n  if memory:rss > 1g then alert\n")]);
    play(
        &mut s,
        vec![
            (0, started("api", 20), NONE),
            (5, Input::DeployStarted, NONE),
            (7, Input::ServiceDown { service: "api".into(), stopped: false }, NONE),
            (10, Input::DeployFinished, NONE),
            (30, Input::Cycle, &["alert - api: down"]),
            (45, Input::Cycle, NONE),
        ],
    );
}

#[test]
fn worker_deaths_by_a_signal_are_events_and_can_be_counted() {
    let inq = "check service puma\n\
               \x20 if worker crashed then alert\n\
               \x20 if worker oom_killed then alert\n\
               \x20 if worker crashed > 2 within 1 minute then restart\n";
    let mut s = engine(&[("puma.inq", inq)]);
    play(
        &mut s,
        vec![
            (0, started("puma", 10), NONE),
            (1, worker("puma", 11, 9, false), &["alert - puma: `worker crashed`: worker 11 on signal 9"]),
            // A phased restart TERMs its workers: no event.
            (2, worker("puma", 12, 15, false), NONE),
            (
                3,
                worker("puma", 13, 9, true),
                &[
                    "alert - puma: `worker crashed`: worker 13 oom-killed (9)",
                    "alert - puma: `worker oom_killed`: worker 13 oom-killed (9)",
                ],
            ),
            (
                4,
                worker("puma", 14, 11, false),
                &["alert - puma: `worker crashed`: worker 14 on signal 11", "restart puma"],
            ),
            // Counted once per episode; it ends when the window holds no more than 2.
            (5, worker("puma", 15, 9, false), &["alert - puma: `worker crashed`: worker 15 on signal 9"]),
        ],
    );
    assert_eq!(s.counts("puma"), (0, 4, 1));
}

/// What probe `probe` of `service` found: `Some(ms)` answered in that time, `None` failed.
fn probed(service: &str, probe: u32, answer: Option<f64>) -> Input {
    let probed = match answer {
        Some(millis) => Probed::Answered { millis, certificate_left: None },
        None => Probed::Failed,
    };
    Input::Sample(Sample::new(Target::Service(service.to_owned())).probed(ProbeId(probe), probed))
}

/// A TLS probe's answer: the certificate ends in `days`.
fn certificate(service: &str, probe: u32, days: f64) -> Input {
    let probed = Probed::Answered { millis: 3.0, certificate_left: Some(days * 86_400.0) };
    Input::Sample(Sample::new(Target::Service(service.to_owned())).probed(ProbeId(probe), probed))
}

#[test]
fn a_probe_fails_after_its_cycles_recovers_after_two_answers_and_one_probe_serves_two_rules() {
    let mut s = engine(&[(
        "web.inq",
        "check service web\n\
         \x20 if http \"http://127.0.0.1:8080/health\" fails for 2 cycles then alert, restart\n\
         \x20 if http \"http://127.0.0.1:8080/health\" time > 500ms for 2 cycles then alert\n\
         \x20 if port 8080 is closed then alert\n",
    )]);
    let failed = "alert - web: `http \"http://127.0.0.1:8080/health\" fails for 2 cycles`: probe 0 fails";
    let slow = "alert - web: failed `http \"http://127.0.0.1:8080/health\" time > 500ms for 2 cycles` (700)";
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            (1, probed("web", 0, Some(20.0)), NONE),
            (2, probed("web", 0, None), NONE),
            (3, probed("web", 0, None), &[failed, "restart web"]),
            // Still failing: one incident, one restart.
            (4, probed("web", 0, None), NONE),
            // Answers, slowly: the failure needs two answers to end, the time rule two slow ones to fire.
            (5, probed("web", 0, Some(700.0)), NONE),
            (
                6,
                probed("web", 0, Some(700.0)),
                &[
                    "alert - web: recovered `http \"http://127.0.0.1:8080/health\" fails for 2 cycles`: probe 0 answers after 3s",
                    slow,
                ],
            ),
            // A failure is no time: the time rule has no value, and neither trips nor recovers.
            (7, probed("web", 0, None), NONE),
            (8, probed("web", 0, Some(10.0)), NONE),
            (
                9,
                probed("web", 0, Some(10.0)),
                &[
                    "alert - web: recovered `http \"http://127.0.0.1:8080/health\" time > 500ms for 2 cycles` (10) after 3s",
                ],
            ),
            // The port probe is the second probe: its rule reads only its own answers.
            (10, probed("web", 1, None), &["alert - web: `port 8080 is closed`: probe 1 fails"]),
        ],
    );
}

#[test]
fn a_probe_of_a_service_its_init_system_stopped_is_not_judged() {
    let mut s = engine(&[("web.inq", "check service web\n  if port 8080 is closed then alert, restart\n")]);
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            (1, Input::ServiceDown { service: "web".into(), stopped: true }, NONE),
            (2, probed("web", 0, None), NONE),
            (3, probed("web", 0, None), NONE),
            // Started again by the operator, it is judged again; a crash leaves it judged too.
            (4, started("web", 101), NONE),
            (5, probed("web", 0, None), &["alert - web: `port 8080 is closed`: probe 0 fails", "restart web"]),
        ],
    );
}

#[test]
fn a_certificate_alerts_within_its_span_and_a_failed_handshake_is_no_expiry() {
    let mut s =
        engine(&[("web.inq", "check service web\n  if tls \"example.com:443\" expires within 14 days then alert\n")]);
    play(
        &mut s,
        vec![
            (0, certificate("web", 0, 30.0), NONE),
            (1, probed("web", 0, None), NONE),
            (
                2,
                certificate("web", 0, 13.5),
                &["alert - web: failed `tls \"example.com:443\" expires within 14 days` (13.5)"],
            ),
            // Already ended: still the same incident.
            (3, certificate("web", 0, -1.0), NONE),
            (4, certificate("web", 0, 90.0), NONE),
            (
                5,
                certificate("web", 0, 90.0),
                &["alert - web: recovered `tls \"example.com:443\" expires within 14 days` (90) after 3s"],
            ),
        ],
    );
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn listening(service: &str, addresses: &[&str]) -> Input {
    Input::Sample(Sample::new(Target::Service(service.to_owned())).listening(addresses.iter().map(|a| addr(a))))
}

fn closed(service: &str, address: &str, pid: u32) -> Input {
    Input::ListenerClosed { service: service.to_owned(), address: addr(address), pid }
}

#[test]
fn a_listener_stops_when_its_last_socket_on_the_port_closes_and_recovers_when_listed_again() {
    let mut s = engine(&[("web.inq", "check service web\n  if listening 8080 stopped then alert, restart\n")]);
    let stopped = "alert - web: `listening 8080 stopped`: pid 100 closed [::]:8080";
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            // Not listening yet while it starts: no stop.
            (1, listening("web", &[]), NONE),
            (2, listening("web", &["0.0.0.0:8080", "[::]:8080", "127.0.0.1:9000"]), NONE),
            // One of its two sockets on the port closes: it still listens there.
            (3, closed("web", "0.0.0.0:8080", 100), NONE),
            (4, closed("web", "127.0.0.1:9000", 100), NONE),
            (5, closed("web", "[::]:8080", 100), &[stopped, "restart web"]),
            // The next list agrees: the same incident.
            (6, listening("web", &[]), NONE),
            (
                7,
                listening("web", &["0.0.0.0:8080"]),
                &["alert - web: recovered `listening 8080 stopped`: port 8080 listened on after 2s"],
            ),
            // Gone from a list with no close reported (a tier without eBPF): a stop too.
            (8, listening("web", &[]), &["alert - web: `listening 8080 stopped`: port 8080 not listed", "restart web"]),
        ],
    );
}

#[test]
fn a_listener_is_not_judged_while_the_service_is_down_or_restarted_and_not_yet_listening() {
    let mut s = engine(&[("web.inq", "check service web\n  if listening 8080 stopped then alert\n")]);
    play(
        &mut s,
        vec![
            (0, started("web", 100), NONE),
            (1, listening("web", &["0.0.0.0:8080"]), NONE),
            (2, Input::ServiceDown { service: "web".into(), stopped: true }, NONE),
            (3, closed("web", "0.0.0.0:8080", 100), NONE),
            (4, listening("web", &[]), NONE),
            // Started again: not seen listening yet, so a list without the port is no stop.
            (5, started("web", 101), NONE),
            (6, listening("web", &[]), NONE),
            (7, listening("web", &["0.0.0.0:8080"]), NONE),
            (
                8,
                closed("web", "0.0.0.0:8080", 101),
                &["alert - web: `listening 8080 stopped`: pid 101 closed 0.0.0.0:8080"],
            ),
        ],
    );
}
