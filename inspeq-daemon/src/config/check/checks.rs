//! The `*.inq` half of the semantic pass: `check` blocks, their parameters, rules, actions and `check jobs`.
//!
//! What this accepts is what the daemon runs: a value the daemon validates again where it uses it (a service name,
//! a `matching` pattern) goes through the same function in [`names`]; a rule on a metric the daemon does not
//! collect is an error (it could never fire); a parameter nothing reads in this check (a connection setting
//! without a collected family's rule, a `pidfile` for systemd) is a warning that says it is ignored and why.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::amount::{self, parse_amount, parse_window};
use crate::config::ast::{self, ChecksFile, Item, Span, Text};
use crate::config::bus_address;
use crate::config::diagnostic::{Diagnostic, SourceFile};
use crate::config::metrics::{self, EventSubject, MetricKind, Scope, Unit};
use crate::config::model::{
    ActionSpec, Check, CheckKind, Condition, DaemonAddress, DaemonSource, InitKind, Job, MetricName, MetricRule, Op,
    ProcessSelector, Rule, Secret, Suffix, UnitScope, Window, WorkerEvent,
};
use crate::config::names::{self, ServiceName};

use super::{Context, at, location, probes, route_known, unknown_route};

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

/// What a `check` block watches, from its kind word (`jobs` blocks are checked by [`jobs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Host,
    Service,
    Process,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Host => "host",
            Kind::Service => "service",
            Kind::Process => "process",
        }
    }
}

/// What a check's `with` list gave beyond the values stored in the [`Check`]: where each key was first written,
/// for the diagnostics that depend on the whole list or on the rules, and how a `check process` is found.
#[derive(Default)]
struct Given {
    keys: BTreeMap<String, Span>,
    selector: Option<ProcessSelector>,
    /// A selector was written, valid or not: an invalid one has its own error, and "needs a way to find it" would
    /// repeat it.
    selector_written: bool,
}

impl Given {
    fn span(&self, key: &str) -> Option<Span> {
        self.keys.get(key).copied()
    }
}

fn check_block(
    file: &SourceFile<'_>,
    block: &ast::CheckBlock,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) -> Option<Check> {
    let kind = check_kind(file, block, out)?;
    let name = check_name(file, block, kind, out)?;
    let mut check = Check {
        kind: if kind == Kind::Host { CheckKind::Host } else { CheckKind::Service },
        name,
        owner: None,
        init: None,
        scope: None,
        bus: None,
        cgroup_root: None,
        restart_command: None,
        params: BTreeMap::new().into(),
        daemons: Vec::new(),
        probes: Vec::new(),
        exposes: Vec::new(),
        rules: Vec::new(),
        location: location(file, block.head),
    };
    let given = parameters(file, block, kind, &mut check, cx, out);
    init_parameters_apply(file, kind, &check, &given, out);
    if kind == Kind::Process {
        let Some(selector) = given.selector.clone() else {
            if !given.selector_written {
                out.push(file.error(block.head, format!("`check process {}` needs a way to find it, expected `with pidfile PATH` or `with matching \"REGEX\"`", check.name)));
            }
            return None;
        };
        check.kind = CheckKind::Process(selector);
    }
    items(file, block, kind, &mut check, cx, out);
    connection_parameters_used(file, &check, &given, out);
    check.daemons = daemon_sources(&check);
    if block.items.is_empty() {
        out.push(file.warning(
            block.head,
            format!("`check {} {}` has no rules; only its up/down changes will be reported", kind.word(), check.name),
        ));
    }
    Some(check)
}

fn check_kind(file: &SourceFile<'_>, block: &ast::CheckBlock, out: &mut Vec<Diagnostic>) -> Option<Kind> {
    match block.kind.value.as_str() {
        "host" => Some(Kind::Host),
        "service" => Some(Kind::Service),
        "process" => Some(Kind::Process),
        other => {
            out.push(
                file.error(
                    block.kind.span,
                    format!("unknown check `{other}`, expected host, service, process or jobs"),
                ),
            );
            None
        }
    }
}

/// The check's name. A service's or process's name reaches its init system (as an argv element, a file name, a
/// unit name), so it is held to the daemon's own [`ServiceName`] rule here: the daemon would refuse it later,
/// without a location, and leave the service unwatched.
fn check_name(file: &SourceFile<'_>, block: &ast::CheckBlock, kind: Kind, out: &mut Vec<Diagnostic>) -> Option<String> {
    match (&block.name, kind) {
        (Some(n), Kind::Host) => {
            out.push(file.error(
                n.span,
                format!("unexpected `{}`, expected `with`, `if` or nothing after `check host`", n.value),
            ));
            Some("host".to_owned())
        }
        (None, Kind::Host) => Some("host".to_owned()),
        (Some(n), _) if !n.value.is_empty() => {
            if let Err(e) = ServiceName::new(&n.value) {
                // The daemon's own words for it, with where and what instead.
                out.push(file.error(n.span, format!("{e}, expected the name the init system knows the service by")));
            }
            Some(n.value.clone())
        }
        _ => {
            let word = kind.word();
            out.push(file.error(block.head, format!("`check {word}` needs a name, expected `check {word} NAME`")));
            None
        }
    }
}

/// Reads the `with` list into `check`, each value checked on its own; what depends on the other parameters or on
/// the rules is judged after.
fn parameters(
    file: &SourceFile<'_>,
    block: &ast::CheckBlock,
    kind: Kind,
    check: &mut Check,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) -> Given {
    let mut given = Given::default();
    for (key, value) in &block.params {
        let v = value.value.as_str();
        given.keys.entry(key.value.clone()).or_insert(key.span);
        if check.params.insert(key.value.clone(), v.to_owned()).is_some() {
            out.push(
                file.warning(
                    key.span,
                    format!("parameter `{}` is given more than once; the last value wins", key.value),
                ),
            );
        }
        if kind == Kind::Host && key.value != "owner" {
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
            "init" | "scope" | "bus" | "cgroup_root" => init_parameter(file, key, value, check, out),
            "pidfile" | "matching" => selector_parameter(file, key, value, kind, &mut given, out),
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
            // What a collector connects to is checked here, so that the daemon has nothing left to refuse.
            "socket" if !v.starts_with('/') => out.push(file.error(
                value.span,
                format!("socket `{v}` is not an absolute path, expected the server's Unix socket, like /run/redis/redis-server.sock"),
            )),
            "endpoint" | "path" if !v.starts_with('/') => out.push(file.error(
                value.span,
                format!("`{}` `{v}` is not an absolute URL path, expected one like /status", key.value),
            )),
            "hostname" if v.is_empty() || v.contains(['/', ' ', '@']) => out.push(file.error(
                value.span,
                format!("invalid hostname `{v}`, expected a host name or an IP address, like localhost or 10.0.0.5"),
            )),
            // Connection parameters of the daemon families: whether anything reads them depends on the rules.
            other if metrics::connection_parameter(other) => {}
            other => {
                out.push(file.warning(key.span, format!("unknown parameter `{other}` is ignored, expected {PARAMS}")))
            }
        }
    }
    given
}

/// `init`, `scope`, `bus`, `cgroup_root`: which init system (and which systemd manager) runs the service.
fn init_parameter(file: &SourceFile<'_>, key: &Text, value: &Text, check: &mut Check, out: &mut Vec<Diagnostic>) {
    let v = value.value.as_str();
    match key.value.as_str() {
        "init" => match v {
            "systemd" => check.init = Some(InitKind::Systemd),
            "upstart" => check.init = Some(InitKind::Upstart),
            "runit" => check.init = Some(InitKind::Runit),
            "initd" | "init.d" | "sysv" => check.init = Some(InitKind::Initd),
            _ => out.push(
                file.error(value.span, format!("unknown init system `{v}`, expected systemd, upstart, runit or initd")),
            ),
        },
        "scope" => match v {
            "system" => check.scope = Some(UnitScope::System),
            "user" => check.scope = Some(UnitScope::User),
            _ => out.push(file.error(value.span, format!("unknown scope `{v}`, expected system or user"))),
        },
        "bus" => match bus_address::problem(v) {
            None => check.bus = Some(v.to_owned()),
            Some(problem) => out.push(file.error(value.span, problem)),
        },
        _ => {
            if v.starts_with('/') {
                let root = v.trim_end_matches('/');
                check.cgroup_root = Some(if root.is_empty() { "/".to_owned() } else { root.to_owned() });
            } else {
                out.push(file.error(value.span, format!("cgroup root `{v}` is not an absolute path, expected where the manager's cgroups are on this host, like /sys/fs/cgroup/machine.slice/NAME")));
            }
        }
    }
}

/// `pidfile`, `matching`: how a `check process` is found (a service may name its pid file for init.d too).
fn selector_parameter(
    file: &SourceFile<'_>,
    key: &Text,
    value: &Text,
    kind: Kind,
    given: &mut Given,
    out: &mut Vec<Diagnostic>,
) {
    let v = value.value.as_str();
    given.selector_written = true;
    if key.value == "pidfile" {
        if v.starts_with('/') {
            given.selector.get_or_insert(ProcessSelector::PidFile(v.to_owned()));
        } else {
            out.push(file.error(
                value.span,
                format!("pid file `{v}` is not an absolute path, expected a path like /run/NAME.pid"),
            ));
        }
    } else if kind != Kind::Process {
        out.push(file.error(key.span, "`matching` only applies to `check process`, expected pidfile, init or scope"));
    } else if let Err(e) = names::process_pattern(v) {
        // The regex crate's message is a multi-line rendering of the pattern; its last line is the reason.
        let reason = e.to_string().lines().last().unwrap_or("invalid").trim().trim_start_matches("error: ").to_owned();
        out.push(file.error(value.span, format!("invalid regular expression: {reason}")));
    } else {
        given.selector.get_or_insert(ProcessSelector::Matching(v.to_owned()));
    }
}

/// The parameters only one kind of check, or one init system, reads: given elsewhere, the daemon would drop them
/// without a word, so `check` says so. Judged by [`Check::named_init`], the backend the daemon picks.
fn init_parameters_apply(file: &SourceFile<'_>, kind: Kind, check: &Check, given: &Given, out: &mut Vec<Diagnostic>) {
    match kind {
        Kind::Host => {}
        Kind::Process => {
            // A `check process` is found by its selector and restarted by its command: no init system is asked.
            if let Some(span) = given.span("init").filter(|_| check.init.is_some()) {
                out.push(file.error(span, "`init` does not apply to `check process`, which is found by its pidfile or command line and restarted by its restart_command, expected `check service` to use an init system"));
            }
            for param in ["scope", "bus", "cgroup_root"] {
                if let Some(span) = given.span(param) {
                    out.push(
                        file.error(span, format!("`{param}` only applies to systemd services, not to `check process`")),
                    );
                }
            }
        }
        Kind::Service => {
            let other = match check.init {
                Some(InitKind::Upstart) => Some("upstart"),
                Some(InitKind::Runit) => Some("runit"),
                Some(InitKind::Initd) => Some("initd"),
                Some(InitKind::Systemd) | None => None,
            };
            if let Some(other) = other {
                for param in ["scope", "bus", "cgroup_root"] {
                    if let Some(span) = given.span(param) {
                        out.push(file.error(
                            span,
                            format!("`{param}` only applies to systemd services, expected init systemd (not {other})"),
                        ));
                    }
                }
            }
            if let Some(span) = given.span("restart_command") {
                out.push(file.error(span, "`restart_command` only applies to `check process`; a service is restarted by its init system, expected no restart_command or `check process`"));
            }
            // init.d finds a service's main process by its pid file; the others know it themselves.
            if let Some(span) = given.span("pidfile")
                && let Some(init) = check.named_init().filter(|i| *i != InitKind::Initd)
            {
                let init = match init {
                    InitKind::Systemd => "systemd",
                    InitKind::Upstart => "upstart",
                    _ => "runit",
                };
                out.push(file.warning(span, format!("parameter `pidfile` is ignored: only init.d services are found by their pid file, and {init} knows the main process itself")));
            }
        }
    }
}

/// The check's rules and `expose` lines.
fn items(
    file: &SourceFile<'_>,
    block: &ast::CheckBlock,
    kind: Kind,
    check: &mut Check,
    cx: &Context,
    out: &mut Vec<Diagnostic>,
) {
    for item in &block.items {
        match item {
            Item::Rule(rule) => {
                if let Some(rule) = check_rule(file, rule, check, cx, out) {
                    check.rules.push(rule);
                }
            }
            Item::Expose(names) => {
                for n in names {
                    if kind == Kind::Host {
                        out.push(file.error(n.span, "`expose` only applies to services, expected a rule"));
                    } else if n.value == "memstats" {
                        // Inspeqtor files carry it, so it loads; but nothing in inspeq reads it.
                        out.push(file.warning(
                            n.span,
                            "`expose memstats` is ignored: inspeq serves no memstats of a service (its metrics are in `inspeqctl show`, `export` and the Prometheus page)",
                        ));
                        check.exposes.push(n.value.clone());
                    } else {
                        out.push(file.error(n.span, format!("unknown expose option `{}`, expected memstats", n.value)));
                    }
                }
            }
            Item::Job(job) => out.push(file.error(job.span, "job lines belong in `check jobs`, expected a rule")),
        }
    }
}

/// A daemon family's connection parameter (`port`, `socket`, ...) is read only when a collected family that
/// takes it has a rule in this check; otherwise the daemon never looks at it, and a warning says so and why.
fn connection_parameters_used(file: &SourceFile<'_>, check: &Check, given: &Given, out: &mut Vec<Diagnostic>) {
    if check.kind == CheckKind::Host {
        return;
    }
    for (key, span) in &given.keys {
        let readers: Vec<&metrics::DaemonFamily> =
            metrics::DAEMONS.iter().filter(|d| d.params.iter().any(|(p, _)| p == key)).collect();
        if readers.is_empty() {
            continue;
        }
        if readers.iter().any(|d| d.collected && reads_family(check, d)) {
            continue;
        }
        let collected: Vec<&str> = readers.iter().filter(|d| d.collected).map(|d| d.family).collect();
        let message = if collected.is_empty() {
            let families: Vec<&str> = readers.iter().map(|d| d.family).collect();
            format!(
                "parameter `{key}` is ignored: only {} metrics would read it, and inspeq does not collect them yet",
                and_list(&families)
            )
        } else {
            format!(
                "parameter `{key}` is ignored: only rules on {} metrics read it, and this check has none",
                and_list(&collected)
            )
        };
        out.push(file.warning(*span, message));
    }
}

/// Whether a rule of `check` reads `family`: a metric rule on one of its metrics, or `if FAMILY is unreachable`.
fn reads_family(check: &Check, family: &metrics::DaemonFamily) -> bool {
    check.rules.iter().any(|r| match &r.condition {
        Condition::Metric(m) => m.metric.family == family.family,
        Condition::Unreachable { daemon, .. } => *daemon == family.daemon,
        _ => false,
    })
}

/// Where each collected family this check's rules read answers: the check's `with` parameters the family takes
/// (others are warned about as ignored), over the catalogue's defaults. A `socket`, where the family takes one, is
/// preferred over `hostname` and `port`. The values were checked by [`parameters`].
fn daemon_sources(check: &Check) -> Vec<DaemonSource> {
    metrics::DAEMONS
        .iter()
        .filter(|family| family.collected && reads_family(check, family))
        .map(|family| {
            let param = |key: &str| -> Option<String> {
                let (_, default) = family.params.iter().find(|(p, _)| *p == key)?;
                check.params.get(key).cloned().or_else(|| default.map(str::to_owned))
            };
            let address = match param("socket") {
                Some(path) => DaemonAddress::Unix(path),
                None => DaemonAddress::Tcp {
                    host: param("hostname").unwrap_or_else(|| "localhost".to_owned()),
                    // An invalid port is an error of its own: this check does not run.
                    port: param("port").and_then(|p| p.parse().ok()).unwrap_or(0),
                },
            };
            DaemonSource {
                daemon: family.daemon,
                address,
                password: param("password").map(Secret::new),
                username: param("username"),
                database: param("database"),
                path: param("endpoint").or_else(|| param("path")),
                watched: watched(check, family),
            }
        })
        .collect()
}

/// The catalogue names of `family`'s metrics that `check`'s rules read.
fn watched(check: &Check, family: &metrics::DaemonFamily) -> std::collections::BTreeSet<&'static str> {
    let rules = check.rules.iter().filter_map(|r| match &r.condition {
        Condition::Metric(m) if m.metric.family == family.family => m.metric.name.as_deref(),
        _ => None,
    });
    rules.filter_map(|name| family.metric(name)).collect()
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn check_rule(
    file: &SourceFile<'_>,
    rule: &ast::RuleText,
    check: &mut Check,
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

fn condition(
    file: &SourceFile<'_>,
    cond: &ast::Condition,
    check: &mut Check,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let is_host = check.kind == CheckKind::Host;
    match cond {
        ast::Condition::Probe { kind, target, params, test } => {
            probes::probe_condition(file, (kind, target, params, test), check, out)
        }
        ast::Condition::Event { name, arg } => event_condition(file, name, arg.as_ref(), is_host, out),
        ast::Condition::EventCount { name, arg, op, amount, within } => {
            counted_event(file, name, arg, *op, amount, within, is_host, out)
        }
        ast::Condition::State { subject, is, state, for_cycles } => {
            state_condition(file, subject, is, state, for_cycles.as_ref(), is_host, out)
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

/// `if FAMILY is unreachable [for N cycles]`: a daemon family's collection failing, judged each cycle.
fn state_condition(
    file: &SourceFile<'_>,
    subject: &Text,
    is: &Text,
    state: &Text,
    for_cycles: Option<&(Text, Option<Text>)>,
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let collected: Vec<&str> = metrics::DAEMONS.iter().filter(|d| d.collected).map(|d| d.family).collect();
    let Some(family) = metrics::daemon_family(&subject.value) else {
        out.push(file.error(
            subject.span,
            format!(
                "unknown daemon `{}`, expected one whose metrics inspeq collects: {}, like `redis is unreachable`",
                subject.value,
                and_list(&collected)
            ),
        ));
        return None;
    };
    if is_host {
        out.push(file.error(
            subject.span,
            format!(
                "`{} is unreachable` is about a service's daemon, expected it in the `check service` that runs it",
                family.family
            ),
        ));
        return None;
    }
    if !family.collected {
        out.push(file.error(
            subject.span,
            format!(
                "`{} is unreachable` could never fire: inspeq does not collect {} metrics yet, expected one of {}",
                family.family,
                family.family,
                and_list(&collected)
            ),
        ));
        return None;
    }
    if is.value != "is" {
        out.push(file.error(
            is.span,
            format!("unexpected `{}`, expected `is`, like `{} is unreachable`", is.value, family.family),
        ));
        return None;
    }
    if state.value != "unreachable" {
        out.push(file.error(state.span, format!("unknown state `{}`, expected `unreachable`", state.value)));
        return None;
    }
    let cycles = cycle_count(file, for_cycles, out)?;
    Some(Condition::Unreachable { daemon: family.daemon, cycles })
}

/// `if WORD [ARG] then`: an event without a comparison (`exited`, `signaled SIGSEGV`, `worker crashed`).
fn event_condition(
    file: &SourceFile<'_>,
    name: &Text,
    arg: Option<&Text>,
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let Some(subject) = metrics::event_subject(&name.value) else {
        return not_an_event(file, name, arg, is_host, out);
    };
    if is_host {
        out.push(file.error(
            name.span,
            format!("`{}` is an event of a process, expected a host metric such as swap, load:5 or disk:/", name.value),
        ));
        return None;
    }
    // Where a missing argument or comparison would have been: just after the word.
    let after = || arg.map_or(Span::new(name.span.end, name.span.end + 1), |a| a.span);
    let no_arg = |out: &mut Vec<Diagnostic>| {
        if let Some(a) = arg {
            out.push(file.error(a.span, format!("unexpected `{}`, expected `then`", a.value)));
        }
    };
    match subject {
        EventSubject::Exited => {
            no_arg(out);
            Some(Condition::Exited)
        }
        EventSubject::Crashed => {
            no_arg(out);
            Some(Condition::Crashed)
        }
        EventSubject::OomKilled => {
            no_arg(out);
            Some(Condition::OomKilled)
        }
        EventSubject::Signaled => match arg {
            None => Some(Condition::Signaled(None)),
            Some(a) => {
                let number = crate::signal::number(&a.value);
                if number.is_none() {
                    out.push(file.error(
                        a.span,
                        format!(
                            "unknown signal `{}`, expected a name such as SIGKILL or SIGSEGV, or a number",
                            a.value
                        ),
                    ));
                }
                number.map(|n| Condition::Signaled(Some(n)))
            }
        },
        EventSubject::Worker => {
            let what = arg.and_then(|a| worker_event(&a.value));
            if what.is_none() {
                out.push(file.error(after(), WORKER_EXPECTED));
            }
            what.map(|what| Condition::Worker { what, more_than: None })
        }
        EventSubject::ExitCode | EventSubject::Forks | EventSubject::Restarts => {
            let example = match subject {
                EventSubject::ExitCode => "exit_code != 0",
                EventSubject::Forks => "forks > 100/sec",
                _ => "restarts > 3 within 5 minutes",
            };
            out.push(file.error(after(), format!("expected a comparison after `{}`, like `{example}`", name.value)));
            None
        }
    }
}

/// `if WORD then` where WORD is no event: a metric missing its comparison, or nothing inspeq knows.
fn not_an_event(
    file: &SourceFile<'_>,
    name: &Text,
    arg: Option<&Text>,
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    let scope = if is_host { Scope::Host } else { Scope::Process };
    let metric = ast::metric_from_word(&name.value, name.span.start, name.span.end);
    if metrics::lookup(&metric.family.value, metric.name.as_ref().map(|n| n.value.as_str()), scope).is_ok() {
        let span = arg.map_or(Span::new(name.span.end, name.span.end + 1), |a| a.span);
        out.push(
            file.error(span, format!("expected a comparison after `{}`, like `{} > 90%`", name.value, name.value)),
        );
        return None;
    }
    let message = if is_host {
        format!("unknown condition `{}`, expected a host metric comparison such as `swap > 20%`", name.value)
    } else {
        format!(
            "unknown condition `{}`, expected a metric comparison or one of exited, crashed, signaled, oom_killed",
            name.value
        )
    };
    out.push(file.error(name.span, message));
    None
}

/// `if worker crashed > N within WINDOW`: the one event that is counted after a word of its own.
#[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename the same fields")]
fn counted_event(
    file: &SourceFile<'_>,
    name: &Text,
    arg: &Text,
    op: (Op, Span),
    amount: &Text,
    within: &[Text],
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<Condition> {
    if metrics::event_subject(&name.value) != Some(EventSubject::Worker) {
        out.push(file.error(
            name.span,
            format!("`{} {}` cannot be counted, expected `worker crashed > 3 within 1 minute`", name.value, arg.value),
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
    let more_than = count_within(file, &word, op, amount, Some(within), out)?;
    Some(Condition::Worker { what, more_than: Some(more_than) })
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

/// A metric rule's metric, as the catalogue resolves it for this check: with the canonical name it is shown by.
/// A metric the daemon does not collect is refused here: the rule would sit in `status` with no value forever.
fn resolve_metric(
    file: &SourceFile<'_>,
    metric: &ast::MetricText,
    is_host: bool,
    out: &mut Vec<Diagnostic>,
) -> Option<(MetricName, metrics::Resolved)> {
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
    match metrics::lookup(family, name, scope) {
        Ok(r) if r.daemon.is_some_and(|d| !d.collected) => {
            out.push(file.error(
                metric.span,
                format!(
                    "`{}` could never fire: inspeq does not collect {family} metrics yet, expected a metric it samples, such as memory:rss, memory:total_rss or cpu:total (or remove the rule)",
                    metrics::display(family, name)
                ),
            ));
            None
        }
        Ok(r) => Some((MetricName::new(family, name), r)),
        Err(e) => {
            out.push(file.error(metric.span, e.to_string()));
            None
        }
    }
}

/// `for N cycles` (or `for N`): at least one; without it, one cycle is enough.
pub(super) fn cycle_count(
    file: &SourceFile<'_>,
    for_cycles: Option<&(Text, Option<Text>)>,
    out: &mut Vec<Diagnostic>,
) -> Option<u32> {
    let Some((n, word)) = for_cycles else { return Some(1) };
    let count = match n.value.parse::<u32>() {
        Ok(c) if c >= 1 => Some(c),
        _ => {
            out.push(
                file.error(n.span, format!("invalid cycle count `{}`, expected a whole number of at least 1", n.value)),
            );
            None
        }
    };
    if let Some(word) = word.as_ref().filter(|w| !matches!(w.value.as_str(), "cycle" | "cycles")) {
        out.push(file.error(word.span, format!("unexpected `{}`, expected `cycles`", word.value)));
        return None;
    }
    count
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
    let resolved = resolve_metric(file, metric, is_host, out);
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
    let cycles = cycle_count(file, for_cycles, out);
    let ((shown, resolved), threshold, cycles) = (resolved?, threshold?, cycles?);
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
