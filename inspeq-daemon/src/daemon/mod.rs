//! `inspeqd` itself: one event loop applying the rules to what the kernel and the
//! init systems report, acting through one executor, answering `inspeqctl`.
//!
//! - `event.rs`: the closed [`event::Event`] enum every state change arrives as.
//! - `services.rs`: the watched services and the init-system backends.
//! - `executor.rs`: restarts, reloads, lookups and `exec` in their own tasks.
//! - `translate.rs`: config routes → alert routes, engine events → alerts.
//! - `status.rs`: the daemon's state as the control protocol's `Status`.
//! - `history.rs`: recent metric values for `show` and `export`.
//! - `notify.rs`: systemd's readiness and watchdog protocol.
//!
//! The loop owns all state and never awaits an init system or a channel: those
//! calls run in tasks and come back as events. The kernel monitor is polled in
//! the same `select!` (its batch buffer survives a cancelled poll).

mod event;
mod executor;
mod history;
pub mod notify;
mod services;
mod state_lock;
mod status;
mod translate;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, bail};
use tokio::{sync::mpsc, time::Instant};

use self::{
    event::Event,
    history::History,
    notify::Notifier,
    services::{Backends, Before, PendingExit, Service, Services},
};
use crate::{
    alert::{self, Outbox, OutboxConfig, Response, Routes},
    config::{self, Config, model::Condition},
    control::{
        protocol::{Request, Response as Reply, Show},
        server::{self, Control},
    },
    engine::{self, Action, EngineState, ExitCause, Input, Sample, Target, Timestamp},
    export::{
        prometheus,
        statsd::{self, Statsd, StatsdKind},
    },
    init::{Intent, ServiceState, ServiceStatus},
    kernel::{self, Monitor, Observation, RssDirection, RssLimits, WatchSettings},
    metrics,
};

/// How `inspeqd` runs.
#[derive(Clone)]
pub struct Options {
    /// `/etc/inspeq` (a directory laid out like Inspeqtor's `/etc/inspeqtor` works).
    pub config_dir: PathBuf,
    /// The control socket; default `set socket` in inspeq.conf, else `/run/inspeq.sock`.
    pub socket: Option<PathBuf>,
    /// Durable state (the alert outbox); default `set state_dir`, else `/var/lib/inspeq`.
    pub state_dir: Option<PathBuf>,
    /// The group that may use the control socket (mode 0660).
    pub socket_group: Option<String>,
    /// How many control connections are served at once, and how long each may idle.
    pub control: server::Limits,
    pub kernel: kernel::Options,
    /// Where init systems are detected (`/`; tests point it at a fixture tree).
    pub init_root: PathBuf,
    /// Use these init systems, in this order, instead of detecting them (the
    /// in-process tests' fakes).
    pub init_systems: Option<Vec<Arc<dyn crate::init::InitSystem>>>,
    /// Use these alert routes instead of building them from `send alerts` (the
    /// in-process tests' recording channel).
    pub alert_routes: Option<Routes>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            config_dir: "/etc/inspeq".into(),
            socket: None,
            state_dir: None,
            socket_group: None,
            control: server::Limits::default(),
            kernel: kernel::Options::default(),
            init_root: "/".into(),
            init_systems: None,
            alert_routes: None,
        }
    }
}

/// Loads and checks `dir`; warnings are logged, errors fail with every
/// diagnostic rendered compiler-style.
pub fn load_config(dir: &Path) -> anyhow::Result<Config> {
    let (config, diagnostics) = config::load_dir(dir);
    if diagnostics.iter().any(config::Diagnostic::is_error) {
        bail!("configuration errors in {}:\n{}", dir.display(), config::render(&diagnostics));
    }
    for d in &diagnostics {
        tracing::warn!("config: {}", d.short());
    }
    Ok(config)
}

struct Daemon {
    options: Options,
    config: Config,
    engine: EngineState,
    origin: Instant,
    started: Instant,
    monitor: Monitor,
    services: Services,
    watches: HashMap<kernel::WatchId, String>,
    backends: Backends,
    outbox: Outbox,
    hostname: String,
    events: mpsc::Sender<Event>,
    history: History,
    statsd: Option<Statsd>,
    notifier: Notifier,
    observations: u64,
    raised: u64,
    socket: PathBuf,
    /// The Prometheus page, when `set metrics_listen` is configured.
    metrics_page: Option<tokio::sync::watch::Sender<String>>,
    /// A reload task is running.
    reloading: bool,
    /// `inspeqctl reload`s waiting for it.
    reload_waiters: Vec<tokio::sync::oneshot::Sender<Reply>>,
}

/// What a reload task read and built, for [`Daemon::finish_reload`].
pub(crate) struct Reloaded {
    config: Config,
    backends: Backends,
    /// New alert routes, when the routes changed.
    routes: Option<Routes>,
}

/// The reload's waiting half, off the loop: reads and checks the files in a
/// blocking task, connects the init systems the new checks need, and builds
/// the alert routes if they changed.
async fn reload_task(
    options: Options,
    running_routes: BTreeMap<Option<String>, config::model::Route>,
    hostname: String,
) -> anyhow::Result<Reloaded> {
    let dir = options.config_dir.clone();
    let config =
        tokio::task::spawn_blocking(move || load_config(&dir)).await.context("reading the configuration")??;
    let routes = if config.routes != running_routes && options.alert_routes.is_none() {
        Some(
            Routes::build(&translate::route_configs(&config), &alert::http_client(), &hostname)
                .map_err(|e| anyhow::anyhow!("alert routes: {e}"))?,
        )
    } else {
        None
    };
    let backends = Backends::for_options(&options, &config).await;
    Ok(Reloaded { config, backends, routes })
}

/// Runs the daemon until `shutdown` completes or SIGTERM/SIGINT arrives.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = load_config(&options.config_dir)?;
    let socket = options
        .socket
        .clone()
        .or_else(|| config.settings.socket.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| "/run/inspeq.sock".into());
    let state_dir = options
        .state_dir
        .clone()
        .or_else(|| config.settings.state_dir.as_ref().map(PathBuf::from))
        .unwrap_or_else(|| "/var/lib/inspeq".into());
    let hostname = alert::hostname();
    let routes = match &options.alert_routes {
        Some(routes) => routes.clone(),
        None => Routes::build(&translate::route_configs(&config), &alert::http_client(), &hostname)
            .map_err(|e| anyhow::anyhow!("alert routes: {e}"))?,
    };
    // Held until `run` returns: one daemon per outbox, or pending alerts go out twice.
    let _state_lock = state_lock::StateLock::acquire(&state_dir)?;
    let outbox =
        Outbox::start(OutboxConfig::new(state_dir.join("outbox")), routes).context("starting the alert outbox")?;
    let kernel_options = kernel::Options { cycle: config.settings.cycle_time, ..options.kernel.clone() };
    let monitor = Monitor::start(&kernel_options);
    let backends = Backends::for_options(&options, &config).await;
    let listener = server::bind(&socket, options.socket_group.as_deref()).await?;
    let (control_tx, mut control_rx) = mpsc::channel(16);
    tokio::spawn(server::serve(listener, control_tx, options.control));
    let (events, mut events_rx) = mpsc::channel(256);
    let statsd = config.settings.statsd_location.as_deref().and_then(|loc| match Statsd::connect(loc) {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!("statsd: cannot use {loc}: {err}");
            None
        }
    });
    let metrics_page = match &config.settings.metrics_listen {
        Some(address) => {
            let listener =
                prometheus::bind(address).await.with_context(|| format!("binding metrics_listen {address}"))?;
            let (tx, rx) = tokio::sync::watch::channel(String::new());
            tokio::spawn(prometheus::serve(listener, rx));
            tracing::info!("serving Prometheus metrics on http://{address}/metrics");
            Some(tx)
        }
        None => None,
    };
    let origin = Instant::now();
    let mut daemon = Daemon {
        engine: EngineState::new(&config, Timestamp::ZERO),
        config,
        options,
        origin,
        started: origin,
        monitor,
        services: BTreeMap::new(),
        watches: HashMap::new(),
        backends,
        outbox,
        hostname,
        events,
        history: History::default(),
        statsd,
        notifier: Notifier::from_env(),
        observations: 0,
        raised: 0,
        socket: socket.clone(),
        metrics_page,
        reloading: false,
        reload_waiters: Vec::new(),
    };
    daemon.add_services();
    tracing::info!(
        "inspeqd watching {} service(s) from {}, cycle {:?}, kernel path: {:?}",
        daemon.services.len(),
        daemon.options.config_dir.display(),
        daemon.config.settings.cycle_time,
        daemon.monitor.mode()
    );
    daemon.notifier.notify("READY=1");

    let mut cycle = tokio::time::interval(daemon.config.settings.cycle_time);
    cycle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watchdog = Notifier::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::pin!(shutdown);
    let mut batch = Vec::new();
    loop {
        let event = tokio::select! {
            result = daemon.monitor.next_batch(&mut batch) => {
                if let Err(err) = result {
                    tracing::error!("kernel: reading observations failed: {err}");
                }
                None
            }
            Some(event) = events_rx.recv() => Some(event),
            Some(control) = control_rx.recv() => Some(Event::Control(control)),
            _ = cycle.tick() => Some(Event::Cycle),
            _ = hup.recv() => Some(Event::Reload),
            _ = term.recv() => Some(Event::Shutdown),
            _ = int.recv() => Some(Event::Shutdown),
            () = &mut shutdown => Some(Event::Shutdown),
            _ = watchdog_tick.tick(), if watchdog.is_some() => Some(Event::Watchdog),
        };
        // Also after a poll of the kernel side that another branch cancelled:
        // the records it drained are in `batch`.
        if !batch.is_empty() {
            daemon.event(Event::Kernel(std::mem::take(&mut batch)));
        }
        match event {
            Some(Event::Shutdown) => break,
            Some(event) => daemon.event(event),
            None => {}
        }
    }
    daemon.notifier.notify("STOPPING=1");
    tracing::info!("inspeqd stopping");
    daemon.outbox.sync().await;
    let _ = std::fs::remove_file(&daemon.socket);
    Ok(())
}

impl Daemon {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.origin.elapsed().as_millis() as u64)
    }

    /// Registers the config's services that are not registered yet and looks them up.
    fn add_services(&mut self) {
        for check in &self.config.services {
            if self.services.contains_key(&check.name) {
                continue;
            }
            match Service::new(check.clone()) {
                Some(service) => {
                    self.services.insert(check.name.clone(), service);
                }
                None => tracing::error!("service `{}`: not a valid service name; not watched", check.name),
            }
        }
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.lookup(&name);
        }
    }

    /// Starts a lookup of `name` unless one is running.
    fn lookup(&mut self, name: &str) {
        let Some(service) = self.services.get_mut(name) else { return };
        if service.looking_up {
            return;
        }
        let candidates = match &service.backend {
            Some(backend) => vec![backend.clone()],
            None => self.backends.candidates(&service.check),
        };
        if candidates.is_empty() {
            if !service.reported_missing {
                tracing::warn!("service `{name}`: no init system to look it up with");
                service.reported_missing = true;
            }
            return;
        }
        service.looking_up = true;
        executor::resolve(&self.events, candidates, service.name.clone());
    }

    /// The kernel watch settings a service's rules need.
    fn watch_settings(check: &config::model::Check) -> WatchSettings {
        let mut settings = WatchSettings { forks: false, rss: None, total_rss: None };
        for rule in &check.rules {
            match &rule.condition {
                Condition::Forks { .. } => settings.forks = true,
                Condition::Metric(m)
                    if m.metric.family == "memory" && matches!(m.op, config::ast::Op::Gt | config::ast::Op::Ge) =>
                {
                    // The kernel reports reaching its threshold (>=), in whole pages: for
                    // `> 64m` a crossing exactly at 64 MiB (one page at a time, no huge
                    // page overshooting it) would not satisfy the rule, and no second
                    // crossing would come. So `>` asks for one byte more.
                    let value = m.threshold.value as u64;
                    let bytes = if matches!(m.op, config::ast::Op::Gt) { value.saturating_add(1) } else { value };
                    match m.metric.name.as_deref() {
                        Some("rss") => {
                            let lowest = settings.rss.map_or(bytes, |r| r.threshold.min(bytes));
                            settings.rss = Some(RssLimits::threshold(lowest));
                        }
                        // The kernel keeps the service's total and reports its crossing.
                        Some("total_rss") => {
                            settings.total_rss = Some(settings.total_rss.map_or(bytes, |t| t.min(bytes)))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        settings
    }

    /// Holds a main-process exit back and asks the init system about it: an
    /// operator's stop and a crash look alike to the kernel, and only the init
    /// system knows whether it restarts the service by itself. Without a backend
    /// the exit goes to the engine as it is.
    fn exit_seen(&mut self, name: &str, exit: engine::ProcessExit, before: Before) {
        let now = self.now();
        let Some(service) = self.services.get_mut(name) else { return };
        service.started = None;
        service.last_exited = Some(exit.pid);
        if service.restarting {
            tracing::info!("service `{name}`: main process {} ended by the restart inspeq asked for", exit.pid);
            let exit = engine::ProcessExit { cause: ExitCause::Restart, ..exit };
            self.step(Input::ProcessExited(exit), now);
            self.lookup(name);
            return;
        }
        match service.backend.clone() {
            Some(backend) => {
                // The init system's record is about its main pid: the wrapper, when
                // the exit seen is the server's behind a shell.
                let pid = before.main_pid.unwrap_or(exit.pid);
                service.pending_exit = Some(PendingExit { exit, before });
                executor::main_exit(&self.events, backend, service.name.clone(), pid, before.init_restarts);
            }
            None => {
                self.step(Input::ProcessExited(exit), now);
                self.lookup(name);
            }
        }
    }

    /// Hands the engine an exit that waited for the init system's word: who
    /// asked for it, whether the init system restarts it by itself, and its
    /// status when the kernel side could not learn it.
    fn settle_exit(&mut self, name: &str, record: Option<crate::init::MainExit>) {
        let now = self.now();
        let Some(service) = self.services.get_mut(name) else { return };
        let Some(PendingExit { mut exit, before }) = service.pending_exit.take() else { return };
        let intent_before = before.intent;
        let init = service.backend.as_ref().map_or("the init system", |b| b.kind().name());
        let record = record.filter(|r| r.pid == before.main_pid.unwrap_or(exit.pid));
        if exit.status_unknown() {
            match record.and_then(|r| r.status.map(|status| (status, r.clean))) {
                Some((status, clean)) => {
                    tracing::info!(
                        "service `{name}`: {init} says main process {} ended {status:?}{}",
                        exit.pid,
                        if clean { " (a success)" } else { "" }
                    );
                    exit.exit_code = status.exit_code();
                    exit.signal = status.signal();
                    exit.core_dumped = status.core_dumped();
                    exit.init_says_clean = clean;
                }
                None => tracing::info!("service `{name}`: how main process {} ended is unknown", exit.pid),
            }
        }
        let intent = record.map_or(intent_before, |r| if intent_before.stops() { intent_before } else { r.intent });
        exit.cause = if intent.stops() {
            tracing::info!(
                "service `{name}`: main process {} stopped by {init} ({}); not a crash, not restarted",
                exit.pid,
                if intent == Intent::Restart { "a restart was asked of it" } else { "a stop was asked of it" }
            );
            ExitCause::InitStopped
        } else {
            let init_restarts = intent == Intent::AutoRestart;
            if init_restarts {
                tracing::info!("service `{name}`: {init} restarts it by itself");
            }
            service.awaiting_init_restart = init_restarts;
            ExitCause::Unexpected { init_restarts }
        };
        self.step(Input::ProcessExited(exit), now);
        let held = self.services.get_mut(name).map(|s| std::mem::take(&mut s.held)).unwrap_or_default();
        if held.is_empty() {
            self.lookup(name);
        }
        for status in held {
            self.apply_status(name, status);
        }
    }

    /// Takes a lookup's answer: re-keys the kernel watch and tells the engine
    /// about starts and stops. A restart is a new main pid the init system
    /// confirms, alive, and not the one that just exited.
    fn apply_status(&mut self, name: &str, status: ServiceStatus) {
        let now = self.now();
        let Some(service) = self.services.get_mut(name) else { return };
        if service.pending_exit.is_some() {
            service.held.push(status);
            return;
        }
        let target = status.watch_target();
        let old_target = service.status.as_ref().and_then(ServiceStatus::watch_target);
        if target != old_target || service.watch.is_none() {
            if let Some((id, _)) = service.watch.take() {
                self.monitor.unwatch(id);
                self.watches.remove(&id);
            }
            if let Some(target) = &target {
                match self.monitor.watch(target, Self::watch_settings(&service.check)) {
                    Ok(id) => {
                        let how = if matches!(target, kernel::WatchTarget::Tree(_)) { "tree" } else { "cgroup" };
                        service.watch = Some((id, how));
                        self.watches.insert(id, name.to_owned());
                        // The cgroup's path comes with the status: no search of the cgroup tree by id.
                        let members = match (&status.cgroup, target) {
                            (Some(cgroup), _) => kernel::cgroup_members(&cgroup.path),
                            (None, kernel::WatchTarget::Tree(pid)) => kernel::tree_members(*pid),
                            (None, _) => Vec::new(),
                        };
                        service.members = members.into_iter().collect();
                    }
                    Err(err) => tracing::warn!("service `{name}`: cannot watch {target:?}: {err}"),
                }
            }
        }
        if let Some(wrapper) = &status.wrapper {
            tracing::info!(
                "service `{name}`: main pid is a wrapper ({wrapper:?}); its whole tree or cgroup is watched"
            );
        }
        let was_up = service.started;
        let mut input = None;
        match (status.state, status.main_pid) {
            (ServiceState::Up, Some(pid)) if was_up == Some(pid) => {}
            (ServiceState::Up, Some(pid)) => {
                if service.last_exited == Some(pid) || !crate::init::process_alive(pid) {
                    // An answer from before the manager reaped it: the next lookup
                    // (or announcement) says what replaced it.
                    tracing::debug!("service `{name}`: stale answer names exited pid {pid}");
                    return;
                }
                if let Some(old) = was_up {
                    // A new main process without an exit of the old one seen: the
                    // old one ended unobserved; its end is settled first.
                    tracing::info!("service `{name}`: main process {old} was replaced by {pid}");
                }
                service.started = Some(pid);
                service.awaiting_init_restart = false;
                tracing::info!("service `{name}`: up, pid {pid} ({})", status.detail);
                input = Some(Input::ProcessStarted { service: name.to_owned(), pid });
            }
            (ServiceState::Down | ServiceState::NotFound, _)
                if was_up.is_some_and(|pid| !crate::init::process_alive(pid) && service.last_exited != Some(pid)) =>
            {
                // The manager saw the main process end before the kernel side
                // reported it (the /proc tier's next poll, or a D-Bus message that
                // won the race): an exit, settled with the manager's word.
                let pid = was_up.unwrap_or_default();
                tracing::info!("service `{name}`: down ({}); main process {pid} is gone", status.detail);
                let before = Before::of(service.status.as_ref());
                let exit = engine::ProcessExit {
                    service: name.to_owned(),
                    pid,
                    exit_code: None,
                    signal: None,
                    core_dumped: false,
                    oom_killed: false,
                    cause: ExitCause::Unexpected { init_restarts: false },
                    init_says_clean: false,
                };
                service.status = Some(status);
                self.exit_seen(name, exit, before);
                return;
            }
            // Stopping, or down while its process still runs: the exit, when the
            // kernel reports it, is judged with the init system's word.
            (ServiceState::Stopping | ServiceState::Down | ServiceState::NotFound, _) if was_up.is_some() => {
                tracing::info!("service `{name}`: {}", status.detail);
            }
            (ServiceState::Down | ServiceState::NotFound, _) if service.restarting => {}
            (ServiceState::Down | ServiceState::NotFound, _) => {
                if service.awaiting_init_restart && status.intent != Intent::AutoRestart {
                    service.awaiting_init_restart = false;
                    let init = service.backend.as_ref().map_or("the init system", |b| b.kind().name());
                    let reason = format!("{init} did not bring it back: {}", status.detail);
                    tracing::error!("service `{name}`: {reason}");
                    input = Some(Input::RestartFailed { service: name.to_owned(), reason });
                } else {
                    input =
                        Some(Input::ServiceDown { service: name.to_owned(), stopped: status.intent == Intent::Stop });
                }
            }
            _ => {}
        }
        service.status = Some(status);
        if let Some(input) = input {
            self.step(input, now);
        }
    }

    fn step(&mut self, input: Input, now: Timestamp) {
        let actions = engine::step(&mut self.engine, input, now);
        self.perform(actions);
    }

    /// The executor's front: what each action becomes.
    fn perform(&mut self, actions: Vec<Action>) {
        // What inspeq does per target in this batch, for the alerts' "what inspeq did".
        let mut responses: BTreeMap<String, Vec<Response>> = BTreeMap::new();
        for action in &actions {
            let (target, response) = match action {
                Action::Restart { service } => (service.clone(), Response::Restart),
                Action::InitRestarts { service } => {
                    let init = self
                        .services
                        .get(service)
                        .and_then(|s| s.backend.as_ref())
                        .map_or("the init system", |b| b.kind().name());
                    (service.clone(), Response::InitRestarts { init: init.to_owned() })
                }
                Action::Reload { service } => (service.clone(), Response::Reload),
                Action::Unmonitor { service } => (service.clone(), Response::Unmonitor),
                Action::Exec { argv, event } => (event.target.to_string(), Response::Exec(argv.join(" "))),
                Action::Alert { .. } => continue,
            };
            responses.entry(target).or_default().push(response);
        }
        let at = SystemTime::now();
        for action in actions {
            match action {
                Action::Alert { route, event } => {
                    let target = event.target.to_string();
                    let did = responses.get(&target).map(Vec::as_slice).unwrap_or_default();
                    let Some(alert) = translate::alert(&self.config, &self.hostname, &event, did, at) else { continue };
                    tracing::info!("alert: {target}: {}", alert.event.kind());
                    let owner = match &event.target {
                        Target::Host => self.config.host.as_ref().and_then(|c| c.owner.clone()),
                        Target::Service(name) => self.services.get(name).and_then(|s| s.check.owner.clone()),
                    };
                    // The engine folds the owner into `route`; the outbox wants them
                    // apart, so an owner without a route of its own falls back to the default.
                    let (route, owner) = if route.is_some() && route == owner { (None, owner) } else { (route, owner) };
                    let target = alert::Target { route: route.as_deref(), owner: owner.as_deref() };
                    if let Err(err) = self.outbox.raise(alert.clone(), target) {
                        tracing::error!("alert: {err}; sending it to the default route");
                        let _ = self.outbox.raise(alert, alert::Target::default());
                    }
                    self.raised += 1;
                }
                Action::Restart { service } => self.init_action(&service, "restart"),
                Action::InitRestarts { service } => {
                    tracing::info!("service `{service}`: its init system restarts it; inspeq sends no second restart");
                }
                Action::Reload { service } => self.init_action(&service, "reload"),
                Action::Unmonitor { service } => {
                    tracing::warn!("service `{service}`: unmonitored until `inspeqctl remonitor {service}`")
                }
                Action::Exec { argv, event } => {
                    tracing::info!("exec: {}", argv.join(" "));
                    let env = vec![
                        ("INSPEQ_SERVICE".to_owned(), event.target.to_string()),
                        ("INSPEQ_HOSTNAME".to_owned(), self.hostname.clone()),
                    ];
                    executor::exec(argv, env);
                }
            }
        }
    }

    fn init_action(&mut self, name: &str, what: &'static str) {
        let Some(service) = self.services.get_mut(name) else { return };
        let Some(backend) = service.backend.clone() else {
            tracing::warn!("service `{name}`: cannot {what}: no init system knows it");
            return;
        };
        if what == "restart" {
            service.restarting = true;
        }
        tracing::info!("service `{name}`: {what} requested from {}", backend.kind().name());
        executor::init_action(&self.events, backend, service.name.clone(), what);
    }

    /// Observations from the kernel side.
    fn kernel(&mut self, observations: Vec<Observation>) {
        let now = self.now();
        for observation in observations {
            self.observations += 1;
            match observation {
                Observation::ProcessExited(exit) => {
                    let Some(name) = self.watches.get(&exit.watch).cloned() else { continue };
                    let Some(service) = self.services.get_mut(&name) else { continue };
                    service.members.remove(&exit.pid);
                    let main = service.status.as_ref().is_some_and(|s| s.is_main_process(exit.pid));
                    let input = engine::ProcessExit {
                        service: name.clone(),
                        pid: exit.pid,
                        exit_code: exit.status.exit_code(),
                        signal: exit.status.signal(),
                        core_dumped: exit.status.core_dumped(),
                        oom_killed: exit.oom_killed,
                        cause: ExitCause::Unexpected { init_restarts: false },
                        init_says_clean: false,
                    };
                    if !main {
                        // A worker: an event only when it dies by a signal while the
                        // service is up and nobody (inspeq, the init system) is stopping it.
                        let stopping = service.restarting
                            || service.started.is_none()
                            || service.status.as_ref().is_some_and(|s| s.intent.stops() || s.state != ServiceState::Up);
                        if !stopping && input.worker_crashed() {
                            tracing::info!(
                                "service `{name}`: worker {} died: {:?}{}",
                                exit.pid,
                                exit.status,
                                if exit.oom_killed { " (OOM killed)" } else { "" }
                            );
                            self.step(Input::WorkerDied(input), now);
                        }
                        continue;
                    }
                    tracing::info!(
                        "service `{name}`: main process {} exited: {:?}{}",
                        exit.pid,
                        exit.status,
                        if exit.oom_killed { " (OOM killed)" } else { "" }
                    );
                    let before = Before::of(service.status.as_ref());
                    if let Some(status) = &mut service.status {
                        *status = ServiceStatus {
                            init_restarts: before.init_restarts,
                            ..ServiceStatus::down(format!("pid {} exited", exit.pid)).with_intent(before.intent)
                        };
                    }
                    self.exit_seen(&name, input, before);
                }
                Observation::ProcessForked { watch, child, .. } => {
                    let Some(name) = self.watches.get(&watch).cloned() else { continue };
                    if let Some(service) = self.services.get_mut(&name) {
                        service.members.insert(child);
                    }
                    self.step(Input::Forked { service: name }, now);
                }
                Observation::RssCrossed { watch, pid, direction, rss_bytes, .. } => {
                    let Some(name) = self.watches.get(&watch).cloned() else { continue };
                    let is_main = self.services.get(&name).is_some_and(|s| s.main_pid() == Some(pid));
                    if !is_main || direction == RssDirection::Moved {
                        continue;
                    }
                    // Memory rules see the crossing now rather than at the next cycle.
                    let sample = Sample::new(Target::Service(name)).with("memory:rss", rss_bytes as f64);
                    self.record(&sample, now, &mut Vec::new());
                    self.step(Input::Sample(sample), now);
                }
                Observation::RssTotalCrossed { watch, total_bytes, .. } => {
                    let Some(name) = self.watches.get(&watch).cloned() else { continue };
                    // `memory:total_rss` rules see the service's crossing now.
                    let sample = Sample::new(Target::Service(name)).with("memory:total_rss", total_bytes as f64);
                    self.record(&sample, now, &mut Vec::new());
                    self.step(Input::Sample(sample), now);
                }
                Observation::EventsLost { kind, count } => {
                    tracing::warn!("kernel: {count} {kind} records lost (ring buffer full)");
                }
            }
        }
    }

    /// Records `sample`'s values in the history and as statsd lines, each in its
    /// metric's catalogue unit, by the engine's own conversion from the previous
    /// sample it keeps: so before the engine steps `sample`. A value that cannot
    /// be known yet (CPU's first sample) is left out, as the rules skip it.
    fn record(&mut self, sample: &Sample, now: Timestamp, lines: &mut Vec<String>) {
        let target = sample.target.to_string();
        for (metric, raw) in &sample.values {
            let Some(shown) = history::shown(&sample.target, metric, sample.cores.unwrap_or(1)) else { continue };
            let Some(reading) = self.engine.reading(&sample.target, metric, shown.kind, *raw, shown.cores, now) else {
                continue;
            };
            let name = metric.to_string();
            self.history.record(&target, &name, reading.value);
            // statsd sums counters itself: a counter goes as its change this cycle.
            lines.push(match reading.delta {
                Some(delta) => statsd::line(&self.hostname, &target, &name, delta, StatsdKind::Counter),
                None => statsd::line(&self.hostname, &target, &name, reading.value, StatsdKind::Gauge),
            });
        }
    }

    /// The cycle: sample metrics, look up services that are not up.
    fn cycle(&mut self) {
        let now = self.now();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in &names {
            let up = self.services.get(name).is_some_and(|s| s.main_pid().is_some());
            if !up {
                self.lookup(name);
            }
        }
        let mut lines = Vec::new();
        if let Some(host) = &self.config.host {
            let mounts: Vec<PathBuf> = host
                .rules
                .iter()
                .filter_map(|r| match &r.condition {
                    Condition::Metric(m) if m.metric.family == "disk" => m.metric.name.as_ref().map(PathBuf::from),
                    _ => None,
                })
                .collect();
            let mount_refs: Vec<&Path> = mounts.iter().map(PathBuf::as_path).collect();
            let values = metrics::host::sample(&mount_refs);
            // Per-core values too, though rules name totals only: the engine keeps
            // their previous sample, which show, export and statsd convert from.
            let sample =
                values.iter().fold(Sample::new(Target::Host).cores(metrics::host::cores()), |s, (m, v)| s.with(m, *v));
            self.record(&sample, now, &mut lines);
            self.step(Input::Sample(sample), now);
        }
        for name in &names {
            let Some(service) = self.services.get(name) else { continue };
            let Some(main) = service.main_pid() else { continue };
            let values = metrics::process::sample(Some(main), service.live_members());
            let sample = values.iter().fold(Sample::new(Target::Service(name.clone())), |s, (m, v)| s.with(m, *v));
            self.record(&sample, now, &mut lines);
            self.step(Input::Sample(sample), now);
        }
        self.step(Input::Cycle, now);
        if let Some(statsd) = &mut self.statsd {
            statsd.send(&lines);
        }
        if self.metrics_page.is_some() {
            let page = prometheus::render(&self.snapshot());
            if let Some(tx) = &self.metrics_page {
                tx.send_replace(page);
            }
        }
    }

    /// Handles one event. Not `async`, so that nothing it does can wait: calls
    /// into init systems, channels and the disk run in tasks and come back as
    /// events of their own.
    fn event(&mut self, event: Event) {
        match event {
            Event::Resolved { service: name, found, errors } => {
                for err in errors {
                    tracing::warn!("service `{name}`: lookup failed: {err}");
                }
                let changes = self.changes_sender();
                let Some(service) = self.services.get_mut(&name) else { return };
                service.looking_up = false;
                match found {
                    Some((backend, status)) => {
                        if service.backend.is_none() {
                            tracing::info!("service `{name}`: managed by {}", backend.kind().name());
                            // Init systems that announce changes (systemd) tell us about restarts themselves.
                            executor::subscribe(&self.events, backend.clone(), service.name.clone(), changes);
                        }
                        service.backend = Some(backend);
                        service.reported_missing = false;
                        self.apply_status(&name, status);
                    }
                    None => {
                        if !service.reported_missing {
                            tracing::warn!("service `{name}`: no init system knows it; looking again every cycle");
                            service.reported_missing = true;
                        }
                        self.apply_status(&name, ServiceStatus::not_found("no init system knows it"));
                    }
                }
            }
            Event::Changed(change) => {
                let name = change.service.to_string();
                self.apply_status(&name, change.status);
            }
            Event::ActionDone { service: name, what, result } => {
                if let Some(service) = self.services.get_mut(&name) {
                    service.restarting = false;
                }
                match result {
                    Ok(()) => tracing::info!("service `{name}`: {what} done"),
                    Err(err) if what == "restart" => {
                        tracing::error!("service `{name}`: {what} failed: {err}");
                        let now = self.now();
                        self.step(Input::RestartFailed { service: name.clone(), reason: err.to_string() }, now);
                    }
                    Err(err) => tracing::error!("service `{name}`: {what} failed: {err}"),
                }
                self.lookup(&name);
            }
            Event::Subscribed { service: name, result } => {
                let Some(service) = self.services.get_mut(&name) else { return };
                match result {
                    Ok(subscription) => service.subscription = subscription,
                    Err(err) => tracing::warn!("service `{name}`: no change notifications: {err}"),
                }
                // A change between the lookup that found it and the subscription
                // would go unannounced: one more lookup closes the gap.
                self.lookup(&name);
            }
            Event::Reload => self.start_reload(None),
            Event::Reloaded(result) => self.finish_reload(*result),
            Event::Watchdog => self.notifier.notify("WATCHDOG=1"),
            Event::Kernel(observations) => self.kernel(observations),
            Event::MainExit { service, pid, record } => {
                if self
                    .services
                    .get(&service)
                    .and_then(|s| s.pending_exit.as_ref())
                    .is_some_and(|e| e.before.main_pid.unwrap_or(e.exit.pid) == pid)
                {
                    self.settle_exit(&service, record);
                }
            }
            Event::Cycle => self.cycle(),
            Event::Control(control) => self.control(control),
            Event::Shutdown => {}
        }
    }

    /// Where init systems push their announcements: back into the loop.
    fn changes_sender(&self) -> mpsc::Sender<crate::init::ServiceChange> {
        let (tx, mut rx) = mpsc::channel(16);
        let events = self.events.clone();
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                if events.send(Event::Changed(change)).await.is_err() {
                    break;
                }
            }
        });
        tx
    }

    /// Starts re-reading the configuration in a task: the files through a
    /// blocking read, then the init-system backends it needs (D-Bus connections)
    /// and, when they changed, the alert routes. The answer comes back as
    /// [`Event::Reloaded`]; `reply` (an `inspeqctl reload`) is answered then. A
    /// reload asked for while one runs joins it.
    fn start_reload(&mut self, reply: Option<tokio::sync::oneshot::Sender<Reply>>) {
        self.reload_waiters.extend(reply);
        if self.reloading {
            return;
        }
        self.reloading = true;
        self.notifier.notify("RELOADING=1");
        let options = self.options.clone();
        let running_routes = self.config.routes.clone();
        let hostname = self.hostname.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = reload_task(options, running_routes, hostname).await;
            let _ = events.send(Event::Reloaded(Box::new(result))).await;
        });
    }

    /// Puts a configuration the reload task read in force; on any error the
    /// running one stays. Logged whoever asked (SIGHUP or `inspeqctl reload`): the
    /// operator reading the log must learn that the files on disk are not what runs.
    fn finish_reload(&mut self, result: anyhow::Result<Reloaded>) {
        self.reloading = false;
        let result = result.and_then(|reloaded| self.apply_reload(reloaded));
        self.notifier.notify("READY=1");
        let reply = match &result {
            Ok(()) => Reply::Ok { message: "configuration reloaded".into() },
            Err(err) => {
                tracing::error!("reload: keeping the running configuration: {err:#}");
                Reply::Error { message: format!("reload failed; the running configuration stays:\n{err:#}") }
            }
        };
        for waiter in self.reload_waiters.drain(..) {
            let _ = waiter.send(reply.clone());
        }
    }

    fn apply_reload(&mut self, reloaded: Reloaded) -> anyhow::Result<()> {
        let Reloaded { config, backends, routes } = reloaded;
        if let Some(routes) = routes {
            // The running outbox takes them over (never waiting): a second one
            // on the same directory would send every pending alert again.
            self.outbox.set_routes(routes);
        }
        if config.settings.state_dir != self.config.settings.state_dir && self.options.state_dir.is_none() {
            tracing::warn!("reload: a new state_dir takes effect when inspeqd restarts");
        }
        let now = self.now();
        // Unchanged checks keep their rule states, windows and unmonitor flags,
        // jobs their last run, and a deploy silence goes on.
        let old = std::mem::replace(&mut self.engine, EngineState::new(&config, now));
        self.engine.carry_over(&old);
        self.backends = backends;
        // Services whose check is unchanged keep their state and watch. Looked up by
        // name: a scan of the new checks for each service made a reload quadratic
        // (40,000 unchanged checks: minutes).
        let checks: HashMap<&str, &config::model::Check> =
            config.services.iter().map(|c| (c.name.as_str(), c)).collect();
        let keep: HashSet<String> = self
            .services
            .iter()
            .filter(|(name, s)| checks.get(name.as_str()).is_some_and(|c| **c == s.check))
            .map(|(name, _)| name.clone())
            .collect();
        let removed: Vec<String> = self.services.keys().filter(|n| !keep.contains(*n)).cloned().collect();
        for name in removed {
            if let Some(service) = self.services.remove(&name)
                && let Some((id, _)) = service.watch
            {
                self.monitor.unwatch(id);
                self.watches.remove(&id);
            }
        }
        self.config = config;
        self.history.retain_targets(|t| t == "host" || keep.contains(t));
        self.add_services();
        tracing::info!("reload: configuration from {} in force", self.options.config_dir.display());
        Ok(())
    }

    fn control(&mut self, control: Control) {
        let now = self.now();
        let reply = match control.request {
            Request::Status => Reply::Status(self.status(false)),
            Request::Export => Reply::Status(self.status(true)),
            Request::StartDeploy => {
                self.step(Input::DeployStarted, now);
                Reply::Ok {
                    message: format!(
                        "deploy started: alerts and actions silenced for up to {:?}",
                        self.config.settings.deploy_length
                    ),
                }
            }
            Request::FinishDeploy => {
                self.step(Input::DeployFinished, now);
                Reply::Ok { message: "deploy finished: rules apply again after one more cycle".into() }
            }
            Request::Show { target, metric } => {
                let unit = history::unit_of(&target, &metric);
                Reply::Show(Show::new(target.clone(), metric.clone(), unit, self.history.values(&target, &metric)))
            }
            Request::JobDone { job } => {
                if self.engine.knows_job(&job) {
                    self.step(Input::JobDone { job: job.clone() }, now);
                    Reply::Ok { message: format!("job `{job}` recorded as done") }
                } else {
                    Reply::Error { message: format!("no job `{job}` is configured") }
                }
            }
            Request::Reload => {
                self.start_reload(Some(control.reply));
                return;
            }
            Request::Remonitor { service } => {
                if self.engine.is_unmonitored(&service) {
                    self.step(Input::Remonitor { service: service.clone() }, now);
                    Reply::Ok { message: format!("service `{service}` is monitored again") }
                } else {
                    Reply::Error { message: format!("service `{service}` is not unmonitored") }
                }
            }
            Request::TestAlert { route } => {
                // Channels answer slowly; the reply is sent from a task.
                let routes = self.outbox.routes().clone();
                let hostname = self.hostname.clone();
                tokio::spawn(async move {
                    let outcomes =
                        alert::test_routes(&routes, route.as_deref(), &hostname, Duration::from_secs(15)).await;
                    let routes = outcomes
                        .into_iter()
                        .map(|o| crate::control::protocol::RouteOutcome {
                            route: o.route,
                            channel: o.channel.to_owned(),
                            ok: o.result.is_ok(),
                            error: o.result.err().map(|e| e.to_string()),
                        })
                        .collect();
                    let _ = control.reply.send(Reply::TestAlert { routes });
                });
                return;
            }
        };
        let _ = control.reply.send(reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rules: &str) -> WatchSettings {
        let text = format!("check service web\n{rules}");
        let (config, diagnostics) = config::load::load([("services.d/web.inq", text.as_str())]);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        Daemon::watch_settings(&config.services[0])
    }

    /// The kernel reports RSS reaching its threshold in whole pages (per-CPU
    /// counters move in batches of 32), so a crossing can land exactly on a
    /// page-aligned `64m`: for `>` the kernel must be asked for one byte more, or
    /// that crossing would not satisfy the rule and no second one would come.
    #[test]
    fn memory_rules_ask_the_kernel_for_the_first_value_that_satisfies_them() {
        let s = settings("  if memory:rss > 64m then alert\n");
        assert_eq!(s.rss.map(|r| r.threshold), Some((64 << 20) + 1));
        let s = settings("  if memory:rss >= 64m then alert\n");
        assert_eq!(s.rss.map(|r| r.threshold), Some(64 << 20));
        let s = settings("  if memory:total_rss > 2g then alert\n  if memory:total_rss > 1g then alert\n");
        assert_eq!((s.rss, s.total_rss), (None, Some((1 << 30) + 1)));
        let s = settings("  if memory:rss < 64m then alert\n");
        assert_eq!((s.rss, s.total_rss), (None, None));
    }
}
