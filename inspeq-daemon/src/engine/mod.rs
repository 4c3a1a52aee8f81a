//! The pure rule engine: `step(&mut state, input, now) -> Vec<Action>`.
//!
//! Inputs are observations and samples the daemon built; actions are plain data for its executor. No I/O, no
//! clock, no threads: every behaviour (cycles, counters, silencing, flap windows) is a function of the inputs and
//! the timestamps passed in, which is what makes the scenario tables in `tests/engine_scenarios.rs` possible.

pub mod action;
pub mod input;
mod listen;
pub mod rule;
pub mod time;
pub mod value;
mod view;
pub mod window;

use std::collections::BTreeMap;
use std::time::Duration;

pub use crate::exit::{Exit, ExitStatus};
pub use action::{Action, Notice, NoticeKind, RuleRef};
pub use input::{Collection, ExitCause, Input, Probed, ProcessExit, Sample, Target, swap_used_percent};
pub use rule::{CycleRuleState, Phase, Transition};
pub use time::Timestamp;
pub use view::{RuleValue, RuleView};

use crate::config::model::{
    ActionSpec, Check, CheckKind, Condition, Config, Job, ProbeTest, RestartLimit, Rule, Window, WorkerEvent,
};
use value::Previous;
use window::{Forks, Instants};

/// Inspeqtor's grace before a job counts as overdue (#61): cron jobs rarely finish on the exact minute.
pub const JOB_GRACE: Duration = Duration::from_secs(60);

/// Everything the engine remembers between steps.
#[derive(Clone, Debug)]
pub struct EngineState {
    cycle_time: Duration,
    deploy_length: Duration,
    silenced_until: Option<Timestamp>,
    targets: BTreeMap<Target, TargetState>,
    jobs: Vec<JobState>,
}

#[derive(Clone, Debug)]
struct TargetState {
    target: Target,
    owner: Option<String>,
    cycle_time: Duration,
    rules: Vec<Slot>,
    previous: Previous,
    status: Status,
    started_before: bool,
    restarts: Instants,
    /// Every restart since inspeq started (or the check changed): what `status` shows.
    restarts_total: u64,
    forks: Forks,
    /// Worker deaths that `worker crashed` counts, for `worker crashed > N within W`.
    worker_deaths: Instants,
    workers_crashed: u64,
    workers_oom_killed: u64,
    unmonitored: bool,
    /// A check with its own exit rules decides what an exit means; the built-in down/up alerts stay quiet.
    has_exit_rules: bool,
    /// The service went down while alerts were silenced (a deploy): judged at the first cycle after the
    /// silence if it is still down, with the exit that took it down, if one was seen.
    down_while_silenced: Option<Option<ProcessExit>>,
    /// Where the service's TCP sockets listen, as last listed and since told by the kernel's closes: a
    /// `listening PORT stopped` rule fires when the last of them on its port is gone.
    listeners: std::collections::BTreeSet<core::net::SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Unknown,
    Up,
    /// `alerted`: an alert of the process condition (down, crashed, restart failed) is open, so the next start
    /// resolves it with `ProcessUp`.
    Down {
        alerted: bool,
    },
    /// The init system stopped it on request: nothing is open, nothing to do.
    Stopped,
}

#[derive(Clone, Debug)]
struct Slot {
    rule: Rule,
    cycle: CycleRuleState,
    /// For forks and restarts rules: when the current episode started.
    episode: Option<Timestamp>,
    /// For metric and exit rules: the last value, for `status` (forks and restarts are counted when asked).
    last: Option<RuleValue>,
}

#[derive(Clone, Debug)]
struct JobState {
    job: Job,
    last_run: Timestamp,
    overdue: bool,
}

impl EngineState {
    /// Builds the state for a checked configuration; `now` starts every job's clock (Inspeqtor did the same).
    #[must_use]
    pub fn new(config: &Config, now: Timestamp) -> Self {
        let cycle_time = config.settings.cycle_time.max(Duration::from_secs(1));
        let limit = config.settings.restart_limit;
        let targets =
            config.checks().map(|check| (target_of(check), TargetState::new(check, cycle_time, limit))).collect();
        let jobs = config.jobs.iter().map(|job| JobState { job: job.clone(), last_run: now, overdue: false }).collect();
        EngineState { cycle_time, deploy_length: config.settings.deploy_length, silenced_until: None, targets, jobs }
    }

    #[must_use]
    pub fn is_silenced(&self, now: Timestamp) -> bool {
        self.silenced_until.is_some_and(|until| now < until)
    }

    /// For `status`: the end of the current silence, if any.
    #[must_use]
    pub fn silenced_until(&self, now: Timestamp) -> Option<Timestamp> {
        self.silenced_until.filter(|until| now < *until)
    }

    /// Carries state over from `old`, the engine of the configuration a reload
    /// replaces: a target whose check is unchanged (same rules, owner and cycle)
    /// keeps everything — rule phases and `for N cycles` counts, counters'
    /// previous values, restart and fork windows, its up/down status and an
    /// `unmonitor`; a job with the same name and period keeps its last run and
    /// overdue flag; a deploy silence continues. Changed and new checks start fresh.
    pub fn carry_over(&mut self, old: &EngineState) {
        self.silenced_until = old.silenced_until;
        for (target, state) in &mut self.targets {
            if let Some(previous) = old.targets.get(target)
                && previous.owner == state.owner
                && previous.cycle_time == state.cycle_time
                && previous.rules.len() == state.rules.len()
                && previous.rules.iter().zip(&state.rules).all(|(a, b)| a.rule == b.rule)
            {
                *state = previous.clone();
            }
        }
        for job in &mut self.jobs {
            if let Some(previous) = old.jobs.iter().find(|j| j.job.name == job.job.name && j.job.every == job.job.every)
            {
                job.last_run = previous.last_run;
                job.overdue = previous.overdue;
            }
        }
    }

    /// Each job with its last run and whether it is overdue, for `status`.
    pub fn jobs(&self) -> impl Iterator<Item = (&Job, Timestamp, bool)> {
        self.jobs.iter().map(|j| (&j.job, j.last_run, j.overdue))
    }

    #[must_use]
    pub fn knows_job(&self, name: &str) -> bool {
        self.jobs.iter().any(|j| j.job.name == name)
    }

    #[must_use]
    pub fn is_unmonitored(&self, service: &str) -> bool {
        self.targets.get(&Target::Service(service.to_owned())).is_some_and(|t| t.unmonitored)
    }

    /// For `status`: restarts since the check started being watched, and worker deaths (crashed, of which
    /// OOM-killed).
    #[must_use]
    pub fn counts(&self, service: &str) -> (u64, u64, u64) {
        self.targets
            .get(&Target::Service(service.to_owned()))
            .map_or((0, 0, 0), |t| (t.restarts_total, t.workers_crashed, t.workers_oom_killed))
    }
}

fn target_of(check: &Check) -> Target {
    match check.kind {
        CheckKind::Host => Target::Host,
        CheckKind::Service | CheckKind::Process(_) => Target::Service(check.name.clone()),
    }
}

/// The rule the restart limit stands for, for a check that restarts its service and counts no restarts itself.
fn restart_limit_rule(check: &Check, limit: Option<RestartLimit>) -> Option<Rule> {
    let limit = limit?;
    let restarts = check.rules.iter().any(|r| r.actions.contains(&ActionSpec::Restart));
    let counted = check.rules.iter().any(|r| matches!(r.condition, Condition::Restarts { .. }));
    if !restarts || counted || check.kind == CheckKind::Host {
        return None;
    }
    Some(Rule {
        condition: Condition::Restarts { count: limit.count, window: Window::Time(limit.window) },
        actions: vec![ActionSpec::Alert { route: None }, ActionSpec::Unmonitor],
        text: format!(
            "restarts > {} within {} (the restart limit)",
            limit.count,
            crate::config::amount::window_text(limit.window)
        ),
        location: check.location.clone(),
    })
}

/// `300s` as the rule language writes it: `5 minutes`.
impl TargetState {
    fn new(check: &Check, cycle_time: Duration, limit: Option<RestartLimit>) -> Self {
        let mut horizon = Duration::ZERO;
        let mut worker_horizon = Duration::ZERO;
        let mut has_exit_rules = false;
        let rules: Vec<Rule> = check.rules.iter().cloned().chain(restart_limit_rule(check, limit)).collect();
        for rule in &rules {
            match &rule.condition {
                Condition::Restarts { window, .. } => {
                    horizon = horizon.max(window.duration(cycle_time));
                }
                Condition::Worker { more_than: Some((_, window)), .. } => {
                    worker_horizon = worker_horizon.max(window.duration(cycle_time));
                }
                Condition::Exited
                | Condition::Crashed
                | Condition::Signaled(_)
                | Condition::OomKilled
                | Condition::ExitCode { .. } => {
                    has_exit_rules = true;
                }
                Condition::Metric(_)
                | Condition::Unreachable { .. }
                | Condition::Probe { .. }
                | Condition::ListenerStopped { .. }
                | Condition::Forks { .. }
                | Condition::Worker { .. } => {}
            }
        }
        TargetState {
            target: target_of(check),
            owner: check.owner.clone(),
            cycle_time,
            rules: rules
                .into_iter()
                .map(|rule| Slot { rule, cycle: CycleRuleState::default(), episode: None, last: None })
                .collect(),
            previous: Previous::new(),
            status: Status::Unknown,
            started_before: false,
            restarts: Instants::new(horizon),
            restarts_total: 0,
            // `forks > N/sec` is measured over one cycle, so a short burst is judged like a sustained rate.
            forks: Forks::new(cycle_time),
            worker_deaths: Instants::new(worker_horizon),
            workers_crashed: 0,
            workers_oom_killed: 0,
            unmonitored: false,
            has_exit_rules,
            down_while_silenced: None,
            listeners: std::collections::BTreeSet::new(),
        }
    }

    fn service_name(&self) -> String {
        self.target.to_string()
    }

    fn event(&self, kind: NoticeKind, rule: Option<&Rule>) -> Notice {
        Notice {
            target: self.target.clone(),
            kind,
            rule: rule.map(|r| RuleRef { text: r.text.clone(), location: r.location.clone() }),
        }
    }

    /// An alert the engine raises itself (down, up, a failed restart): no rule names a route, the owner's applies.
    fn alert(&self, kind: NoticeKind, out: &mut Vec<Action>) {
        out.push(Action::Alert { route: None, owner: self.owner.clone(), event: self.event(kind, None) });
    }

    /// Runs a rule's actions for `event`. On recovery only alerts run: restarting again because a problem went
    /// away was Inspeqtor's bug. Returns whether the service is now unmonitored.
    fn fire(&mut self, index: usize, event: &Notice, failing: bool, out: &mut Vec<Action>) -> bool {
        let service = self.service_name();
        let mut unmonitor = false;
        for spec in &self.rules[index].rule.actions {
            match spec {
                ActionSpec::Alert { route } => {
                    out.push(Action::Alert { route: route.clone(), owner: self.owner.clone(), event: event.clone() });
                }
                _ if !failing => {}
                ActionSpec::Restart => out.push(Action::Restart { service: service.clone() }),
                ActionSpec::Reload => out.push(Action::Reload { service: service.clone() }),
                ActionSpec::Unmonitor => {
                    out.push(Action::Unmonitor { service: service.clone() });
                    unmonitor = true;
                }
                ActionSpec::Exec { argv } => out.push(Action::Exec { argv: argv.clone(), event: event.clone() }),
            }
        }
        if unmonitor {
            self.unmonitored = true;
        }
        unmonitor
    }

    fn reset_counts(&mut self) {
        for slot in &mut self.rules {
            slot.cycle.reset_count();
        }
        self.restarts.clear();
        self.forks.clear();
        self.worker_deaths.clear();
    }
}

/// Advances the engine by one input at time `now` and returns what to do, in rule order then action order.
pub fn step(state: &mut EngineState, input: Input, now: Timestamp) -> Vec<Action> {
    let mut out = Vec::new();
    let silenced = state.is_silenced(now);
    let cycle_time = state.cycle_time;
    match input {
        Input::Sample(sample) => {
            if let Some(t) = state.targets.get_mut(&sample.target) {
                on_sample(t, &sample, now, cycle_time, silenced, &mut out);
            }
        }
        Input::ProcessStarted { service, pid } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                on_started(t, pid, now, silenced, &mut out);
            }
        }
        Input::ProcessExited(exit) => {
            if let Some(t) = state.targets.get_mut(&Target::Service(exit.service.clone())) {
                view::remember_exit(t, &exit);
                on_exited(t, &exit, silenced, &mut out);
            }
        }
        Input::WorkerDied(exit) => {
            if let Some(t) = state.targets.get_mut(&Target::Service(exit.service.clone())) {
                on_worker_died(t, &exit, now, silenced, &mut out);
            }
        }
        Input::ServiceDown { service, stopped } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                if stopped {
                    if !matches!(t.status, Status::Down { alerted: true }) {
                        t.status = Status::Stopped;
                    }
                } else {
                    went_down(t, None, silenced, &mut out);
                }
            }
        }
        Input::RestartFailed { service, reason } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                if !silenced && !t.unmonitored {
                    t.alert(NoticeKind::RestartFailed { reason }, &mut out);
                    t.status = Status::Down { alerted: true };
                }
            }
        }
        Input::Forked { service } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                on_forked(t, now, silenced, &mut out);
            }
        }
        Input::ListenerClosed { service, address, pid } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                listen::on_closed(t, address, pid, now, silenced, &mut out);
            }
        }
        Input::Cycle => on_cycle(state, now, &mut out),
        Input::DeployStarted => {
            state.silenced_until = Some(now + state.deploy_length);
            state.targets.values_mut().for_each(TargetState::reset_counts);
        }
        Input::DeployFinished => {
            // One grace cycle: services restarted by the deploy get a cycle to settle before rules judge them.
            if silenced {
                state.silenced_until = Some(now + cycle_time);
            }
        }
        Input::JobDone { job } => {
            if let Some(j) = state.jobs.iter_mut().find(|j| j.job.name == job) {
                j.last_run = now;
                if j.overdue {
                    j.overdue = false;
                    let event = job_event(&j.job, NoticeKind::JobRan { job: j.job.name.clone() });
                    out.push(Action::Alert { route: None, owner: j.job.owner.clone(), event });
                }
            }
        }
        Input::Remonitor { service } => {
            if let Some(t) = state.targets.get_mut(&Target::Service(service)) {
                t.unmonitored = false;
                for slot in &mut t.rules {
                    slot.cycle = CycleRuleState::default();
                    slot.episode = None;
                }
                t.reset_counts();
            }
        }
    }
    out
}

fn job_event(job: &Job, kind: NoticeKind) -> Notice {
    Notice {
        target: Target::Host,
        kind,
        rule: Some(RuleRef {
            text: format!("{} happens every {:?}", job.name, job.every),
            location: job.location.clone(),
        }),
    }
}

fn on_sample(
    t: &mut TargetState,
    sample: &Sample,
    now: Timestamp,
    cycle_time: Duration,
    silenced: bool,
    out: &mut Vec<Action>,
) {
    let host = t.target == Target::Host;
    let judging = !silenced && !t.unmonitored;
    if silenced {
        t.reset_counts();
    }
    // Another instance of the server answered: its counters started over, so no change is taken across it.
    for (daemon, collection) in &sample.daemons {
        if *collection == (Collection::Reached { restarted: true }) {
            t.previous.retain(|metric, _| metric.family != daemon.name());
        }
    }
    let failed = |family: &str| sample.daemons.iter().any(|(d, c)| *c == Collection::Failed && d.name() == family);
    for i in 0..t.rules.len() {
        let (value, tripped, cycles) = match &t.rules[i].rule.condition {
            Condition::Metric(rule) => {
                if failed(&rule.metric.family) {
                    // Unknown this cycle: `status` must not show the value from before the failure as current.
                    t.rules[i].last = None;
                    continue;
                }
                let Some(value) = value::rule_value(rule, sample, &t.previous, now, cycle_time, host) else {
                    continue;
                };
                (RuleValue::Metric(value), rule.op.holds(value, rule.threshold.value), rule.cycles)
            }
            Condition::Unreachable { daemon, cycles } => {
                // Judged only in the cycles its family was collected (or tried).
                let Some(collection) = sample.daemons.get(daemon) else { continue };
                let reached = *collection != Collection::Failed;
                (RuleValue::Reached(reached), !reached, *cycles)
            }
            Condition::Probe { probe, test } => {
                // Judged only in the cycles the probe ran, and not while the init system has the service stopped
                // on request: an operator's `systemctl stop` closes its port, and that is no failure to restart.
                let Some(probed) = sample.probes.get(probe) else { continue };
                if t.status == Status::Stopped {
                    t.rules[i].last = None;
                    t.rules[i].cycle.reset_count();
                    continue;
                }
                match (test, *probed) {
                    (ProbeTest::Fails { cycles }, probed) => {
                        let answered = probed != Probed::Failed;
                        (RuleValue::Reached(answered), !answered, *cycles)
                    }
                    (ProbeTest::Time { op, millis, cycles }, Probed::Answered { millis: took, .. }) => {
                        (RuleValue::Metric(took), op.holds(took, *millis), *cycles)
                    }
                    (ProbeTest::Expires { within }, Probed::Answered { certificate_left: Some(left), .. }) => {
                        (RuleValue::Metric(left / 86_400.0), left < within.as_secs_f64(), 1)
                    }
                    // No answer, no time and no certificate: unknown this cycle, as a failed collection is.
                    (ProbeTest::Time { .. } | ProbeTest::Expires { .. }, _) => {
                        t.rules[i].last = None;
                        continue;
                    }
                }
            }
            _ => continue,
        };
        // Kept while the rule may not act too (a deploy, `unmonitor`): `status` shows what it would compare.
        t.rules[i].last = Some(value.clone());
        if !judging {
            continue;
        }
        let transition = t.rules[i].cycle.observe(tripped, cycles, now);
        let (kind, failing) = match (transition, &t.rules[i].rule.condition, value) {
            (Transition::None, ..) => continue,
            (Transition::Failed, Condition::Unreachable { daemon, .. }, _) => {
                (NoticeKind::Unreachable { daemon: *daemon }, true)
            }
            (Transition::Recovered { failed_for }, Condition::Unreachable { daemon, .. }, _) => {
                (NoticeKind::Reachable { daemon: *daemon, failed_for }, false)
            }
            (Transition::Failed, Condition::Probe { probe, test: ProbeTest::Fails { .. } }, _) => {
                (NoticeKind::ProbeFailed { probe: *probe }, true)
            }
            (Transition::Recovered { failed_for }, Condition::Probe { probe, test: ProbeTest::Fails { .. } }, _) => {
                (NoticeKind::ProbeAnswers { probe: *probe, failed_for }, false)
            }
            (Transition::Failed, _, RuleValue::Metric(value)) => (NoticeKind::RuleFailed { value }, true),
            (Transition::Recovered { failed_for }, _, RuleValue::Metric(value)) => {
                (NoticeKind::RuleRecovered { value, failed_for }, false)
            }
            _ => continue,
        };
        let event = t.event(kind, Some(&t.rules[i].rule));
        if t.fire(i, &event, failing, out) {
            break;
        }
    }
    for (metric, value) in &sample.values {
        t.previous.insert(metric.clone(), (*value, now));
    }
    if let Some(listeners) = &sample.listeners {
        listen::on_listed(t, listeners, now, silenced, out);
    }
}

fn on_started(t: &mut TargetState, pid: u32, now: Timestamp, silenced: bool, out: &mut Vec<Action>) {
    // A new process starts its counters from zero: deltas against the old one would be meaningless.
    t.previous.clear();
    // Nor has it listened anywhere yet: `listening N stopped` waits until it is seen listening.
    listen::forget(t);
    let was = t.status;
    t.status = Status::Up;
    t.down_while_silenced = None;
    let restarted = t.started_before;
    t.started_before = true;
    if restarted {
        t.restarts_total += 1;
    }
    if t.unmonitored || silenced {
        return;
    }
    if let Status::Down { alerted: true } = was {
        t.alert(NoticeKind::ProcessUp { pid }, out);
    }
    if !restarted {
        return;
    }
    t.restarts.record(now);
    for i in 0..t.rules.len() {
        let Condition::Restarts { count, window } = t.rules[i].rule.condition else {
            continue;
        };
        if t.rules[i].episode.is_some() {
            continue;
        }
        let window = window.duration(t.cycle_time);
        let seen = t.restarts.count(now, window);
        if seen > count as usize {
            t.rules[i].episode = Some(now);
            let event = t.event(NoticeKind::Flapping { restarts: seen, window }, Some(&t.rules[i].rule));
            if t.fire(i, &event, true, out) {
                break;
            }
        }
    }
}

/// The service is down without inspeq or the init system having asked: the built-in down alert, unless the
/// check's own exit rules judged the exit that took it down. Silenced, it waits for the silence to end.
fn went_down(t: &mut TargetState, exit: Option<&ProcessExit>, silenced: bool, out: &mut Vec<Action>) {
    if matches!(t.status, Status::Down { .. }) {
        return;
    }
    if silenced {
        t.down_while_silenced = Some(exit.cloned());
        t.status = Status::Down { alerted: false };
        return;
    }
    // Exit rules decide what an exit means; a service found down with no exit
    // seen (at startup, or dead before its start was confirmed) is down for all.
    let alert = !t.unmonitored && (exit.is_none() || !t.has_exit_rules);
    t.status = Status::Down { alerted: alert };
    if alert {
        t.alert(NoticeKind::ProcessDown, out);
    }
}

fn on_exited(t: &mut TargetState, exit: &ProcessExit, silenced: bool, out: &mut Vec<Action>) {
    match exit.cause {
        ExitCause::Restart => {
            // An alert already open (a failed restart before this one) stays open for the next start.
            let alerted = matches!(t.status, Status::Down { alerted: true });
            t.status = Status::Down { alerted };
        }
        ExitCause::InitStopped => {
            if !matches!(t.status, Status::Down { alerted: true }) {
                t.status = Status::Stopped;
            }
        }
        ExitCause::Unexpected { init_restarts } => {
            if silenced {
                went_down(t, Some(exit), true, out);
                return;
            }
            let alerted = judge_exit(t, exit, init_restarts, out);
            if t.has_exit_rules {
                if !matches!(t.status, Status::Down { .. }) {
                    t.status = Status::Down { alerted };
                }
            } else {
                went_down(t, Some(exit), false, out);
            }
        }
    }
}

/// Runs the exit rules an unexpected exit matches; returns whether any of them alerted (the alert opens the
/// process condition, which the next start resolves). With `init_restarts` a rule's `restart` becomes
/// [`Action::InitRestarts`]: the init system brings it back, a second restart would fight it.
///
/// An [`ExitStatus::Unknown`] exit matches `exited` (the process is gone) and `crashed` (unless the init system
/// said it was clean: see [`ProcessExit::crashed`]), and no rule that needs what is unknown: not `signaled`, and
/// no `exit_code` comparison, `exit_code == 0` and `exit_code != 0` alike, since there is no code to compare.
fn judge_exit(t: &mut TargetState, seen: &ProcessExit, init_restarts: bool, out: &mut Vec<Action>) -> bool {
    let before = out.len();
    if !t.unmonitored {
        let exit = seen.exit;
        for i in 0..t.rules.len() {
            let matched = match &t.rules[i].rule.condition {
                Condition::Exited => true,
                Condition::Crashed => seen.crashed(),
                Condition::Signaled(None) => exit.status.signal().is_some(),
                Condition::Signaled(Some(n)) => exit.status.signal() == Some(*n),
                Condition::OomKilled => exit.oom_killed,
                Condition::ExitCode { op, code } => {
                    #[expect(clippy::cast_precision_loss, reason = "exit codes and thresholds are small integers")]
                    let holds = exit.status.code().is_some_and(|c| op.holds(f64::from(c), *code as f64));
                    holds
                }
                Condition::Metric(_)
                | Condition::Unreachable { .. }
                | Condition::Probe { .. }
                | Condition::ListenerStopped { .. }
                | Condition::Forks { .. }
                | Condition::Restarts { .. }
                | Condition::Worker { .. } => false,
            };
            if matched {
                let event = t.event(NoticeKind::ProcessExited(exit), Some(&t.rules[i].rule));
                if t.fire(i, &event, true, out) {
                    break;
                }
            }
        }
    }
    if init_restarts {
        for action in &mut out[before..] {
            if let Action::Restart { service } = action {
                *action = Action::InitRestarts { service: std::mem::take(service) };
            }
        }
    }
    out[before..].iter().any(|a| matches!(a, Action::Alert { .. }))
}

fn on_worker_died(t: &mut TargetState, seen: &ProcessExit, now: Timestamp, silenced: bool, out: &mut Vec<Action>) {
    if !seen.worker_crashed() {
        return;
    }
    let exit = seen.exit;
    t.workers_crashed += 1;
    if exit.oom_killed {
        t.workers_oom_killed += 1;
    }
    t.worker_deaths.record(now);
    if silenced || t.unmonitored {
        return;
    }
    for i in 0..t.rules.len() {
        let Condition::Worker { what, more_than } = t.rules[i].rule.condition else {
            continue;
        };
        if what == WorkerEvent::OomKilled && !exit.oom_killed {
            continue;
        }
        let kind = match more_than {
            None => NoticeKind::WorkerDied(exit),
            Some((count, window)) => {
                if t.rules[i].episode.is_some() {
                    continue;
                }
                let window = window.duration(t.cycle_time);
                let deaths = t.worker_deaths.count(now, window);
                if deaths <= count as usize {
                    continue;
                }
                t.rules[i].episode = Some(now);
                NoticeKind::WorkerDeaths { deaths, window }
            }
        };
        let event = t.event(kind, Some(&t.rules[i].rule));
        if t.fire(i, &event, true, out) {
            break;
        }
    }
}

fn on_forked(t: &mut TargetState, now: Timestamp, silenced: bool, out: &mut Vec<Action>) {
    if silenced || t.unmonitored {
        return;
    }
    t.forks.record(now);
    let forks = t.forks.count(now);
    let window = t.forks.window();
    for i in 0..t.rules.len() {
        let Condition::Forks { per_sec } = t.rules[i].rule.condition else {
            continue;
        };
        if t.rules[i].episode.is_some() {
            continue;
        }
        #[expect(clippy::cast_precision_loss, reason = "fork counts in one window are far below 2^52")]
        let tripped = forks as f64 > per_sec * window.as_secs_f64();
        if tripped {
            t.rules[i].episode = Some(now);
            let event = t.event(NoticeKind::ForkRate { forks, window }, Some(&t.rules[i].rule));
            if t.fire(i, &event, true, out) {
                break;
            }
        }
    }
}

fn on_cycle(state: &mut EngineState, now: Timestamp, out: &mut Vec<Action>) {
    // A deploy silences job alerts too: a job overdue during it is reported at
    // the first cycle after it (it is still overdue then).
    let jobs_silenced = state.is_silenced(now);
    for j in &mut state.jobs {
        if !jobs_silenced && !j.overdue && now.since(j.last_run) >= j.job.every + JOB_GRACE {
            j.overdue = true;
            let event = job_event(&j.job, NoticeKind::JobOverdue { job: j.job.name.clone(), every: j.job.every });
            out.push(Action::Alert { route: None, owner: j.job.owner.clone(), event });
        }
    }
    let silenced = state.is_silenced(now);
    for t in state.targets.values_mut() {
        t.restarts.prune(now);
        t.worker_deaths.prune(now);
        if !silenced
            && let Some(exit) = t.down_while_silenced.take()
            && matches!(t.status, Status::Down { .. })
        {
            // Down during the deploy and still down after it: judged now, as if it had just gone down.
            t.status = Status::Unknown;
            match exit {
                Some(exit) => on_exited(t, &exit, false, out),
                None => went_down(t, None, false, out),
            }
        }
        if t.unmonitored {
            continue;
        }
        let forks = t.forks.count(now);
        let cycle = t.cycle_time;
        for i in 0..t.rules.len() {
            if t.rules[i].episode.is_none() {
                continue;
            }
            #[expect(clippy::cast_precision_loss, reason = "fork counts in one window are far below 2^52")]
            let (over, kind) = match t.rules[i].rule.condition {
                Condition::Forks { per_sec } => {
                    (forks as f64 > per_sec * cycle.as_secs_f64(), NoticeKind::ForkRateRecovered)
                }
                Condition::Restarts { count, window } => {
                    (t.restarts.count(now, window.duration(cycle)) > count as usize, NoticeKind::FlappingRecovered)
                }
                Condition::Worker { more_than: Some((count, window)), .. } => (
                    t.worker_deaths.count(now, window.duration(cycle)) > count as usize,
                    NoticeKind::WorkerDeathsRecovered,
                ),
                _ => continue,
            };
            if over {
                continue;
            }
            t.rules[i].episode = None;
            if !silenced {
                let event = t.event(kind, Some(&t.rules[i].rule));
                t.fire(i, &event, false, out);
            }
        }
    }
}
