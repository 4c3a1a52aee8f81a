//! Reloading the configuration without waiting in the loop: the files are read
//! and checked, init systems connected and alert routes built in a task; the
//! result is put in force in one step, or the running configuration stays.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;

use super::{Daemon, Options, event::Event, load_config, services::Backends};
use crate::{
    alert::{self, Routes},
    config::{self, Config},
    control::protocol::Response as Reply,
    engine::EngineState,
};

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
pub(super) async fn reload_task(
    options: Options,
    running_routes: BTreeMap<Option<String>, config::model::Route>,
    hostname: String,
) -> anyhow::Result<Reloaded> {
    let dir = options.config_dir.clone();
    let config =
        tokio::task::spawn_blocking(move || load_config(&dir)).await.context("reading the configuration")??;
    let routes = if config.routes != running_routes && options.alert_routes.is_none() {
        Some(
            Routes::build(&config.routes, &alert::http_client(), &hostname)
                .map_err(|e| anyhow::anyhow!("alert routes: {e}"))?,
        )
    } else {
        None
    };
    let backends = Backends::for_options(&options, &config).await;
    Ok(Reloaded { config, backends, routes })
}

impl Daemon {
    /// Starts re-reading the configuration in a task: the files through a
    /// blocking read, then the init-system backends it needs (D-Bus connections)
    /// and, when they changed, the alert routes. The answer comes back as
    /// [`Event::Reloaded`]; `reply` (an `inspeqctl reload`) is answered then. A
    /// reload asked for while one runs joins it.
    pub(super) fn start_reload(&mut self, reply: Option<tokio::sync::oneshot::Sender<Reply>>) {
        self.reload_waiters.extend(reply);
        if self.reloading {
            return;
        }
        self.reloading = true;
        self.notifier.notify("RELOADING=1");
        let options = self.options.clone();
        let running_routes = self.config.routes.clone();
        let hostname = self.hostname.clone();
        self.executor.spawn_send(async move {
            let result = reload_task(options, running_routes, hostname).await;
            Event::Reloaded(Box::new(result))
        });
    }

    /// Puts a configuration the reload task read in force; on any error the
    /// running one stays. Logged whoever asked (SIGHUP or `inspeqctl reload`): the
    /// operator reading the log must learn that the files on disk are not what runs.
    pub(super) fn finish_reload(&mut self, result: anyhow::Result<Reloaded>) {
        self.reloading = false;
        self.release_pages_in = Some(super::RELEASE_AFTER_CYCLES);
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

    pub(super) fn apply_reload(&mut self, reloaded: Reloaded) -> anyhow::Result<()> {
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
}
