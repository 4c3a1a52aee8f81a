//! Service tracking: which init system knows each service, its main pid and
//! watch, and the exits and status changes that move it between up and down.
//! Every answer from an init system is applied here, in the loop.

use super::{
    Daemon,
    services::{Before, PendingExit, Service},
};
use crate::{
    engine::{self, ExitCause, Input},
    exit::{Exit, ExitStatus},
    init::{Intent, ServiceState, ServiceStatus},
    kernel,
};

impl Daemon {
    /// Registers the config's services that are not registered yet and looks them up.
    pub(super) fn add_services(&mut self) {
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
        self.sync_collections();
        self.sync_probes();
        let names: Vec<String> = self.services.keys().cloned().collect();
        for name in names {
            self.lookup(&name);
        }
    }

    /// Starts a lookup of `name` unless one is running.
    pub(super) fn lookup(&mut self, name: &str) {
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
        self.executor.resolve(candidates, service.name.clone());
    }

    /// Holds a main-process exit back and asks the init system about it: an
    /// operator's stop and a crash look alike to the kernel, and only the init
    /// system knows whether it restarts the service by itself. Without a backend
    /// the exit goes to the engine as it is.
    pub(super) fn exit_seen(&mut self, name: &str, exit: engine::ProcessExit, before: Before) {
        let now = self.now();
        let Some(service) = self.services.get_mut(name) else { return };
        service.started = None;
        service.last_exited = Some(exit.exit.pid);
        if service.restarting {
            tracing::info!("service `{name}`: main process {} ended by the restart inspeq asked for", exit.exit.pid);
            let exit = engine::ProcessExit { cause: ExitCause::Restart, ..exit };
            self.step(Input::ProcessExited(exit), now);
            self.lookup(name);
            return;
        }
        match service.backend.clone() {
            Some(backend) => {
                // The init system's record is about its main pid: the wrapper, when
                // the exit seen is the server's behind a shell.
                let pid = before.main_pid.unwrap_or(exit.exit.pid);
                let known = backend.main_exit_known(&service.name, pid, &exit.exit.status);
                service.pending_exit = Some(PendingExit { exit, before });
                match known {
                    // What it announced already settles it: no question, no wait.
                    Some(record) => self.settle_exit(name, Some(record)),
                    None => self.executor.main_exit(backend, service.name.clone(), pid, before.init_restarts),
                }
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
    pub(super) fn settle_exit(&mut self, name: &str, record: Option<crate::init::MainExit>) {
        let now = self.now();
        let Some(service) = self.services.get_mut(name) else { return };
        let Some(PendingExit { mut exit, before }) = service.pending_exit.take() else { return };
        crate::timing::stamp("init_answered", name, format_args!(""));
        let intent_before = before.intent;
        let init = service.backend.as_ref().map_or("the init system", |b| b.kind().name());
        let record = record.filter(|r| r.pid == before.main_pid.unwrap_or(exit.exit.pid));
        let pid = exit.exit.pid;
        if exit.exit.status.is_unknown() {
            // The kernel side could not learn it: the init system's record, if it has one, is the status. What it
            // did not record stays unknown (a crash, unless it says the exit was clean: `ProcessExit::crashed`).
            match record.filter(|r| !r.status.is_unknown()) {
                Some(record) => {
                    tracing::info!(
                        "service `{name}`: {init} says main process {pid} ended {:?}{}",
                        record.status,
                        if record.clean { " (a success)" } else { "" }
                    );
                    exit.exit.status = record.status;
                    exit.init_says_clean = record.clean;
                }
                None => tracing::info!("service `{name}`: how main process {pid} ended is unknown"),
            }
        }
        let intent = record.map_or(intent_before, |r| if intent_before.stops() { intent_before } else { r.intent });
        exit.cause = if intent.stops() {
            tracing::info!(
                "service `{name}`: main process {pid} stopped by {init} ({}); not a crash, not restarted",
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
    pub(super) fn apply_status(&mut self, name: &str, status: ServiceStatus) {
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
                // The cgroup's path comes with the status: no search of the cgroup tree by id.
                let members = match (&status.cgroup, target) {
                    (Some(cgroup), _) => kernel::cgroup_members(&cgroup.path),
                    (None, kernel::WatchTarget::Tree(pid)) => kernel::tree_members(*pid),
                    (None, _) => Vec::new(),
                };
                match self.monitor.watch_with(target, Self::watch_settings(&service.check), &members) {
                    Ok(id) => {
                        let how = if matches!(target, kernel::WatchTarget::Tree(_)) { "tree" } else { "cgroup" };
                        service.watch = Some((id, how));
                        self.watches.insert(id, name.to_owned());
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
                // How it ended is the manager's to say (`settle_exit`): unknown until then.
                let exit = engine::ProcessExit::unexpected(name, Exit::new(pid, ExitStatus::Unknown));
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
}
