//! Observations from the kernel side, mapped to engine inputs: a main-process
//! exit (held for the init system's word), a worker's death, a fork, an RSS
//! crossing as a sample.
//!
//! The mapping is [`observe`], a pure function of the observation and a
//! [`ServiceView`] (the few facts about the service it reads), unit-tested by a
//! scenario table below; [`Daemon::kernel`] only applies what it returns.

use super::{
    Daemon,
    services::{Before, Service},
};
use crate::{
    engine::{Input, ProcessExit, Sample, Target},
    init::{ServiceState, ServiceStatus},
    kernel::{Observation, RssDirection},
};

/// What the daemon knows of a service when an observation about it arrives: all that [`observe`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ServiceView<'a> {
    pub name: &'a str,
    /// The init system's main pid, and the server behind it when the main process is a wrapper
    /// ([`ServiceStatus::is_main_process`]): the exit of either takes the service down.
    pub main_pid: Option<u32>,
    pub server_pid: Option<u32>,
    /// The init system's last word is that the service is up (not starting, stopping or down).
    pub up: bool,
    /// The engine was told its main process started, and has not been told it exited.
    pub started: bool,
    /// The init system was asked to stop or restart it (an operator's `systemctl stop|restart`, `sv down`).
    pub stopping: bool,
    /// A restart inspeq asked for is running.
    pub restarting: bool,
}

impl<'a> ServiceView<'a> {
    pub(super) fn of(service: &'a Service) -> Self {
        let status = service.status.as_ref();
        ServiceView {
            name: &service.check.name,
            main_pid: status.and_then(|s| s.main_pid),
            server_pid: status.and_then(ServiceStatus::server_pid),
            up: status.is_some_and(|s| s.state == ServiceState::Up),
            started: service.started.is_some(),
            stopping: status.is_some_and(|s| s.intent.stops()),
            restarting: service.restarting,
        }
    }

    fn is_main_process(&self, pid: u32) -> bool {
        self.main_pid == Some(pid) || self.server_pid == Some(pid)
    }

    /// A worker's death now is news: the service runs, and nobody (inspeq, the init system) is stopping it.
    fn judges_workers(&self) -> bool {
        self.started && self.up && !self.stopping && !self.restarting
    }
}

/// What one observation means for its service.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Observed {
    /// The main process exited: held until the init system says who asked for it (`Daemon::exit_seen`).
    MainExited(ProcessExit),
    /// A worker died by a signal, a core dump or the OOM killer while the service ran: [`Input::WorkerDied`].
    WorkerDied(ProcessExit),
    /// A worker ended and that is no event (an exit with a code, a stop signal, or while the service is stopped
    /// or restarted): it only leaves the service's members.
    WorkerEnded { pid: u32 },
    /// A process of the service forked: `child` joins its members, the engine counts the fork.
    Forked { child: u32 },
    /// A listening socket of the service closed while it ran: judged once the init system says nobody is
    /// stopping it (`Daemon::listener_closed`).
    ListenerClosed { address: std::net::SocketAddr, pid: u32 },
    /// An RSS crossing the memory rules see now rather than at the next cycle.
    Sample(Sample),
    /// Nothing to do: an RSS move by the watch's delta, a crossing of a process other than the main one, lost
    /// records (logged by the caller).
    Nothing,
}

/// Maps one observation about `service` to what the daemon does with it. Pure: the same observation and view
/// always give the same answer.
pub(super) fn observe(observation: &Observation, service: ServiceView<'_>) -> Observed {
    let name = service.name;
    match observation {
        Observation::ProcessExited(exited) => {
            // The exit as the kernel side decoded it, status, OOM mark and RSS, carried as it is.
            let exit = ProcessExit::unexpected(name, exited.exit());
            if service.is_main_process(exited.pid) {
                Observed::MainExited(exit)
            } else if service.judges_workers() && exit.worker_crashed() {
                Observed::WorkerDied(exit)
            } else {
                Observed::WorkerEnded { pid: exited.pid }
            }
        }
        Observation::ProcessForked { child, .. } => Observed::Forked { child: *child },
        // `memory:rss` is the main process's; a move by the delta is for `trace`, no threshold was crossed.
        Observation::RssCrossed { pid, direction, rss_bytes, .. } => {
            if !service.up || service.main_pid != Some(*pid) || *direction == RssDirection::Moved {
                return Observed::Nothing;
            }
            Observed::Sample(Sample::new(Target::Service(name.to_owned())).with("memory:rss", *rss_bytes as f64))
        }
        // `memory:total_rss` is the whole service's, whichever process made it cross.
        Observation::RssTotalCrossed { total_bytes, .. } => Observed::Sample(
            Sample::new(Target::Service(name.to_owned())).with("memory:total_rss", *total_bytes as f64),
        ),
        Observation::EventsLost { .. } => Observed::Nothing,
        // While the service stops, restarts or is not up, its sockets close with it: that is no news.
        Observation::ListenerClosed { pid, addr, .. } if service.judges_workers() => {
            Observed::ListenerClosed { address: *addr, pid: *pid }
        }
        Observation::ListenerClosed { .. } => Observed::Nothing,
    }
}

impl Daemon {
    /// Observations from the kernel side: each mapped by [`observe`], then applied.
    pub(super) fn kernel(&mut self, observations: Vec<Observation>) {
        let now = self.now();
        for observation in observations {
            self.observations += 1;
            if let Observation::EventsLost { kind, count } = &observation {
                tracing::warn!("kernel: {count} {kind} records lost (ring buffer full)");
                continue;
            }
            let Some(name) = observation.watch().and_then(|watch| self.watches.get(&watch)).cloned() else { continue };
            let Some(service) = self.services.get_mut(&name) else { continue };
            match observe(&observation, ServiceView::of(service)) {
                Observed::MainExited(exit) => {
                    if let Observation::ProcessExited(exited) = &observation {
                        crate::timing::stamp(
                            "exit_received",
                            &name,
                            format_args!(" kernel_us={}", exited.ktime_ns / 1000),
                        );
                    }
                    service.members.remove(&exit.exit.pid);
                    tracing::info!(
                        "service `{name}`: main process {} exited: {:?}{}",
                        exit.exit.pid,
                        exit.exit.status,
                        if exit.exit.oom_killed { " (OOM killed)" } else { "" }
                    );
                    let before = Before::of(service.status.as_ref());
                    if let Some(status) = &mut service.status {
                        *status = ServiceStatus {
                            init_restarts: before.init_restarts,
                            ..ServiceStatus::down(format!("pid {} exited", exit.exit.pid)).with_intent(before.intent)
                        };
                    }
                    self.exit_seen(&name, exit, before);
                }
                Observed::WorkerDied(exit) => {
                    service.members.remove(&exit.exit.pid);
                    tracing::info!(
                        "service `{name}`: worker {} died: {:?}{}",
                        exit.exit.pid,
                        exit.exit.status,
                        if exit.exit.oom_killed { " (OOM killed)" } else { "" }
                    );
                    self.step(Input::WorkerDied(exit), now);
                }
                Observed::WorkerEnded { pid } => {
                    service.members.remove(&pid);
                }
                Observed::Forked { child } => {
                    service.members.insert(child);
                    self.step(Input::Forked { service: name }, now);
                }
                Observed::ListenerClosed { address, pid } => self.listener_closed(&name, address, pid),
                Observed::Sample(sample) => {
                    self.record(&sample, now, &mut Vec::new());
                    self.step(Input::Sample(sample), now);
                }
                Observed::Nothing => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        exit::{Exit, ExitStatus},
        kernel::{ProcessExited, WatchId},
    };

    const MAIN: u32 = 100;
    const WRAPPED: u32 = 101;
    const WORKER: u32 = 200;
    const GIB: u64 = 1 << 30;

    /// `web`, up with main pid 100 (a wrapper of server 101), started, nobody stopping it.
    fn up() -> ServiceView<'static> {
        ServiceView {
            name: "web",
            main_pid: Some(MAIN),
            server_pid: Some(WRAPPED),
            up: true,
            started: true,
            stopping: false,
            restarting: false,
        }
    }

    fn exited(pid: u32, status: ExitStatus, oom_killed: bool, rss_bytes: Option<u64>) -> Observation {
        Observation::ProcessExited(ProcessExited {
            watch: WatchId(1),
            pid,
            ppid: 1,
            status,
            oom_killed,
            rss_bytes,
            cgroup_id: 7,
            comm: "web".into(),
            ktime_ns: 5,
        })
    }

    fn killed(signal: i32) -> ExitStatus {
        ExitStatus::Signal { signal, core_dumped: false }
    }

    fn rss(pid: u32, direction: RssDirection, rss_bytes: u64) -> Observation {
        Observation::RssCrossed {
            watch: WatchId(1),
            pid,
            direction,
            rss_bytes,
            threshold_bytes: GIB,
            cgroup_id: 7,
            ktime_ns: 5,
        }
    }

    fn exit(pid: u32, status: ExitStatus, oom_killed: bool, rss_bytes: Option<u64>) -> ProcessExit {
        ProcessExit::unexpected("web", Exit { pid, status, oom_killed, rss_bytes })
    }

    fn sample(metric: &str, value: u64) -> Observed {
        Observed::Sample(Sample::new(Target::Service("web".into())).with(metric, value as f64))
    }

    /// One row: what it shows, the observation, the service as the daemon knows it, and what the mapping says.
    type Row = (&'static str, Observation, ServiceView<'static>, Observed);

    fn play(table: Vec<Row>) {
        for (what, observation, view, expected) in table {
            assert_eq!(observe(&observation, view), expected, "{what}");
        }
    }

    #[test]
    fn an_exit_is_the_main_processs_held_a_workers_death_judged_or_a_workers_end() {
        let stopping = ServiceView { stopping: true, ..up() };
        let restarting = ServiceView { restarting: true, ..up() };
        let starting = ServiceView { up: false, ..up() };
        let not_started = ServiceView { started: false, ..up() };
        play(vec![
            (
                "the main process's exit is held for the init system, with its status as decoded",
                exited(MAIN, ExitStatus::Code(3), false, Some(4096)),
                up(),
                Observed::MainExited(exit(MAIN, ExitStatus::Code(3), false, Some(4096))),
            ),
            (
                "the server behind a wrapper is the main process too",
                exited(WRAPPED, killed(9), false, None),
                up(),
                Observed::MainExited(exit(WRAPPED, killed(9), false, None)),
            ),
            (
                "the main process's exit counts while the service stops: the init system says who asked",
                exited(MAIN, killed(15), false, None),
                stopping,
                Observed::MainExited(exit(MAIN, killed(15), false, None)),
            ),
            (
                "an unknown status stays unknown",
                exited(MAIN, ExitStatus::Unknown, false, None),
                up(),
                Observed::MainExited(exit(MAIN, ExitStatus::Unknown, false, None)),
            ),
            (
                "an OOM kill of the main process keeps the mark and the RSS at exit",
                exited(MAIN, killed(9), true, Some(3 * GIB)),
                up(),
                Observed::MainExited(exit(MAIN, killed(9), true, Some(3 * GIB))),
            ),
            (
                "a worker killed by SIGKILL while the service is up is a death the engine judges",
                exited(WORKER, killed(9), false, None),
                up(),
                Observed::WorkerDied(exit(WORKER, killed(9), false, None)),
            ),
            (
                "a worker's core dump is one",
                exited(WORKER, ExitStatus::Signal { signal: 11, core_dumped: true }, false, None),
                up(),
                Observed::WorkerDied(exit(WORKER, ExitStatus::Signal { signal: 11, core_dumped: true }, false, None)),
            ),
            (
                "a worker the OOM killer chose is one, with its RSS",
                exited(WORKER, killed(9), true, Some(GIB)),
                up(),
                Observed::WorkerDied(exit(WORKER, killed(9), true, Some(GIB))),
            ),
            (
                "a worker exiting with code 1 is no crash",
                exited(WORKER, ExitStatus::Code(1), false, None),
                up(),
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "a worker ended by SIGTERM (a phased restart) is none",
                exited(WORKER, killed(15), false, None),
                up(),
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "a worker gone with an unknown status is none",
                exited(WORKER, ExitStatus::Unknown, false, None),
                up(),
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "a worker killed while the init system stops the service is none",
                exited(WORKER, killed(9), false, None),
                stopping,
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "nor while inspeq restarts it",
                exited(WORKER, killed(9), false, None),
                restarting,
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "nor while the init system says it is not up",
                exited(WORKER, killed(9), false, None),
                starting,
                Observed::WorkerEnded { pid: WORKER },
            ),
            (
                "nor before the engine was told it started",
                exited(WORKER, killed(9), false, None),
                not_started,
                Observed::WorkerEnded { pid: WORKER },
            ),
        ]);
    }

    #[test]
    fn a_fork_adds_a_member_and_the_main_processs_rss_crossings_are_samples() {
        let starting = ServiceView { up: false, ..up() };
        play(vec![
            (
                "a fork adds a member",
                Observation::ProcessForked {
                    watch: WatchId(1),
                    parent: MAIN,
                    child: WORKER,
                    cgroup_id: 7,
                    ktime_ns: 5,
                },
                up(),
                Observed::Forked { child: WORKER },
            ),
            (
                "the main process's RSS crossing is a sample now",
                rss(MAIN, RssDirection::Up, 2 * GIB),
                up(),
                sample("memory:rss", 2 * GIB),
            ),
            (
                "and so is its fall below the threshold",
                rss(MAIN, RssDirection::Down, GIB / 2),
                up(),
                sample("memory:rss", GIB / 2),
            ),
            ("a move by the delta is not", rss(MAIN, RssDirection::Moved, 2 * GIB), up(), Observed::Nothing),
            (
                "a worker's crossing is not the service's RSS",
                rss(WORKER, RssDirection::Up, 2 * GIB),
                up(),
                Observed::Nothing,
            ),
            (
                "nor the wrapped server's (the sample is the main pid's)",
                rss(WRAPPED, RssDirection::Up, 2 * GIB),
                up(),
                Observed::Nothing,
            ),
            (
                "nor the main pid's while it is not up",
                rss(MAIN, RssDirection::Up, 2 * GIB),
                starting,
                Observed::Nothing,
            ),
            (
                "the total crossing is the service's, whichever process made it",
                Observation::RssTotalCrossed {
                    watch: WatchId(1),
                    pid: WORKER,
                    direction: RssDirection::Up,
                    total_bytes: 5 * GIB,
                    threshold_bytes: 4 * GIB,
                    ktime_ns: 5,
                },
                up(),
                sample("memory:total_rss", 5 * GIB),
            ),
            (
                "lost records are the caller's to log",
                Observation::EventsLost { kind: "exit", count: 3 },
                up(),
                Observed::Nothing,
            ),
        ]);
    }

    #[test]
    fn a_listeners_close_is_news_only_while_the_service_runs_and_nobody_stops_it() {
        let address: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
        let closed =
            |pid| Observation::ListenerClosed { watch: WatchId(1), pid, addr: address, cgroup_id: 7, ktime_ns: 5 };
        play(vec![
            ("the main process closes it", closed(MAIN), up(), Observed::ListenerClosed { address, pid: MAIN }),
            (
                "so does the last worker holding it",
                closed(WORKER),
                up(),
                Observed::ListenerClosed { address, pid: WORKER },
            ),
            (
                "not while it is stopped on request",
                closed(MAIN),
                ServiceView { stopping: true, ..up() },
                Observed::Nothing,
            ),
            ("nor while inspeq restarts it", closed(MAIN), ServiceView { restarting: true, ..up() }, Observed::Nothing),
            ("nor while it is not up", closed(MAIN), ServiceView { up: false, ..up() }, Observed::Nothing),
            (
                "nor after its main process's exit",
                closed(WORKER),
                ServiceView { started: false, ..up() },
                Observed::Nothing,
            ),
        ]);
    }
}
