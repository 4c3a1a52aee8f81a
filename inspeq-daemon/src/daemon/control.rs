//! `inspeqctl` requests, answered from the loop's state; `reload` and
//! `test-alert` answer later, from tasks.

use std::time::Duration;

use super::{Daemon, history};
use crate::{
    alert,
    control::{
        protocol::{Request, Response as Reply, Show},
        server::Control,
    },
    engine::Input,
};

impl Daemon {
    pub(super) fn control(&mut self, control: Control) {
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
