//! Conversions at the daemon's seams: the engine's events into alerts. Pure
//! functions. (Alert routes need none: `alert::Routes::build` takes the checked
//! config's routes as they are.)

use std::time::SystemTime;

use crate::{
    alert::{self, Comparison, Exit, Response, RuleState},
    config::{
        ast::Op,
        metrics::Unit,
        model::{Condition, Config},
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
    let check = match target {
        engine::Target::Host => config.host.as_ref(),
        engine::Target::Service(name) => config.services.iter().find(|c| &c.name == name),
    };
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
        _ => (String::new(), Comparison::Above, String::new()),
    };
    RuleState { rule: rule.text.clone(), metric, comparison, value: shown, threshold, for_secs }
}

fn alert_exit(exit: &engine::ExitStatus) -> Exit {
    match (exit.exit_code, exit.signal) {
        (_, Some(signal)) => Exit::Signal { signal, core_dumped: exit.core_dumped },
        (Some(code), None) => Exit::Code(code),
        // Never a made-up code 0: an exit inspeq could not read is said to be one.
        (None, None) => Exit::Unknown,
    }
}

/// The alert for one engine event, or `None` for events no channel needs.
pub fn alert(
    config: &Config,
    hostname: &str,
    event: &engine::Notice,
    responses: &[Response],
    at: SystemTime,
) -> Option<alert::Alert> {
    let service = event.target.to_string();
    let rule = event.rule.as_ref();
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
        NoticeKind::ProcessExited(exit) if exit.oom_killed => {
            alert::AlertKind::OomKilled { pid: exit.pid, rss_bytes: None }
        }
        NoticeKind::ProcessExited(exit) => alert::AlertKind::Crashed { pid: exit.pid, exit: alert_exit(exit) },
        NoticeKind::ProcessDown => alert::AlertKind::ProcessDown,
        NoticeKind::RestartFailed { reason } => alert::AlertKind::RestartFailed { reason: reason.clone() },
        NoticeKind::WorkerDied(exit) if exit.oom_killed => alert::AlertKind::WorkerOomKilled { pid: exit.pid },
        NoticeKind::WorkerDied(exit) => alert::AlertKind::WorkerCrashed { pid: exit.pid, exit: alert_exit(exit) },
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
            kind: NoticeKind::ProcessExited(engine::ExitStatus {
                pid: 7,
                exit_code: None,
                signal: Some(9),
                core_dumped: false,
                oom_killed: false,
            }),
            rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
        };
        let a = alert(&config, "h", &event, &[Response::Restart], SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(a.event, alert::AlertKind::Crashed { pid: 7, exit: Exit::Signal { signal: 9, core_dumped: false } });
        assert_eq!(a.actions, vec![Response::Restart]);
        assert_eq!(a.service, "web");
    }

    #[test]
    fn an_unknown_exit_status_stays_unknown_in_the_alert() {
        let config = config("check service web\n  if crashed then alert\n");
        let rule = &config.services[0].rules[0];
        let event = engine::Notice {
            target: engine::Target::Service("web".into()),
            kind: NoticeKind::ProcessExited(engine::ExitStatus {
                pid: 7,
                exit_code: None,
                signal: None,
                core_dumped: false,
                oom_killed: false,
            }),
            rule: Some(engine::RuleRef { text: rule.text.clone(), location: rule.location.clone() }),
        };
        let a = alert(&config, "h", &event, &[], SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(a.event, alert::AlertKind::Crashed { pid: 7, exit: Exit::Unknown });
        assert_eq!(alert::template::exit_text(Exit::Unknown), "exited with an unknown status");
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
            alert(&config, "h", &event, &[], SystemTime::UNIX_EPOCH)
        else {
            panic!("not a rule failure")
        };
        assert_eq!(state.metric, "memory:rss");
        assert_eq!(state.comparison, Comparison::Above);
        assert_eq!(state.threshold, "64m");
        assert_eq!(state.value, "70.0m");
    }
}
