//! Conversions at the daemon's seams: the engine's notices into alerts. Pure
//! functions. (Alert routes need none: `alert::Routes::build` takes the checked
//! config's routes as they are.)

use std::time::SystemTime;

use crate::{
    alert::{self, Comparison, Response, RuleState},
    config::{
        ast::Op,
        metrics::Unit,
        model::{Check, Condition, Config, ProbeId, ProbeTest},
    },
    // One way of writing values, in alerts and in `status`.
    control::protocol::{bytes, number},
    engine::{self, NoticeKind},
};

/// The rule state of a metric rule, found by its text in `config`.
fn rule_state(
    config: &Config,
    target: &engine::Target,
    rule: &engine::RuleRef,
    value: f64,
    for_secs: Option<u64>,
) -> RuleState {
    let check = check_of(config, target);
    let found = check.and_then(|c| c.rules.iter().find(|r| r.text == rule.text && r.location == rule.location));
    let mut shown = number(value);
    let (metric, comparison, threshold) = match found.map(|r| &r.condition) {
        Some(Condition::Metric(m)) => {
            let metric = match &m.metric.name {
                Some(name) => format!("{}:{name}", m.metric.family),
                None => m.metric.family.clone(),
            };
            let comparison = if matches!(m.op, Op::Lt | Op::Le) { Comparison::Below } else { Comparison::Above };
            match m.unit {
                Unit::Bytes => shown = bytes(value),
                Unit::Percent => shown = format!("{value:.1}%"),
                Unit::Count => {}
            }
            (metric, comparison, m.threshold.text.clone())
        }
        Some(Condition::Forks { per_sec }) => ("forks".to_owned(), Comparison::Above, format!("{per_sec}/sec")),
        Some(Condition::Probe { probe, test: ProbeTest::Time { op, millis, .. } }) => {
            let probed = check.and_then(|c| c.probes.get(probe.0 as usize)).map(|p| p.target.to_string());
            let comparison = if matches!(op, Op::Lt | Op::Le) { Comparison::Below } else { Comparison::Above };
            shown = format!("{value:.0} ms");
            (format!("{} time", probed.unwrap_or_default()), comparison, format!("{millis} ms"))
        }
        Some(Condition::Probe { probe, test: ProbeTest::Expires { within } }) => {
            let probed = check.and_then(|c| c.probes.get(probe.0 as usize)).map(|p| p.target.to_string());
            shown = format!("expiring in {value:.1} days");
            let within = crate::config::amount::window_text(*within);
            (format!("{} certificate", probed.unwrap_or_default()), Comparison::Within, within)
        }
        _ => (String::new(), Comparison::Above, String::new()),
    };
    RuleState { rule: rule.text.clone(), metric, comparison, value: shown, threshold, for_secs }
}

fn check_of<'a>(config: &'a Config, target: &engine::Target) -> Option<&'a Check> {
    match target {
        engine::Target::Host => config.host.as_ref(),
        engine::Target::Service(name) => config.services.iter().find(|c| &c.name == name),
    }
}

/// The alert for one engine event, or `None` for events no channel needs. `error` is why the last collection of
/// an [`NoticeKind::Unreachable`] daemon, or the last probe of a [`NoticeKind::ProbeFailed`], failed, which the
/// daemon keeps and the engine does not.
pub fn alert(
    config: &Config,
    hostname: &str,
    event: &engine::Notice,
    responses: &[Response],
    error: Option<&str>,
    at: SystemTime,
) -> Option<alert::Alert> {
    let service = event.target.to_string();
    let rule = event.rule.as_ref();
    let probed = |probe: &ProbeId| {
        check_of(config, &event.target).and_then(|c| c.probes.get(probe.0 as usize)).map(|p| p.target.to_string())
    };
    let kind = match &event.kind {
        NoticeKind::RuleFailed { value } => {
            alert::AlertKind::RuleFailed(rule_state(config, &event.target, rule?, *value, None))
        }
        NoticeKind::RuleRecovered { value, failed_for } => alert::AlertKind::RuleRecovered(rule_state(
            config,
            &event.target,
            rule?,
            *value,
            Some(failed_for.as_secs()),
        )),
        NoticeKind::Unreachable { daemon } => alert::AlertKind::Unreachable {
            rule: rule?.text.clone(),
            daemon: daemon.name().to_owned(),
            error: error.unwrap_or("no answer").to_owned(),
        },
        NoticeKind::ProbeFailed { probe } => alert::AlertKind::ProbeFailed {
            rule: rule?.text.clone(),
            probe: probed(probe)?,
            error: error.unwrap_or("no answer").to_owned(),
        },
        NoticeKind::ProbeAnswers { probe, failed_for } => alert::AlertKind::ProbeAnswers {
            rule: rule?.text.clone(),
            probe: probed(probe)?,
            for_secs: failed_for.as_secs(),
        },
        NoticeKind::ListenerStopped { port, address, pid } => alert::AlertKind::ListenerStopped {
            rule: rule?.text.clone(),
            port: *port,
            address: address.map(|a| a.to_string()),
            pid: *pid,
        },
        NoticeKind::Listening { port, failed_for } => {
            alert::AlertKind::Listening { rule: rule?.text.clone(), port: *port, for_secs: failed_for.as_secs() }
        }
        NoticeKind::Reachable { daemon, failed_for } => alert::AlertKind::Reachable {
            rule: rule?.text.clone(),
            daemon: daemon.name().to_owned(),
            for_secs: failed_for.as_secs(),
        },
        // The exit's status goes into the alert as the kernel side gave it: an unknown one stays unknown.
        NoticeKind::ProcessExited(exit) if exit.oom_killed => {
            alert::AlertKind::OomKilled { pid: exit.pid, rss_bytes: exit.rss_bytes }
        }
        NoticeKind::ProcessExited(exit) => alert::AlertKind::Crashed { pid: exit.pid, exit: exit.status },
        NoticeKind::ProcessDown => alert::AlertKind::ProcessDown,
        NoticeKind::RestartFailed { reason } => alert::AlertKind::RestartFailed { reason: reason.clone() },
        NoticeKind::WorkerDied(exit) if exit.oom_killed => {
            alert::AlertKind::WorkerOomKilled { pid: exit.pid, rss_bytes: exit.rss_bytes }
        }
        NoticeKind::WorkerDied(exit) => alert::AlertKind::WorkerCrashed { pid: exit.pid, exit: exit.status },
        NoticeKind::WorkerDeaths { deaths, window } => {
            alert::AlertKind::WorkerDeaths { deaths: *deaths as u32, within_secs: window.as_secs() }
        }
        NoticeKind::WorkerDeathsRecovered => return None,
        NoticeKind::ProcessUp { pid } => alert::AlertKind::ProcessUp { pid: Some(*pid) },
        NoticeKind::ForkRate { forks, window } => {
            let per_sec = *forks as f64 / window.as_secs_f64().max(1e-9);
            alert::AlertKind::RuleFailed(rule_state(config, &event.target, rule?, per_sec, None))
        }
        NoticeKind::ForkRateRecovered => {
            alert::AlertKind::RuleRecovered(rule_state(config, &event.target, rule?, 0.0, None))
        }
        NoticeKind::Flapping { restarts, window } => {
            alert::AlertKind::FlapDetected { restarts: *restarts as u32, within_secs: window.as_secs() }
        }
        NoticeKind::FlappingRecovered => return None,
        NoticeKind::JobOverdue { job, every } => {
            alert::AlertKind::JobOverdue { job: job.clone(), every_secs: every.as_secs() }
        }
        NoticeKind::JobRan { job } => alert::AlertKind::JobRan { job: job.clone() },
    };
    Some(alert::Alert::new(hostname, service, kind, at).with_actions(responses.iter().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Exit, ExitStatus};

    fn config(text: &str) -> Config {
        let (config, diagnostics) = crate::config::load([("services.d/web.inq", text)]);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{diagnostics:?}");
        config
    }

    #[test]
    fn a_crash_becomes_a_crashed_alert_with_what_inspeq_did() {
        let config = config("check service web\n  if crashed then alert, restart\n");
        let rule = &config.services[0].rules[0];
        let event = engine::Notice {
            target: engine::Target::Service("web".into()),
            kind: NoticeKind::ProcessExited(Exit::new(7, ExitStatus::Signal { signal: 9, core_dumped: false })),
            rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
        };
        let a = alert(&config, "h", &event, &[Response::Restart], None, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(
            a.event,
            alert::AlertKind::Crashed { pid: 7, exit: ExitStatus::Signal { signal: 9, core_dumped: false } }
        );
        assert_eq!(a.actions, vec![Response::Restart]);
        assert_eq!(a.service, "web");
    }

    #[test]
    fn an_unknown_exit_status_stays_unknown_in_the_alert() {
        let config = config("check service web\n  if crashed then alert\n");
        let rule = &config.services[0].rules[0];
        let event = engine::Notice {
            target: engine::Target::Service("web".into()),
            kind: NoticeKind::ProcessExited(Exit::new(7, ExitStatus::Unknown)),
            rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
        };
        let a = alert(&config, "h", &event, &[], None, SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(a.event, alert::AlertKind::Crashed { pid: 7, exit: ExitStatus::Unknown });
        assert_eq!(alert::template::exit_text(ExitStatus::Unknown), "exited with an unknown status");
    }

    /// The kernel's record has the RSS at exit; the OOM alert says it (and the worker's too).
    #[test]
    fn an_oom_kill_carries_the_rss_at_exit_into_the_alert() {
        let config = config("check service web\n  if oom_killed then alert\n  if worker oom_killed then alert\n");
        let exit = Exit {
            pid: 7,
            status: ExitStatus::Signal { signal: 9, core_dumped: false },
            oom_killed: true,
            rss_bytes: Some(512 << 20),
        };
        for (i, kind) in [NoticeKind::ProcessExited(exit), NoticeKind::WorkerDied(exit)].into_iter().enumerate() {
            let rule = &config.services[0].rules[i];
            let event = engine::Notice {
                target: engine::Target::Service("web".into()),
                kind,
                rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
            };
            let a = alert(&config, "h", &event, &[], None, SystemTime::UNIX_EPOCH).unwrap();
            let expected = if i == 0 {
                alert::AlertKind::OomKilled { pid: 7, rss_bytes: Some(512 << 20) }
            } else {
                alert::AlertKind::WorkerOomKilled { pid: 7, rss_bytes: Some(512 << 20) }
            };
            assert_eq!(a.event, expected);
            assert!(alert::template::chat(&a).contains("pid 7, 512.0 MiB resident"), "{}", alert::template::chat(&a));
        }
    }

    #[test]
    fn a_metric_rule_names_its_metric_and_threshold() {
        let config = config("check service web\n  if memory:rss > 64m then alert\n");
        let rule = &config.services[0].rules[0];
        let event = engine::Notice {
            target: engine::Target::Service("web".into()),
            kind: NoticeKind::RuleFailed { value: 70.0 * 1048576.0 },
            rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
        };
        let Some(alert::Alert { event: alert::AlertKind::RuleFailed(state), .. }) =
            alert(&config, "h", &event, &[], None, SystemTime::UNIX_EPOCH)
        else {
            panic!("not a rule failure")
        };
        assert_eq!(state.metric, "memory:rss");
        assert_eq!(state.comparison, Comparison::Above);
        assert_eq!(state.threshold, "64m");
        assert_eq!(state.value, "70.0m");
    }
}
