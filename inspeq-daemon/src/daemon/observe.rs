//! Observations from the kernel side, mapped to engine inputs: a main-process
//! exit (held for the init system's word), a worker's death, a fork, an RSS
//! crossing as a sample.

use super::{Daemon, services::Before};
use crate::{
    engine::{self, ExitCause, Input, Sample, Target},
    init::{ServiceState, ServiceStatus},
    kernel::{Observation, RssDirection},
};

impl Daemon {
    /// Observations from the kernel side.
    pub(super) fn kernel(&mut self, observations: Vec<Observation>) {
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
}
