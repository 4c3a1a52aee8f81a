//! The `*.inq` half of the semantic pass: `check` blocks, their parameters, rules, actions and `check jobs`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::amount::{self, parse_amount, parse_window};
use crate::config::ast::{self, ChecksFile, Item, Span, Text};
use crate::config::bus_address;
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::metrics::{self, EventSubject, MetricKind, Scope, Unit};
use crate::config::model::{
    ActionSpec, Check, CheckKind, Condition, InitKind, Job, MetricName, MetricRule, Op, ProcessSelector, Rule, Suffix,
    UnitScope, Window, WorkerEvent,
};

use super::{Context, at, location, route_known, unknown_route};

/// Compiled-size cap for `matching` patterns: a pattern that needs more is a mistake, and the cap keeps a hostile
/// pattern from stalling `inspeqctl check`. The daemon must compile with the same limit.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

const PARAMS: &str = "owner, init, scope, bus, cgroup_root, pidfile, matching, restart_command, hostname, port, socket, username, password, database, endpoint or path";

pub fn check_checks(file: &SourceFile<'_>, tree: &ChecksFile, cx: &mut Context, out: &mut Vec<Diagnostic>) {
    for block in &tree.checks {
        if block.kind.value == "jobs" {
            jobs(file, block, cx, out);
        } else if let Some(check) = check_block(file, block, cx, out) {
            match check.kind {
                CheckKind::Host => {
                    if let Some(previous) = &cx.host {
                        out.push(file.error(
                            block.head,
                            format!(
                                "the host is already checked at {}, expected one `check host`",
                                at(&previous.location)
                            ),
                        ));
                    } else {
                        cx.host = Some(check);
                    }
                }
                _ => {
                    if let Some(previous) = cx.service_index.get(&check.name).map(|&i| &cx.services[i]) {
                        let span = block.name.as_ref().map_or(block.head, |n| n.span);
                        out.push(file.error(
                            span,
                            format!(
                                "`{}` is already checked at {}, expected each service once",
                                check.name,
                                at(&previous.location)
                            ),
                        ));
                    } else {
                        cx.service_index.insert(check.name.clone(), cx.services.len());
                        cx.services.push(check);
                    }
                }
            }
        }
    }
}

fn jobs(file: &SourceFile<'_>, block: &ast::CheckBlock, cx: &mut Context, out: &mut Vec<Diagnostic>) {
    let mut owner = None;
    for (key, value) in &block.params {
        if key.value == "owner" {
            if route_known(cx, &value.value) {
                owner = Some(value.value.clone());
            } else {
                out.push(file.error(value.span, unknown_route(cx, &value.value)));
            }
        } else {
            out.push(file.warning(
                key.span,
                format!("unknown parameter `{}` for `check jobs` is ignored, expected owner", key.value),
            ));
        }
    }
    for item in &block.items {
        let Item::Job(job) = item else { continue };
        let count =
            match &job.count {
                None => 1,
                Some(c) => match c.value.parse::<u64>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        out.push(file.error(
                            c.span,
                            format!("invalid count `{}`, expected a whole number of at least 1", c.value),
                        ));
                        continue;
                    }
                },
            };
        let unit = match job.period.value.as_str() {
            "minute" | "minutes" => 60,
            "hour" | "hours" => 3600,
            "day" | "days" => 86_400,
            other => {
                out.push(file.error(
                    job.period.span,
                    format!("unknown period `{other}`, expected minute(s), hour(s) or day(s)"),
                ));
                continue;
            }
        };
        let name = job.name.value.clone();
        if let Some(previous) = cx.job_index.get(&name).map(|&i| &cx.jobs[i]) {
            out.push(file.error(
                job.name.span,
                format!("job `{name}` is already declared at {}, expected each job once", at(&previous.location)),
            ));
            continue;
        }
        let every = Duration::from_secs(count.saturating_mul(unit));
        cx.job_index.insert(name.clone(), cx.jobs.len());
        cx.jobs.push(Job { name, every, owner: owner.clone(), location: location(file, job.name.span) });
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over a closed list of words; split up, the list would be harder to read"
)]
fn check_block(
    file: &SourceFile<'_>,
    block: &ast::CheckBlock,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) -> Option<Check> {
    let kind_word = block.kind.value.as_str();
    let is_host =
        match kind_word {
            "host" => true,
            "service" | "process" => false,
            other => {
                out.push(file.error(
                    block.kind.span,
                    format!("unknown check `{other}`, expected host, service, process or jobs"),
                ));
                return None;
            }
        };
    let name = match (&block.name, is_host) {
        (Some(n), true) => {
            out.push(file.error(
                n.span,
                format!("unexpected `{}`, expected `with`, `if` or nothing after `check host`", n.value),
            ));
            "host".to_owned()
        }
        (None, true) => "host".to_owned(),
        (Some(n), false) if !n.value.is_empty() => n.value.clone(),
        _ => {
            out.push(
                file.error(block.head, format!("`check {kind_word}` needs a name, expected `check {kind_word} NAME`")),
            );
            return None;
        }
    };
    let mut check = Check {
        kind: if is_host { CheckKind::Host } else { CheckKind::Service },
        name,
        owner: None,
        init: None,
        scope: None,
        bus: None,
        cgroup_root: None,
        restart_command: None,
        params: BTreeMap::new().into(),
        exposes: Vec::new(),
        rules: Vec::new(),
        location: location(file, block.head),
    };
    let mut selector = None;
    // `bus` and `cgroup_root` name a systemd manager: where they were given, to check that one runs the check.
    let mut systemd_only: Option<(&str, Span)> = None;
    // A selector that was given but invalid has its own error; "needs a way to find it" would repeat it.
    let mut selector_given = false;
    for (key, value) in &block.params {
        let v = value.value.as_str();
        if check.params.insert(key.value.clone(), v.to_owned()).is_some() {
            out.push(
                file.warning(
                    key.span,
                    format!("parameter `{}` is given more than once; the last value wins", key.value),
                ),
            );
        }
        if is_host && key.value != "owner" {
            out.push(file.warning(
                key.span,
                format!("parameter `{}` has no meaning for `check host` and is ignored, expected owner", key.value),
            ));
            continue;
        }
        match key.value.as_str() {
            "owner" => {
                if route_known(cx, v) {
                    check.owner = Some(v.to_owned());
                } else {
                    out.push(file.error(value.span, unknown_route(cx, v)));
                }
            }
            "init" => match v {
                "systemd" => check.init = Some(InitKind::Systemd),
                "upstart" => check.init = Some(InitKind::Upstart),
                "runit" => check.init = Some(InitKind::Runit),
                "initd" | "init.d" | "sysv" => check.init = Some(InitKind::Initd),
                _ => out.push(file.error(
                    value.span,
                    format!("unknown init system `{v}`, expected systemd, upstart, runit or initd"),
                )),
            },
            "scope" => match v {
                "system" => check.scope = Some(UnitScope::System),
                "user" => check.scope = Some(UnitScope::User),
                _ => out.push(file.error(value.span, format!("unknown scope `{v}`, expected system or user"))),
            },
            "bus" => {
                systemd_only = systemd_only.or(Some(("bus", key.span)));
                match bus_address::problem(v) {
                    None => check.bus = Some(v.to_owned()),
                    Some(problem) => out.push(file.error(value.span, problem)),
                }
            }
            "cgroup_root" => {
                systemd_only = systemd_only.or(Some(("cgroup_root", key.span)));
                if v.starts_with('/') {
                    let root = v.trim_end_matches('/');
                    check.cgroup_root = Some(if root.is_empty() { "/".to_owned() } else { root.to_owned() });
                } else {
                    out.push(file.error(value.span, format!("cgroup root `{v}` is not an absolute path, expected where the manager's cgroups are on this host, like /sys/fs/cgroup/machine.slice/NAME")));
                }
            }
            "pidfile" => {
                selector_given = true;
                if v.starts_with('/') {
                    selector = selector.or(Some(ProcessSelector::PidFile(v.to_owned())));
                } else {
                    out.push(file.error(
                        value.span,
                        format!("pid file `{v}` is not an absolute path, expected a path like /run/NAME.pid"),
                    ));
                }
            }
            "matching" => {
                selector_given = true;
                if kind_word != "process" {
                    out.push(file.error(
                        key.span,
                        "`matching` only applies to `check process`, expected pidfile, init or scope",
                    ));
                } else if let Err(e) = regex::RegexBuilder::new(v).size_limit(REGEX_SIZE_LIMIT).build() {
                    let reason = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("invalid")
                        .trim()
                        .trim_start_matches("error: ")
                        .to_owned();
                    out.push(file.error(value.span, format!("invalid regular expression: {reason}")));
                } else {
                    selector = selector.or(Some(ProcessSelector::Matching(v.to_owned())));
                }
            }
            "restart_command" => {
                let argv: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                if argv.first().is_some_and(|p| p.starts_with('/')) {
                    check.restart_command = Some(argv);
                } else {
                    out.push(file.error(value.span, "restart command must start with an absolute program path, expected like \"/usr/bin/svc restart\""));
                }
            }
            "port" => {
                if v.parse::<u16>().is_err() {
                    out.push(file.error(value.span, format!("invalid port `{v}`, expected a number from 1 to 65535")));
                }
            }
            "hostname" | "socket" | "username" | "password" | "database" | "endpoint" | "path" => {}
            other => {
                out.push(file.warning(key.span, format!("unknown parameter `{other}` is ignored, expected {PARAMS}")))
            }
        }
    }
    if let Some((param, span)) = systemd_only {
        let other = match check.init {
            Some(InitKind::Upstart) => Some("upstart"),
            Some(InitKind::Runit) => Some("runit"),
            Some(InitKind::Initd) => Some("initd"),
            Some(InitKind::Systemd) | None => None,
        };
        if kind_word == "process" {
            out.push(file.error(span, format!("`{param}` only applies to systemd services, not to `check process`")));
        } else if let Some(other) = other {
            out.push(file.error(
                span,
                format!("`{param}` only applies to systemd services, expected init systemd (not {other})"),
            ));
        }
    }
    if kind_word == "process" {
        if let Some(s) = selector {
            check.kind = CheckKind::Process(s)
        } else {
            if selector_given {
                return None;
            }
            out.push(file.error(block.head, format!("`check process {}` needs a way to find it, expected `with pidfile PATH` or `with matching \"REGEX\"`", check.name)));
            return None;
        }
    } else if let Some(ProcessSelector::PidFile(_)) = selector {
        // A service may name its pid file (Inspeqtor #25/#117); it stays a service for restarts via its init system.
    }
    for item in &block.items {
        match item {
            Item::Rule(rule) => {
                if let Some(rule) = check_rule(file, rule, &check, cx, out) {
                    check.rules.push(rule);
                }
            }
            Item::Expose(names) => {
                for n in names {
                    if is_host {
                        out.push(file.error(n.span, "`expose` only applies to services, expected a rule"));
                    } else if n.value == "memstats" {
                        check.exposes.push(n.value.clone());
                    } else {
                        out.push(file.error(n.span, format!("unknown expose option `{}`, expected memstats", n.value)));
                    }
                }
            }
            Item::Job(job) => out.push(file.error(job.span, "job lines belong in `check jobs`, expected a rule")),
        }
    }
    if block.items.is_empty() {
        out.push(file.warning(
            block.head,
            format!("`check {kind_word} {}` has no rules; only its up/down changes will be reported", check.name),
        ));
    }
    Some(check)
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_rule(
    file: &SourceFile<'_>,
    rule: &ast::RuleText,
    check: &Check,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) -> Option<Rule> {
    let before = out.len();
    let condition = condition(file, &rule.condition, check, out);
    let actions: Vec<ActionSpec> = rule.actions.iter().filter_map(|a| action(file, a, check, cx, out)).collect();
    let failed = out[before..].iter().any(Diagnostic::is_error);
    let condition = condition?;
    if failed {
        return None;
    }
    let text = collapse(file.text.get(rule.condition_span.start..rule.condition_span.end).unwrap_or_default());
    Some(Rule { condition, actions, text, location: location(file, rule.span) })
}

#[expect(
    clippy::too_many_lines,
    reason = "one match over a closed list of words; split up, the list would be harder to read"
)]
fn condition(
    file: &SourceFile<'_>,
    cond: &ast::Condition,
    check: &Check,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let is_host = check.kind == CheckKind::Host;
    match cond {
        ast::Condition::Event { name, arg } => {
            let subject = metrics::event_subject(&name.value);
            if is_host && subject.is_some() {
                out.push(file.error(
                    name.span,
                    format!(
                        "`{}` is an event of a process, expected a host metric such as swap, load:5 or disk:/",
                        name.value
                    ),
                ));
                return None;
            }
            let no_arg = |out: &mut Vec<Diagnostic>| {
                if let Some(a) = arg {
                    out.push(file.error(a.span, format!("unexpected `{}`, expected `then`", a.value)));
                }
            };
            match subject {
                Some(EventSubject::Exited) => {
                    no_arg(out);
                    Some(Condition::Exited)
                }
                Some(EventSubject::Crashed) => {
                    no_arg(out);
                    Some(Condition::Crashed)
                }
                Some(EventSubject::OomKilled) => {
                    no_arg(out);
                    Some(Condition::OomKilled)
                }
                Some(EventSubject::Signaled) => match arg {
                    None => Some(Condition::Signaled(None)),
                    Some(a) => {
                        if let Some(n) = metrics::signal_number(&a.value) {
                            Some(Condition::Signaled(Some(n)))
                        } else {
                            out.push(file.error(
                                a.span,
                                format!(
                                    "unknown signal `{}`, expected a name such as SIGKILL or SIGSEGV, or a number",
                                    a.value
                                ),
                            ));
                            None
                        }
                    }
                },
                Some(EventSubject::Worker) => {
                    let what = arg.as_ref().and_then(|a| worker_event(&a.value));
                    if what.is_none() {
                        let span = arg.as_ref().map_or(Span::new(name.span.end, name.span.end + 1), |a| a.span);
                        out.push(file.error(span, WORKER_EXPECTED));
                    }
                    what.map(|what| Condition::Worker { what, more_than: None })
                }
                Some(EventSubject::ExitCode | EventSubject::Forks | EventSubject::Restarts) => {
                    let example = match subject {
                        Some(EventSubject::ExitCode) => "exit_code != 0",
                        Some(EventSubject::Forks) => "forks > 100/sec",
                        _ => "restarts > 3 within 5 minutes",
                    };
                    let span = arg.as_ref().map_or(Span::new(name.span.end, name.span.end + 1), |a| a.span);
                    out.push(
                        file.error(span, format!("expected a comparison after `{}`, like `{example}`", name.value)),
                    );
                    None
                }
                None => {
                    let scope = if is_host { Scope::Host } else { Scope::Process };
                    let metric = ast::metric_from_word(&name.value, name.span.start, name.span.end);
                    let message = if metrics::lookup(
                        &metric.family.value,
                        metric.name.as_ref().map(|n| n.value.as_str()),
                        scope,
                    )
                    .is_ok()
                    {
                        let span = arg.as_ref().map_or(Span::new(name.span.end, name.span.end + 1), |a| a.span);
                        out.push(file.error(
                            span,
                            format!("expected a comparison after `{}`, like `{} > 90%`", name.value, name.value),
                        ));
                        return None;
                    } else if is_host {
                        format!(
                            "unknown condition `{}`, expected a host metric comparison such as `swap > 20%`",
                            name.value
                        )
                    } else {
                        format!(
                            "unknown condition `{}`, expected a metric comparison or one of exited, crashed, signaled, oom_killed",
                            name.value
                        )
                    };
                    out.push(file.error(name.span, message));
                    None
                }
            }
        }
        ast::Condition::EventCount { name, arg, op, amount, within } => {
            if metrics::event_subject(&name.value) != Some(EventSubject::Worker) {
                out.push(file.error(
                    name.span,
                    format!(
                        "`{} {}` cannot be counted, expected `worker crashed > 3 within 1 minute`",
                        name.value, arg.value
                    ),
                ));
                return None;
            }
            if is_host {
                out.push(file.error(
                    name.span,
                    "`worker` is an event of a service, expected a host metric such as swap, load:5 or disk:/",
                ));
                return None;
            }
            let Some(what) = worker_event(&arg.value) else {
                out.push(file.error(arg.span, WORKER_EXPECTED));
                return None;
            };
            let word = format!("worker {}", arg.value);
            let more_than = count_within(file, &word, *op, amount, Some(within), out)?;
            Some(Condition::Worker { what, more_than: Some(more_than) })
        }
        ast::Condition::Compare { metric, op, amount, for_cycles, within } => {
            let subject = if metric.name.is_none() { metrics::event_subject(&metric.family.value) } else { None };
            match subject {
                Some(subject) if !is_host => {
                    event_compare(file, subject, metric, *op, amount, for_cycles.as_ref(), within.as_deref(), out)
                }
                Some(_) => {
                    out.push(file.error(
                        metric.span,
                        format!(
                            "`{}` is an event of a process, expected a host metric such as swap, load:5 or disk:/",
                            metric.family.value
                        ),
                    ));
                    None
                }
                None => metric_compare(file, metric, *op, amount, for_cycles.as_ref(), within.as_deref(), is_host, out),
            }
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename the same fields")]
fn event_compare(
    file: &SourceFile<'_>,
    subject: EventSubject,
    metric: &ast::MetricText,
    (op, op_span): (Op, Span),
    amount: &Text,
    for_cycles: Option<&(Text, Option<Text>)>,
    within: Option<&[Text]>,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let word = metric.family.value.as_str();
    if let Some((n, _)) = for_cycles {
        out.push(file.error(n.span, format!("`{word}` is evaluated when it happens, expected no `for N cycles`")));
        return None;
    }
    if subject != EventSubject::Restarts
        && let Some(first) = within.and_then(<[Text]>::first)
    {
        out.push(file.error(
            first.span,
            format!(
                "`within` only applies to `restarts`, expected `then` after `{word} {} {}`",
                op.symbol(),
                amount.value
            ),
        ));
        return None;
    }
    match subject {
        EventSubject::ExitCode => {
            let Ok(code) = amount.value.parse::<i64>() else {
                out.push(file.error(
                    amount.span,
                    format!("invalid exit code `{}`, expected a whole number from 0 to 255", amount.value),
                ));
                return None;
            };
            #[expect(clippy::cast_precision_loss, reason = "exit codes that matter fit in 8 bits")]
            let never = !(0..=255).any(|c| op.holds(f64::from(c), code as f64));
            if never {
                out.push(file.warning(
                    amount.span,
                    format!("`exit_code {} {code}` can never fire, expected an exit code from 0 to 255", op.symbol()),
                ));
            }
            Some(Condition::ExitCode { op, code })
        }
        EventSubject::Forks => {
            if !matches!(op, Op::Gt | Op::Ge) {
                out.push(file.error(op_span, "`forks` is compared with `>` or `>=`, like `forks > 100/sec`"));
                return None;
            }
            match parse_amount(&amount.value) {
                Ok(a) if a.per_sec && a.suffix != Suffix::Percent => Some(Condition::Forks { per_sec: a.value }),
                _ => {
                    out.push(file.error(
                        amount.span,
                        format!("invalid fork rate `{}`, expected a rate like `100/sec`", amount.value),
                    ));
                    None
                }
            }
        }
        EventSubject::Restarts => count_within(file, word, (op, op_span), amount, within, out)
            .map(|(count, window)| Condition::Restarts { count, window }),
        EventSubject::Worker => {
            out.push(file.error(metric.span, WORKER_EXPECTED));
            None
        }
        EventSubject::Exited | EventSubject::Crashed | EventSubject::Signaled | EventSubject::OomKilled => {
            out.push(file.error(op_span, format!("`{word}` takes no comparison, expected `if {word} then ...`")));
            None
        }
    }
}

const WORKER_EXPECTED: &str = "expected `worker crashed` or `worker oom_killed`";

fn worker_event(word: &str) -> Option<WorkerEvent> {
    match word {
        "crashed" => Some(WorkerEvent::Crashed),
        "oom_killed" => Some(WorkerEvent::OomKilled),
        _ => None,
    }
}

/// `> N within WINDOW` after an event that is counted (`restarts`, `worker crashed`): more than the count
/// within the window, `>= N` being more than N - 1.
fn count_within(
    file: &SourceFile<'_>,
    word: &str,
    (op, op_span): (Op, Span),
    amount: &Text,
    within: Option<&[Text]>,
    out: &mut Vec<Diagnostic>,
) -> Option<(u32, Window)> {
    if !matches!(op, Op::Gt | Op::Ge) {
        out.push(
            file.error(op_span, format!("`{word}` is compared with `>` or `>=`, like `{word} > 3 within 5 minutes`")),
        );
        return None;
    }
    let Ok(n) = amount.value.parse::<u32>() else {
        out.push(file.error(amount.span, format!("invalid count `{}`, expected a whole number", amount.value)));
        return None;
    };
    // `>= 0` would hold with nothing counted at all.
    let count = match op {
        Op::Ge if n == 0 => {
            out.push(file.error(amount.span, format!("`{word} >= 0` always holds, expected a count of at least 1")));
            return None;
        }
        Op::Ge => n - 1,
        _ => n,
    };
    let Some(words) = within else {
        out.push(file.error(
            Span::new(amount.span.end, amount.span.end + 1),
            format!("`{word}` needs a window, expected `within DURATION` or `within N cycles`"),
        ));
        return None;
    };
    let texts: Vec<&str> = words.iter().map(|w| w.value.as_str()).collect();
    let span = Span::new(words[0].span.start, words[words.len() - 1].span.end);
    match parse_window(&texts) {
        Ok(amount::Span::Time(d)) => Some((count, Window::Time(d))),
        Ok(amount::Span::Cycles(c)) => Some((count, Window::Cycles(c))),
        Err(e) => {
            out.push(file.error(span, e.to_string()));
            None
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename the same fields")]
fn metric_compare(
    file: &SourceFile<'_>,
    metric: &ast::MetricText,
    (op, _): (Op, Span),
    amount: &Text,
    for_cycles: Option<&(Text, Option<Text>)>,
    within: Option<&[Text]>,
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let family = metric.family.value.as_str();
    let mut name = metric.name.as_ref().map(|n| n.value.as_str());
    let scope = if is_host { Scope::Host } else { Scope::Process };
    if is_host && family == "memory" && name == Some("free") {
        // Inspeqtor's own fixture used `memory(free)`, which it parsed but never collected (it read 0). Keep such
        // files loading, and give the rule the meaning its author wanted.
        out.push(
            file.warning(
                metric.span,
                "Inspeqtor never collected `memory:free`; it is read as `memory:available` (bytes)",
            ),
        );
        name = Some("available");
    }
    let resolved = match metrics::lookup(family, name, scope) {
        Ok(r) => Some(r),
        Err(e) => {
            out.push(file.error(metric.span, e.to_string()));
            None
        }
    };
    if let Some(first) = within.and_then(<[Text]>::first) {
        out.push(file.error(first.span, "`within` only applies to `restarts`, expected `for N cycles` or `then`"));
        return None;
    }
    let threshold = match parse_amount(&amount.value) {
        Ok(a) => Some(a),
        Err(e) => {
            out.push(file.error(amount.span, e.to_string()));
            None
        }
    };
    let cycles = match for_cycles {
        None => Some(1),
        Some((n, word)) => {
            let count = match n.value.parse::<u32>() {
                Ok(c) if c >= 1 => Some(c),
                _ => {
                    out.push(file.error(
                        n.span,
                        format!("invalid cycle count `{}`, expected a whole number of at least 1", n.value),
                    ));
                    None
                }
            };
            if let Some(word) = word.as_ref().filter(|w| !matches!(w.value.as_str(), "cycle" | "cycles")) {
                out.push(file.error(word.span, format!("unexpected `{}`, expected `cycles`", word.value)));
                None
            } else {
                count
            }
        }
    };
    let (resolved, threshold, cycles) = (resolved?, threshold?, cycles?);
    let shown = MetricName::new(family, name);
    if threshold.per_sec && resolved.kind != MetricKind::Counter {
        out.push(file.warning(
            amount.span,
            format!(
                "`/sec` only makes sense for counters and `{shown}` is not one; its value is divided by the cycle time"
            ),
        ));
    }
    if threshold.suffix == Suffix::Percent && resolved.unit != Unit::Percent {
        out.push(file.warning(
            amount.span,
            format!("`{shown}` is not a percentage; `{}` is compared as the plain number", amount.value),
        ));
    }
    // Process CPU is a share of one core, so a multi-threaded process legitimately exceeds 100 %.
    let bounded = resolved.unit == Unit::Percent && (is_host || resolved.kind != MetricKind::CpuSeconds);
    let v = threshold.value;
    let never = match op {
        Op::Gt => bounded && v >= 100.0,
        Op::Ge => bounded && v > 100.0,
        Op::Lt => v <= 0.0,
        Op::Le | Op::Eq => v < 0.0,
        Op::Ne => false,
    };
    if never {
        let range = if bounded { "from 0 to 100" } else { "above 0" };
        out.push(file.warning(
            amount.span,
            format!("`{shown} {} {}` can never fire, expected a threshold {range}", op.symbol(), amount.value),
        ));
    }
    Some(Condition::Metric(MetricRule {
        metric: shown,
        kind: resolved.kind,
        unit: resolved.unit,
        op,
        threshold,
        cycles,
    }))
}

fn action(
    file: &SourceFile<'_>,
    a: &ast::ActionText,
    check: &Check,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) -> Option<ActionSpec> {
    let verb = a.verb.value.as_str();
    let extra = |out: &mut Vec<Diagnostic>, from: usize| -> bool {
        if let Some(x) = a.args.get(from) {
            out.push(file.error(x.span, format!("unexpected `{}`, expected `,` between actions", x.value)));
            true
        } else {
            false
        }
    };
    let on_host = check.kind == CheckKind::Host;
    match verb {
        "alert" => {
            if extra(out, 1) {
                return None;
            }
            match a.args.first() {
                None => Some(ActionSpec::Alert { route: None }),
                Some(r) if route_known(cx, &r.value) => Some(ActionSpec::Alert { route: Some(r.value.clone()) }),
                Some(r) => {
                    let mut message = unknown_route(cx, &r.value);
                    if matches!(r.value.as_str(), "restart" | "reload" | "unmonitor" | "exec") {
                        message = format!("{message} (to also {}, write `alert, {}`)", r.value, r.value);
                    }
                    out.push(file.error(r.span, message));
                    None
                }
            }
        }
        "restart" | "reload" | "unmonitor" => {
            if extra(out, 0) {
                return None;
            }
            if on_host {
                out.push(file.error(a.verb.span, format!("the host cannot `{verb}`, expected alert or exec")));
                return None;
            }
            if let CheckKind::Process(_) = check.kind {
                if verb == "restart" && check.restart_command.is_none() {
                    out.push(file.error(a.verb.span, "a `check process` has no init system to restart it, expected `with restart_command \"/path/prog args\"`"));
                    return None;
                }
                if verb == "reload" {
                    out.push(file.error(
                        a.verb.span,
                        "a `check process` has no init system to reload it, expected restart, alert or exec",
                    ));
                    return None;
                }
            }
            Some(match verb {
                "restart" => ActionSpec::Restart,
                "reload" => ActionSpec::Reload,
                _ => ActionSpec::Unmonitor,
            })
        }
        "exec" => match a.args.first() {
            Some(program) if program.value.starts_with('/') => {
                Some(ActionSpec::Exec { argv: a.args.iter().map(|t| t.value.clone()).collect() })
            }
            Some(program) => {
                out.push(file.error(
                    program.span,
                    format!(
                        "program `{}` is not an absolute path, expected like `exec \"/usr/local/bin/notify\"`",
                        program.value
                    ),
                ));
                None
            }
            None => {
                out.push(file.error(a.verb.span, "`exec` needs a program, expected `exec \"/path/prog\" [args]`"));
                None
            }
        },
        other => {
            out.push(file.error(
                a.verb.span,
                format!("unknown action `{other}`, expected alert, restart, reload, unmonitor or exec"),
            ));
            None
        }
    }
}
