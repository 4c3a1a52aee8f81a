//! What each engine action becomes: alerts into the outbox (with what inspeq did
//! about the same target), restarts and reloads through the executor to the init
//! system, `exec` through the executor.

use std::{collections::BTreeMap, time::SystemTime};

use super::{Daemon, translate};
use crate::{
    alert::{self, Response},
    engine::{self, Action},
};

impl Daemon {
    /// The executor's front: what each action becomes.
    pub(super) fn perform(&mut self, actions: Vec<Action>) {
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
                Action::Alert { route, owner, event } => {
                    let target = event.target.to_string();
                    let did = responses.get(&target).map(Vec::as_slice).unwrap_or_default();
                    let error = match (&event.kind, &event.target) {
                        (engine::NoticeKind::Unreachable { daemon }, engine::Target::Service(service)) => {
                            self.collections.error(service, *daemon).map(ToString::to_string)
                        }
                        (engine::NoticeKind::ProbeFailed { probe }, target) => {
                            self.probes.error(target, *probe).map(ToString::to_string)
                        }
                        _ => None,
                    };
                    let Some(alert) = translate::alert(&self.config, &self.hostname, &event, did, error.as_deref(), at)
                    else {
                        continue;
                    };
                    tracing::info!("alert: {target}: {}", alert.event.kind());
                    crate::timing::stamp("alert_raised", &alert.service, format_args!(" event={}", alert.event.kind()));
                    // The engine keeps the rule's route and the check's owner apart, as the outbox picks them.
                    let target = alert::Target { route: route.as_deref(), owner: owner.as_deref() };
                    if let Err(err) = self.outbox.raise(alert.clone(), target) {
                        tracing::error!("alert: {err}; sending it to the default route");
                        let _ = self.outbox.raise(alert, alert::Target::default());
                    }
                    self.raised += 1;
                }
                Action::Restart { service } => {
                    crate::timing::stamp("restart_decided", &service, format_args!(" by=inspeq"));
                    self.init_action(&service, "restart");
                }
                Action::InitRestarts { service } => {
                    crate::timing::stamp("restart_decided", &service, format_args!(" by=init"));
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
                    self.executor.exec(argv, env);
                }
            }
        }
    }

    pub(super) fn init_action(&mut self, name: &str, what: &'static str) {
        let Some(service) = self.services.get_mut(name) else { return };
        let Some(backend) = service.backend.clone() else {
            tracing::warn!("service `{name}`: cannot {what}: no init system knows it");
            return;
        };
        if what == "restart" {
            service.restarting = true;
        }
        tracing::info!("service `{name}`: {what} requested from {}", backend.kind().name());
        self.executor.init_action(backend, service.name.clone(), what);
    }
}
