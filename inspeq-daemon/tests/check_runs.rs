//! `inspeqctl check` ⇔ the daemon: every configuration `check` accepts runs in the daemon as written.
//!
//! The configurations are every `valid/` fixture under `tests/data/config` (see `config_fixtures.rs`) and the ones
//! the project ships (`examples/`, `dist/etc/inspeq`). Each runs in the real daemon, in process (`daemon::run`, as
//! `daemon_inprocess.rs` does), with its log captured, and must come out with:
//!
//! - no ERROR line, and no WARN line but the checker's own warnings (`config: ...`, exactly those `check`
//!   printed), the kernel tier's (forced to /proc polling here) and the outcomes of `exec` actions that fired
//!   (whether `/usr/local/bin/notify` exists is this machine's business, not the configuration's);
//! - no line saying something was ignored, not watched, invalid or impossible, at any level;
//! - every service and process watched, every rule of every check in `status`, every job known;
//! - every metric rule of a running target with a value within a few cycles: a rule on a metric the daemon does not
//!   sample would sit there without one forever, which is how a `redis:used_memory` rule used to pass `check`.
//!   A rule on a daemon family (`redis:*`) may instead be unknown by design: whether a server answers at the
//!   fixture's address is this machine's business, so such a rule passes without a value only when `status` shows
//!   its family's collection tried and failed, with the error (a failure is a fact, never a zero, and never
//!   silence). The collections' own log lines (`collect: ...`) are about those servers too.
//!
//! Why the daemon itself and not a pure function giving its per-service plan: the daemon's refusals are spread
//! over the places that use the config (`Service::new`, the backend choice, the process locator, the samplers), and
//! a plan function would have to be kept in step with them, which is the drift this test is about. With paused
//! time a cycle costs no wall time, so a daemon per fixture takes well under a second.
//!
//! What is put in place of the machine: init systems (a fake per kind, knowing every service as this test process,
//! so services are up and sampled; `check process` keeps its real pidfile or command-line locator, and is down),
//! the alert channels (a recorder per configured route, so a rule that fires sends nothing out; the routes are
//! still resolved by name), the state directory and control socket (temporary), and `metrics_listen` (port 0, so
//! the test does not depend on a free port; the address is still bound). Channel construction from `send alerts`
//! is not exercised here: it would deliver the alerts that fire to the fixtures' addresses.
//! Host `disk:PATH` rules for a path this machine does not have cannot get a value, and are left out of the
//! value check only.

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use inspeq_daemon::{
    alert::{
        self, Alert, Batching, Channel, SendFuture,
        route::{Route, RouteName},
    },
    config::{
        Config, load_dir,
        model::{CheckKind, Condition, InitKind as ConfigInit},
    },
    control::{
        client,
        protocol::{Request, Response, Status},
    },
    daemon,
    init::{InitFuture, InitKind, InitSystem, ServiceName, ServiceStatus},
    kernel,
};
use tokio::sync::oneshot;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Time is paused: a client timeout in the daemon's own clock would fire whenever the runtime idles.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Cycles a metric rule may take to get its value: CPU and counters need two samples, and the first cycle may
/// run before the lookups came back.
const CYCLES: u32 = 4;

/// An init system of one kind that knows every service it is told of, as this process.
struct FakeInit {
    kind: InitKind,
    services: BTreeSet<String>,
}

impl InitSystem for FakeInit {
    fn kind(&self) -> InitKind {
        self.kind
    }

    fn lookup<'a>(&'a self, service: &'a ServiceName) -> InitFuture<'a, ServiceStatus> {
        let known = self.services.contains(service.as_str());
        Box::pin(async move {
            Ok(if known {
                ServiceStatus::up(std::process::id(), "fake: running")
            } else {
                ServiceStatus::not_found("fake: unknown")
            })
        })
    }

    fn restart<'a>(&'a self, _: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn reload<'a>(&'a self, _: &'a ServiceName) -> InitFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// An alert channel that keeps nothing: what fires is not this test's subject.
struct Recorder;

impl Channel for Recorder {
    fn kind(&self) -> &'static str {
        "recorder"
    }

    fn batching(&self) -> Batching {
        Batching::Native
    }

    fn send<'a>(&'a self, _: &'a [Alert]) -> SendFuture<'a> {
        Box::pin(async { Ok(()) })
    }
}

/// The captured log, shared by the subscriber's writers.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

/// Every configuration `check` accepts, as `(name, source)`: a directory, or a single `.inq` or `.conf` file.
fn accepted() -> Vec<(String, PathBuf)> {
    let valid = Path::new(MANIFEST).join("../tests/data/config/valid");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&valid).unwrap().map(|e| e.unwrap().path()).collect();
    entries.retain(|p| p.extension().is_none_or(|e| e != "expected"));
    entries.sort();
    let mut out: Vec<(String, PathBuf)> =
        entries.into_iter().map(|p| (format!("valid/{}", p.file_name().unwrap().to_string_lossy()), p)).collect();
    out.push(("examples".into(), Path::new(MANIFEST).join("../examples")));
    out.push(("dist/etc/inspeq".into(), Path::new(MANIFEST).join("../dist/etc/inspeq")));
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The configuration directory the daemon reads: the fixture as `/etc/inspeq` would hold it, with
/// `metrics_listen` on port 0.
fn stage(source: &Path, conf: &Path) {
    let _ = std::fs::remove_dir_all(conf);
    if source.is_dir() {
        copy_tree(source, conf);
    } else {
        std::fs::create_dir_all(conf).unwrap();
        let name = if source.extension().is_some_and(|e| e == "conf") {
            "inspeq.conf".to_owned()
        } else {
            source.file_name().unwrap().to_string_lossy().into_owned()
        };
        std::fs::copy(source, conf.join(name)).unwrap();
    }
    for global in ["inspeq.conf", "inspeqtor.conf"] {
        let path = conf.join(global);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let text: String = text
            .lines()
            .map(
                |l| if l.trim_start().starts_with("set metrics_listen") { "set metrics_listen 127.0.0.1:0" } else { l },
            )
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&path, text).unwrap();
    }
}

/// One fake per init system, each knowing every service: a check that names one gets it, the others get the
/// first (systemd, as detection would try it first).
fn init_systems(config: &Config) -> Vec<Arc<dyn InitSystem>> {
    let services: BTreeSet<String> =
        config.services.iter().filter(|c| c.kind == CheckKind::Service).map(|c| c.name.clone()).collect();
    [InitKind::Systemd, InitKind::Upstart, InitKind::Runit, InitKind::InitD]
        .into_iter()
        .map(|kind| Arc::new(FakeInit { kind, services: services.clone() }) as Arc<dyn InitSystem>)
        .collect()
}

fn routes(config: &Config) -> alert::Routes {
    let names = config.routes.keys().map(|name| match name {
        None => RouteName::Default,
        Some(name) => RouteName::Named(name.clone()),
    });
    // The fallback too: without routes the daemon's alerts go to the log channel, which writes to standard output.
    let names = names.chain([RouteName::Fallback]);
    alert::Routes::from_routes(names.map(|name| Route { name, channel: Arc::new(Recorder) })).unwrap()
}

async fn status(socket: &Path) -> Option<Status> {
    match client::send(socket, Request::Status, CLIENT_TIMEOUT).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// The metric rules of running targets still without a value: `(target, rule)`.
fn without_value(config: &Config, status: &Status) -> Vec<(String, String)> {
    let mut missing = Vec::new();
    let mut targets: Vec<(&str, &[inspeq_daemon::control::protocol::RuleStatus])> =
        status.services.iter().filter(|s| s.state == "up").map(|s| (s.name.as_str(), s.rules.as_slice())).collect();
    if config.host.is_some() {
        targets.push(("host", &status.host));
    }
    for (target, rules) in targets {
        let check =
            if target == "host" { config.host.as_ref() } else { config.services.iter().find(|c| c.name == target) };
        let Some(check) = check else { continue };
        let failed: BTreeSet<&str> = status
            .services
            .iter()
            .filter(|s| s.name == target)
            .flat_map(|s| &s.collections)
            .filter(|c| c.error.is_some() && c.last_attempt_secs_ago.is_some())
            .map(|c| c.family.as_str())
            .collect();
        let attempted: BTreeSet<&str> = status
            .services
            .iter()
            .filter(|s| s.name == target)
            .flat_map(|s| &s.collections)
            .filter(|c| c.last_attempt_secs_ago.is_some())
            .map(|c| c.family.as_str())
            .collect();
        for source in &check.daemons {
            if !attempted.contains(source.daemon.name()) {
                missing.push((target.to_owned(), format!("(the {} collection)", source.daemon)));
            }
        }
        for rule in &check.rules {
            let Condition::Metric(m) = &rule.condition else { continue };
            if failed.contains(m.metric.family.as_str()) {
                continue;
            }
            // The machine's mounts, not the configuration, decide whether `disk:/backups` can be read here.
            if m.metric.family == "disk" && m.metric.name.as_deref().is_none_or(|p| !Path::new(p).exists()) {
                continue;
            }
            if !rules.iter().any(|r| r.rule == rule.text && r.value.is_some()) {
                missing.push((target.to_owned(), rule.text.clone()));
            }
        }
    }
    missing
}

/// What is wrong with the daemon's run of `config`, given what `check` said (`warnings`) and what it logged.
fn problems(config: &Config, warnings: &BTreeSet<String>, status: &Status, log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut logged = BTreeSet::new();
    for line in log.lines() {
        let line = line.trim_start();
        let (level, message) = line.split_once(' ').unwrap_or((line, ""));
        let message = message.trim_start();
        if let Some(diagnostic) = message.strip_prefix("config: ") {
            if level == "WARN" && warnings.contains(diagnostic) {
                logged.insert(diagnostic.to_owned());
                continue;
            }
            problems.push(format!("a config line `check` did not print: {line}"));
            continue;
        }
        let lower = message.to_lowercase();
        let complaint =
            ["ignored", "not watched", "invalid", "cannot", "not a valid", "unknown"].iter().any(|w| lower.contains(w));
        // Not about the configuration: the kernel tier this test forces, and what an `exec` that fired found.
        let elsewhere = ["kernel: ", "exec: ", "collect: ", "probe: "].iter().any(|p| message.starts_with(p));
        if level == "ERROR" || (level == "WARN" || complaint) && !elsewhere {
            problems.push(format!("the daemon said: {line}"));
        }
    }
    for missing in warnings.difference(&logged) {
        problems.push(format!("`check` warned `{missing}`, the daemon did not"));
    }
    for check in &config.services {
        let Some(service) = status.services.iter().find(|s| s.name == check.name) else {
            problems.push(format!("`{}` is not watched", check.name));
            continue;
        };
        let wanted = match (&check.kind, check.named_init()) {
            (CheckKind::Process(_), _) => "process",
            (_, Some(ConfigInit::Upstart)) => "upstart",
            (_, Some(ConfigInit::Runit)) => "runit",
            (_, Some(ConfigInit::Initd)) => "init.d",
            _ => "systemd",
        };
        if service.init != wanted {
            problems.push(format!("`{}` is run by `{}`, expected `{wanted}`", check.name, service.init));
        }
        if check.kind == CheckKind::Service && service.state != "up" {
            problems.push(format!("`{}` is {}, expected up", check.name, service.state));
        }
        for rule in &check.rules {
            if !service.rules.iter().any(|r| r.rule == rule.text) {
                problems.push(format!("`{}`: rule `{}` is not in force", check.name, rule.text));
            }
        }
        // Every family the rules read is collected (tried, at least), and says how it went.
        for source in &check.daemons {
            let family = source.daemon.name();
            match service.collections.iter().find(|c| c.family == family) {
                None => problems.push(format!("`{}`: {family} is not collected", check.name)),
                Some(c) if c.last_attempt_secs_ago.is_none() => {
                    problems.push(format!("`{}`: {family} was never collected", check.name))
                }
                Some(_) => {}
            }
        }
        // Every probe the rules ask runs (whether anything answers at a fixture's address is this machine's
        // business), and says how it went.
        probes_ran(&check.name, check, &service.probes, &mut problems);
    }
    if let Some(host) = &config.host {
        probes_ran("host", host, &status.host_probes, &mut problems);
    }
    for rule in config.host.iter().flat_map(|h| &h.rules) {
        if !status.host.iter().any(|r| r.rule == rule.text) {
            problems.push(format!("host: rule `{}` is not in force", rule.text));
        }
    }
    for job in &config.jobs {
        if !status.jobs.iter().any(|j| j.name == job.name) {
            problems.push(format!("job `{}` is not known", job.name));
        }
    }
    for (target, rule) in without_value(config, status) {
        problems
            .push(format!("`{target}`: rule `{rule}` had no value after {CYCLES} cycles: its metric is not sampled"));
    }
    problems
}

/// Whether a probe of a watched check has not run yet.
fn probes_pending(config: &Config, status: &Status) -> bool {
    let mut problems = Vec::new();
    for check in &config.services {
        if let Some(service) = status.services.iter().find(|s| s.name == check.name) {
            probes_ran(&check.name, check, &service.probes, &mut problems);
        }
    }
    if let Some(host) = &config.host {
        probes_ran("host", host, &status.host_probes, &mut problems);
    }
    !problems.is_empty()
}

fn probes_ran(
    name: &str,
    check: &inspeq_daemon::config::model::Check,
    shown: &[inspeq_daemon::control::protocol::ProbeStatus],
    problems: &mut Vec<String>,
) {
    for probe in &check.probes {
        let what = probe.target.to_string();
        match shown.iter().find(|p| p.probe == what) {
            None => problems.push(format!("`{name}`: {what} is not probed")),
            Some(p) if p.last_attempt_secs_ago.is_none() => problems.push(format!("`{name}`: {what} never ran")),
            Some(_) => {}
        }
    }
}

/// Runs the daemon on `conf` until every metric rule has a value or [`CYCLES`] cycles passed; the last status.
async fn run(config: &Config, conf: &Path, scratch: &Path) -> anyhow::Result<Status> {
    let socket = scratch.join("sock");
    let options = daemon::Options {
        config_dir: conf.to_owned(),
        socket: Some(socket.clone()),
        state_dir: Some(scratch.join("state")),
        // /proc polling: the same on every machine, root or not, with paused time.
        kernel: kernel::Options { force_fallback: true, no_proc_connector: true, no_pidfd: true, ..Default::default() },
        init_systems: Some(init_systems(config)),
        alert_routes: Some(routes(config)),
        ..daemon::Options::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(options, async move {
        let _ = stopped.await;
    }));
    let mut last = None;
    // Bounded in real time: starting reads and writes the disk on threads the paused clock does not wait for.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if task.is_finished() || socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        std::thread::sleep(Duration::from_millis(1));
    }
    if socket.exists() {
        let cycle = config.settings.cycle_time;
        for _ in 0..=CYCLES {
            last = status(&socket).await;
            if last.as_ref().is_some_and(|s| without_value(config, s).is_empty() && !probes_pending(config, s)) {
                break;
            }
            tokio::time::sleep(cycle).await;
        }
    }
    let _ = stop.send(());
    task.await??;
    last.ok_or_else(|| anyhow::anyhow!("the daemon gave no status"))
}

#[tokio::test(start_paused = true)]
async fn every_configuration_check_accepts_runs_as_written() {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .finish();
    // Global, not per thread: the daemon's own threads (the outbox's writer, the log channel) log too.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let scratch_root = tempfile::Builder::new().prefix("inspeq-check-runs-").tempdir().unwrap();
    let root = scratch_root.path();
    let mut failures = Vec::new();
    let fixtures = accepted();
    assert!(fixtures.len() > 5, "expected the valid fixtures, found {fixtures:?}");
    for (n, (name, source)) in fixtures.into_iter().enumerate() {
        // A directory per run: a stopped daemon's outbox thread may still be striking delivered alerts in its own.
        let scratch = root.join(n.to_string());
        let conf = scratch.join("conf");
        stage(&source, &conf);
        let (config, diagnostics) = load_dir(&conf);
        assert!(diagnostics.iter().all(|d| !d.is_error()), "{name}: `check` refuses it: {diagnostics:#?}");
        let warnings: BTreeSet<String> = diagnostics.iter().map(|d| d.short()).collect();
        log.take();
        let result = run(&config, &conf, &scratch).await;
        let logged = log.take();
        match result {
            Ok(status) => {
                let found = problems(&config, &warnings, &status, &logged);
                if !found.is_empty() {
                    failures.push(format!("{name}:\n  {}\n--- log\n{logged}", found.join("\n  ")));
                }
            }
            Err(err) => failures.push(format!("{name}: the daemon did not run: {err:#}\n--- log\n{logged}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
