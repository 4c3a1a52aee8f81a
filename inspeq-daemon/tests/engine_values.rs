//! What `status` reads back from the engine, as specifications: every rule's value in the rule's own terms
//! ([`EngineState::rules`]), and a raw sample in its catalogue unit ([`EngineState::reading`], what `show`,
//! `export`, the Prometheus page and statsd give), which is the value the rules compare.

use std::time::Duration;

use inspeq_daemon::config::load;
use inspeq_daemon::config::metrics::{Daemon, MetricKind};
use inspeq_daemon::config::model::MetricName;
use inspeq_daemon::engine::{
    Action, Collection, EngineState, Exit, ExitCause, ExitStatus, Input, Phase, ProcessExit, RuleValue, Sample, Target,
    Timestamp, step,
};

const MIB: f64 = 1024.0 * 1024.0;

fn engine(text: &str) -> EngineState {
    let (config, diagnostics) = load([("services.d/web.inq", text)]);
    assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:#?}");
    EngineState::new(&config, Timestamp::ZERO)
}

fn web() -> Target {
    Target::Service("web".into())
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn sample(metrics: &[(&str, f64)]) -> Input {
    Input::Sample(metrics.iter().fold(Sample::new(web()), |s, (m, v)| s.with(m, *v)))
}

/// `(rule text, value)` of every rule of `web` at `now`.
fn values(state: &EngineState, now: Timestamp) -> Vec<(String, Option<RuleValue>)> {
    state.rules(&web(), now).into_iter().map(|v| (v.rule.text.clone(), v.value)).collect()
}

fn value(state: &EngineState, rule: &str, now: Timestamp) -> Option<RuleValue> {
    values(state, now).into_iter().find(|(text, _)| text == rule).unwrap_or_else(|| panic!("no rule `{rule}`")).1
}

#[test]
fn metric_rules_keep_the_last_value_they_compared_in_their_unit() {
    let mut s = engine("check service web\n  if memory:rss > 64m then alert\n  if cpu:total_user > 90% then alert\n");
    // Nothing compared yet.
    assert_eq!(value(&s, "memory:rss > 64m", at(0)), None);
    step(&mut s, sample(&[("memory:rss", 10.0 * MIB), ("cpu:total_user", 100.0)]), at(0));
    assert_eq!(value(&s, "memory:rss > 64m", at(0)), Some(RuleValue::Metric(10.0 * MIB)));
    // Cumulative CPU seconds are no percentage: the first sample gives the rule nothing to compare.
    assert_eq!(value(&s, "cpu:total_user > 90%", at(0)), None);
    // 3 CPU seconds in 15 s: 20 % of one core.
    step(&mut s, sample(&[("memory:rss", 12.0 * MIB), ("cpu:total_user", 103.0)]), at(15));
    let Some(RuleValue::Metric(cpu)) = value(&s, "cpu:total_user > 90%", at(15)) else { panic!("no CPU value") };
    assert!((cpu - 20.0).abs() < 1e-9, "{cpu}");
    // An RSS crossing between cycles is a sample of its own: the value follows it.
    step(&mut s, sample(&[("memory:rss", 70.0 * MIB)]), at(20));
    assert_eq!(value(&s, "memory:rss > 64m", at(20)), Some(RuleValue::Metric(70.0 * MIB)));
    let phases: Vec<Phase> = s.rules(&web(), at(20)).iter().map(|v| v.phase).collect();
    assert_eq!(phases, [Phase::Triggered, Phase::Ok]);
}

#[test]
fn counter_rules_compare_the_change_over_the_cycle_or_per_second() {
    let mut s =
        engine("check service web\n  if mysql:Queries > 1000 then alert\n  if mysql:Queries > 100/sec then alert\n");
    step(&mut s, sample(&[("mysql:Queries", 5000.0)]), at(0));
    step(&mut s, sample(&[("mysql:Queries", 5300.0)]), at(15));
    assert_eq!(value(&s, "mysql:Queries > 1000", at(15)), Some(RuleValue::Metric(300.0)));
    assert_eq!(value(&s, "mysql:Queries > 100/sec", at(15)), Some(RuleValue::Metric(20.0)));
}

#[test]
fn values_are_kept_while_a_deploy_or_unmonitor_keeps_the_rule_from_acting() {
    let mut s = engine("check service web\n  if memory:rss > 64m then alert, unmonitor\n");
    step(&mut s, Input::DeployStarted, at(0));
    step(&mut s, sample(&[("memory:rss", 80.0 * MIB)]), at(1));
    assert_eq!(value(&s, "memory:rss > 64m", at(1)), Some(RuleValue::Metric(80.0 * MIB)));
    step(&mut s, Input::DeployFinished, at(2));
    // After the deploy's grace cycle, the rule acts and unmonitors the service; the value still follows.
    step(&mut s, sample(&[("memory:rss", 90.0 * MIB)]), at(40));
    assert!(s.is_unmonitored("web"));
    step(&mut s, sample(&[("memory:rss", 30.0 * MIB)]), at(55));
    assert_eq!(value(&s, "memory:rss > 64m", at(55)), Some(RuleValue::Metric(30.0 * MIB)));
}

#[test]
fn exit_rules_show_the_main_processs_last_exit_whether_or_not_they_matched() {
    let mut s = engine(
        "check service web\n  if crashed then alert\n  if exit_code == 75 then reload\n  if memory:rss > 1g then alert\n",
    );
    assert_eq!(value(&s, "crashed", at(0)), None);
    let exit = |pid, status, requested| {
        Input::ProcessExited(ProcessExit {
            cause: if requested { ExitCause::InitStopped } else { ExitCause::Unexpected { init_restarts: false } },
            ..ProcessExit::unexpected("web", Exit::new(pid, status))
        })
    };
    let sigkill = ExitStatus::Signal { signal: 9, core_dumped: false };
    step(&mut s, Input::ProcessStarted { service: "web".into(), pid: 7 }, at(0));
    step(&mut s, exit(7, sigkill, false), at(5));
    let killed = Some(RuleValue::Exit { exit: Exit::new(7, sigkill), requested: false });
    assert_eq!(value(&s, "crashed", at(5)), killed);
    // `exit_code == 75` did not match a SIGKILL, but its value is still the last exit.
    assert_eq!(value(&s, "exit_code == 75", at(5)), killed);
    assert_eq!(value(&s, "memory:rss > 1g", at(5)), None);
    // An exit that was asked for is shown as such.
    step(&mut s, Input::ProcessStarted { service: "web".into(), pid: 8 }, at(10));
    step(&mut s, exit(8, ExitStatus::Code(0), true), at(12));
    assert_eq!(
        value(&s, "crashed", at(12)),
        Some(RuleValue::Exit { exit: Exit::new(8, ExitStatus::Code(0)), requested: true })
    );
}

#[test]
fn forks_and_restarts_are_counted_in_their_windows_as_they_stand_when_asked() {
    let mut s =
        engine("check service web\n  if forks > 100/sec then alert\n  if restarts > 3 within 1 minutes then alert\n");
    let started = |pid| Input::ProcessStarted { service: "web".into(), pid };
    let forked = || Input::Forked { service: "web".into() };
    let forks = |s: &EngineState, now| value(s, "forks > 100/sec", now);
    let restarts = |s: &EngineState, now| value(s, "restarts > 3 within 1 minutes", now);
    let window = Duration::from_secs(15);
    assert_eq!(forks(&s, at(0)), Some(RuleValue::Forks { forks: 0, window }));
    for _ in 0..3 {
        step(&mut s, forked(), at(1));
    }
    assert_eq!(forks(&s, at(2)), Some(RuleValue::Forks { forks: 3, window }));
    // No event since: the window has moved on by itself.
    assert_eq!(forks(&s, at(20)), Some(RuleValue::Forks { forks: 0, window }));

    let minute = Duration::from_secs(60);
    step(&mut s, started(10), at(0));
    step(&mut s, started(11), at(30));
    step(&mut s, started(12), at(40));
    assert_eq!(restarts(&s, at(45)), Some(RuleValue::Restarts { restarts: 2, window: minute }));
    assert_eq!(restarts(&s, at(95)), Some(RuleValue::Restarts { restarts: 1, window: minute }));
}

#[test]
fn a_reading_is_what_the_rule_compares() {
    let mut s = engine("check service web\n  if cpu:total_user > 90% then alert\n");
    let cpu = MetricName::new("cpu", Some("total_user"));
    step(&mut s, sample(&[("cpu:total_user", 100.0)]), at(0));
    // Read before the sample is stepped: the engine still holds the previous one.
    let reading = s.reading(&web(), &cpu, MetricKind::CpuSeconds, 104.5, 1, at(15)).unwrap();
    step(&mut s, sample(&[("cpu:total_user", 104.5)]), at(15));
    assert_eq!(value(&s, "cpu:total_user > 90%", at(15)), Some(RuleValue::Metric(reading.value)));
    assert!((reading.value - 30.0).abs() < 1e-9, "{reading:?}");
    // A new main process starts its counters from zero: no reading until its second sample.
    step(&mut s, Input::ProcessStarted { service: "web".into(), pid: 9 }, at(20));
    assert_eq!(s.reading(&web(), &cpu, MetricKind::CpuSeconds, 0.5, 1, at(30)), None);
}

#[test]
fn the_hosts_cpu_is_a_share_of_all_its_cores() {
    let (config, diagnostics) = load([("host.inq", "check host\n  if cpu > 90% then alert\n")]);
    assert!(diagnostics.is_empty(), "{diagnostics:#?}");
    let mut s = EngineState::new(&config, Timestamp::ZERO);
    let host = |busy| Input::Sample(Sample::new(Target::Host).cores(2).with("cpu", busy));
    step(&mut s, host(1000.0), at(0));
    step(&mut s, host(1015.0), at(15));
    // 15 busy seconds in 15 s on 2 cores: half the host.
    let rules = s.rules(&Target::Host, at(15));
    assert_eq!(rules[0].value, Some(RuleValue::Metric(50.0)));
    let cpu = MetricName::new("cpu", None);
    let reading = s.reading(&Target::Host, &cpu, MetricKind::CpuSeconds, 1030.0, 2, at(30));
    assert_eq!(reading.map(|r| r.value), Some(50.0));
}

/// A daemon family's collection: its values with how it went (`Sample::daemons`).
fn collected(values: &[(&str, f64)], collection: Collection) -> Input {
    Input::Sample(
        values.iter().fold(Sample::new(web()), |s, (m, v)| s.with(m, *v)).collection(Daemon::Redis, collection),
    )
}

const REACHED: Collection = Collection::Reached { restarted: false };

fn value_of(engine: &EngineState, rule: &str) -> Option<RuleValue> {
    engine.rules(&web(), at(0)).into_iter().find(|r| r.rule.text == rule).and_then(|r| r.value)
}

/// #14: a failed collection is a fact, never a zero: the family's rules have no value that cycle (not the one
/// from before), and `is unreachable for N cycles` fires after N failed cycles and recovers after two that worked.
#[test]
fn a_failed_collection_leaves_the_familys_rules_unknown_and_trips_is_unreachable() {
    let mut engine = engine(
        "check service web\n  if redis:used_memory > 1g then alert\n  if redis:total_commands_processed > 100/sec then alert\n  if redis is unreachable for 2 cycles then alert\n",
    );
    let fired = |actions: &[Action]| -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Alert { event, .. } => Some(format!("{:?}", event.kind)),
                _ => None,
            })
            .collect()
    };
    let t0 = [("redis:used_memory", 10.0 * MIB), ("redis:total_commands_processed", 1000.0)];
    assert!(fired(&step(&mut engine, collected(&t0, REACHED), at(0))).is_empty());
    let t1 = [("redis:used_memory", 11.0 * MIB), ("redis:total_commands_processed", 1300.0)];
    assert!(fired(&step(&mut engine, collected(&t1, REACHED), at(15))).is_empty());
    assert_eq!(value_of(&engine, "redis:used_memory > 1g"), Some(RuleValue::Metric(11.0 * MIB)));
    assert_eq!(value_of(&engine, "redis:total_commands_processed > 100/sec"), Some(RuleValue::Metric(20.0)));
    assert_eq!(value_of(&engine, "redis is unreachable for 2 cycles"), Some(RuleValue::Reached(true)));

    // Failed: no value (not the last one), and one failed cycle is not yet two.
    assert!(fired(&step(&mut engine, collected(&[], Collection::Failed), at(30))).is_empty());
    assert_eq!(value_of(&engine, "redis:used_memory > 1g"), None);
    assert_eq!(value_of(&engine, "redis is unreachable for 2 cycles"), Some(RuleValue::Reached(false)));
    let second = fired(&step(&mut engine, collected(&[], Collection::Failed), at(45)));
    assert_eq!(second, ["Unreachable { daemon: Redis }"]);

    // Back, but another instance: its counters started over, so no change is taken across the restart (it would
    // be negative, or worse, a made-up positive one).
    let t2 = [("redis:used_memory", 1.0 * MIB), ("redis:total_commands_processed", 5000.0)];
    assert!(fired(&step(&mut engine, collected(&t2, Collection::Reached { restarted: true }), at(60))).is_empty());
    assert_eq!(value_of(&engine, "redis:total_commands_processed > 100/sec"), None);
    let t3 = [("redis:used_memory", 1.0 * MIB), ("redis:total_commands_processed", 5150.0)];
    let recovered = fired(&step(&mut engine, collected(&t3, REACHED), at(75)));
    assert_eq!(recovered, [format!("Reachable {{ daemon: Redis, failed_for: {:?} }}", Duration::from_secs(30))]);
    assert_eq!(value_of(&engine, "redis:total_commands_processed > 100/sec"), Some(RuleValue::Metric(10.0)));
}

/// A sample without the family (a process sample) judges neither its metric rules nor `is unreachable`.
#[test]
fn is_unreachable_is_judged_only_on_the_samples_of_its_family() {
    let mut engine = engine("check service web\n  if redis is unreachable then alert\n");
    for secs in 0..5 {
        assert!(step(&mut engine, sample(&[("memory:rss", MIB)]), at(secs * 15)).is_empty());
    }
    assert_eq!(value_of(&engine, "redis is unreachable"), None);
}
