//! Carries out the engine's actions, off the event loop: restarts and reloads go
//! to the service's init system (bounded by its timeouts) in their own tasks and
//! report back as events; alerts go into the durable outbox, which never waits;
//! `exec` runs an argv (never a shell) with a timeout, killed when it runs out.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::event::Event;
use crate::init::{InitSystem, ServiceName};

/// How long an `exec` action may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Restarts or reloads `service` in a task; the result comes back as [`Event::ActionDone`].
pub fn init_action(
    events: &mpsc::Sender<Event>,
    backend: Arc<dyn InitSystem>,
    service: ServiceName,
    what: &'static str,
) {
    let events = events.clone();
    tokio::spawn(async move {
        let result = match what {
            "restart" => backend.restart(&service).await,
            _ => backend.reload(&service).await,
        };
        let _ = events.send(Event::ActionDone { service: service.to_string(), what, result }).await;
    });
}

/// Asks `backend` about the exit of main process `pid`, in a task; the answer comes
/// back as [`Event::MainExit`] (a failed or timed-out question as `None`).
pub fn main_exit(
    events: &mpsc::Sender<Event>,
    backend: Arc<dyn InitSystem>,
    service: ServiceName,
    pid: u32,
    restarts_before: Option<u32>,
) {
    let events = events.clone();
    tokio::spawn(async move {
        let record = match backend.main_exit(&service, pid, restarts_before).await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!("service `{service}`: how pid {pid} ended is unknown: {err}");
                None
            }
        };
        let _ = events.send(Event::MainExit { service: service.to_string(), pid, record }).await;
    });
}

/// Runs `argv` with `env` added, in a task; logs how it ended.
pub fn exec(argv: Vec<String>, env: Vec<(String, String)>) {
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
pub fn resolve(events: &mpsc::Sender<Event>, candidates: Vec<Arc<dyn InitSystem>>, service: ServiceName) {
    let events = events.clone();
    tokio::spawn(async move {
        let (found, errors) = crate::init::resolve(&candidates, &service).await;
        let found = found.map(|(i, status)| (candidates[i].clone(), status));
        let _ = events.send(Event::Resolved { service: service.to_string(), found, errors }).await;
    });
}

/// Subscribes to `backend`'s change announcements about `service`, in a task
/// (two D-Bus calls and a lookup for systemd, bounded by its timeouts); the
/// result comes back as [`Event::Subscribed`].
pub fn subscribe(
    events: &mpsc::Sender<Event>,
    backend: Arc<dyn InitSystem>,
    service: ServiceName,
    changes: mpsc::Sender<crate::init::ServiceChange>,
) {
    let events = events.clone();
    tokio::spawn(async move {
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
        let _ = events.send(Event::Subscribed { service: service.to_string(), result }).await;
    });
}
