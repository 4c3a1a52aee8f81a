//! `inspeqd` itself: one event loop applying the rules to what the kernel and the
//! init systems report, acting through one executor, answering `inspeqctl`.
//! This file wires it up (start, the `select!` loop, the dispatch of each event).
//!
//! - `event.rs`: the closed [`event::Event`] enum every state change arrives as.
//! - `services.rs`: the watched services and the init-system backends.
//! - `tracking.rs`: lookups, exits and status changes of the watched services.
//! - `observe.rs`: kernel observations → engine inputs.
//! - `cycle.rs`: the cycle's metric samples and the kernel watch settings.
//! - `collect.rs`: daemon metrics (redis, memcached, nginx, memstats): a task per service and family, results as events.
//! - `actions.rs`: what each engine action becomes.
//! - `executor.rs`: the [`executor::Executor`]: every wait (init systems, `exec`) in a task.
//! - `translate.rs`: engine notices → alerts.
//! - `reload.rs`: reloading the configuration off the loop.
//! - `control.rs`: `inspeqctl` requests.
//! - `status.rs`: the daemon's state as the control protocol's `Status`.
//! - `history.rs`: recent metric values for `show` and `export`.
//! - `notify.rs`: systemd's readiness and watchdog protocol.
//!
//! The loop owns all state and never awaits an init system or a channel: those
//! calls run in tasks and come back as events. The kernel monitor is polled in
//! the same `select!` (its batch buffer survives a cancelled poll).

mod actions;
mod collect;
mod control;
mod cycle;
mod event;
mod executor;
mod footprint;
mod history;
mod listeners;
pub mod notify;
mod observe;
mod probes;
mod reload;
mod services;
mod state_lock;
mod status;
mod tracking;
mod translate;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use tokio::{sync::mpsc, time::Instant};

use self::{
    event::Event,
    executor::Executor,
    history::History,
    notify::Notifier,
    services::{Backends, Services},
};
use crate::{
    alert::{self, Outbox, OutboxConfig, Routes},
    config::{self, Config},
    control::{
        protocol::Response as Reply,
        server::{self},
    },
    engine::{self, EngineState, Input, Timestamp},
    export::{prometheus, statsd::Statsd},
    init::ServiceStatus,
    kernel::{self, Monitor},
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
    /// The state directory's lock, released when the daemon is dropped.
    _state_lock: state_lock::StateLock,
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
    executor: Executor,
    history: History,
    /// The daemon-metric collection tasks and what they last said.
    collections: collect::Collections,
    probes: probes::Probes,
    /// A listing of the listening sockets is running (one at a time), and whether the last one failed.
    listing: bool,
    listing_failed: bool,
    statsd: Option<Statsd>,
    notifier: Notifier,
    observations: u64,
    raised: u64,
    socket: PathBuf,
    /// The Prometheus page, when `set metrics_listen` is configured.
    metrics_page: Option<tokio::sync::watch::Sender<String>>,
    /// A reload task is running.
    reloading: bool,
    /// The cycle's sampling under way, slice by slice (`cycle.rs`).
    sampling: Option<cycle::Sampling>,
    /// Cycles until the start-up's (or a reload's) code pages are given back (`footprint.rs`).
    release_pages_in: Option<u32>,
    /// `inspeqctl reload`s waiting for it.
    reload_waiters: Vec<tokio::sync::oneshot::Sender<Reply>>,
}

/// What the loop listens to besides the kernel, timers and signals.
struct Inbox {
    events: mpsc::Receiver<Event>,
    control: mpsc::Receiver<server::Control>,
}

/// Loads the configuration and starts every part (outbox, kernel monitor, init
/// backends, control socket, metrics page) a daemon needs.
async fn start(options: Options) -> anyhow::Result<(Daemon, Inbox)> {
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
        None => Routes::build(&config.routes, &alert::http_client(), &hostname)
            .map_err(|e| anyhow::anyhow!("alert routes: {e}"))?,
    };
    // Held as long as the daemon runs: one daemon per outbox, or pending alerts go out twice.
    let state_lock = state_lock::StateLock::acquire(&state_dir)?;
    let outbox =
        Outbox::start(OutboxConfig::new(state_dir.join("outbox")), routes).context("starting the alert outbox")?;
    let kernel_options = kernel::Options { cycle: config.settings.cycle_time, ..options.kernel.clone() };
    let monitor = Monitor::start(&kernel_options);
    let backends = Backends::for_options(&options, &config).await;
    let listener = server::bind(&socket, options.socket_group.as_deref()).await?;
    let (control_tx, control_rx) = mpsc::channel(16);
    tokio::spawn(server::serve(listener, control_tx, options.control));
    let (events, events_rx) = mpsc::channel(256);
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
    let daemon = Daemon {
        _state_lock: state_lock,
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
        executor: Executor::new(events),
        history: History::default(),
        collections: collect::Collections::default(),
        probes: probes::Probes::default(),
        listing: false,
        listing_failed: false,
        statsd,
        notifier: Notifier::from_env(),
        observations: 0,
        raised: 0,
        socket: socket.clone(),
        metrics_page,
        reloading: false,
        sampling: None,
        release_pages_in: Some(RELEASE_AFTER_CYCLES),
        reload_waiters: Vec::new(),
    };
    Ok((daemon, Inbox { events: events_rx, control: control_rx }))
}

/// Runs the daemon until `shutdown` completes or SIGTERM/SIGINT arrives.
/// Cycles after the start or a reload until its pages are given back: by then
/// the services are resolved and subscribed to.
const RELEASE_AFTER_CYCLES: u32 = 3;

pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (mut daemon, mut inbox) = start(options).await?;
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
            Some(event) = inbox.events.recv() => Some(event),
            Some(control) = inbox.control.recv() => Some(Event::Control(control)),
            _ = cycle.tick() => Some(Event::Cycle),
            // While a cycle's sampling is under way, a slice between events; the
            // yield first lets the other tasks (the outbox's workers, D-Bus) run too.
            () = tokio::task::yield_now(), if daemon.sampling.is_some() => Some(Event::SampleSlice),
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

    fn step(&mut self, input: Input, now: Timestamp) {
        let actions = engine::step(&mut self.engine, input, now);
        self.perform(actions);
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
                let changes = self.executor.changes();
                let Some(service) = self.services.get_mut(&name) else { return };
                service.looking_up = false;
                match found {
                    Some((backend, status)) => {
                        if service.backend.is_none() {
                            tracing::info!("service `{name}`: managed by {}", backend.kind().name());
                            // Init systems that announce changes (systemd) tell us about restarts themselves.
                            self.executor.subscribe(backend.clone(), service.name.clone(), changes);
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
                    .is_some_and(|e| e.before.main_pid.unwrap_or(e.exit.exit.pid) == pid)
                {
                    self.settle_exit(&service, record);
                }
            }
            Event::Cycle => self.cycle(),
            Event::SampleSlice => self.sample_slice(),
            Event::Collected(report) => self.collected(report),
            Event::Probed(report) => self.probed(report),
            Event::Listed(listing) => self.listed(listing),
            Event::CloseConfirmed(confirmed) => self.close_confirmed(confirmed),
            Event::Control(control) => self.control(control),
            Event::Shutdown => {}
        }
    }
}
