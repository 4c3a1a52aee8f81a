//! What the daemon reads back from the engine: each rule of a target with its phase and the last value it
//! compared ([`EngineState::rules`], for `status`), and a raw sample in its catalogue unit
//! ([`EngineState::reading`], for `show`, `export`, the Prometheus page and statsd). Read-only, like the rest of
//! the engine a function of what it was fed and the `now` passed in.

use std::time::Duration;

use super::{EngineState, Exit, ExitCause, Phase, ProcessExit, Target, TargetState, Timestamp, value};
use crate::config::metrics::MetricKind;
use crate::config::model::{Condition, MetricName, Rule, WorkerEvent};

/// One rule of a target, as `status` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleView<'a> {
    pub rule: &'a Rule,
    pub phase: Phase,
    /// `None` while there is none: a metric rule before its first comparison (a counter or CPU needs two
    /// samples), an exit rule before the first exit.
    pub value: Option<RuleValue>,
}

/// The value of a rule, in the rule's own terms.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleValue {
    /// A metric rule: the last value it compared, in the rule's unit (CPU in percent, bytes, a plain number; a
    /// counter's change over the cycle, or per second with `/sec`).
    Metric(f64),
    /// `if FAMILY is unreachable`, `port N is closed`, `http URL fails`: whether the last collection of the
    /// family reached its server, the last probe answered.
    Reached(bool),
    /// `listening PORT stopped`: whether the service was listening on the port when last seen.
    Listening(bool),
    /// `forks > N/sec`: the forks in the window the rule is measured over, ending now.
    Forks { forks: u64, window: Duration },
    /// `restarts > N within W`: the restarts in that window, ending now.
    Restarts { restarts: usize, window: Duration },
    /// `worker crashed` / `worker oom_killed`: the deaths counted so far, or within the rule's window.
    Workers { deaths: u64, window: Option<Duration> },
    /// An exit rule: the main process's last exit; `requested` exits (a restart inspeq or the init system asked
    /// for) are shown but never judged.
    Exit { exit: Exit, requested: bool },
}

impl EngineState {
    /// Each rule of `target`, in order, with its phase and value at `now`: fork and restart windows are counted as
    /// they stand at `now`, so `status` shows the count the rule would judge, not the one at its last event.
    #[must_use]
    pub fn rules(&self, target: &Target, now: Timestamp) -> Vec<RuleView<'_>> {
        let Some(t) = self.targets.get(target) else {
            return Vec::new();
        };
        t.rules
            .iter()
            .map(|s| {
                let value = match s.rule.condition {
                    Condition::Forks { .. } => {
                        Some(RuleValue::Forks { forks: t.forks.count_at(now), window: t.forks.window() })
                    }
                    Condition::Restarts { window, .. } => {
                        let window = window.duration(t.cycle_time);
                        Some(RuleValue::Restarts { restarts: t.restarts.count(now, window), window })
                    }
                    Condition::Worker { what, more_than } => Some(match more_than {
                        Some((_, window)) => {
                            let window = window.duration(t.cycle_time);
                            RuleValue::Workers {
                                deaths: t.worker_deaths.count(now, window) as u64,
                                window: Some(window),
                            }
                        }
                        None if what == WorkerEvent::OomKilled => {
                            RuleValue::Workers { deaths: t.workers_oom_killed, window: None }
                        }
                        None => RuleValue::Workers { deaths: t.workers_crashed, window: None },
                    }),
                    _ => s.last.clone(),
                };
                // Forks and restarts rules are triggered for as long as their episode lasts.
                let phase = if s.episode.is_some() { Phase::Triggered } else { s.cycle.phase };
                RuleView { rule: &s.rule, phase, value }
            })
            .collect()
    }

    /// `current`, a raw sample of `metric` about to be stepped, in its catalogue unit: converted from the previous
    /// sample this engine keeps for `target` by the rules' own conversion ([`value::reading`]), so what operators
    /// see is what the rules compare. `cores` is what a CPU percentage is a share of.
    #[must_use]
    pub fn reading(
        &self,
        target: &Target,
        metric: &MetricName,
        kind: MetricKind,
        current: f64,
        cores: u32,
        now: Timestamp,
    ) -> Option<value::Reading> {
        let previous = self.targets.get(target).and_then(|t| t.previous.get(metric).copied());
        value::reading(kind, current, previous, now, cores)
    }
}

/// Keeps `exit` as the value of every exit rule of `t`, whether or not it matches them or they may act on it:
/// `status` shows the main process's last exit either way.
pub(super) fn remember_exit(t: &mut TargetState, exit: &ProcessExit) {
    let value = RuleValue::Exit { exit: exit.exit, requested: !matches!(exit.cause, ExitCause::Unexpected { .. }) };
    for slot in &mut t.rules {
        if matches!(
            slot.rule.condition,
            Condition::Exited
                | Condition::Crashed
                | Condition::Signaled(_)
                | Condition::OomKilled
                | Condition::ExitCode { .. }
        ) {
            slot.last = Some(value.clone());
        }
    }
}
