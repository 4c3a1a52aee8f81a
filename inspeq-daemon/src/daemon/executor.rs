//! Carries out the engine's actions, off the event loop: restarts and reloads go
//! to the service's init system (bounded by its timeouts) in their own tasks and
//! report back as events; alerts go into the durable outbox, which never waits;
//! `exec` runs an argv (never a shell) with a timeout, killed when it runs out.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::event::Event;
use crate::init::{InitSystem, ServiceName};

/// How long an `exec` action may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// The one way the loop starts work that waits: every method spawns a task and
/// returns at once; the task's answer comes back into the loop as an [`Event`].
#[derive(Clone)]
pub struct Executor {
    events: mpsc::Sender<Event>,
}

impl Executor {
    pub fn new(events: mpsc::Sender<Event>) -> Self {
        Self { events }
    }

    /// The loop's event channel, for a long-lived task of its own (a collection task) to report on.
    pub fn events(&self) -> mpsc::Sender<Event> {
        self.events.clone()
    }

    /// Sends `event` into the loop from a task (never from the loop itself: the
    /// channel is bounded, and the loop must not wait on its own queue).
    pub fn spawn_send(&self, event: impl Future<Output = Event> + Send + 'static) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let _ = events.send(event.await).await;
        });
    }

    /// Restarts or reloads `service` in a task; the result comes back as [`Event::ActionDone`].
    pub fn init_action(&self, backend: Arc<dyn InitSystem>, service: ServiceName, what: &'static str) {
        self.spawn_send(async move {
            let result = match what {
                "restart" => backend.restart(&service).await,
                _ => backend.reload(&service).await,
            };
            Event::ActionDone { service: service.to_string(), what, result }
        });
    }

    /// Asks `backend` about the exit of main process `pid`, in a task; the answer comes
    /// back as [`Event::MainExit`] (a failed or timed-out question as `None`).
    pub fn main_exit(
        &self,
        backend: Arc<dyn InitSystem>,
        service: ServiceName,
        pid: u32,
        restarts_before: Option<u32>,
    ) {
        self.spawn_send(async move {
            let record = match backend.main_exit(&service, pid, restarts_before).await {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!("service `{service}`: how pid {pid} ended is unknown: {err}");
                    None
                }
            };
            Event::MainExit { service: service.to_string(), pid, record }
        });
    }

    /// Runs `argv` with `env` added, in a task; logs how it ended.
    pub fn exec(&self, argv: Vec<String>, env: Vec<(String, String)>) {
        tokio::spawn(async move {
            let Some((program, args)) = argv.split_first() else { return };
            let mut command = tokio::process::Command::new(program);
            command.args(args).envs(env).kill_on_drop(true).stdin(std::process::Stdio::null());
            match command.spawn() {
                Ok(mut child) => match tokio::time::timeout(EXEC_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => tracing::info!("exec: {} finished", argv.join(" ")),
                    Ok(Ok(status)) => tracing::warn!("exec: {} failed: {status}", argv.join(" ")),
                    Ok(Err(err)) => tracing::warn!("exec: {} could not be waited for: {err}", argv.join(" ")),
                    Err(_) => {
                        let _ = child.kill().await;
                        tracing::warn!("exec: {} killed after {EXEC_TIMEOUT:?}", argv.join(" "));
                    }
                },
                Err(err) => tracing::warn!("exec: cannot run {program}: {err}"),
            }
        });
    }

    /// Looks `service` up with each of `candidates` in turn, in a task; the answer
    /// comes back as [`Event::Resolved`].
    pub fn resolve(&self, candidates: Vec<Arc<dyn InitSystem>>, service: ServiceName) {
        self.spawn_send(async move {
            let (found, errors) = crate::init::resolve(&candidates, &service).await;
            let found = found.map(|(i, status)| (candidates[i].clone(), status));
            Event::Resolved { service: service.to_string(), found, errors }
        });
    }

    /// Subscribes to `backend`'s change announcements about `service`, in a task
    /// (two D-Bus calls and a lookup for systemd, bounded by its timeouts); the
    /// result comes back as [`Event::Subscribed`].
    pub fn subscribe(
        &self,
        backend: Arc<dyn InitSystem>,
        service: ServiceName,
        changes: mpsc::Sender<crate::init::ServiceChange>,
    ) {
        self.spawn_send(async move {
            let limit = crate::init::DEFAULT_LOOKUP_TIMEOUT * 3;
            let result = match tokio::time::timeout(limit, backend.subscribe(&service, changes)).await {
                Ok(result) => result,
                Err(_) => Err(crate::init::InitError::Timeout {
                    init: backend.kind(),
                    service: service.to_string(),
                    action: "subscribe",
                    after: limit,
                }),
            };
            Event::Subscribed { service: service.to_string(), result }
        });
    }

    /// Forwards an init system's announcements into the loop, from a task: the
    /// sender goes to the backend's subscription.
    pub fn changes(&self) -> mpsc::Sender<crate::init::ServiceChange> {
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
}
